"""``serve``: the knowledge base over HTTP, with a web page (the ``server`` extra).

This command only reads options and runs uvicorn; the application lives in
`multimodal_rag.server`, imported when the command runs.
"""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import Any

import click

from multimodal_rag.cli import output
from multimodal_rag.cli.app import (
    KB_ARGUMENT,
    CommandFailed,
    Settings,
    cli_message,
    embedder_with_weights,
    weights_options,
)
from multimodal_rag.cli.query import answerer_from_options, answerer_options

__all__ = ["TOKEN_ENV", "serve"]

#: Environment variable the bearer token is read from when ``--token`` is not given.
TOKEN_ENV = "MULTIMODAL_RAG_TOKEN"
#: The languages of ``--lang``: those of `multimodal_rag.server.languages`, which is not
#: imported until the command runs (a test keeps the two lists the same).
PAGE_LANGUAGES = ("en", "fa")


@click.command()
@KB_ARGUMENT
@click.option(
    "--host",
    default="127.0.0.1",
    show_default=True,
    help="Address to listen on (0.0.0.0: every interface; beyond loopback it needs --token).",
)
@click.option("--port", type=click.IntRange(0, 65535), default=8000, show_default=True, help="Port to listen on.")
@click.option(
    "--token",
    envvar=TOKEN_ENV,
    default=None,
    metavar="TOKEN",
    help=f"Require 'Authorization: Bearer TOKEN' on /v1/ (default: ${TOKEN_ENV}; none: no authentication).",
)
@click.option(
    "--allow-unauthenticated",
    is_flag=True,
    help="Listen beyond this machine without --token (anyone who can reach it can use it).",
)
@click.option(
    "--allowed-host",
    "allowed_hosts",
    multiple=True,
    metavar="NAME",
    help="A name clients may reach the server by (the Host header), besides the address it "
    "listens on (repeatable; '*': any).",
)
@click.option(
    "--image-root",
    "image_roots",
    multiple=True,
    metavar="FOLDER",
    help="A folder outside KB, or a bucket's URL prefix (s3://bucket/photos), whose images "
    "thumbnails may show, such as the one images were added from (repeatable; by default only "
    "images inside KB are shown).",
)
@click.option(
    "--lang",
    "language",
    type=click.Choice(PAGE_LANGUAGES),
    default=None,
    help="The web page's language (en: English, fa: Persian) for every visitor; by default each "
    "browser's Accept-Language chooses, English when it names neither.",
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
    "--max-connections",
    type=click.IntRange(min=1),
    default=100,
    show_default=True,
    help="Most connections open at once (fewer if the descriptor limit is lower); more get 503 at once.",
)
@click.option(
    "--header-timeout",
    type=click.FloatRange(min=0.1),
    default=10.0,
    show_default=True,
    help="Seconds a client has to send a request's headers.",
)
@click.option(
    "--body-timeout",
    type=click.FloatRange(min=0.1),
    default=30.0,
    show_default=True,
    help="Seconds a client has to send a whole request body (408 after that).",
)
@click.option(
    "--log-level",
    type=click.Choice(["critical", "error", "warning", "info", "debug"]),
    default="info",
    show_default=True,
    help="uvicorn's log level.",
)
@weights_options
@click.pass_obj
def serve(
    settings: Settings,
    kb: Path,
    host: str,
    port: int,
    token: str | None,
    allow_unauthenticated: bool,
    allowed_hosts: tuple[str, ...],
    image_roots: tuple[str, ...],
    language: str | None,
    answerer_kind: str,
    answer_model: str | None,
    min_score: float | None,
    max_upload_mb: float,
    reload_interval: float,
    max_connections: int,
    header_timeout: float,
    body_timeout: float,
    log_level: str,
) -> None:
    """Serve KB over HTTP: search, ask (streamed), thumbnails and a web page at /.

    The knowledge base is opened read-only and followed: when another process saves it
    (`multimodal-rag index`), the new state is served within --reload-interval seconds.
    Listens on 127.0.0.1 unless --host says otherwise; listening anywhere else needs --token
    (or $MULTIMODAL_RAG_TOKEN), or --allow-unauthenticated. Thumbnails show only images inside
    KB and the --image-root folders. The page is in --lang's language, else in the one each
    browser asks for (Accept-Language), else in English. Needs the server extra: pip install 'multimodal-rag[server]'.
    """
    from multimodal_rag._extras import require

    for module, package in (("starlette", None), ("uvicorn", None), ("multipart", "python-multipart")):
        require(module, user="multimodal-rag serve", extra="server", package=package)
    import functools
    import logging

    import uvicorn

    from multimodal_rag.server.app import LOOPBACK_HOSTS, ServerSettings, create_app, servable_path
    from multimodal_rag.server.connections import GuardedH11Protocol
    from multimodal_rag.server.refusals import AcceptFailureFilter
    from multimodal_rag.server.reloading import ReloadingKnowledgeBase

    if token is not None and not token.strip():
        raise click.BadParameter("the token must not be empty", param_hint="--token")
    loopback = _is_loopback(host)
    if token is None and not loopback and not allow_unauthenticated:
        raise click.UsageError(
            f"--host {host} listens beyond this machine, where anyone who can reach it could use it: "
            f"set --token (or ${TOKEN_ENV}), or pass --allow-unauthenticated"
        )
    hosts = _allowed_hosts(host, loopback, allowed_hosts, LOOPBACK_HOSTS)
    connections = _connection_limit(max_connections)
    _, answerer, reason = answerer_from_options(answerer_kind, answer_model, min_score)
    knowledge_base = ReloadingKnowledgeBase(
        kb, embedder=embedder_with_weights(kb, settings), answerer=answerer, allow_modules=settings.allow_modules, allow_endpoints=settings.allow_endpoints
    )
    rag = knowledge_base.open()  # before listening: a knowledge base that cannot open fails here, plainly
    if answerer is None or reason is not None:
        answering = cli_message(reason or rag.answerer_reason)
    else:
        answering = f"answering with {rag.answerer!r}"
    click.echo(
        f"Serving {kb} ({len(rag)} images, generation {rag.generation}) on http://{_shown_host(host)}:{port}/ "
        f"with {'a bearer token' if token else 'no authentication'}; {answering}.",
        err=True,
    )
    output.note_random_weights(getattr(rag.embedder, "random_weights", False) is True)
    if token is None and not loopback:
        click.echo("warning: listening beyond this machine without --token: anyone who can reach it can use it", err=True)
    if connections < max_connections:
        click.echo(f"note: at most {connections} connections, as this process may open few files (ulimit -n)", err=True)
    roots = tuple(root if "://" in root else str(Path(root)) for root in image_roots)
    hidden = sum(
        1
        for record in rag.description_store
        if record.image_path is not None and servable_path(kb, record.image_path, roots) is None
    )
    if hidden:
        click.echo(
            f"note: the files of {hidden} images lie outside {kb} and every --image-root; their thumbnails "
            "are not shown (pass --image-root with the folder they were added from)",
            err=True,
        )
    app = create_app(
        knowledge_base,
        ServerSettings(
            token=token,
            max_upload_bytes=int(max_upload_mb * 1024 * 1024),
            reload_interval=reload_interval,
            allowed_hosts=hosts,
            body_timeout=body_timeout,
            image_roots=roots,
            language=language,
        ),
    )
    # asyncio logs each failed accept (descriptors exhausted) with a traceback; count them instead.
    logging.getLogger("asyncio").addFilter(AcceptFailureFilter())
    protocol: Any = functools.partial(GuardedH11Protocol, max_connections=connections, header_timeout=header_timeout)
    try:
        uvicorn.run(
            app,
            host=host,
            port=port,
            http=protocol,
            log_level=log_level,
            server_header=False,
            timeout_graceful_shutdown=5,
            timeout_keep_alive=5,
        )
    except SystemExit as exc:
        # uvicorn logs why it could not start (a port in use) and exits with its own status;
        # the command's failures all exit with 1.
        if exc.code not in (None, 0):
            raise CommandFailed(f"the server could not start on {host}:{port} (uvicorn's message above says why)") from None
        raise


def _shown_host(host: str) -> str:
    return f"[{host}]" if ":" in host else host


def _is_loopback(host: str) -> bool:
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # a name other than localhost may resolve anywhere


def _allowed_hosts(host: str, loopback: bool, extra: tuple[str, ...], loopback_names: frozenset[str]) -> frozenset[str]:
    """The names the Host header may give: those of the address listened on, and ``extra``."""
    try:
        wildcard = ipaddress.ip_address(host.strip("[]")).is_unspecified
    except ValueError:
        wildcard = False
    if wildcard and not extra:
        return frozenset({"*"})  # every interface: its names are not known here
    own = loopback_names if loopback or wildcard else frozenset({host.lower().strip("[]")})
    return own | frozenset(name.lower().strip("[]") for name in extra)


def _connection_limit(wanted: int) -> int:
    """``wanted``, or fewer where the descriptor limit would run out first.

    Beyond it every ``accept`` fails; the knowledge base's files, the model and the worker
    threads need descriptors too, so 64 are kept for them.
    """
    try:
        import resource
    except ImportError:  # Windows
        return wanted
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return wanted
    return max(1, min(wanted, soft - 64))
