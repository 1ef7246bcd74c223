"""The write-ahead journal: every committed change since the last save, durable on disk.

A save writes a whole snapshot, which costs time in proportion to the knowledge
base. Between saves, each committed change (an ingest batch, a removal, a
description edit) is appended to ``journal.bin`` beside the manifest and
fsynced before the call that made it returns, so a crash loses nothing that was
reported as committed. Opening the knowledge base replays the journal on top of
the snapshot; the next save folds it into a new snapshot and starts an empty one.

File format (all integers little-endian):

```text
header   b"MRAGJRNL" | u32 version | u64 generation
entry    u32 payload length | u32 CRC-32 of payload | payload
payload  u64 sequence number | u8 operation | u32 JSON length | JSON
         | raw float32 vectors (adds only)
```

Added vectors are the embedder's raw vectors, whatever adapter is applied: replay maps them
with the adapter of the snapshot it replays onto (and keeps the raw ones beside the index),
so the journal never holds vectors of a space the next snapshot may not use.

The header names the snapshot generation the entries apply to. A save swaps the
manifest first and resets the journal second, so after a crash between the two
the journal names an older generation than the manifest: its changes are already
in the snapshot, and it is ignored. An entry cut short by a crash (the torn tail)
fails its length or checksum and is dropped; only a damaged entry followed by
more data means the file itself is corrupt. Entries are numbered 1, 2, 3, ...
since the header, so an entry that is missing or out of place is seen.

A checksum tells damage from a crash, not a crafted journal from an honest one, so every
entry is also held to what the Python API accepts (`multimodal_rag._validation`):
ids, records and their metadata, and finite unit vectors of the knowledge base's
dimension. An entry that fails is damage like a bad checksum: replay stops before it,
and it and the entries after it count as lost.

A torn tail is legitimate, but a journal that lost entries that were reported
committed is not, and the journal alone cannot tell the two apart: truncated,
deleted or replaced by an older copy, it still reads as a valid journal. So
after every append the writer also records how many entries are committed in
``journal.commit``, a second file a damaged journal cannot erase:

```text
slot     b"MRAGCMIT" | u64 generation | u64 entries | u64 journal length | u32 CRC-32
         (two 64-byte slots, written in turn, so a torn write of one leaves the other)
```

Opening checks the journal against it: fewer entries than committed means
committed changes were lost, which `load_journal` refuses (unless
salvaging) and verification reports. One entry more than committed is the
crash between the two writes, and is kept.

Journals of version 1 (written by multimodal_rag 0.1) have no sequence numbers
and no commit record; they are read as before and rewritten as version 2 by the
next writer.
"""

from __future__ import annotations

import contextlib
import json
import os
import struct
import zlib
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import attrs
from attrs import frozen

from multimodal_rag._kb.fileio import atomic_write_bytes
from multimodal_rag._validation import check_id, check_ids, check_int, check_record, check_vectors
from multimodal_rag.errors import CorruptFileError, DimensionMismatchError, KnowledgeBaseError
from multimodal_rag.types import Record

if TYPE_CHECKING:
    import numpy as np

    from multimodal_rag.protocols import DescriptionStore, VectorStore

__all__ = [
    "COMMIT_FILE",
    "CommitRecord",
    "Journal",
    "JournalContents",
    "JournalEntry",
    "SnapshotMovedError",
    "journal_problems",
    "load_journal",
    "read_commit_record",
    "read_journal",
    "replay",
]

_MAGIC = b"MRAGJRNL"
_VERSION = 2
_READABLE_VERSIONS = (1, 2)
_HEADER = struct.Struct("<8sIQ")
_ENTRY = struct.Struct("<II")
_OP_V1 = struct.Struct("<BI")
_OP = struct.Struct("<QBI")

#: The commit record beside the journal.
COMMIT_FILE = "journal.commit"
_COMMIT_MAGIC = b"MRAGCMIT"
_COMMIT = struct.Struct("<8sQQQ")
_COMMIT_SLOT = 64

ADD, REMOVE, PUT = 1, 2, 3
_OPS = {ADD: "add", REMOVE: "remove", PUT: "put"}


@frozen
class JournalEntry:
    """One committed change read back from the journal."""

    op: int
    ids: list[str]
    records: list[Record]
    vectors: Any = None  # float32 (n, dim) for adds


@frozen
class JournalContents:
    """What `read_journal` found (and `load_journal` checked)."""

    generation: int | None  # None: no journal file
    entries: list[JournalEntry]
    valid_length: int  # bytes up to the end of the last good entry
    torn_bytes: int  # bytes of an incomplete last entry (a crash mid-append)
    version: int = _VERSION
    #: Committed entries that the journal no longer holds (set by load_journal).
    lost_entries: int = 0
    #: Intact entries a salvaging read left out: an invalid one and those after it.
    invalid_entries: int = 0


@frozen
class CommitRecord:
    """How many journal entries were committed for a snapshot generation."""

    generation: int
    entries: int
    length: int


def commit_path(journal: Path) -> Path:
    """Where the commit record of the journal at ``journal`` lives."""
    return Path(journal).with_name(COMMIT_FILE)


def read_commit_record(journal: Path) -> CommitRecord | None:
    """The newest intact slot of the commit record, or ``None`` when there is none."""
    try:
        data = commit_path(journal).read_bytes()
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise CorruptFileError(f"cannot read the commit record {str(commit_path(journal))!r}: {exc}") from exc
    best: CommitRecord | None = None
    for offset in (0, _COMMIT_SLOT):
        slot = data[offset : offset + _COMMIT.size + 4]
        if len(slot) < _COMMIT.size + 4:
            continue
        body, (crc,) = slot[: _COMMIT.size], struct.unpack("<I", slot[_COMMIT.size :])
        if zlib.crc32(body) != crc:
            continue
        magic, generation, entries, length = _COMMIT.unpack(body)
        if magic != _COMMIT_MAGIC:
            continue
        record = CommitRecord(generation, entries, length)
        if best is None or (record.generation, record.entries) > (best.generation, best.entries):
            best = record
    return best


def _commit_slot(record: CommitRecord) -> bytes:
    body = _COMMIT.pack(_COMMIT_MAGIC, record.generation, record.entries, record.length)
    return (body + struct.pack("<I", zlib.crc32(body))).ljust(_COMMIT_SLOT, b"\0")


def lost_entries(contents: JournalContents, commit: CommitRecord | None, generation: int) -> int:
    """How many entries committed for snapshot ``generation`` the journal no longer holds
    (or holds only as invalid entries, which a salvaging read leaves out)."""
    if contents.generation != generation:
        return 0 if commit is None or commit.generation != generation else commit.entries
    invalid = contents.invalid_entries
    if commit is None or commit.generation != generation:
        # No record for this snapshot: a crash came between the save's manifest swap and
        # the new journal (nothing was committed to it yet), or the journal predates records.
        return invalid
    return max(invalid, commit.entries - len(contents.entries))


def read_journal(path: Path, *, salvage: bool = False, dim: int | None = None) -> JournalContents:
    """Read every complete entry of the journal at ``path``.

    Args:
        path: The journal file.
        salvage: Stop at a damaged entry instead of failing (what follows it is lost).
        dim: The dimension added vectors must have (the embedder's); ``None``: any, as
            each entry declares.

    Raises:
        CorruptFileError: Not a journal, a damaged entry with data after it, or an entry
            the Python API would refuse (see the module's docstring).
    """
    import numpy as np

    try:
        data = Path(path).read_bytes()
    except FileNotFoundError:
        return JournalContents(None, [], 0, 0)
    except OSError as exc:
        raise CorruptFileError(f"cannot read the journal {str(path)!r}: {exc}") from exc
    if len(data) < _HEADER.size:
        # The journal is written whole by an atomic rename, so a short one was cut by
        # someone else; the commit record tells whether anything committed went with it.
        return JournalContents(None, [], 0, len(data))
    magic, version, generation = _HEADER.unpack_from(data, 0)
    if magic != _MAGIC or version not in _READABLE_VERSIONS:
        raise CorruptFileError(f"{str(path)!r} is not a knowledge-base journal of version {_VERSION}")
    entries: list[JournalEntry] = []
    offset = _HEADER.size
    while offset < len(data):
        if offset + _ENTRY.size > len(data):
            break
        length, crc = _ENTRY.unpack_from(data, offset)
        end = offset + _ENTRY.size + length
        payload = data[offset + _ENTRY.size : end]
        if end > len(data) or zlib.crc32(payload) != crc:
            if end < len(data) and not salvage:
                raise CorruptFileError(
                    f"the journal {str(path)!r} is damaged at byte {offset} (entry checksum mismatch); "
                    "changes after the last save may be lost"
                )
            break
        try:
            entry = _decode(payload, np, version=version, expected_seq=len(entries) + 1, dim=dim)
        except (ValueError, KeyError, TypeError, UnicodeDecodeError, struct.error) as exc:
            # The checksum holds, so the entries are framed as written: count what is left out.
            invalid = _intact_entries(data, offset)
            if salvage:
                return JournalContents(
                    generation, entries, offset, len(data) - offset, version=version, invalid_entries=invalid
                )
            raise CorruptFileError(
                f"the journal {str(path)!r} has an invalid entry (change {len(entries) + 1}, at byte {offset}): "
                f"{exc}; it and the {invalid - 1} change(s) after it cannot be replayed. Open with "
                "salvage=True (`multimodal-rag repair`) to keep the changes before it, then repair"
            ) from exc
        entries.append(entry)
        offset = end
    return JournalContents(generation, entries, offset, len(data) - offset, version=version)


def _intact_entries(data: bytes, offset: int) -> int:
    """How many entries with a good checksum follow each other from ``offset`` on."""
    count = 0
    while offset + _ENTRY.size <= len(data):
        length, crc = _ENTRY.unpack_from(data, offset)
        end = offset + _ENTRY.size + length
        if end > len(data) or zlib.crc32(data[offset + _ENTRY.size : end]) != crc:
            break
        count, offset = count + 1, end
    return count


def _decode(payload: bytes, np: Any, *, version: int, expected_seq: int, dim: int | None) -> JournalEntry:
    """One entry, checked as the Python API checks what it is given.

    Raises:
        ValueError: (``InvalidInputError`` among them) An entry the API would refuse.
        KeyError, TypeError, UnicodeDecodeError, struct.error: An entry of the wrong shape.
    """
    if version == 1:
        op, json_length = _OP_V1.unpack_from(payload, 0)
        start = _OP_V1.size
    else:
        seq, op, json_length = _OP.unpack_from(payload, 0)
        if seq != expected_seq:
            raise ValueError(f"entry number {seq} where entry {expected_seq} belongs (an entry is missing or out of place)")
        start = _OP.size
    if op not in _OPS:
        raise ValueError(f"unknown operation {op}")
    try:
        header = json.loads(payload[start : start + json_length].decode("utf-8"))
    except RecursionError:
        raise ValueError("its JSON is nested too deeply to read") from None
    if not isinstance(header, dict) or not isinstance(header.get("ids"), list):
        raise ValueError("its JSON is not an object with a list of ids")
    ids = [check_id(id_) for id_ in header["ids"]]
    raw_records = header.get("records", [])
    if not isinstance(raw_records, list):
        raise ValueError("its records are not a list")
    records = [Record.from_json(r) for r in raw_records]
    for record in records:
        check_record(record)
    vectors = None
    if op == ADD:
        check_ids(ids)
        declared = check_int("the entry's dimension", header.get("dim"))
        if dim is not None and declared != dim:
            raise DimensionMismatchError(f"its vectors have dimension {declared}, the knowledge base's have {dim}")
        body = len(payload) - start - json_length
        if body != len(ids) * declared * 4:
            raise ValueError(f"it holds {body} bytes of vectors, not {len(ids)} x {declared} float32 numbers")
        # frombuffer never unpickles: the bytes can only ever become float32 numbers.
        raw = np.frombuffer(payload, dtype="<f4", offset=start + json_length).reshape(len(ids), declared)
        vectors = check_vectors(raw, declared, count=len(ids))
    return JournalEntry(op, ids, records, vectors)


def _encode(seq: int, op: int, ids: Sequence[str], records: Sequence[Record], vectors: Any = None) -> bytes:
    header: dict[str, Any] = {
        "ids": list(ids),
        "records": [r.to_json() for r in records],
    }
    raw = b""
    if vectors is not None:
        import numpy as np

        array = np.ascontiguousarray(vectors, dtype="<f4")
        header["dim"] = int(array.shape[1])
        raw = array.tobytes()
    text = json.dumps(header, ensure_ascii=False, allow_nan=False).encode("utf-8")
    payload = _OP.pack(seq, op, len(text)) + text + raw
    return _ENTRY.pack(len(payload), zlib.crc32(payload)) + payload


class SnapshotMovedError(CorruptFileError):
    """The journal belongs to a newer snapshot than the manifest that was read.

    Only a reader can see this, when a writer saved while it was opening; reading
    the manifest again resolves it.
    """


def load_journal(
    path: Path,
    generation: int,
    vector_store: VectorStore,
    description_store: DescriptionStore,
    *,
    salvage: bool = False,
    adapter: Any = None,
    raw_store: VectorStore | None = None,
) -> JournalContents:
    """Read the journal at ``path``, check it against its commit record, and replay it if it
    applies to snapshot ``generation`` (with its ``adapter`` and ``raw_store``, see `replay`).

    With ``salvage``, a damaged, shortened or invalid journal is replayed up to the damage
    and the number of committed entries it lost is in the result's ``lost_entries``.

    Raises:
        SnapshotMovedError: The journal is for a newer snapshot.
        CorruptFileError: The journal is damaged or holds an invalid entry, or holds fewer
            entries than were committed.
    """
    # Added vectors are the embedder's raw ones: the raw store's dimension, when one is kept.
    dim = (raw_store if raw_store is not None else vector_store).dim
    contents = read_journal(path, salvage=salvage, dim=dim)
    if contents.generation is not None and contents.generation > generation:
        raise SnapshotMovedError(
            f"the journal {str(path)!r} is for snapshot {contents.generation}, newer than {generation}"
        )
    commit = read_commit_record(path)
    if commit is not None and commit.generation > generation:
        raise SnapshotMovedError(f"the journal's commit record is for snapshot {commit.generation}, newer than {generation}")
    lost = lost_entries(contents, commit, generation)
    if lost and not salvage:
        raise CorruptFileError(
            f"the journal {str(path)!r} lost {lost} committed change(s): {commit.entries if commit else '?'} "
            f"were committed since the last save, it holds {len(contents.entries) if contents.generation == generation else 0} "
            "(truncated, deleted or replaced by an older copy); open with salvage=True to keep what is left, "
            "then repair"
        )
    if contents.generation == generation:
        replay(contents.entries, vector_store, description_store, adapter=adapter, raw_store=raw_store)
    return attrs.evolve(contents, lost_entries=lost)


def journal_problems(path: Path, generation: int, *, dim: int | None = None) -> list[str]:
    """Sentences describing what is wrong with the journal of snapshot ``generation`` (none: all is well);
    ``dim`` is the dimension of the vectors it may add (the embedder's)."""
    try:
        contents = read_journal(path, dim=dim)
        commit = read_commit_record(path)
    except CorruptFileError as exc:
        return [str(exc)]
    if contents.generation is not None and contents.generation > generation:
        return []  # a save moved on while we looked; the next look sees the new snapshot
    lost = lost_entries(contents, commit, generation)
    if lost:
        return [
            f"the journal {str(path)!r} lost {lost} committed change(s) since the last save "
            "(truncated, deleted or replaced by an older copy)"
        ]
    return []


def replay(
    entries: Sequence[JournalEntry],
    vector_store: VectorStore,
    description_store: DescriptionStore,
    *,
    adapter: Any = None,
    raw_store: VectorStore | None = None,
) -> None:
    """Apply journal entries, in order, to freshly loaded stores.

    A vector store that keeps a metadata copy gets the records' metadata too: a crash may
    have come between a change to the records and the copy. The journal's raw vectors go
    to ``raw_store`` (kept while an adapter is applied) as they are, and to ``vector_store``
    mapped by ``adapter`` (its ``apply(vectors, "image")``), as the facade's own ingest does.
    """
    from multimodal_rag.protocols import copy_metadata

    for entry in entries:
        if entry.op == ADD:
            vector_store.add(entry.ids, entry.vectors if adapter is None else adapter.apply(entry.vectors, "image"))
            if raw_store is not None:
                raw_store.add(entry.ids, entry.vectors)
            description_store.put(entry.records)
            copy_metadata(vector_store, entry.records)
        elif entry.op == REMOVE:
            vector_store.remove(entry.ids)
            if raw_store is not None:
                raw_store.remove(entry.ids)
            description_store.delete(entry.ids)
        else:
            description_store.put(entry.records)
            copy_metadata(vector_store, entry.records)


class Journal:
    """The open, appendable journal of a knowledge base opened for writing.

    Args:
        path: The journal file.
        generation: The snapshot generation the journal applies to.
    """

    def __init__(self, path: Path, generation: int) -> None:
        self.path = Path(path)
        self.generation = generation
        self._fd: int | None = None
        self._commit_fd: int | None = None
        self._entries = 0  # entries committed since the header
        self._length = 0  # bytes of the journal up to the end of the last entry

    @classmethod
    def resume(cls, path: Path, contents: JournalContents, generation: int) -> Journal:
        """Continue the journal after the entries just replayed, or start one if it was stale.

        A torn tail is cut off so that new entries follow the last good one. A journal
        of an older version is rewritten, with its entries, in the current one; a
        salvaged journal is rewritten with the entries that were left, so that its
        commit record agrees with it again.
        """
        journal = cls(path, generation)
        if contents.generation != generation:
            journal.reset(generation)
            return journal
        if contents.version != _VERSION or contents.lost_entries:
            journal.reset(generation, entries=contents.entries)
            return journal
        try:
            fd = os.open(path, os.O_RDWR)
        except OSError as exc:
            raise KnowledgeBaseError(f"cannot open the journal {str(path)!r} for writing: {exc.strerror or exc}") from exc
        try:
            if contents.torn_bytes:
                os.ftruncate(fd, contents.valid_length)
                os.fsync(fd)
            journal._fd = fd
            journal._entries = len(contents.entries)
            journal._length = contents.valid_length
            journal._open_commit_record()
        except OSError as exc:
            journal.close()
            raise KnowledgeBaseError(f"cannot open the journal {str(path)!r} for writing: {exc.strerror or exc}") from exc
        except BaseException:
            journal.close()
            raise
        return journal

    def _open_commit_record(self) -> None:
        record = read_commit_record(self.path)
        committed = CommitRecord(self.generation, self._entries, self._length)
        if record != committed:
            # Missing, stale, or one entry behind (a crash between an append and its record).
            atomic_write_bytes(commit_path(self.path), _commit_slot(committed) * 2)
        self._commit_fd = os.open(commit_path(self.path), os.O_RDWR)

    def reset(self, generation: int, *, entries: Sequence[JournalEntry] = ()) -> None:
        """Start a journal for snapshot ``generation`` (after a save), holding ``entries``."""
        # Closed first: should the reset fail, changes must be refused rather than
        # appended to the old journal, which the new manifest makes stale.
        self.close()
        data = bytearray(_HEADER.pack(_MAGIC, _VERSION, generation))
        for seq, entry in enumerate(entries, start=1):
            data += _encode(seq, entry.op, entry.ids, entry.records, entry.vectors)
        try:
            # The journal first: a crash before the record is written leaves a record of
            # an older generation, which says nothing about this journal.
            atomic_write_bytes(self.path, bytes(data))
            self.generation = generation
            self._entries, self._length = len(entries), len(data)
            atomic_write_bytes(commit_path(self.path), _commit_slot(CommitRecord(generation, self._entries, self._length)) * 2)
            self._fd = os.open(self.path, os.O_RDWR)
            self._commit_fd = os.open(commit_path(self.path), os.O_RDWR)
        except OSError as exc:
            self.close()
            raise KnowledgeBaseError(
                f"the knowledge base was saved, but a new journal {str(self.path)!r} cannot be started: "
                f"{exc.strerror or exc}; save again before making more changes"
            ) from exc

    def add(self, ids: Sequence[str], vectors: np.ndarray, records: Sequence[Record]) -> None:
        """Record an ingest batch: ids, their vectors and their records."""
        self._append(lambda seq: _encode(seq, ADD, ids, records, vectors))

    def remove(self, ids: Sequence[str]) -> None:
        """Record a removal."""
        self._append(lambda seq: _encode(seq, REMOVE, ids, ()))

    def put(self, records: Sequence[Record]) -> None:
        """Record replaced records (description edits)."""
        self._append(lambda seq: _encode(seq, PUT, [r.id for r in records], records))

    def _append(self, encode: Any) -> None:
        if self._fd is None or self._commit_fd is None:
            raise KnowledgeBaseError(
                f"the journal {str(self.path)!r} is not open (closed, or the last save could not "
                "start it); save again, or reopen the knowledge base, before making changes"
            )
        entry = encode(self._entries + 1)
        start = self._length
        committed = CommitRecord(self.generation, self._entries + 1, start + len(entry))
        try:
            os.lseek(self._fd, start, os.SEEK_SET)
            view = memoryview(entry)
            while view:
                written = os.write(self._fd, view)
                view = view[written:]
            os.fsync(self._fd)
            # Slots alternate, so a write torn by a crash leaves the previous record whole.
            os.pwrite(self._commit_fd, _commit_slot(committed), (committed.entries % 2) * _COMMIT_SLOT)
            os.fsync(self._commit_fd)
        except OSError as exc:
            # Leave no half entry behind, so the next append starts on a clean boundary.
            with contextlib.suppress(OSError):  # a torn tail is dropped on the next open anyway
                os.ftruncate(self._fd, start)
            with contextlib.suppress(OSError):  # and the record must not claim the entry either
                previous = CommitRecord(self.generation, self._entries, self._length)
                os.pwrite(self._commit_fd, _commit_slot(previous), (committed.entries % 2) * _COMMIT_SLOT)
            raise KnowledgeBaseError(
                f"cannot commit to the journal {str(self.path)!r}: {exc.strerror or exc}; "
                "the change was not stored"
            ) from exc
        self._entries, self._length = committed.entries, committed.length

    def close(self) -> None:
        for name in ("_fd", "_commit_fd"):
            fd = getattr(self, name)
            if fd is not None:
                os.close(fd)
                setattr(self, name, None)
