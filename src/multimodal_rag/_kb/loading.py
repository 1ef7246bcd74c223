"""Loading a knowledge base: manifest → components → journal replay, with salvage and the reader retry.

`load` is what [`MultimodalRAG.open`][multimodal_rag._rag.MultimodalRAG.open] does before it builds the facade:
it reads the manifest, checks the snapshot's checksums (or, salvaging, notes
what is damaged), rebuilds the embedder and the two stores from their registry
kinds, loads the adapter and the raw vectors kept beside it (when one is applied),
replays the journal on top, and counts what a salvage could not recover.
A read-only load whose snapshot a writer's save replaces meanwhile starts again
on the new manifest.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import attrs
from attrs import frozen

from multimodal_rag._kb.directory import (
    ADAPTER,
    ADAPTER_FILE,
    RAW_VECTORS,
    KnowledgeBaseDirectory,
    damaged_parts,
)
from multimodal_rag._kb.journal import (
    Journal,
    JournalContents,
    SnapshotMovedError,
    load_journal,
    read_commit_record,
)
from multimodal_rag._kb.manifest import MANIFEST_FILE, EmbedderEntry, Manifest, read_manifest
from multimodal_rag._kb.salvage import SalvageFindings, salvage_descriptions
from multimodal_rag._registry import manifest_embedder_config, resolve
from multimodal_rag._remote import build_from_manifest
from multimodal_rag.errors import (
    CorruptFileError,
    EmbedderMismatchError,
    KnowledgeBaseNotFoundError,
    ManifestError,
)

__all__ = ["LoadedKnowledgeBase", "OpenedKnowledgeBase", "check_embedder", "load", "open_directory"]

# How often a read-only load starts again when a writer saves while it reads.
READER_RETRIES = 3


@frozen(kw_only=True)
class LoadedKnowledgeBase:
    """The parts of a knowledge base, as loaded from its directory."""

    manifest: Manifest
    embedder: Any
    vector_store: Any
    description_store: Any
    journal: JournalContents
    #: The adapter applied to the stored vectors (``None``: they are the raw ones, or its
    #: file was damaged and a salvaging load left it out).
    adapter: Any = None
    #: The embedder's raw vectors, kept while an adapter is applied.
    raw_store: Any = None
    #: What a salvaging load found damaged or lost; ``None`` when nothing was.
    findings: SalvageFindings | None


@frozen(kw_only=True)
class OpenedKnowledgeBase:
    """A knowledge-base directory opened for reading, or locked for writing with its journal resumed."""

    directory: KnowledgeBaseDirectory
    loaded: LoadedKnowledgeBase
    #: The journal to append to; ``None`` when opened read-only.
    journal: Journal | None
    #: The modules the caller allowed the manifest to name (a text reader is built from it later).
    allow_modules: tuple[str, ...] = ()


def open_directory(
    path: Path,
    *,
    embedder: Any,
    read_only: bool,
    salvage: bool,
    allow_modules: Iterable[str],
    allow_endpoints: tuple[str, ...],
) -> OpenedKnowledgeBase:
    """Open the knowledge base at ``path``: check its layout, take the writer's lock unless
    ``read_only``, `load` it, and for a writer clean up old snapshots and resume the journal.

    The lock is released again if anything fails. See [`MultimodalRAG.open`][multimodal_rag._rag.MultimodalRAG.open] for the errors.
    """
    allow_modules = tuple(allow_modules)
    directory = KnowledgeBaseDirectory(path)
    if not directory.path.is_dir():
        raise KnowledgeBaseNotFoundError(f"no knowledge base at {str(path)!r}")
    directory.check_layout()
    if directory.is_unfinished():
        raise KnowledgeBaseNotFoundError(
            f"{str(path)!r} holds only what an interrupted create left behind, no knowledge base; "
            "create it again (MultimodalRAG.create(path, ..., exist_ok=True) or `multimodal-rag index`), "
            "which cleans it up"
        )
    if not read_only:
        directory.lock()
    try:
        loaded = load(
            directory,
            embedder=embedder,
            read_only=read_only,
            salvage=salvage,
            allow_modules=allow_modules,
            allow_endpoints=allow_endpoints,
        )
        journal = None
        if not read_only:
            _store_relocated_image_paths(directory, loaded.description_store)
            generation = loaded.manifest.generation
            directory.remove_stale_snapshots(keep=generation)
            journal = Journal.resume(directory.journal, loaded.journal, generation)
    except BaseException:
        directory.unlock()
        raise
    return OpenedKnowledgeBase(directory=directory, loaded=loaded, journal=journal, allow_modules=allow_modules)


def _store_relocated_image_paths(directory: KnowledgeBaseDirectory, description_store: Any) -> None:
    """Name the kept images of records written by earlier versions relative to the knowledge base.

    Earlier versions stored them under the folder's path as it was given then (``kb/images/…``,
    or absolute), which breaks when the folder moves, is copied or is opened from another
    working directory. Reading finds them here either way
    (`KnowledgeBaseDirectory.image_file`); a writer also stores them anew, saved with the
    next save. Records whose image is not in this knowledge base's ``images/`` are left as they are.
    """
    try:
        if not any(directory.images.iterdir()):
            return
    except OSError:
        return  # no images kept from memory
    moved = []
    for record in description_store:
        relocated = directory.relocated_image_path(record.image_path)
        if relocated is not None:
            moved.append(attrs.evolve(record, image_path=relocated))
    if moved:
        description_store.put(moved)


def load(
    directory: KnowledgeBaseDirectory,
    *,
    embedder: Any = None,
    read_only: bool,
    salvage: bool,
    allow_modules: Iterable[str],
    allow_endpoints: tuple[str, ...],
) -> LoadedKnowledgeBase:
    """Load the knowledge base in ``directory`` (see [`MultimodalRAG.open`][multimodal_rag._rag.MultimodalRAG.open] for the errors)."""
    for attempt in range(READER_RETRIES + 1):
        manifest = read_manifest(directory.path)
        try:
            return _load_once(
                directory,
                manifest,
                embedder=embedder,
                salvage=salvage,
                allow_modules=allow_modules,
                allow_endpoints=allow_endpoints,
            )
        except CorruptFileError as exc:
            # A reader races the writer's saves: the snapshot its manifest named may be
            # replaced while it loads. Only a manifest that moved on is retried.
            moved = read_manifest(directory.path).generation != manifest.generation
            if read_only and moved and attempt < READER_RETRIES:
                continue
            if isinstance(exc, SnapshotMovedError) and not moved:
                raise _older_manifest(directory, manifest.generation, exc) from exc
            raise
    raise AssertionError("unreachable: the last attempt returns or raises")


def _load_once(
    directory: KnowledgeBaseDirectory,
    manifest: Manifest,
    *,
    embedder: Any,
    salvage: bool,
    allow_modules: Iterable[str],
    allow_endpoints: tuple[str, ...],
) -> LoadedKnowledgeBase:
    generation = manifest.generation
    commit = read_commit_record(directory.journal)
    if commit is not None and commit.generation > generation:
        # Checked first: the older snapshot's files are likely gone, which would be reported
        # as damage. Unless a writer saved meanwhile, `load` says what it really is.
        raise SnapshotMovedError(f"the journal's commit record is for snapshot {commit.generation}, newer than {generation}")
    snapshot = directory.snapshot(generation)
    # Each file is hashed once: for the parts to salvage, and for the files to set aside.
    problems = directory.check_snapshot(manifest)
    damaged = damaged_parts(snapshot, problems)
    if not salvage:
        for path, reason in problems:
            if ADAPTER in damaged_parts(snapshot, [(path, reason)]):
                raise CorruptFileError(
                    f"the adapter file {str(path)!r} {reason}; the index holds vectors mapped by it, so "
                    "the knowledge base cannot be searched without it. `multimodal-rag repair` "
                    "(MultimodalRAG.open(path, salvage=True).repair()) removes the adapter and "
                    "restores the embedder's own vectors"
                )
            raise CorruptFileError(f"knowledge-base file {str(path)!r} {reason}")
    recorded = manifest.embedder
    if embedder is None:
        embedder_cls = resolve("embedder", recorded.kind, allow_modules=allow_modules)
        config = manifest_embedder_config(recorded.kind, recorded.config, source=repr(str(directory.path / MANIFEST_FILE)))
        embedder = build_from_manifest(allow_endpoints, embedder_cls, **config)
    check_embedder(embedder, recorded, str(directory.path))
    vs_cls = resolve("vector_store", manifest.vector_store.kind, allow_modules=allow_modules)
    ds_cls = resolve("description_store", manifest.description_store.kind, allow_modules=allow_modules)
    vs_config, ds_config = manifest.vector_store.config, manifest.description_store.config
    if "vectors" in damaged:
        vector_store = build_from_manifest(allow_endpoints, vs_cls, recorded.dim, **vs_config)
    else:
        vector_store = build_from_manifest(
            allow_endpoints, vs_cls.load, snapshot / "vectors", dim=recorded.dim, **vs_config
        )
    adapter, raw_store, adapter_problem = _load_adapter(directory, manifest, damaged, problems, salvage=salvage)
    snapshot_ids = None if "vectors" in damaged else set(vector_store.ids())
    description_store = None
    if "descriptions" not in damaged:
        try:
            description_store = build_from_manifest(allow_endpoints, ds_cls.load, snapshot / "descriptions", **ds_config)
        except CorruptFileError as exc:
            if not salvage:
                raise
            # Files whose checksums match but which their store refuses (crafted, or written
            # by a faulty store) are damage like any other: salvaged, reported, set aside.
            refused = [
                (snapshot / name, f"is refused by its store: {exc}")
                for name in manifest.files
                if name.startswith("descriptions/")
            ]
            problems = [*problems, *refused]
            damaged = damaged | {"descriptions"}
    salvaged = from_older = 0
    if description_store is None:
        description_store, salvaged, from_older = build_from_manifest(
            allow_endpoints, salvage_descriptions, ds_cls, ds_config, directory, generation, expected_ids=snapshot_ids
        )
    journal = load_journal(
        directory.journal, generation, vector_store, description_store, salvage=salvage, adapter=adapter, raw_store=raw_store
    )
    if damaged and read_manifest(directory.path).generation != generation:
        # What looked damaged was a snapshot a writer's save replaced meanwhile.
        raise SnapshotMovedError(f"snapshot {generation} was replaced while it was read")
    findings = None
    if damaged or journal.lost_entries or adapter_problem:
        findings = _findings(
            manifest,
            damaged,
            [str(path) for path, _ in problems],
            vector_store,
            description_store,
            snapshot_ids,
            salvaged=salvaged,
            from_older=from_older,
            changes_lost=journal.lost_entries,
            adapter_problem=adapter_problem,
            raw_vectors_damaged=RAW_VECTORS in damaged,
        )
    return LoadedKnowledgeBase(
        adapter=adapter,
        raw_store=raw_store,
        manifest=manifest,
        embedder=embedder,
        vector_store=vector_store,
        description_store=description_store,
        journal=journal,
        findings=findings,
    )


def _older_manifest(directory: KnowledgeBaseDirectory, generation: int, exc: SnapshotMovedError) -> ManifestError:
    """The error for a manifest older than the journal beside it (no writer saved meanwhile)."""
    commit = read_commit_record(directory.journal)
    newer = f"snapshot {commit.generation}" if commit is not None else "a later snapshot"
    return ManifestError(
        f"the manifest {str(directory.path / MANIFEST_FILE)!r} names snapshot {generation}, but the journal "
        f"beside it was written after {newer} was saved ({exc}): manifest.json is older than the journal, "
        "an older copy put back (from a backup, or a copy of the folder). Nothing was changed. Put back "
        f"the manifest.json written with {newer}; or, to go back to snapshot {generation} if its files are "
        "still there, giving up every change since, move journal.bin and journal.commit out of the folder"
    )


def _load_adapter(
    directory: KnowledgeBaseDirectory,
    manifest: Manifest,
    damaged: set[str],
    problems: list[tuple[Path, str]],
    *,
    salvage: bool,
) -> tuple[Any, Any, str | None]:
    """The adapter, the raw-vector store beside it, and what is wrong with the adapter's file.

    Only a salvaging load gets this far with a damaged part: a damaged adapter is left out
    (``None``, with the reason), damaged raw vectors start empty.

    Raises:
        CorruptFileError: The adapter file is not the adapter the manifest names.
    """
    entry = manifest.adapter
    if entry is None:
        return None, None, None
    from multimodal_rag.adapter.projection import Adapter

    if entry.file != ADAPTER_FILE:
        raise CorruptFileError(f"the manifest names the adapter file {entry.file!r}; only {ADAPTER_FILE!r} is read")
    snapshot = directory.snapshot(manifest.generation)
    path = snapshot / ADAPTER_FILE
    adapter = problem = None
    if ADAPTER in damaged:
        reasons = [reason for file, reason in problems if ADAPTER in damaged_parts(snapshot, [(file, reason)])]
        problem = f"the adapter file {str(path)!r} {reasons[0] if reasons else 'is damaged'}"
        if reasons and all(reason.startswith("is corrupt:") for reason in reasons):
            # The manifest's checksum of the file may be what was damaged: the adapter's own
            # digest, recorded apart from it, says whether the weights are the ones applied.
            # An intact adapter is kept; the next save records the file's checksum again.
            with contextlib.suppress(CorruptFileError):
                adapter = Adapter.load(path, sha256=entry.sha256, dim=manifest.embedder.dim, rank=entry.rank)
                problem = None
    else:
        try:
            adapter = Adapter.load(path, sha256=entry.sha256, dim=manifest.embedder.dim, rank=entry.rank)
        except CorruptFileError as exc:
            if not salvage:
                raise
            problem = str(exc)
    flat = resolve("vector_store", "faiss-flat")
    raw_store = flat(manifest.embedder.dim) if RAW_VECTORS in damaged else flat.load(snapshot / RAW_VECTORS, dim=manifest.embedder.dim)
    return adapter, raw_store, problem


def check_embedder(embedder: Any, recorded: EmbedderEntry, where: str) -> None:
    """Refuse an embedder other than the one the knowledge base at ``where`` was built with.

    Raises:
        EmbedderMismatchError: Another dimension or fingerprint; names both.
    """
    if embedder.dim != recorded.dim or embedder.fingerprint != recorded.fingerprint:
        checkpoint = recorded.config.get("checkpoint")
        if checkpoint is not None and str(getattr(embedder, "checkpoint", None)) == str(checkpoint):
            # The same file named on both sides: what differs is what the file holds now.
            raise EmbedderMismatchError(
                f"knowledge base {where!r} was built with the weights file {checkpoint!r} as it was then "
                f"({recorded.fingerprint!r}); the file has changed since ({embedder.fingerprint!r}). "
                "Put the original file back, or rebuild the knowledge base with the new weights"
            )
        raise EmbedderMismatchError(
            f"knowledge base {where!r} was built with embedder {recorded.fingerprint!r} "
            f"({recorded.dim}-d), but the embedder given is {embedder.fingerprint!r} ({embedder.dim}-d); "
            "open it with the same model and weights, or rebuild it"
        )


def _findings(
    manifest: Manifest,
    damaged: set[str],
    damaged_files: list[str],
    vector_store: Any,
    description_store: Any,
    snapshot_ids: set[str] | None,
    *,
    salvaged: int,
    from_older: int,
    changes_lost: int,
    adapter_problem: str | None,
    raw_vectors_damaged: bool,
) -> SalvageFindings:
    """Count what a salvaging load could not read back (see `multimodal_rag._kb.salvage`)."""
    lost_ids: list[str] = []
    records_lost = 0
    if "descriptions" in damaged:
        if snapshot_ids is not None:
            # Every vector had a record when the snapshot was saved: those still without one are lost.
            lost_ids = sorted(id_ for id_ in snapshot_ids if id_ in vector_store and id_ not in description_store)
            records_lost = len(lost_ids)
        else:
            saved = manifest.counts.get("descriptions")
            records_lost = max(0, saved - salvaged - from_older) if saved is not None else 0
    return SalvageFindings(
        damaged_files=damaged_files,
        records_salvaged=salvaged,
        records_from_older_snapshot=from_older,
        lost_ids=lost_ids,
        records_lost=records_lost,
        changes_lost=changes_lost,
        adapter_problem=adapter_problem,
        raw_vectors_damaged=raw_vectors_damaged,
    )
