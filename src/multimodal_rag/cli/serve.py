"""``serve``: the knowledge base over HTTP, with a web page (the ``server`` extra).

This command only reads options and runs uvicorn; the application lives in
`multimodal_rag.server`, imported when the command runs.
"""

from __future__ import annotations

from pathlib import Path

import click

from multimodal_rag.cli.app import KB_ARGUMENT, CommandFailed, Settings
from multimodal_rag.cli.query import answerer_from_options, answerer_options

__all__ = ["TOKEN_ENV", "serve"]

#: Environment variable the bearer token is read from when ``--token`` is not given.
TOKEN_ENV = "MULTIMODAL_RAG_TOKEN"


@click.command()
@KB_ARGUMENT
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on (0.0.0.0: every interface).")
@click.option("--port", type=click.IntRange(0, 65535), default=8000, show_default=True, help="Port to listen on.")
@click.option(
    "--token",
    envvar=TOKEN_ENV,
    default=None,
    metavar="TOKEN",
    help=f"Require 'Authorization: Bearer TOKEN' on /v1/ (default: ${TOKEN_ENV}; none: no authentication).",
)
@answerer_options
@click.option(
    "--max-upload-mb",
    type=click.FloatRange(min=0.01),
    default=10.0,
    show_default=True,
    help="Largest request body, in MiB.",
)
@click.option(
    "--reload-interval",
    type=click.FloatRange(min=0.0),
    default=2.0,
    show_default=True,
    help="Seconds between checks for a new save by another process (0: never reload).",
)
@click.option(
    "--log-level",
    type=click.Choice(["critical", "error", "warning", "info", "debug"]),
    default="info",
    show_default=True,
    help="uvicorn's log level.",
)
@click.pass_obj
def serve(
    settings: Settings,
    kb: Path,
    host: str,
    port: int,
    token: str | None,
    answerer_kind: str,
    answer_model: str | None,
    min_score: float | None,
    max_upload_mb: float,
    reload_interval: float,
    log_level: str,
) -> None:
    """Serve KB over HTTP: search, ask (streamed), thumbnails and a web page at /.

    The knowledge base is opened read-only and followed: when another process saves it
    (`multimodal-rag index`), the new state is served within --reload-interval seconds.
    Listens on 127.0.0.1 unless --host says otherwise; set --token (or $MULTIMODAL_RAG_TOKEN)
    before listening anywhere else. Needs the server extra: pip install 'multimodal-rag[server]'.
    """
    from multimodal_rag._extras import require

    for module, package in (("starlette", None), ("uvicorn", None), ("multipart", "python-multipart")):
        require(module, user="multimodal-rag serve", extra="server", package=package)
    import uvicorn

    from multimodal_rag.server.app import ServerSettings, create_app
    from multimodal_rag.server.reloading import ReloadingKnowledgeBase

    if token is not None and not token.strip():
        raise click.BadParameter("the token must not be empty", param_hint="--token")
    _, answerer, reason = answerer_from_options(answerer_kind, answer_model, min_score)
    knowledge_base = ReloadingKnowledgeBase(
        kb, answerer=answerer, allow_modules=settings.allow_modules, allow_endpoints=settings.allow_endpoints
    )
    rag = knowledge_base.open()  # before listening: a knowledge base that cannot open fails here, plainly
    if answerer is None or reason is not None:
        answering = reason or rag.answerer_reason
    else:
        answering = f"answering with {rag.answerer!r}"
    click.echo(
        f"Serving {kb} ({len(rag)} images, generation {rag.generation}) on http://{_shown_host(host)}:{port}/ "
        f"with {'a bearer token' if token else 'no authentication'}; {answering}.",
        err=True,
    )
    if token is None and host not in ("127.0.0.1", "localhost", "::1"):
        click.echo("warning: listening beyond this machine without --token: anyone who can reach it can use it", err=True)
    app = create_app(
        knowledge_base,
        ServerSettings(
            token=token,
            max_upload_bytes=int(max_upload_mb * 1024 * 1024),
            reload_interval=reload_interval,
        ),
    )
    try:
        uvicorn.run(app, host=host, port=port, log_level=log_level, server_header=False, timeout_graceful_shutdown=5)
    except SystemExit as exc:
        # uvicorn logs why it could not start (a port in use) and exits with its own status;
        # the command's failures all exit with 1.
        if exc.code not in (None, 0):
            raise CommandFailed(f"the server could not start on {host}:{port} (uvicorn's message above says why)") from None
        raise


def _shown_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host
