"""The ``multimodal-rag`` command line: build, search, inspect, repair and move knowledge bases.

Every command takes the knowledge-base directory first. Commands that only read
(``search``, ``ask``, ``show``, ``info``, ``verify``) open it read-only, so they run
while another process is indexing. ``--json`` output is a stable interface, documented in
``docs/cli.md``.

Exit status: 0 when the command did what was asked, 1 when the operation failed
(the reason on stderr, with a traceback only under ``--debug``), 2 for bad usage
(unknown option, missing argument, a file that does not exist).
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from multimodal_rag._version import __version__

if TYPE_CHECKING:
    from multimodal_rag.kb.manifest import Manifest
    from multimodal_rag.protocols import Embedder
    from multimodal_rag.rag import MultimodalRAG
    from multimodal_rag.types import AddResult, Hit

__all__ = ["EXIT_FAILURE", "EXIT_OK", "EXIT_USAGE", "INDEX_KINDS", "cli", "main"]

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2

#: ``--index`` choices and the vector-store kinds they create.
INDEX_KINDS = {"flat": "faiss-flat", "hnsw": "faiss-hnsw", "hnswlib": "hnswlib", "ivf": "faiss-ivf"}


class CommandFailed(click.ClickException):
    """The operation failed: its message goes to stderr and the exit status is 1."""

    exit_code = EXIT_FAILURE

    def show(self, file: Any = None) -> None:
        click.echo(f"error: {self.format_message()}", err=True)


class _Group(click.Group):
    """Turns any error of a command into a one-line message and exit status 1.

    With ``--debug`` the error propagates, so Python prints its traceback.
    """

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except (click.ClickException, click.exceptions.Exit, click.Abort, BrokenPipeError):
            raise  # click reports these itself (a closed pipe, as in `| head`, quietly)
        except Exception as exc:
            if ctx.params.get("debug"):
                raise
            from multimodal_rag.errors import MultimodalRAGError

            if isinstance(exc, MultimodalRAGError):
                message = str(exc)
            else:  # not one of ours: most likely a bug, so say what it was
                message = (
                    f"unexpected {type(exc).__name__}: {exc} (run with --debug for the traceback)"
                )
            raise CommandFailed(message) from exc


class _Settings:
    """Global options, shared by every command through the click context."""

    def __init__(self, debug: bool, allow_modules: Sequence[str], allow_endpoints: Sequence[str] = ()) -> None:
        self.debug = debug
        self.allow_modules = tuple(allow_modules)
        self.allow_endpoints = tuple(allow_endpoints)


_KB = click.argument("kb", type=click.Path(file_okay=False, path_type=Path))
_JSON = click.option(
    "--json", "as_json", is_flag=True, help="Print machine-readable JSON (see docs/cli.md)."
)
_IMAGE = click.Path(exists=True, dir_okay=False, path_type=Path)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
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
    ctx.obj = _Settings(debug, allow_modules, allow_endpoints)


# -- index ---------------------------------------------------------------------


@cli.command()
@click.argument("directory", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option(
    "--kb",
    required=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="Knowledge base to create or extend.",
)
@click.option(
    "--descriptions",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help='JSON Lines of {"image_path": ..., "description": ...}; other keys become metadata.',
)
@click.option(
    "--embedder",
    "embedder_kind",
    default=None,
    metavar="KIND",
    help="Embedder of a new knowledge base: 'clip' (default) or package.module:Class.",
)
@click.option(
    "--model", default=None, help="CLIP model name, e.g. ViT-B/32 (weights download on first use)."
)
@click.option(
    "--checkpoint",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Local CLIP weights file (state_dict or TorchScript); nothing is downloaded.",
)
@click.option(
    "--device",
    default=None,
    help="Torch device for CLIP, e.g. cpu or cuda (default: cuda if present).",
)
@click.option(
    "--index",
    "index_kind",
    type=click.Choice(sorted(INDEX_KINDS)),
    default=None,
    help="Vector index of a new knowledge base (default: flat, exact search).",
)
@click.option(
    "--description-store",
    type=click.Choice(["jsonl", "sqlite"]),
    default=None,
    help="Where a new knowledge base keeps descriptions (default: sqlite).",
)
@click.option(
    "--batch-size",
    type=click.IntRange(min=1),
    default=32,
    show_default=True,
    help="Images embedded per batch.",
)
@click.option(
    "--recursive/--no-recursive", default=True, show_default=True, help="Include subfolders."
)
@click.option(
    "--progress/--no-progress",
    default=None,
    help="Progress bar on stderr (default: on a terminal).",
)
@_JSON
@click.pass_obj
def index(
    settings: _Settings,
    directory: Path,
    kb: Path,
    descriptions: Path | None,
    embedder_kind: str | None,
    model: str | None,
    checkpoint: Path | None,
    device: str | None,
    index_kind: str | None,
    description_store: str | None,
    batch_size: int,
    recursive: bool,
    progress: bool | None,
    as_json: bool,
) -> None:
    """Index every image under DIRECTORY into the knowledge base, creating it if needed.

    Images already in the knowledge base (same bytes) are not embedded again;
    unreadable images are skipped and listed, never stopping the rest.
    """
    from multimodal_rag.ingest.sources import DescriptionsFile
    from multimodal_rag.kb.manifest import MANIFEST_FILE, read_manifest
    from multimodal_rag.rag import MultimodalRAG

    if descriptions is not None:
        # Read once now, before a model is loaded or a knowledge base created, so a
        # bad file (a line that is not UTF-8, an entry leading outside DIRECTORY)
        # changes nothing; add_directory reads it again, cheaply next to embedding.
        DescriptionsFile(descriptions, directory)
    clip_options = {"model": model, "checkpoint": checkpoint, "device": device}
    exists = (kb / MANIFEST_FILE).is_file()
    if exists:  # refuse options that cannot apply before loading any model
        manifest = read_manifest(kb)
        _check_same_kind(
            manifest, "vector_store", INDEX_KINDS.get(index_kind or ""), "--index", index_kind
        )
        _check_same_kind(
            manifest,
            "description_store",
            description_store,
            "--description-store",
            description_store,
        )
    embedder = None  # an existing knowledge base rebuilds its own from the manifest
    if not exists or embedder_kind is not None or any(v is not None for v in clip_options.values()):
        embedder = _build_embedder(embedder_kind or "clip", clip_options, settings.allow_modules)
    if exists:
        rag = MultimodalRAG.open(
            kb, embedder=embedder, allow_modules=settings.allow_modules, allow_endpoints=settings.allow_endpoints
        )
    else:
        assert embedder is not None
        undo = _Undo(kb)
        rag = MultimodalRAG.create(
            kb,
            embedder=embedder,
            vector_store=INDEX_KINDS[index_kind or "flat"],
            description_store=description_store or "sqlite",
        )
    try:
        with rag:
            result = rag.add_directory(
                directory,
                descriptions=descriptions,
                recursive=recursive,
                batch_size=batch_size,
                progress=progress,
            )
            total = len(rag)
    except BaseException:
        # A first index that failed before committing anything takes back the knowledge
        # base it created, so a failure changes nothing (as docs/cli.md promises). Once a
        # batch is committed the knowledge base stays: a second run goes on from there.
        if not exists and len(rag) == 0:
            undo()
        raise
    if as_json:
        _print_json(_add_result_json(kb, result, created=not exists, total=total))
    else:
        _print_add_result(kb, result, created=not exists, total=total)


class _Undo:
    """Removes what creating a knowledge base at ``kb`` adds, and nothing that was there before.

    Made before the create: it notes the topmost folder that does not exist yet (the
    create makes it and any below it), or, for a folder that exists (empty, or with
    the leftovers of an interrupted create), the names already in it.
    """

    def __init__(self, kb: Path) -> None:
        self._top = Path(os.path.abspath(kb))
        while not self._top.parent.exists():
            self._top = self._top.parent
        self._folder = Path(os.path.abspath(kb))
        self._kept = {p.name for p in self._folder.iterdir()} if self._folder.is_dir() else None
        self._made = not os.path.lexists(self._folder)  # never remove a file that was there

    def __call__(self) -> None:
        import shutil

        # Best effort: the error that made the command fail is the one to report.
        if self._kept is None:
            if self._made:
                shutil.rmtree(self._top, ignore_errors=True)
            return
        for path in self._folder.iterdir():
            if path.name not in self._kept:
                if path.is_dir() and not path.is_symlink():
                    shutil.rmtree(path, ignore_errors=True)
                else:
                    path.unlink(missing_ok=True)


def _build_embedder(
    kind: str, clip_options: Mapping[str, Any], allow_modules: Sequence[str]
) -> Embedder:
    from multimodal_rag.registry import resolve

    given = {name: value for name, value in clip_options.items() if value is not None}
    if kind != "clip" and given:
        flags = ", ".join(f"--{name}" for name in given)
        raise click.UsageError(f"{flags} apply only to the clip embedder, not to {kind!r}")
    if "checkpoint" in given:  # recorded in the manifest: make it valid from any directory
        given["checkpoint"] = str(Path(given["checkpoint"]).resolve())
    cls = resolve("embedder", kind, allow_modules=allow_modules)
    return cls(**given)


def _check_same_kind(
    manifest: Manifest, role: str, wanted: str | None, flag: str, value: str | None
) -> None:
    actual = getattr(manifest, role).kind
    if wanted is not None and wanted != actual:
        raise click.UsageError(
            f"{flag} {value} applies only when creating a knowledge base; "
            f"this one already uses {actual!r}"
        )


def _add_result_json(kb: Path, result: AddResult, *, created: bool, total: int) -> dict[str, Any]:
    return {
        "kb": str(kb),
        "created": created,
        "added": list(result.added),
        "duplicates": [{"source": source, "id": id_} for source, id_ in result.duplicates],
        "skipped": [{"source": s.source, "reason": s.reason} for s in result.skipped],
        "undescribed": list(result.undescribed),
        "total": total,
    }


def _print_add_result(kb: Path, result: AddResult, *, created: bool, total: int) -> None:
    verb = "Created" if created else "Updated"
    click.echo(f"{verb} knowledge base {kb}: {total} image{'s' if total != 1 else ''} in total.")
    click.echo(f"  added:       {len(result.added)}")
    click.echo(f"  duplicates:  {len(result.duplicates)} (already indexed, not embedded again)")
    for source, id_ in result.duplicates:
        click.echo(f"    {_display_path(source)} = {id_}")
    click.echo(f"  skipped:     {len(result.skipped)}")
    for skipped in result.skipped:
        click.echo(f"    {_display_path(skipped.source)}: {skipped.reason}")
    if result.undescribed:
        click.echo(
            f"  without a description: {len(result.undescribed)} "
            "(add one with `multimodal-rag describe`)"
        )


# -- search and show -----------------------------------------------------------


@cli.command()
@_KB
@click.option("--image", type=_IMAGE, help="Query image.")
@click.option("--text", help="Query text (searched in the same space as the images).")
@click.option(
    "-k", "k", type=click.IntRange(min=1), default=5, show_default=True, help="How many matches."
)
@click.option(
    "--text-weight",
    type=click.FloatRange(0.0, 1.0),
    default=0.5,
    show_default=True,
    help="Weight of --text when both --image and --text are given.",
)
@click.option(
    "--where",
    multiple=True,
    metavar="KEY=VALUE",
    help="Keep only matches whose metadata has KEY=VALUE (repeatable).",
)
@_JSON
@click.pass_obj
def search(
    settings: _Settings,
    kb: Path,
    image: Path | None,
    text: str | None,
    k: int,
    text_weight: float,
    where: tuple[str, ...],
    as_json: bool,
) -> None:
    """Find the images most similar to an image, a text, or both."""
    if image is None and text is None:
        raise click.UsageError("give --image, --text, or both")
    metadata_filter = _parse_where(where)
    rag = _open(kb, settings, read_only=True)
    hits = rag.search(image=image, text=text, k=k, filter=metadata_filter, text_weight=text_weight)
    if as_json:
        _print_json(
            {
                "query": {"image": str(image) if image is not None else None, "text": text},
                "k": k,
                "hits": [_hit_json(rank, hit) for rank, hit in enumerate(hits, start=1)],
            }
        )
        return
    if not hits:
        click.echo("No matches (the knowledge base is empty, or nothing passes the filter).")
    for rank, hit in enumerate(hits, start=1):
        click.echo(f"{rank:>2}. {hit.score:.4f}  {_description(hit.description)}")
        where = _display_path(hit.image_path) if hit.image_path else "(no image file)"
        click.echo(f"    id {hit.id}  {where}")


@cli.command()
@_KB
@click.option("--image", type=_IMAGE, required=True, help="Query image.")
@click.option(
    "-k",
    "k",
    type=click.IntRange(min=1),
    default=4,
    show_default=True,
    help="How many matches to draw.",
)
@click.option(
    "--out",
    required=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="PNG file to write.",
)
@click.option(
    "--tile",
    type=click.IntRange(min=64),
    default=256,
    show_default=True,
    help="Side of each image, in pixels.",
)
@_JSON
@click.pass_obj
def show(
    settings: _Settings, kb: Path, image: Path, k: int, out: Path, tile: int, as_json: bool
) -> None:
    """Draw the query image beside its top-k matches, with scores and descriptions, as a PNG."""
    from multimodal_rag.contact_sheet import render_contact_sheet

    rag = _open(kb, settings, read_only=True)
    hits = rag.search(image=image, k=k)
    sheet = render_contact_sheet(image, hits, tile=tile)
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        sheet.save(out, format="PNG")
    except OSError as exc:
        raise CommandFailed(f"cannot write {str(out)!r}: {exc.strerror or exc}") from exc
    if as_json:
        _print_json(
            {
                "out": str(out),
                "width": sheet.width,
                "height": sheet.height,
                "hits": [_hit_json(rank, hit) for rank, hit in enumerate(hits, start=1)],
            }
        )
    else:
        click.echo(
            f"Wrote {out} ({sheet.width}x{sheet.height}): the query and {len(hits)} matches."
        )


@cli.command()
@_KB
@click.argument("question")
@click.option(
    "--image", type=_IMAGE, help="Your image: the search query, and shown to the answerer."
)
@click.option(
    "-k",
    "k",
    type=click.IntRange(min=1),
    default=3,
    show_default=True,
    help="Matches the answer may draw on.",
)
@click.option(
    "--where",
    multiple=True,
    metavar="KEY=VALUE",
    help="Use only matches whose metadata has KEY=VALUE.",
)
@click.option(
    "--answerer",
    "answerer_kind",
    type=click.Choice(["auto", "extractive", "openai"]),
    default="auto",
    show_default=True,
    help="auto: openai if OPENAI_API_KEY is set, else extractive (offline, quotes the best match)",
)
@click.option(
    "--answer-model",
    default=None,
    metavar="NAME",
    help="Model of the openai answerer, e.g. gpt-4o.",
)
@click.option("--stream", is_flag=True, help="Print the answer as it arrives.")
@_JSON
@click.pass_obj
def ask(
    settings: _Settings,
    kb: Path,
    question: str,
    image: Path | None,
    k: int,
    where: tuple[str, ...],
    answerer_kind: str,
    answer_model: str | None,
    stream: bool,
    as_json: bool,
) -> None:
    """Answer QUESTION about an image from the descriptions of its closest matches.

    Without --image the question itself is the search. The answerer is not stored
    with the knowledge base: OPENAI_API_KEY and OPENAI_BASE_URL choose the provider.
    """
    from multimodal_rag.rag import MultimodalRAG

    if stream and as_json:
        raise click.UsageError("--stream and --json cannot be combined")
    if answer_model is not None and answerer_kind == "extractive":
        raise click.UsageError("--answer-model applies to the openai answerer")
    answerer = _build_answerer(
        "openai" if answer_model is not None else answerer_kind, answer_model
    )
    rag = MultimodalRAG.open(
        kb,
        read_only=True,
        answerer=answerer,
        allow_modules=settings.allow_modules,
        allow_endpoints=settings.allow_endpoints,
    )
    if answerer is None and not as_json:
        click.echo(f"note: {rag.answerer_reason}", err=True)
    result = rag.ask(question, image=image, k=k, filter=_parse_where(where), stream=stream)
    if stream:
        with result:
            for chunk in result:
                click.echo(chunk, nl=False)  # click.echo flushes, so each chunk shows at once
            answer = result.answer
        click.echo()
    else:
        answer = result
    if as_json:
        _print_json(
            {
                "question": question,
                "image": str(image) if image is not None else None,
                "answer": answer.text,
                "model": answer.model,
                "sources": [
                    {
                        "id": s.id,
                        "score": s.score,
                        "description": s.description,
                        "image_path": s.image_path,
                    }
                    for s in answer.sources
                ],
                "usage": dict(answer.usage),
                "latency_s": answer.latency_s,
            }
        )
        return
    if not stream:
        click.echo(answer.text)
    if answer.sources:
        click.echo("\nSources:")
        for rank, source in enumerate(answer.sources, start=1):
            where_ = _display_path(source.image_path) if source.image_path else "(no image file)"
            click.echo(
                f"{rank:>2}. {source.score:.4f}  {_description(source.description)}  [{where_}]"
            )
    click.echo(f"\nAnswered by {answer.model or 'the answerer'} in {answer.latency_s:.2f} s.")


def _build_answerer(kind: str, model: str | None) -> Any:
    if kind == "extractive":
        from multimodal_rag.answerers.extractive import ExtractiveAnswerer

        return ExtractiveAnswerer()
    if kind == "openai":
        from multimodal_rag.answerers.openai import OpenAIAnswerer

        return OpenAIAnswerer(model=model) if model is not None else OpenAIAnswerer()
    return None  # the knowledge base chooses, and says why


def _parse_where(pairs: Iterable[str]) -> dict[str, Any] | None:
    metadata: dict[str, Any] = {}
    for pair in pairs:
        key, sep, raw = pair.partition("=")
        if not sep or not key:
            raise click.BadParameter(f"expected KEY=VALUE, got {pair!r}", param_hint="--where")
        try:  # numbers, booleans and null compare as the JSON values they spell
            metadata[key] = json.loads(raw)
        except json.JSONDecodeError:
            metadata[key] = raw
    return metadata or None


def _hit_json(rank: int, hit: Hit) -> dict[str, Any]:
    return {
        "rank": rank,
        "id": hit.id,
        "score": hit.score,
        "image_path": hit.image_path,
        "description": hit.description,
        "metadata": dict(hit.metadata),
    }


# -- inspecting and editing ----------------------------------------------------


@cli.command()
@_KB
@_JSON
def info(kb: Path, as_json: bool) -> None:
    """Show what a knowledge base is made of: model, index, counts, size, format.

    Reads only the manifest, so it works even where the model's weights are not available.
    """
    from multimodal_rag.kb.manifest import read_manifest

    manifest = read_manifest(kb).to_dict()
    counts = manifest["counts"]
    summary = {
        "kb": str(kb),
        **{key: manifest[key] for key in ("format", "format_version", "library_version", "generation", "created_at", "saved_at")},
        **{key: manifest[key] for key in ("embedder", "vector_store", "description_store")},
        "counts": {"vectors": counts.get("vectors"), "descriptions": counts.get("descriptions")},
        "size_bytes": _directory_size(kb),
    }
    if as_json:
        _print_json(summary)
        return
    embedder = summary["embedder"]
    vectors, descriptions = summary["vector_store"], summary["description_store"]
    rows = [
        ("knowledge base", str(kb)),
        (
            "images",
            f"{counts.get('vectors', '?')} vectors, "
            f"{counts.get('descriptions', '?')} description records",
        ),
        ("embedder", f"{embedder['kind']} {_config_text(embedder['config'])}, {embedder['dim']}-d"),
        ("fingerprint", embedder["fingerprint"]),
        (
            "vector index",
            f"{vectors['kind']} {_config_text(vectors['config'])}",
        ),
        (
            "descriptions",
            f"{descriptions['kind']} {_config_text(descriptions['config'])}",
        ),
        ("size on disk", _human_size(summary["size_bytes"])),
        (
            "format",
            f"{summary['format']} v{summary['format_version']}, "
            f"written by multimodal_rag {summary['library_version']}",
        ),
        ("created", summary["created_at"] or "?"),
        ("saved", f"{summary['saved_at'] or '?'} (generation {summary['generation']})"),
    ]
    width = max(len(name) for name, _ in rows)
    for name, value in rows:
        click.echo(f"{name:<{width}}  {value}")


@cli.command()
@_KB
@click.argument("ids", nargs=-1, required=True)
@click.option("--missing-ok", is_flag=True, help="Ignore ids that are not in the knowledge base.")
@_JSON
@click.pass_obj
def remove(
    settings: _Settings, kb: Path, ids: tuple[str, ...], missing_ok: bool, as_json: bool
) -> None:
    """Remove images (their vectors and descriptions) by id or unique id prefix.

    Nothing is removed when an id is unknown, unless --missing-ok is given.
    """
    with _committing(kb, settings) as rag:
        found, missing = _resolve_ids(rag, ids, missing_ok=missing_ok)
        removed = rag.remove(found)
        total = len(rag)
    if as_json:
        _print_json({"removed": found, "missing": missing, "total": total})
        return
    click.echo(f"Removed {removed} image{'s' if removed != 1 else ''}; {total} left.")
    for id_ in missing:
        click.echo(f"  not found: {id_}")


@cli.command()
@_KB
@click.argument("id")
@click.argument("text")
@_JSON
@click.pass_obj
def describe(settings: _Settings, kb: Path, id: str, text: str, as_json: bool) -> None:
    """Set the description of image ID (an id or unique id prefix) to TEXT, without re-embedding."""
    with _committing(kb, settings) as rag:
        (resolved,), _ = _resolve_ids(rag, [id], missing_ok=False)
        record = rag.describe(resolved, text)
    if as_json:
        _print_json(
            {
                "id": record.id,
                "image_path": record.image_path,
                "description": record.description,
                "metadata": dict(record.metadata),
            }
        )
    else:
        click.echo(f"{record.id}: {record.description}")


@cli.command()
@_KB
@_JSON
@click.pass_obj
def verify(settings: _Settings, kb: Path, as_json: bool) -> None:
    """Check that vectors, descriptions, image files and checksums agree.

    Exits with status 1, listing every problem, when something is wrong.
    """
    # Salvage: a file that fails its checksum is listed as a problem rather than refused.
    report = _open(kb, settings, read_only=True, salvage=True).verify()
    if as_json:
        _print_json(_verification_json(report))
    elif report.ok:
        click.echo(f"{kb}: ok ({report.vectors} vectors, {report.records} description records).")
    else:
        click.echo(
            f"{kb}: {len(report.problems)} problem{'s' if len(report.problems) != 1 else ''}"
        )
        for problem in report.problems:
            click.echo(f"  {problem.kind}: {problem.detail}")
        click.echo("Run `multimodal-rag repair` to rebuild what can be rebuilt.")
    if not report.ok:
        click.get_current_context().exit(EXIT_FAILURE)


@cli.command()
@_KB
@_JSON
@click.pass_obj
def repair(settings: _Settings, kb: Path, as_json: bool) -> None:
    """Rebuild what `verify` finds broken, without dropping any description.

    Damaged files are copied into KB/damaged/ first, and every record that can still be
    read (from the damaged file, the snapshot before it, or the journal) is kept.
    Exits with status 1 when records or changes could not be recovered, or problems
    remain (they are listed).
    """
    with _open(kb, settings, read_only=False, salvage=True) as rag:
        report = rag.repair()
    remaining = report.remaining
    if as_json:
        _print_json(
            {
                "ok": report.ok,
                "reembedded": list(report.reembedded),
                "records_created": list(report.records_created),
                "index_rebuilt": report.index_rebuilt,
                "records_salvaged": report.records_salvaged,
                "records_from_older_snapshot": report.records_from_older_snapshot,
                "records_lost": report.records_lost,
                "lost_ids": list(report.lost_ids),
                "changes_lost": report.changes_lost,
                "set_aside": [_display_path(path) for path in report.set_aside],
                "remaining": _verification_json(remaining),
            }
        )
    else:
        if report.set_aside:
            click.echo(f"Set {len(report.set_aside)} damaged file(s) aside:")
            for path in report.set_aside:
                click.echo(f"  {_display_path(path)}")
        if report.records_salvaged or report.records_from_older_snapshot or report.records_lost:
            click.echo(
                f"Recovered {report.records_salvaged} description record(s) from the damaged file(s) "
                f"and {report.records_from_older_snapshot} from the snapshot before."
            )
        click.echo(f"Re-embedded {len(report.reembedded)} image(s) whose vector was missing.")
        click.echo(
            f"Created {len(report.records_created)} empty record(s) for vectors without one."
        )
        if report.index_rebuilt:
            click.echo("Rebuilt the vector index from its stored vectors.")
        if report.records_lost:
            click.echo(
                f"LOST: {report.records_lost} description record(s) could not be recovered"
                + (f" (ids: {', '.join(report.lost_ids[:10])}{', ...' if len(report.lost_ids) > 10 else ''})" if report.lost_ids else "")
                + "."
            )
        if report.changes_lost:
            click.echo(f"LOST: {report.changes_lost} committed change(s) since the last save (damaged journal).")
        if not remaining.ok:
            click.echo(f"{len(remaining.problems)} problem(s) could not be fixed:")
            for problem in remaining.problems:
                click.echo(f"  {problem.kind}: {problem.detail}")
        elif report.ok:
            click.echo(f"{kb}: ok now.")
        else:
            click.echo(f"{kb}: consistent again, but with the losses above.")
    if not report.ok:
        click.get_current_context().exit(EXIT_FAILURE)


def _verification_json(report: Any) -> dict[str, Any]:
    return {
        "ok": report.ok,
        "vectors": report.vectors,
        "records": report.records,
        "problems": [{"kind": p.kind, "id": p.id, "detail": p.detail} for p in report.problems],
    }


def _resolve_ids(
    rag: MultimodalRAG, wanted: Iterable[str], *, missing_ok: bool
) -> tuple[list[str], list[str]]:
    """Full ids for ids or unique prefixes (at least 4 characters), and the ones not found."""
    from multimodal_rag.errors import InvalidInputError, NotFoundError

    every: list[str] | None = None
    found: list[str] = []
    missing: list[str] = []
    for id_ in wanted:
        if id_ in rag:
            found.append(id_)
            continue
        if every is None:
            every = rag.ids()
        matches = [known for known in every if known.startswith(id_)] if len(id_) >= 4 else []
        if len(matches) > 1:
            raise InvalidInputError(
                f"id prefix {id_!r} is ambiguous: it matches {len(matches)} images"
            )
        if matches:
            found.append(matches[0])
        else:
            missing.append(id_)
    if missing and not missing_ok:
        raise NotFoundError(
            f"no image with id {', '.join(map(repr, missing))} in the knowledge base; "
            "nothing was changed"
        )
    return list(dict.fromkeys(found)), missing


# -- offline tools -------------------------------------------------------------


@cli.command()
@click.argument("source", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.argument("target", type=click.Path(file_okay=False, path_type=Path))
@click.option(
    "--vector-store",
    default="faiss-flat",
    show_default=True,
    metavar="KIND",
    help="Vector store of the copy: faiss-flat, faiss-hnsw, faiss-ivf, hnswlib, milvus, ...",
)
@click.option(
    "--description-store",
    default="sqlite",
    show_default=True,
    metavar="KIND",
    help="Description store of the copy: sqlite, jsonl, postgres, ...",
)
@click.option(
    "--vector-option",
    "vector_options",
    multiple=True,
    metavar="KEY=VALUE",
    help="Setting of the new vector store, e.g. uri=http://milvus:19530 or collection=products "
    "(repeatable; VALUE is read as JSON when it parses).",
)
@click.option(
    "--description-option",
    "description_options",
    multiple=True,
    metavar="KEY=VALUE",
    help="Setting of the new description store, e.g. table=products (repeatable).",
)
@click.option(
    "--sample",
    type=click.IntRange(min=0),
    default=20,
    show_default=True,
    help="Stored vectors searched in both knowledge bases to compare them afterwards.",
)
@_JSON
@click.pass_obj
def migrate(
    settings: _Settings,
    source: Path,
    target: Path,
    vector_store: str,
    description_store: str,
    vector_options: tuple[str, ...],
    description_options: tuple[str, ...],
    sample: int,
    as_json: bool,
) -> None:
    """Copy the knowledge base SOURCE into a new one at TARGET with other stores.

    Nothing is re-embedded. Milvus and PostgreSQL are found through $MILVUS_URI and
    $DATABASE_URL (or uri=/dsn= options); their passwords are never written to TARGET.
    Exits with status 1 when the copy's counts or searches differ from the source's.
    """
    from multimodal_rag.kb.manifest import read_manifest
    from multimodal_rag.migrate import migrate as copy_knowledge_base
    from multimodal_rag.registry import resolve

    vs: Any = vector_store
    ds: Any = description_store
    if vector_options:
        dim = read_manifest(source).embedder.dim
        vs = resolve("vector_store", vector_store, allow_modules=settings.allow_modules)(
            dim, **_parse_options(vector_options)
        )
    if description_options:
        ds = resolve("description_store", description_store, allow_modules=settings.allow_modules)(
            **_parse_options(description_options)
        )
    report = copy_knowledge_base(
        source,
        target,
        vector_store=vs,
        description_store=ds,
        allow_modules=settings.allow_modules,
        sample=sample,
    )
    if as_json:
        _print_json(
            {
                "source": str(report.source),
                "target": str(report.target),
                "vectors": report.vectors[1],
                "descriptions": report.descriptions[1],
                "images": report.images,
                "sampled": report.sampled,
                "overlap": report.overlap,
            }
        )
    else:
        click.echo(
            f"Copied {report.vectors[1]} vectors, {report.descriptions[1]} descriptions and "
            f"{report.images} image file(s) from {source} to {target}."
        )
        click.echo(
            f"Searches for {report.sampled} stored vectors agree on "
            f"{report.overlap:.0%} of their results."
        )


def _parse_options(pairs: Iterable[str]) -> dict[str, Any]:
    options: dict[str, Any] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise click.BadParameter(f"expected KEY=VALUE, got {pair!r}")
        try:
            options[key] = json.loads(value)
        except json.JSONDecodeError:
            options[key] = value
    return options


@cli.command("random-checkpoint")
@click.argument("path", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of the random weights.")
@click.option("--force", is_flag=True, help="Overwrite the file if it exists.")
def random_checkpoint(path: Path, seed: int, force: bool) -> None:
    """Write a small CLIP checkpoint with RANDOM weights to PATH, for trying things offline.

    Every command works with it (index --checkpoint PATH), but its search results
    and answers are meaningless: use a real model for real retrieval.
    """
    from multimodal_rag.random_checkpoint import make_random_clip_checkpoint

    if path.exists() and not force:
        click.echo(f"{path} already exists; keeping it (use --force to overwrite).")
        return
    make_random_clip_checkpoint(path, seed=seed)
    click.echo(
        f"Wrote {path}: a small CLIP with random weights (seed {seed}); "
        "its retrieval is meaningless."
    )


# -- helpers -------------------------------------------------------------------


def _open(kb: Path, settings: _Settings, *, read_only: bool, salvage: bool = False) -> MultimodalRAG:
    """Open a knowledge base, rebuilding its embedder from the manifest."""
    from multimodal_rag.rag import MultimodalRAG

    return MultimodalRAG.open(
        kb,
        read_only=read_only,
        allow_modules=settings.allow_modules,
        allow_endpoints=settings.allow_endpoints,
        salvage=salvage,
    )


@contextlib.contextmanager
def _committing(kb: Path, settings: _Settings) -> Iterator[MultimodalRAG]:
    """Open for writing, then save; a failed save does not undo what was committed.

    Each change is durable in the journal when it returns, so a save that fails
    afterwards (a full disk) is a warning: the change stays, and the next open
    replays it.
    """
    from multimodal_rag.errors import KnowledgeBaseError

    rag = _open(kb, settings, read_only=False)
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


def _print_json(obj: Any) -> None:
    click.echo(json.dumps(obj, indent=2, ensure_ascii=False))


def _description(text: str | None) -> str:
    return text if text is not None else "(no description)"


def _display_path(path: str) -> str:
    """A path relative to the working directory when it lies under it, else as given."""
    try:
        relative = os.path.relpath(path)
    except ValueError:  # another drive, on Windows
        return path
    return path if relative.startswith("..") else relative


def _config_text(config: Mapping[str, Any] | None) -> str:
    if not config:
        return "(default settings)"
    return json.dumps(config, ensure_ascii=False, sort_keys=True)


def _directory_size(path: Path) -> int:
    total = 0
    for root, _dirs, files in os.walk(path):
        for name in files:
            with contextlib.suppress(OSError):  # a file removed while we walked
                total += os.lstat(os.path.join(root, name)).st_size
    return total


def _human_size(size: int) -> str:
    value = float(size)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if value < 1024 or unit == "GiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")


def main(argv: Sequence[str] | None = None) -> None:
    """Run the command line (the ``multimodal-rag`` console script); exits with its status."""
    cli.main(args=list(argv) if argv is not None else None, prog_name="multimodal-rag")
