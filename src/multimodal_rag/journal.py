"""The write-ahead journal: every committed change since the last save, durable on disk.

A save writes a whole snapshot, which costs time in proportion to the knowledge
base. Between saves, each committed change (an ingest batch, a removal, a
description edit) is appended to ``journal.bin`` beside the manifest and
fsynced before the call that made it returns, so a crash loses nothing that was
reported as committed. Opening the knowledge base replays the journal on top of
the snapshot; the next save folds it into a new snapshot and starts an empty one.

File format (all integers little-endian)::

    header   b"MRAGJRNL" | u32 version | u64 generation
    entry    u32 payload length | u32 CRC-32 of payload | payload
    payload  u8 operation | u32 JSON length | JSON | raw float32 vectors (adds only)

The header names the snapshot generation the entries apply to. A save swaps the
manifest first and resets the journal second, so after a crash between the two
the journal names an older generation than the manifest: its changes are already
in the snapshot, and it is ignored. An entry cut short by a crash (the torn tail)
fails its length or checksum and is dropped; only a damaged entry followed by
more data means the file itself is corrupt.
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

from attrs import frozen

from multimodal_rag.errors import CorruptFileError, KnowledgeBaseError
from multimodal_rag.fileio import atomic_write_bytes
from multimodal_rag.types import Record

if TYPE_CHECKING:
    import numpy as np

    from multimodal_rag.protocols import DescriptionStore, VectorStore

__all__ = ["Journal", "JournalContents", "JournalEntry", "SnapshotMovedError", "load_journal", "read_journal", "replay"]

_MAGIC = b"MRAGJRNL"
_VERSION = 1
_HEADER = struct.Struct("<8sIQ")
_ENTRY = struct.Struct("<II")
_OP = struct.Struct("<BI")

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
    """What :func:`read_journal` found."""

    generation: int | None  # None: no journal file
    entries: list[JournalEntry]
    valid_length: int  # bytes up to the end of the last good entry
    torn_bytes: int  # bytes of an incomplete last entry (a crash mid-append)


def read_journal(path: Path, *, salvage: bool = False) -> JournalContents:
    """Read every complete entry of the journal at ``path``.

    Args:
        path: The journal file.
        salvage: Stop at a damaged entry instead of failing (what follows it is lost).

    Raises:
        CorruptFileError: Not a journal, or a damaged entry with data after it.
    """
    import numpy as np

    try:
        data = Path(path).read_bytes()
    except FileNotFoundError:
        return JournalContents(None, [], 0, 0)
    except OSError as exc:
        raise CorruptFileError(f"cannot read the journal {str(path)!r}: {exc}") from exc
    if len(data) < _HEADER.size:
        # Only a crash while the journal was first being written leaves less than a header.
        return JournalContents(None, [], 0, len(data))
    magic, version, generation = _HEADER.unpack_from(data, 0)
    if magic != _MAGIC or version != _VERSION:
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
            entries.append(_decode(payload, np))
        except (ValueError, KeyError, TypeError, UnicodeDecodeError) as exc:
            if salvage:
                break
            raise CorruptFileError(f"the journal {str(path)!r} has an unreadable entry at byte {offset}: {exc}") from exc
        offset = end
    return JournalContents(generation, entries, offset, len(data) - offset)


def _decode(payload: bytes, np: Any) -> JournalEntry:
    op, json_length = _OP.unpack_from(payload, 0)
    if op not in _OPS:
        raise ValueError(f"unknown operation {op}")
    start = _OP.size
    header = json.loads(payload[start : start + json_length].decode("utf-8"))
    records = [
        Record(id=r["id"], image_path=r["image_path"], description=r["description"], metadata=r["metadata"])
        for r in header.get("records", ())
    ]
    vectors = None
    if op == ADD:
        # frombuffer never unpickles: the bytes can only ever become float32 numbers.
        vectors = np.frombuffer(payload, dtype="<f4", offset=start + json_length).reshape(
            len(header["ids"]), header["dim"]
        )
    return JournalEntry(op, list(header["ids"]), records, vectors)


def _encode(op: int, ids: Sequence[str], records: Sequence[Record], vectors: Any = None) -> bytes:
    header: dict[str, Any] = {
        "ids": list(ids),
        "records": [
            {"id": r.id, "image_path": r.image_path, "description": r.description, "metadata": r.metadata}
            for r in records
        ],
    }
    raw = b""
    if vectors is not None:
        import numpy as np

        array = np.ascontiguousarray(vectors, dtype="<f4")
        header["dim"] = int(array.shape[1])
        raw = array.tobytes()
    text = json.dumps(header, ensure_ascii=False, allow_nan=False).encode("utf-8")
    payload = _OP.pack(op, len(text)) + text + raw
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
) -> JournalContents:
    """Read the journal at ``path`` and replay it if it applies to snapshot ``generation``.

    With ``salvage``, a damaged journal is replayed up to the damage.

    Raises:
        SnapshotMovedError: The journal is for a newer snapshot.
        CorruptFileError: The journal is damaged.
    """
    contents = read_journal(path, salvage=salvage)
    if contents.generation is not None and contents.generation > generation:
        raise SnapshotMovedError(
            f"the journal {str(path)!r} is for snapshot {contents.generation}, newer than {generation}"
        )
    if contents.generation == generation:
        replay(contents.entries, vector_store, description_store)
    return contents


def replay(entries: Sequence[JournalEntry], vector_store: VectorStore, description_store: DescriptionStore) -> None:
    """Apply journal entries, in order, to freshly loaded stores."""
    for entry in entries:
        if entry.op == ADD:
            vector_store.add(entry.ids, entry.vectors)
            description_store.put(entry.records)
        elif entry.op == REMOVE:
            vector_store.remove(entry.ids)
            description_store.delete(entry.ids)
        else:
            description_store.put(entry.records)


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

    @classmethod
    def resume(cls, path: Path, contents: JournalContents, generation: int) -> Journal:
        """Continue the journal after the entries just replayed, or start one if it was stale.

        A torn tail is cut off so that new entries follow the last good one.
        """
        journal = cls(path, generation)
        if contents.generation != generation:
            journal.reset(generation)
            return journal
        fd = os.open(path, os.O_RDWR)
        try:
            if contents.torn_bytes:
                os.ftruncate(fd, contents.valid_length)
                os.fsync(fd)
        except BaseException:
            os.close(fd)
            raise
        journal._fd = fd
        return journal

    def reset(self, generation: int) -> None:
        """Start an empty journal for snapshot ``generation`` (after a save)."""
        # Closed first: should the reset fail, changes must be refused rather than
        # appended to the old journal, which the new manifest makes stale.
        self.close()
        try:
            atomic_write_bytes(self.path, _HEADER.pack(_MAGIC, _VERSION, generation))
            self._fd = os.open(self.path, os.O_RDWR)
        except OSError as exc:
            raise KnowledgeBaseError(
                f"the knowledge base was saved, but a new journal {str(self.path)!r} cannot be started: "
                f"{exc.strerror or exc}; save again before making more changes"
            ) from exc
        self.generation = generation

    def add(self, ids: Sequence[str], vectors: np.ndarray, records: Sequence[Record]) -> None:
        """Record an ingest batch: ids, their vectors and their records."""
        self._append(_encode(ADD, ids, records, vectors))

    def remove(self, ids: Sequence[str]) -> None:
        """Record a removal."""
        self._append(_encode(REMOVE, ids, ()))

    def put(self, records: Sequence[Record]) -> None:
        """Record replaced records (description edits)."""
        self._append(_encode(PUT, [r.id for r in records], records))

    def _append(self, entry: bytes) -> None:
        if self._fd is None:
            raise KnowledgeBaseError(
                f"the journal {str(self.path)!r} is not open (closed, or the last save could not "
                "start it); save again, or reopen the knowledge base, before making changes"
            )
        start = os.lseek(self._fd, 0, os.SEEK_END)
        try:
            view = memoryview(entry)
            while view:
                written = os.write(self._fd, view)
                view = view[written:]
            os.fsync(self._fd)
        except OSError as exc:
            # Leave no half entry behind, so the next append starts on a clean boundary.
            with contextlib.suppress(OSError):  # a torn tail is dropped on the next open anyway
                os.ftruncate(self._fd, start)
            raise KnowledgeBaseError(
                f"cannot commit to the journal {str(self.path)!r}: {exc.strerror or exc}; "
                "the change was not stored"
            ) from exc

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
