"""``index``: create a knowledge base from a folder of images, or add to one."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from multimodal_rag.cli import output
from multimodal_rag.cli.app import JSON_OPTION, CommandFailed, Settings, open_kb

if TYPE_CHECKING:
    from multimodal_rag._kb.manifest import Component
    from multimodal_rag.protocols import Embedder
    from multimodal_rag.types import DescriptionStoreKind, VectorStoreKind

__all__ = ["DESCRIPTION_STORE_KINDS", "INDEX_KINDS", "index"]

#: ``--index`` choices and the registry's vector-store kinds they create (indexes kept in
#: the knowledge-base folder; a server-backed store is reached through ``migrate``).
INDEX_KINDS: dict[str, VectorStoreKind] = {"flat": "faiss-flat", "hnsw": "faiss-hnsw", "hnswlib": "hnswlib", "ivf": "faiss-ivf"}

#: ``--description-store`` choices: the registry's description-store kinds kept in the folder.
DESCRIPTION_STORE_KINDS: tuple[DescriptionStoreKind, ...] = ("jsonl", "sqlite")


class _Location(click.ParamType):  # type: ignore[type-arg]
    """A folder or file given by path (checked as ``click.Path`` checks it) or by URL (``s3://...``),
    which is checked when it is listed or read, with the environment's credentials."""

    name = "location"

    def __init__(self, *, folder: bool) -> None:
        self._path = click.Path(exists=True, file_okay=not folder, dir_okay=folder, path_type=Path)

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> str | Path:
        from multimodal_rag._storage import is_url, local_path

        if isinstance(value, str) and is_url(value):
            return value
        return self._path.convert(local_path(value) if isinstance(value, str) else value, param, ctx)


@click.command()
@click.argument("directory", metavar="SOURCE", type=_Location(folder=True))
@click.option(
    "--kb",
    required=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="Knowledge base to create or extend.",
)
@click.option(
    "--descriptions",
    type=_Location(folder=False),
    help='JSON Lines of {"image_path": ..., "description": ...}; other keys become metadata '
    "(a path, or a URL such as s3://bucket/descriptions.jsonl or a web address).",
)
@click.option(
    "--embedder",
    "embedder_kind",
    default=None,
    metavar="KIND",
    help="Embedder of a new knowledge base: 'clip' (default), 'open-clip' or package.module:Class.",
)
@click.option(
    "--model",
    default=None,
    help="Model name: for clip e.g. ViT-B/32, for open-clip e.g. ViT-B-16-SigLIP2 "
    "(weights download on first use).",
)
@click.option(
    "--pretrained",
    default=None,
    help="open-clip only: the weights' tag, e.g. webli (default) or openai.",
)
@click.option(
    "--checkpoint",
    type=click.Path(exists=True, path_type=Path),
    help="Local weights file (state_dict, TorchScript for clip, .safetensors for open-clip), "
    "or for open-clip a folder made by `fetch-model` (its model and tag are then the "
    "defaults of --model and --pretrained); nothing is downloaded.",
)
@click.option(
    "--tokenizer",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    help="open-clip only: local folder of the model's Hugging Face tokenizer (tokenizer.json).",
)
@click.option(
    "--device",
    default=None,
    help="Torch device for CLIP, e.g. cpu or cuda (default: cuda if present).",
)
@click.option(
    "--engine",
    type=click.Choice(["torch", "openvino"]),
    default=None,
    help="Engine for CLIP: torch (default) or openvino (pip install 'multimodal-rag[openvino]').",
)
@click.option(
    "--precision",
    type=click.Choice(["auto", "fp32", "bf16", "fp16", "int8"]),
    default=None,
    help="CLIP precision; auto (default) times those that pass the quality gate on first use. "
    "Another that fails the gate is an error, unless --allow-fallback.",
)
@click.option(
    "--allow-fallback",
    is_flag=True,
    help="Let a --precision that fails the quality gate fall back to the next one "
    "(int8, bf16, fp32) instead of failing.",
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
    type=click.Choice(DESCRIPTION_STORE_KINDS),
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
    "--allow-outside",
    is_flag=True,
    help="Accept descriptions-file entries and symbolic links that lead outside DIRECTORY.",
)
@click.option(
    "--allow-empty",
    is_flag=True,
    help="Accept a DIRECTORY with no images (a new knowledge base is then created empty).",
)
@click.option(
    "--progress/--no-progress",
    default=None,
    help="Progress bar on stderr (default: on a terminal).",
)
@click.option(
    "--sync",
    is_flag=True,
    help="Make the knowledge base match SOURCE: add new images, replace changed ones (keeping "
    "their description), remove those SOURCE no longer holds.",
)
@click.option("--dry-run", is_flag=True, help="With --sync: print what would change, and change nothing.")
@click.option(
    "--page-size",
    type=click.IntRange(min=1, max=1000),
    default=None,
    help="Keys per listing request of an S3 bucket (default: the server's, 1000).",
)
@click.option(
    "--ocr",
    is_flag=True,
    help="Read the text in each image (labels, model numbers) and keep reading it in later runs; "
    "needs pip install 'multimodal-rag[ocr]'.",
)
@click.option(
    "--ray",
    "ray_address",
    default=None,
    metavar="auto|ADDRESS",
    help="Embed on a Ray cluster: 'auto' (this machine's, or $RAY_ADDRESS) or its head's HOST:PORT; "
    "reading tasks decode, one model per worker, this process stores each batch "
    "(pip install 'multimodal-rag[ray]'; docs/scale-out.md).",
)
@JSON_OPTION
@click.pass_obj
def index(
    settings: Settings,
    directory: str | Path,
    kb: Path,
    descriptions: str | Path | None,
    embedder_kind: str | None,
    model: str | None,
    pretrained: str | None,
    checkpoint: Path | None,
    tokenizer: Path | None,
    device: str | None,
    engine: str | None,
    precision: str | None,
    allow_fallback: bool,
    index_kind: str | None,
    description_store: DescriptionStoreKind | None,
    batch_size: int,
    recursive: bool,
    allow_outside: bool,
    allow_empty: bool,
    progress: bool | None,
    sync: bool,
    dry_run: bool,
    page_size: int | None,
    ocr: bool,
    ray_address: str | None,
    as_json: bool,
) -> None:
    """Index every image under SOURCE into the knowledge base, creating it if needed.

    SOURCE is a folder or a URL: s3://bucket/prefix, gs://..., az://... (credentials from the
    environment; pip install 'multimodal-rag[s3]', [gcs] or [azure]). Images already in the
    knowledge base (same bytes) are not embedded again; unreadable images are skipped and
    listed, never stopping the rest. A SOURCE with no images fails the command (nothing is
    created) unless --allow-empty is given. With --sync, images SOURCE no longer holds are
    removed and changed ones replaced.
    """
    from multimodal_rag._ingest.sources import DescriptionsFile
    from multimodal_rag._kb.manifest import MANIFEST_FILE, read_manifest
    from multimodal_rag._rag import MultimodalRAG

    if ray_address is not None:
        from multimodal_rag._extras import check_installed

        if ocr:
            raise CommandFailed("--ocr does not run on Ray: index with --ray, then read the text with `multimodal-rag ocr KB`")
        if sync:
            raise CommandFailed("--sync does not run on Ray: --ray adds what SOURCE holds and the knowledge base lacks")
        check_installed("ray", user="--ray", extra="ray")  # before a knowledge base is created
    if descriptions is not None:
        # Read once now, before a model is loaded or a knowledge base created, so a
        # bad file (a line that is not UTF-8, an entry leading outside DIRECTORY)
        # changes nothing; add_directory reads it again, cheaply next to embedding.
        DescriptionsFile(descriptions, directory, allow_outside=allow_outside)
    clip_options = {
        "model": model,
        "pretrained": pretrained,
        "checkpoint": checkpoint,
        "tokenizer": tokenizer,
        "device": device,
        "engine": engine,
        "precision": precision,
        "allow_fallback": True if allow_fallback else None,
    }
    if dry_run and not sync:
        raise click.UsageError("--dry-run applies to --sync: give both")
    exists = (kb / MANIFEST_FILE).is_file()
    if sync and dry_run:
        _print_plan(kb, directory, settings, exists=exists, descriptions=descriptions, recursive=recursive, allow_outside=allow_outside, page_size=page_size, as_json=as_json)
        return
    # Before any model loads: a folder with no images is most often the wrong folder.
    _check_has_images(directory, recursive=recursive, allow_empty=allow_empty, exists=exists)
    if exists:  # refuse options that cannot apply before loading any model
        manifest = read_manifest(kb)
        _check_same_kind(manifest.vector_store, INDEX_KINDS.get(index_kind or ""), "--index", index_kind)
        _check_same_kind(
            manifest.description_store, description_store, "--description-store", description_store
        )
    embedder = None  # an existing knowledge base rebuilds its own from the manifest
    if exists and embedder_kind is None and set(_given(clip_options)) <= {"checkpoint", "tokenizer"}:
        # Only where its files are now: the knowledge base's own embedder, with those files.
        settings.checkpoint = checkpoint.resolve() if checkpoint is not None else None
        settings.tokenizer = tokenizer.resolve() if tokenizer is not None else None
    elif not exists or embedder_kind is not None or _given(clip_options):
        embedder = _build_embedder(embedder_kind or "clip", clip_options, settings.allow_modules)
    undo = None  # set when this command creates the knowledge base
    if exists:
        rag = open_kb(kb, settings, read_only=False, embedder=embedder)
    else:
        assert embedder is not None
        undo = _Undo(kb)
        rag = MultimodalRAG.create(
            kb,
            embedder=embedder,
            vector_store=INDEX_KINDS[index_kind or "flat"],
            description_store=description_store or "sqlite",
        )
        output.note_random_weights(getattr(embedder, "random_weights", False) is True)
    workers = None
    try:
        if ray_address is not None:
            result, total, workers = _index_on_ray(
                rag,
                kb,
                directory,
                ray_address,
                settings=settings,
                descriptions=descriptions,
                recursive=recursive,
                allow_outside=allow_outside,
                batch_size=batch_size,
                progress=progress,
                engine=engine,
                precision=precision,
            )
        else:
            with rag:
                if sync:
                    synced = rag.sync(
                        directory,
                        descriptions=descriptions,
                        recursive=recursive,
                        allow_outside=allow_outside,
                        batch_size=batch_size,
                        progress=progress,
                        page_size=page_size,
                        ocr=True if ocr else None,
                    )
                    assert synced.added is not None
                    result = synced.added
                    total = len(rag)
                    reads_text = read_manifest(kb).text_reader is not None
                    if as_json:
                        output.print_json(output.sync_result_json(kb, synced, created=not exists, total=total))
                    else:
                        output.print_sync_result(kb, synced, created=not exists, total=total, reads_text=reads_text)
                    return
                result = rag.add_directory(
                    directory,
                    descriptions=descriptions,
                    recursive=recursive,
                    allow_outside=allow_outside,
                    batch_size=batch_size,
                    progress=progress,
                    ocr=True if ocr else None,
                )
                total = len(rag)
    except BaseException:
        # A first index that failed before committing anything takes back the knowledge
        # base it created, so a failure changes nothing (as docs/cli.md promises). Once a
        # batch is committed the knowledge base stays: a second run goes on from there.
        if undo is not None and len(rag) == 0:
            undo()
        raise
    reads_text = read_manifest(kb).text_reader is not None
    if as_json:
        data = output.add_result_json(
            kb, result, created=not exists, total=total, reads_text=reads_text
        )
        if workers is not None:
            data["ray"] = workers.to_json()
        output.print_json(data)
    else:
        runtime = getattr(rag.embedder, "runtime", None)
        output.print_add_result(
            kb,
            result,
            created=not exists,
            total=total,
            reads_text=reads_text,
            runtime=runtime if isinstance(runtime, dict) else None,
        )
        if workers is not None:
            workers.print()


def _index_on_ray(
    rag: Any,
    kb: Path,
    directory: str | Path,
    address: str,
    *,
    settings: Settings,
    descriptions: str | Path | None,
    recursive: bool,
    allow_outside: bool,
    batch_size: int,
    progress: bool | None,
    engine: str | None,
    precision: str | None,
) -> tuple[Any, int, _RaySummary]:
    """``index --ray``: the knowledge base, saved and closed here, is opened by the Ray driver."""
    from multimodal_rag._distributed.ingest import ingest_on_ray

    rag.save()
    rag.close()
    report = ingest_on_ray(
        kb,
        directory,
        address=address,
        descriptions=descriptions,
        recursive=recursive,
        allow_outside=allow_outside,
        batch_size=batch_size,
        progress=progress,
        engine=engine,
        precision=precision,
        allow_modules=settings.allow_modules,
    )
    return report.result, report.total, _RaySummary(report)


class _RaySummary:
    """The throughput lines of ``index --ray``: overall and per worker."""

    def __init__(self, report: Any) -> None:
        self.report = report

    def to_json(self) -> dict[str, Any]:
        report = self.report
        return {
            "seconds": round(report.seconds, 3),
            "images_per_s": round(report.images_per_s, 2),
            "startup_seconds": round(report.startup_seconds, 3),
            "steady_images_per_s": round(report.steady_images_per_s, 2),
            "workers": [
                {
                    "worker": w.worker,
                    "runtime": w.runtime,
                    "images": w.images,
                    "images_per_s": round(w.images_per_s, 2),
                }
                for w in report.workers
            ],
        }

    def print(self) -> None:
        report = self.report
        click.echo(
            f"  on Ray:      {report.images_per_s:.1f} images/s overall in {report.seconds:.1f} s, "
            f"{len(report.workers)} worker(s); {report.startup_seconds:.1f} s to the first batch, "
            f"{report.steady_images_per_s:.1f} images/s after it"
        )
        for w in report.workers:
            click.echo(
                f"    {w.worker} ({w.runtime}): {w.images} images, {w.images_per_s:.1f} images/s while embedding"
            )


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


def _given(options: Mapping[str, Any]) -> dict[str, Any]:
    return {name: value for name, value in options.items() if value is not None}


def _print_plan(
    kb: Path,
    directory: str | Path,
    settings: Settings,
    *,
    exists: bool,
    descriptions: str | Path | None,
    recursive: bool,
    allow_outside: bool,
    page_size: int | None,
    as_json: bool,
) -> None:
    """``--sync --dry-run``: what a sync would change; read only, and nothing is created."""
    from multimodal_rag.types import SyncResult

    if exists:
        with open_kb(kb, settings, read_only=True) as rag:
            plan = rag.sync(directory, descriptions=descriptions, recursive=recursive, allow_outside=allow_outside, dry_run=True, page_size=page_size)
    else:  # no knowledge base yet: every image is new
        from multimodal_rag._ingest.sources import DescriptionsFile, Source

        source = Source(directory, recursive=recursive, allow_outside=allow_outside, page_size=page_size)
        if descriptions is not None:
            DescriptionsFile(descriptions, source.location, allow_outside=allow_outside)
        plan = SyncResult(new=[file.location for file in source.files()], dry_run=True)
    if as_json:
        output.print_json(output.sync_result_json(kb, plan, created=False, total=None))
    else:
        output.print_sync_result(kb, plan, created=False, total=None)


def _check_has_images(directory: str | Path, *, recursive: bool, allow_empty: bool, exists: bool) -> None:
    """Refuse a DIRECTORY without images (unless allowed); with --allow-empty, warn.

    Raises:
        CommandFailed: No image file under ``directory`` and ``allow_empty`` is false.
    """
    from multimodal_rag._images import IMAGE_SUFFIXES
    from multimodal_rag._ingest.sources import scan_images
    from multimodal_rag._storage import is_url

    if isinstance(directory, str) and is_url(directory):
        from multimodal_rag._ingest.sources import Source

        # The first page answers, and a missing bucket or refused credentials fail here,
        # before a model loads or a knowledge base is created.
        if next(Source(directory, recursive=recursive).files(), None) is not None:
            return
    else:
        files, unreadable = scan_images(Path(directory), recursive=recursive)
        if files or unreadable:
            return
    where = "or its subfolders" if recursive else "(subfolders not searched: --no-recursive)"
    found = (
        f"no images in {str(directory)!r} {where}: no file ends in "
        f"{', '.join(sorted(IMAGE_SUFFIXES))}"
    )
    if not allow_empty:
        what = "nothing was indexed" if exists else "no knowledge base was created"
        raise CommandFailed(f"{found}; {what}. Give --allow-empty to accept an empty folder")
    click.echo(f"warning: {found}", err=True)


def _build_embedder(
    kind: str, clip_options: Mapping[str, Any], allow_modules: Sequence[str]
) -> Embedder:
    from multimodal_rag._registry import resolve

    given = _given(clip_options)
    accepted = _EMBEDDER_OPTIONS.get(kind, set())
    refused = [name for name in given if name not in accepted]
    if refused:
        flags = ", ".join(f"--{name.replace('_', '-')}" for name in refused)
        takers = sorted(k for k, options in _EMBEDDER_OPTIONS.items() if set(refused) <= options)
        where = " and ".join(f"the {k} embedder" for k in takers) or "no embedder"
        raise click.UsageError(f"{flags} apply only to {where}, not to {kind!r}")
    for name in ("checkpoint", "tokenizer"):  # recorded in the manifest: valid from any directory
        if name in given:
            given[name] = str(Path(given[name]).resolve())
    if kind == "open-clip" and "checkpoint" in given and Path(given["checkpoint"]).is_dir():
        from multimodal_rag.embedders.model_folder import read_model_folder

        # A model folder names its model and tag: they need not be typed again.
        folder = read_model_folder(given["checkpoint"], check_hashes=False)
        given.setdefault("model", folder.model)
        given.setdefault("pretrained", folder.pretrained)
    cls: type[Embedder] = resolve("embedder", kind, allow_modules=allow_modules)
    return cls(**given)


#: The embedder options each built-in kind takes from the command line.
_EMBEDDER_OPTIONS = {
    "clip": {"model", "checkpoint", "device", "engine", "precision", "allow_fallback"},
    "open-clip": {
        "model", "pretrained", "checkpoint", "tokenizer", "device", "engine", "precision", "allow_fallback"
    },
}


def _check_same_kind(
    component: Component, wanted: str | None, flag: str, value: str | None
) -> None:
    """Refuse a creation-only option that asks for another kind than the knowledge base has."""
    if wanted is not None and wanted != component.kind:
        raise click.UsageError(
            f"{flag} {value} applies only when creating a knowledge base; "
            f"this one already uses {component.kind!r}"
        )
