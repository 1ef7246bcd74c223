"""Checking a knowledge base for damage, and rebuilding what can be rebuilt.

`verify_knowledge_base` looks for every way the parts of a knowledge base
can disagree: a vector without a description record, a record without a
vector, an image file that has gone (or, at a URL, that this reader could not check: refused
credentials are not a deleted photo), an image path leading out of the knowledge base that
the library never wrote (see `outside_image`), a vector that is not finite or not of
unit length, a vector store's copy of the metadata that differs from the records,
files on disk that no longer match the manifest's checksums, a damaged journal, and an
adapter file that is missing or changed (or raw vectors missing beside an adapted index).

`repair_knowledge_base` fixes what it can without losing a description:
it rebuilds the vector index from the vectors it still holds, re-embeds
records whose vector is missing (when their image is still on disk), gives
vectors without a record an empty one, copies the records' metadata again to a
vector store whose copy differs, removes an adapter whose file is missing or changed
(the index is rebuilt from the raw vectors kept beside it), and saves, which writes fresh
files with fresh checksums. What it cannot fix stays in its report.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, Any, overload

from attrs import field, frozen

from multimodal_rag._storage import MISSING, image_absence, image_exists, is_url
from multimodal_rag.types import Record, str_tuple

if TYPE_CHECKING:
    from multimodal_rag._kb.directory import KnowledgeBaseDirectory
    from multimodal_rag._kb.salvage import SalvageFindings
    from multimodal_rag.protocols import DescriptionStore, Embedder, VectorStore

__all__ = [
    "Problem",
    "ProblemKind",
    "RepairReport",
    "Repaired",
    "VerificationReport",
    "outside_image",
    "repair_knowledge_base",
    "verify_knowledge_base",
]

# Vectors are checked this many at a time, so memory stays flat on large knowledge bases.
_CHUNK = 4096


class ProblemKind:
    """The kinds of [`Problem`][multimodal_rag._verify.Problem] (plain strings, so reports serialise as JSON)."""

    VECTOR_WITHOUT_RECORD = "vector-without-record"
    RECORD_WITHOUT_VECTOR = "record-without-vector"
    MISSING_IMAGE = "missing-image"
    UNREACHABLE_IMAGE = "unreachable-image"
    IMAGE_OUTSIDE = "image-outside"
    BAD_VECTOR = "bad-vector"
    CORRUPT_FILE = "corrupt-file"
    UNREADABLE_VECTORS = "unreadable-vectors"
    LOST_RECORDS = "lost-records"
    LOST_CHANGES = "lost-changes"
    METADATA_COPY_DIFFERS = "metadata-copy-differs"
    ADAPTER_MISSING = "adapter-missing"
    ADAPTER_CHANGED = "adapter-changed"
    RAW_VECTOR_MISSING = "raw-vector-missing"
    TEXT_NOT_READ = "text-not-read"


@frozen(kw_only=True)
class Problem:
    """One thing wrong with a knowledge base.

    Attributes:
        kind: One of the [`ProblemKind`][multimodal_rag._verify.ProblemKind] strings.
        id: The image id concerned, or ``None`` for a problem with a file.
        detail: A sentence explaining the problem (naming the file, where there is one).
    """

    kind: str
    id: str | None
    detail: str

    def to_dict(self) -> dict[str, Any]:
        """The problem as JSON-ready values."""
        return {"kind": self.kind, "id": self.id, "detail": self.detail}


def _problems(value: Iterable[Problem]) -> tuple[Problem, ...]:
    return tuple(value)


@frozen(kw_only=True)
class VerificationReport:
    """What [`MultimodalRAG.verify`][multimodal_rag._rag.MultimodalRAG.verify] found.

    Attributes:
        problems: Every problem found, grouped by kind; empty when all is well.
        vectors: Number of vectors checked.
        records: Number of description records checked.
    """

    problems: tuple[Problem, ...] = field(converter=_problems, default=())
    vectors: int = 0
    records: int = 0

    @property
    def ok(self) -> bool:
        """True when no problem was found."""
        return not self.problems

    def of_kind(self, kind: str) -> list[Problem]:
        """The problems of one kind."""
        return [p for p in self.problems if p.kind == kind]

    def to_dict(self) -> dict[str, Any]:
        """The report as JSON-ready values (``ok`` included)."""
        return {
            "ok": self.ok,
            "vectors": self.vectors,
            "records": self.records,
            "problems": [problem.to_dict() for problem in self.problems],
        }

    def __str__(self) -> str:
        if self.ok:
            return f"ok: {self.vectors} vectors, {self.records} records, no problems"
        lines = [f"{len(self.problems)} problem(s) in {self.vectors} vectors and {self.records} records:"]
        lines += [f"  {p.kind}: {p.detail}" for p in self.problems]
        return "\n".join(lines)


@frozen(kw_only=True)
class RepairReport:
    """What [`MultimodalRAG.repair`][multimodal_rag._rag.MultimodalRAG.repair] did.

    Attributes:
        reembedded: Ids whose missing vector was rebuilt from their image.
        records_created: Ids of vectors that had no record and got an empty one.
        index_rebuilt: Whether the vector index was rebuilt from its stored vectors.
        metadata_copied: Ids whose metadata was copied again to the vector store, whose
            copy differed from the description store's.
        records_salvaged: Records read back from damaged description files.
        records_from_older_snapshot: Records recovered from the snapshot before the
            damaged one (possibly older versions of them).
        records_lost: How many description records could not be recovered anywhere.
        lost_ids: The ids among them, where known (their vectors got empty records).
        changes_lost: Committed journal entries the damaged journal no longer held.
        adapter_removed: An adapter whose file was missing or changed was removed: the
            index was rebuilt from the raw vectors kept beside it (see ``raw_vectors_lost``).
        raw_vectors_lost: Ids whose raw vector was damaged too: their vectors were made
            again from their images (``reembedded``), or, without an image, lost.
        text_read: Ids whose image's text was read again (the knowledge base reads text, and
            theirs was missing).
        set_aside: Where the damaged files were copied (under ``damaged/``) before
            being replaced; nothing is deleted.
        remaining: A verification after the repair: what could not be fixed.
    """

    reembedded: tuple[str, ...] = field(converter=str_tuple, default=())
    records_created: tuple[str, ...] = field(converter=str_tuple, default=())
    index_rebuilt: bool = False
    metadata_copied: tuple[str, ...] = field(converter=str_tuple, default=())
    records_salvaged: int = 0
    records_from_older_snapshot: int = 0
    records_lost: int = 0
    lost_ids: tuple[str, ...] = field(converter=str_tuple, default=())
    changes_lost: int = 0
    adapter_removed: bool = False
    raw_vectors_lost: tuple[str, ...] = field(converter=str_tuple, default=())
    set_aside: tuple[str, ...] = field(converter=str_tuple, default=())
    text_read: tuple[str, ...] = field(converter=str_tuple, default=())
    remaining: VerificationReport = field(factory=VerificationReport)

    @property
    def ok(self) -> bool:
        """True when nothing was lost and nothing is left to fix."""
        lost_vectors = set(self.raw_vectors_lost) - set(self.reembedded)
        return self.remaining.ok and not self.records_lost and not self.changes_lost and not lost_vectors

    def to_dict(self) -> dict[str, Any]:
        """The report as JSON-ready values (``ok`` included)."""
        return {
            "ok": self.ok,
            "reembedded": list(self.reembedded),
            "records_created": list(self.records_created),
            "index_rebuilt": self.index_rebuilt,
            "records_salvaged": self.records_salvaged,
            "records_from_older_snapshot": self.records_from_older_snapshot,
            "records_lost": self.records_lost,
            "lost_ids": list(self.lost_ids),
            "changes_lost": self.changes_lost,
            "adapter_removed": self.adapter_removed,
            "raw_vectors_lost": list(self.raw_vectors_lost),
            "set_aside": list(self.set_aside),
            "text_read": list(self.text_read),
            "remaining": self.remaining.to_dict(),
        }


def verify_knowledge_base(
    vector_store: VectorStore,
    description_store: DescriptionStore,
    *,
    directory: KnowledgeBaseDirectory | None = None,
    findings: SalvageFindings | None = None,
    raw_store: VectorStore | None = None,
    image_roots: Iterable[str | os.PathLike[str]] = (),
) -> VerificationReport:
    """Look for inconsistencies between a knowledge base's parts (see [`MultimodalRAG.verify`][multimodal_rag._rag.MultimodalRAG.verify]).

    Args:
        vector_store: The vectors.
        description_store: The records.
        directory: The knowledge base on disk, whose files are checked too.
        findings: What a salvaging open could not recover, reported as lost.
        raw_store: The raw vectors kept beside an adapted index; each indexed id should
            have one.
        image_roots: Folders images may lie in besides the knowledge base (see `outside_image`).
    """
    roots = tuple(os.fspath(root) for root in image_roots)
    problems: list[Problem] = []
    vector_ids = vector_store.ids()
    records = {record.id: _with_image_file(record, directory) for record in description_store}
    in_index = set(vector_ids)

    for id_ in vector_ids:
        if id_ not in records:
            problems.append(
                Problem(kind=ProblemKind.VECTOR_WITHOUT_RECORD, id=id_, detail=f"vector {id_!r} has no description record")
            )
    for id_ in records:
        if id_ not in in_index:
            problems.append(
                Problem(kind=ProblemKind.RECORD_WITHOUT_VECTOR, id=id_, detail=f"record {id_!r} has no vector")
            )
    for record in records.values():
        if directory is not None and record.image_path is not None and outside_image(directory.path, record.image_path, roots):
            problems.append(
                Problem(
                    kind=ProblemKind.IMAGE_OUTSIDE,
                    id=record.id,
                    detail=f"the image file {record.image_path!r} of {record.id!r} lies outside the knowledge "
                    "base, where the library never put it (a forged record?); the server will not show it",
                )
            )
        absence = image_absence(record.image_path) if record.image_path is not None else None
        if absence == MISSING:
            problems.append(
                Problem(
                    kind=ProblemKind.MISSING_IMAGE,
                    id=record.id,
                    detail=f"image file {record.image_path!r} of {record.id!r} is missing",
                )
            )
        elif absence is not None:
            problems.append(
                Problem(
                    kind=ProblemKind.UNREACHABLE_IMAGE,
                    id=record.id,
                    detail=f"the image of {record.id!r} could not be checked: {absence}",
                )
            )
    problems.extend(_vector_problems(vector_store, vector_ids))
    for id_ in _metadata_mismatches(vector_store, records.values()):
        problems.append(
            Problem(
                kind=ProblemKind.METADATA_COPY_DIFFERS,
                id=id_,
                detail=f"the vector store's copy of the metadata of {id_!r} differs from its record",
            )
        )
    if raw_store is not None:
        for id_ in vector_ids:
            if id_ not in raw_store:
                problems.append(
                    Problem(
                        kind=ProblemKind.RAW_VECTOR_MISSING,
                        id=id_,
                        detail=f"the raw vector of {id_!r} is missing (the adapter could not be removed or fitted again without it)",
                    )
                )
    problems.extend(_salvage_problems(findings))
    if directory is not None:
        problems.extend(_file_problems(directory))
    return VerificationReport(problems=problems, vectors=len(vector_ids), records=len(records))


def outside_image(kb: str | os.PathLike[str], image_path: str, roots: tuple[str, ...] = ()) -> bool:
    """Whether a record's image path leads out of the knowledge base ``kb`` in a way it should not.

    Paths are resolved against the knowledge base (symbolic links followed), so one stored
    relative to it and an absolute one are judged alike. A file inside ``kb`` or one of
    ``roots`` is fine. Without ``roots``, so is a file added from a folder, which the library
    stores as the absolute path it resolved to; a relative path, or one holding ``..``, that
    leads outside was never written by the library.
    """
    if is_url(image_path):  # from a bucket: outside only where roots are named and none holds it
        return bool(roots) and not any(image_path.startswith(root.rstrip("/") + "/") for root in roots if is_url(root))
    resolved = os.path.realpath(os.path.join(kb, image_path))
    for root in (kb, *roots):
        top = os.path.realpath(root)
        if resolved == top or resolved.startswith(top.rstrip(os.sep) + os.sep):
            return False
    added_from_a_folder = os.path.isabs(image_path) and os.path.normpath(image_path) == image_path
    return bool(roots) or not added_from_a_folder


def _salvage_problems(findings: SalvageFindings | None) -> Iterator[Problem]:
    """What a salvaging open could not recover (see `multimodal_rag._kb.salvage`)."""
    if findings is None:
        return
    if findings.records_lost:
        named = set(findings.lost_ids)
        for id_ in findings.lost_ids:
            yield Problem(
                kind=ProblemKind.LOST_RECORDS,
                id=id_,
                detail=f"the description record of {id_!r} was in a damaged file and could not be recovered",
            )
        if findings.records_lost > len(named):
            yield Problem(
                kind=ProblemKind.LOST_RECORDS,
                id=None,
                detail=f"{findings.records_lost - len(named)} description record(s) of the damaged snapshot could not be recovered",
            )
    if findings.changes_lost:
        yield Problem(
            kind=ProblemKind.LOST_CHANGES,
            id=None,
            detail=f"{findings.changes_lost} committed change(s) since the last save were lost with the damaged journal",
        )


def _metadata_mismatches(store: VectorStore, records: Iterable[Record]) -> list[str]:
    """Ids whose metadata copy in a vector store that filters by metadata differs from the record."""
    if not getattr(store, "filters_metadata", False):
        return []
    differ: list[str] = []
    batch: dict[str, Any] = {}
    for record in records:
        batch[record.id] = record.metadata
        if len(batch) == _CHUNK:
            differ.extend(store.metadata_mismatches(batch))
            batch = {}
    if batch:
        differ.extend(store.metadata_mismatches(batch))
    return differ


def _vector_problems(store: VectorStore, ids: list[str]) -> Iterator[Problem]:
    import numpy as np

    from multimodal_rag._validation import bad_vector_rows

    for start in range(0, len(ids), _CHUNK):
        chunk = ids[start : start + _CHUNK]
        try:
            vectors = np.asarray(store.get_vectors(chunk), dtype=np.float32)
        except Exception as exc:  # any failure here means the index itself is damaged
            yield Problem(
                kind=ProblemKind.UNREADABLE_VECTORS,
                id=None,
                detail=f"the vector store cannot return its stored vectors: {exc}",
            )
            return
        if vectors.shape != (len(chunk), store.dim):
            yield Problem(
                kind=ProblemKind.UNREADABLE_VECTORS,
                id=None,
                detail=f"the vector store returned shape {vectors.shape} for {len(chunk)} ids",
            )
            return
        # Not finite, all zeros, or not of unit norm: a vector that every store's add refuses.
        rows, reasons = bad_vector_rows(np.ascontiguousarray(vectors))
        for row, reason in zip(rows.tolist(), reasons):
            yield Problem(kind=ProblemKind.BAD_VECTOR, id=chunk[row], detail=f"the vector of {chunk[row]!r} {reason}")


def _file_problems(directory: KnowledgeBaseDirectory) -> Iterator[Problem]:
    from multimodal_rag._kb.journal import journal_problems
    from multimodal_rag._kb.manifest import read_manifest
    from multimodal_rag.errors import KnowledgeBaseAccessError, KnowledgeBaseError

    found: list[Problem] = []
    # A writer may save while we look, replacing the files the manifest names: look
    # again at the new manifest rather than report its predecessor's files as damaged.
    for _ in range(4):
        found = []
        try:
            manifest = read_manifest(directory.path)
            directory.check_layout()
        except KnowledgeBaseAccessError:
            raise
        except KnowledgeBaseError as exc:
            return iter([Problem(kind=ProblemKind.CORRUPT_FILE, id=None, detail=str(exc))])
        found.extend(_snapshot_problems(directory, manifest))
        for detail in journal_problems(directory.journal, manifest.generation, dim=manifest.embedder.dim):
            found.append(Problem(kind=ProblemKind.CORRUPT_FILE, id=None, detail=detail))
        if not found or read_manifest(directory.path).generation == manifest.generation:
            break
    return iter(found)


def _snapshot_problems(directory: KnowledgeBaseDirectory, manifest: Any) -> Iterator[Problem]:
    """The snapshot's files that fail their checks; the adapter's as its own kinds."""
    from multimodal_rag._kb.directory import ADAPTER, ADAPTER_FILE, damaged_parts
    from multimodal_rag.adapter.projection import Adapter
    from multimodal_rag.errors import CorruptFileError

    snapshot = directory.snapshot(manifest.generation)
    adapter_checked = False
    for path, reason in directory.check_snapshot(manifest):
        if ADAPTER in damaged_parts(snapshot, [(path, reason)]):
            adapter_checked = True
            missing = not path.exists()
            yield Problem(
                kind=ProblemKind.ADAPTER_MISSING if missing else ProblemKind.ADAPTER_CHANGED,
                id=None,
                detail=f"the adapter file {str(path)!r} {reason}; repair removes the adapter (the index is rebuilt from the raw vectors)",
            )
        else:
            yield Problem(kind=ProblemKind.CORRUPT_FILE, id=None, detail=f"knowledge-base file {str(path)!r} {reason}")
    if manifest.adapter is not None and not adapter_checked:
        # The file matches its checksum; the adapter it holds must be the one the manifest names.
        try:
            Adapter.load(
                snapshot / ADAPTER_FILE,
                sha256=manifest.adapter.sha256,
                dim=manifest.embedder.dim,
                rank=manifest.adapter.rank,
            )
        except CorruptFileError as exc:
            yield Problem(kind=ProblemKind.ADAPTER_CHANGED, id=None, detail=str(exc))


@frozen(kw_only=True)
class Repaired:
    """What `repair_knowledge_base` made: the vector store to use from now on, the raw
    vectors kept beside it (``None``: no adapter is applied any more), and its report."""

    vector_store: VectorStore
    report: RepairReport
    raw_store: VectorStore | None = None


def repair_knowledge_base(
    embedder: Embedder,
    vector_store: VectorStore,
    description_store: DescriptionStore,
    *,
    directory: KnowledgeBaseDirectory | None = None,
    findings: SalvageFindings | None = None,
    adapter: Any = None,
    raw_store: VectorStore | None = None,
) -> Repaired:
    """Rebuild what can be rebuilt (see [`MultimodalRAG.repair`][multimodal_rag._rag.MultimodalRAG.repair]), short of saving.

    The description store is repaired in place; the vector store may be replaced by
    a rebuilt one. The report's ``remaining`` is for the caller to fill in once it
    has saved. ``adapter`` is the applied adapter (``None`` also when a salvaging open
    left a damaged one out) and ``raw_store`` the raw vectors kept beside the index.
    """
    from multimodal_rag._kb.salvage import set_aside
    from multimodal_rag.protocols import copy_metadata

    # Copied aside before anything is rewritten: the user's data is never only deleted.
    set_aside_paths = set_aside(directory, list(findings.damaged_files)) if findings and directory else []
    adapter_removed = False
    raw_lost: list[str] = []
    if adapter is None and raw_store is not None:
        # The adapter's file is missing or changed: the index holds vectors no query can be
        # mapped into any more. Back to the raw vectors; those that are gone too are made
        # again from their images below, or reported lost.
        vector_store, raw_lost = _index_from_raw(vector_store, raw_store)
        raw_store, adapter_removed = None, True
    elif adapter is not None and raw_store is not None:
        raw_lost = _reembed_raw(embedder, vector_store, raw_store, description_store, directory)
    before = verify_knowledge_base(vector_store, description_store)
    index_rebuilt = adapter_removed
    if before.of_kind(ProblemKind.BAD_VECTOR) or before.of_kind(ProblemKind.UNREADABLE_VECTORS):
        vector_store = _rebuilt_index(vector_store)
        index_rebuilt = True

    created = []
    for problem in before.of_kind(ProblemKind.VECTOR_WITHOUT_RECORD):
        assert problem.id is not None
        if problem.id in vector_store:
            description_store.put([Record(id=problem.id)])
            created.append(problem.id)

    lost_vectors = [p.id for p in before.of_kind(ProblemKind.RECORD_WITHOUT_VECTOR) if p.id]
    reembedded = _reembed(
        embedder, vector_store, description_store, lost_vectors, adapter=adapter, raw_store=raw_store, directory=directory
    )
    # Last, so that vectors added or rebuilt above get their copy too; the records are the truth.
    recopy = _metadata_mismatches(vector_store, description_store)
    if recopy:
        copy_metadata(vector_store, description_store.get_many(recopy).values())
    report = RepairReport(
        reembedded=reembedded,
        records_created=created,
        index_rebuilt=index_rebuilt,
        metadata_copied=recopy,
        records_salvaged=findings.records_salvaged if findings else 0,
        records_from_older_snapshot=findings.records_from_older_snapshot if findings else 0,
        records_lost=findings.records_lost if findings else 0,
        lost_ids=findings.lost_ids if findings else (),
        changes_lost=findings.changes_lost if findings else 0,
        adapter_removed=adapter_removed,
        raw_vectors_lost=raw_lost,
        set_aside=[str(path) for path in set_aside_paths],
    )
    return Repaired(vector_store=vector_store, report=report, raw_store=raw_store)


def _index_from_raw(store: VectorStore, raw_store: VectorStore) -> tuple[VectorStore, list[str]]:
    """A fresh index of ``store``'s kind holding the raw vectors of its ids; the ids without one."""
    import numpy as np

    fresh: Any = type(store)(store.dim, **store.config())  # type: ignore[call-arg]
    ids = store.ids()
    have = [id_ for id_ in ids if id_ in raw_store]
    for start in range(0, len(have), _CHUNK):
        chunk = have[start : start + _CHUNK]
        fresh.add(chunk, np.asarray(raw_store.get_vectors(chunk), dtype=np.float32))
    return fresh, [id_ for id_ in ids if id_ not in raw_store]


@overload
def _with_image_file(record: Record, directory: KnowledgeBaseDirectory | None) -> Record: ...
@overload
def _with_image_file(record: None, directory: KnowledgeBaseDirectory | None) -> None: ...
def _with_image_file(record: Record | None, directory: KnowledgeBaseDirectory | None) -> Record | None:
    """``record`` with a kept image (stored relative to the knowledge base) by its absolute path."""
    return directory.with_image_file(record) if record is not None and directory is not None else record


def _reembed_raw(
    embedder: Embedder,
    store: VectorStore,
    raw_store: VectorStore,
    description_store: DescriptionStore,
    directory: KnowledgeBaseDirectory | None,
) -> list[str]:
    """Embed again the images of indexed ids whose raw vector is missing; the ids that stay without one."""
    from multimodal_rag.errors import ImageError, InvalidInputError

    missing = [id_ for id_ in store.ids() if id_ not in raw_store]
    records = description_store.get_many(missing)
    lost = []
    for id_ in missing:
        record = _with_image_file(records.get(id_), directory)
        try:
            if record is None or record.image_path is None or not image_exists(record.image_path):
                raise InvalidInputError("no image")
            raw_store.add([id_], embedder.embed_images([record.image_path]))
        except (ImageError, InvalidInputError):
            lost.append(id_)
    return lost


def _rebuilt_index(store: VectorStore) -> VectorStore:
    """A fresh store of the same kind holding every readable, valid vector of ``store``."""
    import numpy as np

    from multimodal_rag._validation import bad_vector_rows

    fresh: Any = type(store)(store.dim, **store.config())  # type: ignore[call-arg]
    for id_ in store.ids():
        try:
            vector = np.asarray(store.get_vectors([id_]), dtype=np.float32)
        except Exception:  # unreadable: the id is dropped; its record makes it re-embeddable
            continue
        if vector.ndim == 2 and not len(bad_vector_rows(vector)[0]):
            fresh.add([id_], vector)
    return fresh  # type: ignore[no-any-return]


def _reembed(
    embedder: Embedder,
    vector_store: VectorStore,
    description_store: DescriptionStore,
    ids: list[str],
    *,
    adapter: Any = None,
    raw_store: VectorStore | None = None,
    directory: KnowledgeBaseDirectory | None = None,
) -> list[str]:
    """Embed again the images of records that lost their vector, where the image is still there
    (through the adapter into the index, as they are into the raw store, while one is applied)."""
    from multimodal_rag.errors import ImageError, InvalidInputError

    done = []
    records = description_store.get_many(ids)
    for id_ in ids:
        record = _with_image_file(records.get(id_), directory)
        if record is None or record.image_path is None or not image_exists(record.image_path):
            continue
        try:
            vector = embedder.embed_images([record.image_path])
            vector_store.add([id_], vector if adapter is None else adapter.apply(vector, "image"))
            if raw_store is not None:
                raw_store.add([id_], vector)
        except (ImageError, InvalidInputError):
            continue  # stays reported as a record without a vector
        done.append(id_)
    return done
