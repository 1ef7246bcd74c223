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
    from multimodal_rag._rag import MultimodalRAG
    from multimodal_rag.protocols import Answerer, Embedder

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
    "embedder_with_weights",
    "main",
    "open_kb",
    "parse_key_values",
    "weights_options",
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
    (
        re.compile(r"create one with MultimodalRAG\.create\(\)"),
        lambda m: "create one with `multimodal-rag index DIRECTORY --kb KB`",
    ),
    # The weights a model loads from: what the loaders of embedders/ advise, as options.
    (
        re.compile(
            r"pass (?:CLIPEmbedder\(model=[^,]*, |OpenCLIPEmbedder\([^,]*, [^,]*, )"
            r"checkpoint=('[^']*')(?:, tokenizer=('[^']*'))?\)"
        ),
        lambda m: f"give --checkpoint {_literal(m.group(1))}"
        + (f" --tokenizer {_literal(m.group(2))}" if m.group(2) else ""),
    ),
    (
        re.compile(r"\(tokenizer= for models"),
        lambda m: "(--tokenizer for models",
    ),
    (
        re.compile(r"build (?:CLIPEmbedder|OpenCLIPEmbedder)\((checkpoint|tokenizer)='/absolute/path', \.\.\.\) "
                   r"and pass it as MultimodalRAG\.open\(path, embedder=\.\.\.\)"),
        lambda m: f"give --{m.group(1)} /absolute/path",
    ),
    (
        re.compile(r"pass (checkpoint|tokenizer|pretrained)=(?:('[^']*'))?"),
        lambda m: f"give --{m.group(1)}" + (f" {_literal(m.group(2))}" if m.group(2) else ""),
    ),
    (
        re.compile(r" or checkpoint=('[^']*')"),
        lambda m: f" or --checkpoint {_literal(m.group(1))}",
    ),
    (
        re.compile(r"\((with )?(model|pretrained)= "),
        lambda m: f"({m.group(1) or ''}--{m.group(2)} ",
    ),
    (
        re.compile(r"pass allow_torchscript=True if you trust the file, or convert"),
        lambda m: "the command line never runs one: convert",
    ),
    (
        re.compile(r"\. A knowledge base opened from its manifest never loads one: pass "
                   r"MultimodalRAG\.open\(path, embedder=CLIPEmbedder\(\.\.\., allow_torchscript=True\)\)"),
        lambda m: "",
    ),
    (
        re.compile(r" or pass answerer= to answer"),
        lambda m: " to answer",
    ),
    # A precision asked for that failed the quality gate (embedders/engines.py).
    (
        re.compile(r"Pass allow_fallback=True to accept"),
        lambda m: "Give --allow-fallback to accept",
    ),
    (
        re.compile(r"precision='auto' for the fastest"),
        lambda m: "--precision auto for the fastest",
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
    """Global options, shared by every command through the click context.

    ``checkpoint`` and ``tokenizer`` are set by a command's `weights_options`: where
    the knowledge base's model files are now, when they are no longer where it recorded them.
    """

    def __init__(
        self, debug: bool, allow_modules: Sequence[str], allow_endpoints: Sequence[str] = ()
    ) -> None:
        self.debug = debug
        self.allow_modules = tuple(allow_modules)
        self.allow_endpoints = tuple(allow_endpoints)
        self.checkpoint: Path | None = None
        self.tokenizer: Path | None = None


def _set_weights(ctx: click.Context, param: click.Parameter, value: Path | None) -> None:
    if value is not None:
        assert param.name is not None
        settings = ctx.find_object(Settings)
        assert settings is not None  # made by the group, before any command parses its options
        setattr(settings, param.name, value.resolve())


def weights_options(command: Any) -> Any:
    """--checkpoint and --tokenizer, for each command that loads the knowledge base's model.

    They go to `Settings` (not to the command's arguments): `open_kb` uses them.
    """
    for name, kind, text in reversed(
        [
            ("--checkpoint", click.Path(exists=True, path_type=Path),
             "The model's weights file (or open-clip model folder), when it is no longer where "
             "the knowledge base recorded it (`info` shows where); it must hold the same weights."),
            ("--tokenizer", click.Path(exists=True, file_okay=False, path_type=Path),
             "open-clip only: the model's tokenizer folder, when it is no longer where the "
             "knowledge base recorded it."),
        ]
    ):
        command = click.option(
            name, type=kind, expose_value=False, callback=_set_weights, help=text
        )(command)
    return command


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
    from multimodal_rag._validation import load_json
    from multimodal_rag.errors import InvalidInputError

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

    Without ``embedder`` the knowledge base rebuilds its own from the manifest (with the
    weights of ``--checkpoint``/``--tokenizer`` where given).
    """
    from multimodal_rag._rag import MultimodalRAG
    from multimodal_rag.cli.output import note_random_weights

    rag = MultimodalRAG.open(
        kb,
        read_only=read_only,
        embedder=embedder if embedder is not None else embedder_with_weights(kb, settings),
        answerer=answerer,
        allow_modules=settings.allow_modules,
        allow_endpoints=settings.allow_endpoints,
        salvage=salvage,
    )
    note_random_weights(getattr(rag.embedder, "random_weights", False) is True)
    return rag


#: The weights options each built-in embedder kind records in its manifest.
_WEIGHTS_TAKERS = {"clip": {"checkpoint"}, "open-clip": {"checkpoint", "tokenizer"}}


def embedder_with_weights(kb: Path, settings: Settings) -> Embedder | None:
    """The knowledge base's own embedder with its files where ``--checkpoint``/``--tokenizer`` say.

    ``None`` when neither was given: the knowledge base then builds it from its manifest. The
    embedder is built as the manifest says in every other respect (so a manifest still cannot
    opt into what only the caller may allow), and opening checks that it has the recorded
    fingerprint: the files must hold the same weights as before they moved.

    Raises:
        click.UsageError: An option that the knowledge base's embedder does not take.
    """
    given = {
        name: str(path)
        for name, path in (("checkpoint", settings.checkpoint), ("tokenizer", settings.tokenizer))
        if path is not None
    }
    if not given:
        return None
    from multimodal_rag._kb.manifest import read_manifest
    from multimodal_rag._registry import resolve
    from multimodal_rag._remote import build_from_manifest

    recorded = read_manifest(kb).embedder
    refused = sorted(set(given) - _WEIGHTS_TAKERS.get(recorded.kind, set()))
    if refused:
        takers = [kind for kind, names in _WEIGHTS_TAKERS.items() if set(refused) <= names]
        raise click.UsageError(
            f"{', '.join(f'--{name}' for name in refused)} does not apply to this knowledge base, "
            f"whose embedder is {recorded.kind!r} (only {' and '.join(takers)} knowledge bases take it)"
        )
    cls: type[Embedder] = resolve("embedder", recorded.kind, allow_modules=settings.allow_modules)
    return build_from_manifest(settings.allow_endpoints, cls, **{**recorded.config, **given})


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
