"""The journal: committed changes survive without a save, torn tails are dropped, damage is named."""

from __future__ import annotations

import errno
import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from helpers import ColorEmbedder, solid
from multimodal_rag import MultimodalRAG
from multimodal_rag._kb.journal import Journal, read_journal
from multimodal_rag.errors import CorruptFileError, KnowledgeBaseError
from multimodal_rag.types import Record


@pytest.fixture
def kb(tmp_path: Path, embedder: ColorEmbedder) -> Path:
    rag = MultimodalRAG.create(tmp_path / "kb", embedder=embedder)
    rag.add([solid("red")], ids=["red"], descriptions=["saved"], progress=False)
    rag.save()
    rag.add([solid("green")], ids=["green"], descriptions=["journaled"], progress=False)
    rag.close()
    return tmp_path / "kb"


def state(path: Path) -> dict[str, str | None]:
    rag = MultimodalRAG.open(path, embedder=ColorEmbedder(), read_only=True)
    return {id_: rag.get(id_).description for id_ in rag.ids()}


def test_each_batch_is_one_journal_entry_and_a_save_empties_the_journal(tmp_path: Path, embedder) -> None:
    rag = MultimodalRAG.create(tmp_path / "kb", embedder=embedder)
    colors = ["red", "green", "blue", "yellow", "cyan"]
    rag.add([solid(c) for c in colors], on_error="skip", batch_size=2, progress=False)
    contents = read_journal(tmp_path / "kb" / "journal.bin")
    assert [len(e.ids) for e in contents.entries] == [2, 2, 1]
    assert contents.entries[0].vectors.shape == (2, embedder.dim)
    # With on_error="raise" the whole call is one entry: stored whole or not at all.
    rag.add([solid("white"), solid("black"), solid("magenta")], batch_size=2, progress=False)
    assert [len(e.ids) for e in read_journal(tmp_path / "kb" / "journal.bin").entries] == [2, 2, 1, 3]
    rag.save()
    contents = read_journal(tmp_path / "kb" / "journal.bin")
    assert contents.entries == [] and contents.generation == json.loads(
        (tmp_path / "kb" / "manifest.json").read_text()
    )["generation"]
    rag.close()
    assert len(state(tmp_path / "kb")) == 8


def test_a_torn_tail_is_dropped_and_writing_continues_after_the_last_good_entry(kb: Path) -> None:
    journal = kb / "journal.bin"
    good = journal.read_bytes()
    with open(journal, "ab") as f:
        f.write(b"\x40\x00\x00\x00\x12\x34")  # a crash in the middle of the next entry
    assert state(kb) == {"red": "saved", "green": "journaled"}  # read-only: tail ignored
    rag = MultimodalRAG.open(kb, embedder=ColorEmbedder())
    assert journal.read_bytes() == good  # the writer cut the tail off
    rag.add([solid("blue")], ids=["blue"], descriptions=["after"], progress=False)
    rag.close()
    assert state(kb) == {"red": "saved", "green": "journaled", "blue": "after"}


def test_a_damaged_entry_in_the_middle_is_reported_by_name(kb: Path) -> None:
    rag = MultimodalRAG.open(kb, embedder=ColorEmbedder())
    rag.add([solid("blue")], ids=["blue"], progress=False)
    rag.close()
    journal = kb / "journal.bin"
    data = bytearray(journal.read_bytes())
    data[40] ^= 0xFF  # inside the first entry, with a second entry after it
    rag = MultimodalRAG.open(kb, embedder=ColorEmbedder())
    journal.write_bytes(bytes(data))
    [problem] = rag.verify().problems
    assert problem.kind == "corrupt-file" and "journal.bin" in problem.detail
    rag.close()
    with pytest.raises(CorruptFileError, match="journal.bin.*damaged"):
        MultimodalRAG.open(kb, embedder=ColorEmbedder())
    journal.write_bytes(b"not a journal at all, just text")
    with pytest.raises(CorruptFileError, match="journal.bin.*not a knowledge-base journal"):
        MultimodalRAG.open(kb, embedder=ColorEmbedder(), read_only=True)


def test_a_journal_of_an_older_snapshot_is_ignored(kb: Path) -> None:
    # A crash after a save's manifest swap but before its journal reset leaves the
    # previous journal behind; its changes are already in the new snapshot.
    generation = json.loads((kb / "manifest.json").read_text())["generation"]
    old = Journal(kb / "journal.bin", generation - 1)
    old.reset(generation - 1)
    old.put([Record(id="red", description="stale edit")])
    old.close()
    assert state(kb) == {"red": "saved"}
    MultimodalRAG.open(kb, embedder=ColorEmbedder()).close()  # a writer starts a fresh one
    assert read_journal(kb / "journal.bin").generation == generation


def test_disk_full_while_committing_stores_nothing_and_leaves_a_clean_journal(kb: Path, monkeypatch) -> None:
    import multimodal_rag._kb.journal as journal_module

    rag = MultimodalRAG.open(kb, embedder=ColorEmbedder())
    size = (kb / "journal.bin").stat().st_size
    real_write = journal_module.os.write

    def half_then_full(fd, data):
        real_write(fd, bytes(data[: len(data) // 2]))
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(journal_module.os, "write", half_then_full)
    with pytest.raises(KnowledgeBaseError, match="journal.bin.*No space left.*not stored"):
        rag.add([solid("blue")], ids=["blue"], progress=False)
    with pytest.raises(KnowledgeBaseError, match="No space left"):
        rag.remove(["red"])
    with pytest.raises(KnowledgeBaseError, match="No space left"):
        rag.describe("red", "edit")
    assert sorted(rag.ids()) == ["green", "red"] and rag.get("red").description == "saved"
    assert (kb / "journal.bin").stat().st_size == size
    monkeypatch.setattr(journal_module.os, "write", real_write)
    rag.add([solid("blue")], ids=["blue"], progress=False)  # space again: works
    rag.close()
    assert sorted(state(kb)) == ["blue", "green", "red"]


@pytest.mark.parametrize(
    "where", ["vectors", "descriptions", "fsync", "manifest", "journal-reset"]
)
@pytest.mark.parametrize(
    "error",
    [
        (errno.ENOSPC, "No space left on device"),
        (errno.EROFS, "Read-only file system"),
        (errno.EACCES, "Permission denied"),
    ],
    ids=["disk-full", "read-only", "permission-denied"],
)
def test_a_failed_save_is_a_clear_error_and_loses_nothing(kb: Path, monkeypatch, where, error) -> None:
    import multimodal_rag._kb.directory as persistence
    import multimodal_rag._kb.fileio as fileio
    import multimodal_rag._kb.journal as journal_module

    rag = MultimodalRAG.open(kb, embedder=ColorEmbedder())
    rag.add([solid("blue")], ids=["blue"], descriptions=["unsaved"], progress=False)
    before = {id_: rag.get(id_).description for id_ in rag.ids()}

    def fail(*args, **kwargs):
        raise OSError(error[0], error[1])

    target = {
        "vectors": (type(rag.vector_store), "save"),
        "descriptions": (type(rag.description_store), "save"),
        "fsync": (persistence, "fsync_tree"),
        "manifest": (fileio, "atomic_write_json"),
        "journal-reset": (journal_module, "atomic_write_bytes"),
    }[where]
    monkeypatch.setattr(*target, fail)
    with pytest.raises(KnowledgeBaseError, match=error[1]):
        rag.save()
    if where == "journal-reset":  # saved, but no journal: changes are refused, not lost
        with pytest.raises(KnowledgeBaseError, match="save again"):
            rag.add([solid("cyan")], ids=["cyan"], progress=False)
        assert "cyan" not in rag
    monkeypatch.undo()
    rag.close()
    assert state(kb) == before
    assert not list(kb.glob("snapshots/*.tmp"))
    reopened = MultimodalRAG.open(kb, embedder=ColorEmbedder())
    assert reopened.verify().ok
    reopened.save()  # and a later save works
    reopened.close()
    assert state(kb) == before and not list(kb.glob("snapshots/*.tmp"))


def test_a_create_killed_before_its_manifest_can_be_created_again(tmp_path: Path, embedder) -> None:
    kb = tmp_path / "kb"
    (kb / "snapshots" / "00000001.tmp" / "vectors").mkdir(parents=True)
    (kb / ".lock").write_text("12345\n")
    rag = MultimodalRAG.create(kb, embedder=embedder)
    rag.close()
    assert sorted(p.name for p in (kb / "snapshots").iterdir()) == ["00000001"]


def test_a_reader_sees_the_writers_committed_batches(kb: Path) -> None:
    writer = MultimodalRAG.open(kb, embedder=ColorEmbedder())
    writer.add([solid("blue")], ids=["blue"], progress=False)
    assert "blue" in MultimodalRAG.open(kb, embedder=ColorEmbedder(), read_only=True)
    writer.save()
    writer.add([solid("cyan")], ids=["cyan"], progress=False)
    assert sorted(state(kb)) == ["blue", "cyan", "green", "red"]
    writer.close()


def test_a_copied_knowledge_base_keeps_its_journal(kb: Path, tmp_path: Path) -> None:
    shutil.copytree(kb, tmp_path / "copy")
    assert state(tmp_path / "copy") == {"red": "saved", "green": "journaled"}


def test_a_reader_that_races_a_save_reads_the_new_snapshot(kb: Path, monkeypatch) -> None:
    import multimodal_rag._kb.loading as rag_module

    writer = MultimodalRAG.open(kb, embedder=ColorEmbedder())
    writer.add([solid("blue")], ids=["blue"], descriptions=["saved meanwhile"], progress=False)
    real_read_manifest = rag_module.read_manifest
    calls = []

    def save_right_after_reading(directory):
        manifest = real_read_manifest(directory)
        if not calls:  # the writer saves while this reader loads: its snapshot disappears
            writer.save()
        calls.append(manifest.generation)
        return manifest

    monkeypatch.setattr(rag_module, "read_manifest", save_right_after_reading)
    reader = MultimodalRAG.open(kb, embedder=ColorEmbedder(), read_only=True)
    assert calls[0] < calls[-1]  # it started again on the new manifest
    assert reader.get("blue").description == "saved meanwhile" and len(reader) == 3
    writer.close()


def _crafted_entry(op: int, header_json: bytes, vectors: bytes = b"") -> Any:
    """An entry as someone could write it: numbered and checksummed like a real one."""
    import struct
    import zlib

    def encode(seq: int) -> bytes:
        payload = struct.pack("<QBI", seq, op, len(header_json)) + header_json + vectors
        return struct.pack("<II", len(payload), zlib.crc32(payload)) + payload

    return encode


def _deep(levels: int) -> Any:
    value: Any = "bottom"
    for _ in range(levels):
        value = {"down": value}
    return value


def _unit(dim: int) -> bytes:
    return (np.ones(dim, dtype="<f4") / np.sqrt(dim)).astype("<f4").tobytes()


_ADD, _PUT = 1, 3
_RECORD = {"id": "crafted", "image_path": None, "description": "x", "metadata": {}}
_DIM = ColorEmbedder().dim

#: Entries with a valid checksum that the Python API would refuse, by what is wrong with them.
CRAFTED = {
    "nested-json": (_PUT, b'{"ids": [], "records": ' + b"[" * 100_000 + b"]" * 100_000 + b"}", b""),
    "nan-vector": (_ADD, {"ids": ["crafted"], "records": [_RECORD], "dim": _DIM}, np.full(_DIM, np.nan, "<f4").tobytes()),
    "zero-vector": (_ADD, {"ids": ["crafted"], "records": [_RECORD], "dim": _DIM}, np.zeros(_DIM, "<f4").tobytes()),
    "non-unit-vector": (_ADD, {"ids": ["crafted"], "records": [_RECORD], "dim": _DIM}, np.ones(_DIM, "<f4").tobytes()),
    "wrong-dimension": (_ADD, {"ids": ["crafted"], "records": [_RECORD], "dim": _DIM + 1}, _unit(_DIM + 1)),
    "empty-id": (_ADD, {"ids": [""], "records": [{**_RECORD, "id": ""}], "dim": _DIM}, _unit(_DIM)),
    "deep-metadata": (_PUT, {"ids": ["crafted"], "records": [{**_RECORD, "metadata": _deep(100)}]}, b""),
}


@pytest.mark.parametrize("case", sorted(CRAFTED))
def test_an_invalid_entry_with_a_valid_checksum_is_damage_that_repair_removes(kb: Path, case: str) -> None:
    op, header, vectors = CRAFTED[case]
    header_json = header if isinstance(header, bytes) else json.dumps(header).encode()
    rag = MultimodalRAG.open(kb, embedder=ColorEmbedder())
    journal = rag._state.journal
    assert journal is not None
    journal._append(_crafted_entry(op, header_json, vectors))  # committed, as a stranger's would be
    rag.close()
    for read_only in (True, False):
        with pytest.raises(CorruptFileError, match=r"journal\.bin.*invalid entry \(change 2"):
            MultimodalRAG.open(kb, embedder=ColorEmbedder(), read_only=read_only)
    with MultimodalRAG.open(kb, embedder=ColorEmbedder(), salvage=True, read_only=True) as reader:
        # Replay stopped before the invalid entry: the change before it is kept, it is counted as lost.
        assert {id_: reader.get(id_).description for id_ in reader.ids()} == {"red": "saved", "green": "journaled"}
        details = [problem.detail for problem in reader.verify().problems]
    assert any("journal.bin" in detail and "invalid entry" in detail for detail in details)
    assert any("1 committed change(s)" in detail for detail in details)
    rag = MultimodalRAG.open(kb, embedder=ColorEmbedder(), salvage=True)
    report = rag.repair()
    assert report.changes_lost == 1 and report.remaining.ok
    rag.close()
    assert state(kb) == {"red": "saved", "green": "journaled"}
