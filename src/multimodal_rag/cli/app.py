"""The click group: global options, the settings they make, error mapping, and what commands share.

Every command module builds on this one: the ``KB`` argument and ``--json`` option,
the single ``KEY=VALUE`` parser, and opening a knowledge base with the global settings.
"""

from __future__ import annotations

import ast
import contextlib
import json
import os
import re
import sys
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from multimodal_rag._version import __version__

if TYPE_CHECKING:
    from multimodal_rag.protocols import Answerer, Embedder
    from multimodal_rag.rag import MultimodalRAG

__all__ = [
    "DOCS_PAGE",
    "EPILOG",
    "EXIT_FAILURE",
    "EXIT_OK",
    "EXIT_USAGE",
    "IMAGE",
    "JSON_OPTION",
    "KB_ARGUMENT",
    "CommandFailed",
    "Settings",
    "cli",
    "cli_message",
    "committing",
    "main",
    "open_kb",
    "parse_key_values",
]

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2

#: Where the documentation lives (``--json`` shapes, exit codes, every option): a page of the
#: source distribution, not a web address, because no site is published.
DOCS_PAGE = "docs/cli.md"


class CommandFailed(click.ClickException):
    """The operation failed: its message goes to stderr and the exit status is 1."""

    exit_code = EXIT_FAILURE

    def show(self, file: Any = None) -> None:
        click.echo(f"error: {self.format_message()}", err=True)


def _literal(text: str) -> str:
    value = ast.literal_eval(text)
    return value if isinstance(value, str) else text


#: The library's advice to Python callers, and what a command-line user does instead.
_CLI_HINTS: tuple[tuple[re.Pattern[str], Callable[[re.Match[str]], str]], ...] = (
    (
        re.compile(r"pass allow_modules=\[('[^']*'|\"[^\"]*\")\] to import it"),
        lambda m: f"allow it with --allow-module {_literal(m.group(1))}",
    ),
    (
        re.compile(r"pass MultimodalRAG\.open\(\.\.\., allow_endpoints=\[('[^']*'|\"[^\"]*\")\]\)"),
        lambda m: f"allow it with --allow-endpoint {_literal(m.group(1))}",
    ),
    (
        re.compile(r"open it with read_only=True to search it"),
        lambda m: "commands that only read it (search, ask, show, info, verify, eval) still work",
    ),
    (
        re.compile(r"pass allow_outside=True to accept it"),
        lambda m: "give --allow-outside to accept it",
    ),
)


def cli_message(message: str) -> str:
    """A library error's message, with advice for Python callers turned into command-line options."""
    for pattern, replace in _CLI_HINTS:
        message = pattern.sub(replace, message)
    return message


def _show_error(exc: click.ClickException) -> None:
    """Report a click error in the command's own style: ``error: ...`` on stderr.

    A usage error keeps click's usage line and help hint above it; an exception with
    its own way of showing itself (the help shown for no arguments) keeps that.
    """
    show = type(exc).show
    if show is click.UsageError.show:
        assert isinstance(exc, click.UsageError)
        ctx = exc.ctx
        if ctx is not None:
            hint = ""
            if ctx.command.get_help_option(ctx) is not None:
                hint = f"Try '{ctx.command_path} {ctx.help_option_names[0]}' for help.\n"
            click.echo(f"{ctx.get_usage()}\n{hint}", err=True)
        click.echo(f"error: {exc.format_message()}", err=True)
    elif show is click.ClickException.show:
        click.echo(f"error: {exc.format_message()}", err=True)
    else:
        exc.show()


def _silence_stdout() -> None:
    """After a closed pipe (``| head``), keep Python's final flush from failing again."""
    with contextlib.suppress(OSError, ValueError, AttributeError):
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())


class _Group(click.Group):
    """Turns any error of a command into a one-line message and exit status 1.

    With ``--debug`` the error propagates, so Python prints its traceback.
    """

    def main(
        self,
        args: Sequence[str] | None = None,
        prog_name: str | None = None,
        complete_var: str | None = None,
        standalone_mode: bool = True,
        **extra: Any,
    ) -> Any:
        """Run as click does, but report errors as ``error: ...`` and a closed pipe as success."""
        if not standalone_mode:
            return super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
        try:
            code = super().main(args, prog_name, complete_var, standalone_mode=False, **extra)
            sys.stdout.flush()
        except click.ClickException as exc:
            _show_error(exc)
            sys.exit(exc.exit_code)
        except click.Abort:
            click.echo("Aborted!", err=True)
            sys.exit(EXIT_FAILURE)
        except BrokenPipeError:  # on the last flush, after the command
            _silence_stdout()
            sys.exit(EXIT_OK)
        sys.exit(code if isinstance(code, int) else EXIT_OK)

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except (click.ClickException, click.exceptions.Exit, click.Abort):
            raise  # click reports these itself
        except BrokenPipeError:
            # The reader stopped reading (`| head -1`): it has what it wanted.
            _silence_stdout()
            ctx.exit(EXIT_OK)
        except Exception as exc:
            if ctx.params.get("debug"):
                raise
            from multimodal_rag.errors import MultimodalRAGError

            if isinstance(exc, MultimodalRAGError):
                message = cli_message(str(exc))
            else:  # not one of ours: most likely a bug, so say what it was
                message = (
                    f"unexpected {type(exc).__name__}: {exc} (run with --debug for the traceback)"
                )
            raise CommandFailed(message) from exc


class Settings:
    """Global options, shared by every command through the click context."""

    def __init__(
        self, debug: bool, allow_modules: Sequence[str], allow_endpoints: Sequence[str] = ()
    ) -> None:
        self.debug = debug
        self.allow_modules = tuple(allow_modules)
        self.allow_endpoints = tuple(allow_endpoints)


KB_ARGUMENT = click.argument("kb", type=click.Path(file_okay=False, path_type=Path))
JSON_OPTION = click.option(
    "--json",
    "as_json",
    is_flag=True,
    help="Print machine-readable JSON (its fields are documented in the page named below).",
)
#: Below every command's help; ``\b`` keeps click from rewrapping (and splitting) the page's name.
EPILOG = (
    "\b\nEvery option, the --json output and the exit codes are documented in\n"
    f"{DOCS_PAGE} of the source repository (`mkdocs serve` there shows it as a site)."
)
#: An image file given on the command line.
IMAGE = click.Path(exists=True, dir_okay=False, path_type=Path)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]}, epilog=EPILOG)
@click.version_option(__version__, prog_name="multimodal-rag")
@click.option(
    "--debug", is_flag=True, envvar="MULTIMODAL_RAG_DEBUG", help="Show tracebacks of errors."
)
@click.option(
    "--allow-module",
    "allow_modules",
    multiple=True,
    envvar="MULTIMODAL_RAG_ALLOW_MODULES",
    metavar="MODULE",
    help="Package whose classes a knowledge base may name as custom backends (repeatable).",
)
@click.option(
    "--allow-endpoint",
    "allow_endpoints",
    multiple=True,
    envvar="MULTIMODAL_RAG_ALLOW_ENDPOINTS",
    metavar="URL",
    help="Server a knowledge base may name that gets the environment's credentials, besides "
    "$MILVUS_URI and $DATABASE_URL (repeatable).",
)
@click.pass_context
def cli(
    ctx: click.Context, debug: bool, allow_modules: tuple[str, ...], allow_endpoints: tuple[str, ...]
) -> None:
    """Multimodal RAG: index images with their descriptions, find similar ones, answer questions.

    KB is a knowledge-base directory; `index` creates it on first use.
    """
    ctx.obj = Settings(debug, allow_modules, allow_endpoints)


def main(argv: Sequence[str] | None = None) -> None:
    """Run the command line (the ``multimodal-rag`` console script); exits with its status."""
    cli.main(args=list(argv) if argv is not None else None, prog_name="multimodal-rag")


def parse_key_values(pairs: Iterable[str], *, option: str | None = None) -> dict[str, Any]:
    """``KEY=VALUE`` pairs as a dict, each value read as JSON when it parses, else as text.

    Numbers, booleans and null thus compare as the JSON values they spell.

    Raises:
        click.BadParameter: A pair without ``=`` or without a key (named after ``option``).
    """
    from multimodal_rag.errors import InvalidInputError
    from multimodal_rag.validation import load_json

    values: dict[str, Any] = {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        if not sep or not key:
            raise click.BadParameter(f"expected KEY=VALUE, got {pair!r}", param_hint=option)
        try:
            values[key] = load_json(raw, what=f"the value of {key!r}")
        except InvalidInputError as exc:
            if not isinstance(exc.__cause__, json.JSONDecodeError):  # JSON, but too deep or too long
                raise click.BadParameter(str(exc), param_hint=option) from None
            values[key] = raw
    return values


def open_kb(
    kb: Path,
    settings: Settings,
    *,
    read_only: bool,
    salvage: bool = False,
    embedder: Embedder | None = None,
    answerer: Answerer | None = None,
) -> MultimodalRAG:
    """Open a knowledge base with the global settings.

    Without ``embedder`` the knowledge base rebuilds its own from the manifest.
    """
    from multimodal_rag.rag import MultimodalRAG

    return MultimodalRAG.open(
        kb,
        read_only=read_only,
        embedder=embedder,
        answerer=answerer,
        allow_modules=settings.allow_modules,
        allow_endpoints=settings.allow_endpoints,
        salvage=salvage,
    )


@contextlib.contextmanager
def committing(kb: Path, settings: Settings) -> Iterator[MultimodalRAG]:
    """Open for writing, then save; a failed save does not undo what was committed.

    Each change is durable in the journal when it returns, so a save that fails
    afterwards (a full disk) is a warning: the change stays, and the next open
    replays it.
    """
    from multimodal_rag.errors import KnowledgeBaseError

    rag = open_kb(kb, settings, read_only=False)
    try:
        yield rag
        try:
            rag.save()
        except KnowledgeBaseError as exc:
            click.echo(
                f"warning: the change is committed (in the journal, replayed on every open) but the "
                f"snapshot could not be written: {exc}",
                err=True,
            )
    finally:
        rag.close()
