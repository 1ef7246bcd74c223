"""Damage never costs a description that can still be read, and lost changes are never silent.

Repair salvages damaged description files, takes what is missing from the
snapshot before, keeps the damaged files aside and counts what is lost; the
journal's commit record tells a torn tail from a journal that lost committed
changes; readers racing a writer retry; a full or read-only disk, symbolic
links and interrupted creates get the library's own errors and lose nothing.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sqlite3
import subprocess
from pathlib import Path

import pytest

from helpers import ColorEmbedder, current_snapshot, solid
from multimodal_rag import MultimodalRAG
from multimodal_rag._verify import ProblemKind
from multimodal_rag.errors import (
    CorruptFileError,
    KnowledgeBaseAccessError,
    KnowledgeBaseError,
    KnowledgeBaseNotFoundError,
    ManifestError,
)
from test_cli import run_cli

DESCRIPTION_FILES = {"jsonl": "descriptions.jsonl", "sqlite": "descriptions.sqlite"}


def color(i: int) -> tuple[int, int, int]:
    return (37 * i % 256, 91 * i % 256, 53 * i % 256)


def build(path: Path, store: str, *, first: int = 20, second: int = 30, index: str = "hnswlib") -> Path:
    """A knowledge base saved twice: ``first`` records, then ``first + second``."""
    rag = MultimodalRAG.create(path, embedder=ColorEmbedder(), vector_store=index, description_store=store)
    ids = [f"item-{i:02d}" for i in range(first + second)]
    rag.add([solid(color(i)) for i in range(first)], ids=ids[:first],
            descriptions=[f"saved first, number {i}" for i in range(first)], progress=False)
    rag.save()
    rag.add([solid(color(i)) for i in range(first, first + second)], ids=ids[first:],
            descriptions=[f"saved second, number {i}" for i in range(first, first + second)], progress=False)
    rag.save()
    rag.close()
    return path


def descriptions(path: Path) -> dict[str, str | None]:
    rag = MultimodalRAG.open(path, embedder=ColorEmbedder(), read_only=True)
    return {id_: rag.get(id_).description for id_ in rag.ids()}


def tree_digest(path: Path) -> dict[str, str]:
    return {
        str(p.relative_to(path)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(path.rglob("*"))
        if p.is_file() and not p.is_symlink()
    }


# -- repair salvages descriptions -------------------------------------------------------


def test_repair_keeps_every_readable_jsonl_line_and_fills_in_from_the_snapshot_before(tmp_path: Path) -> None:
    kb = build(tmp_path / "kb", "jsonl")
    damaged = current_snapshot(kb) / "descriptions" / "descriptions.jsonl"
    original = damaged.read_bytes()
    damaged.write_bytes(original[:1000])
    readable = [json.loads(line) for line in original[:1000].decode().splitlines()[:-1]]  # last line is cut
    assert 0 < len(readable) < 20

    rag = MultimodalRAG.open(kb, embedder=ColorEmbedder(), salvage=True)
    report = rag.repair()
    kept = {id_: rag.get(id_).description for id_ in rag.ids()}
    rag.close()

    # The damaged file's good lines, then the first 20 from the snapshot before: only the
    # second save's records that were after the damage are lost, and they are counted.
    for line in readable:
        assert kept[line["id"]] == line["description"]
    for i in range(20):
        assert kept[f"item-{i:02d}"] == f"saved first, number {i}"
    lost = sorted(f"item-{i:02d}" for i in range(20, 50) if f"item-{i:02d}" not in {r["id"] for r in readable})
    assert sorted(report.lost_ids) == lost and report.records_lost == len(lost)
    assert report.records_salvaged == len(readable) and not report.ok
    assert all(kept[id_] is None for id_ in lost) and len(kept) == 50
    [aside] = report.set_aside
    assert Path(aside).read_bytes() == original[:1000] and (kb / "damaged") in Path(aside).parents


def test_cli_repair_reports_the_loss_and_exits_non_zero(tmp_path: Path) -> None:
    kb = build(tmp_path / "kb", "jsonl")
    damaged = current_snapshot(kb) / "descriptions" / "descriptions.jsonl"
    damaged.write_bytes(damaged.read_bytes()[:1000])
    result = run_cli("--allow-module", "helpers", "repair", kb, "--json")
    assert result.returncode == 1, result.stderr
    report = json.loads(result.stdout)
    assert report["records_lost"] > 0 and report["records_lost"] == len(report["lost_ids"])
    assert report["records_salvaged"] + report["records_from_older_snapshot"] + report["records_lost"] == 50
    assert report["records_from_older_snapshot"] > 0 and report["set_aside"]
    # Repaired: consistent again, and nothing more is reported or lost by a second run.
    again = run_cli("--allow-module", "helpers", "repair", kb)
    assert again.returncode == 0 and "ok now" in again.stdout


def test_sqlite_damage_keeps_the_older_snapshot_and_the_journal(tmp_path: Path) -> None:
    kb = build(tmp_path / "kb", "sqlite")
    rag = MultimodalRAG.open(kb, embedder=ColorEmbedder())
    rag.describe("item-45", "edited after the save")
    rag.close()
    damaged = current_snapshot(kb) / "descriptions" / "descriptions.sqlite"
    damaged.write_bytes(damaged.read_bytes()[:1000])

    rag = MultimodalRAG.open(kb, embedder=ColorEmbedder(), salvage=True)
    report = rag.repair()
    assert rag.get("item-45").description == "edited after the save"  # from the journal
    assert all(rag.get(f"item-{i:02d}").description == f"saved first, number {i}" for i in range(20))
    assert report.records_lost == 29 and "item-45" not in report.lost_ids and not report.ok
    rag.close()


def test_sqlite_salvage_reads_the_rows_on_both_sides_of_a_damaged_page(tmp_path: Path) -> None:
    from multimodal_rag.descriptions.sqlite import SQLiteDescriptionStore
    from multimodal_rag.types import Record

    store = SQLiteDescriptionStore()
    store.put([Record(id=f"r{i:05d}", description="x" * 300 + str(i)) for i in range(2000)])
    store.save(tmp_path)
    path = tmp_path / "descriptions.sqlite"
    # The middle leaf of the records table (the file holds the full-text indexes' pages too).
    with sqlite3.connect(path) as db:
        leaves = [row[0] for row in db.execute("SELECT pageno FROM dbstat WHERE name = 'records' AND pagetype = 'leaf' ORDER BY pageno")]
        page = int(db.execute("PRAGMA page_size").fetchone()[0])
    db.close()
    data = bytearray(path.read_bytes())
    middle = (leaves[len(leaves) // 2] - 1) * page
    data[middle : middle + page] = os.urandom(page)
    path.write_bytes(bytes(data))
    with pytest.raises(CorruptFileError):
        SQLiteDescriptionStore.load(tmp_path)
    salvaged = SQLiteDescriptionStore.salvage(tmp_path)
    ids = sorted(record.id for record in salvaged)
    assert 1500 < len(ids) < 2000  # one page of ~13 rows (and its neighbours' pointers) lost, not all
    assert ids[0] == "r00000" and ids[-1] == "r01999"  # rows before and after the damage
    assert all(salvaged.get(id_).description == "x" * 300 + str(int(id_[1:])) for id_ in ids)


def _varint(data: bytes, at: int) -> tuple[int, int]:
    """SQLite's big-endian varint at ``at``: its value and where it ends."""
    value = 0
    for i in range(9):
        byte = data[at + i]
        if i == 8:
            return (value << 8) | byte, at + 9
        value = (value << 7) | (byte & 0x7F)
        if byte < 0x80:
            return value, at + i + 1
    raise AssertionError("unreachable")


def _records_leaves(path: Path) -> list[tuple[int, list[int]]]:
    """The leaf pages of the ``records`` table of an SQLite file (a root and one level of
    leaves) and the rowids each holds, read from the file format itself."""
    with sqlite3.connect(path) as db:
        (root,) = db.execute("SELECT rootpage FROM sqlite_master WHERE name = 'records'").fetchone()
    db.close()
    data = path.read_bytes()
    page_size = int.from_bytes(data[16:18], "big")

    def cells(page: int, header: int) -> tuple[int, list[int]]:
        start = (page - 1) * page_size + (100 if page == 1 else 0)
        count = int.from_bytes(data[start + 3 : start + 5], "big")
        base = (page - 1) * page_size
        return start, [int.from_bytes(data[start + header + 2 * i : start + header + 2 * i + 2], "big") + base for i in range(count)]

    start, pointers = cells(root, 12)
    assert data[start] == 0x05, "the records table should be an interior page over leaves"
    children = [int.from_bytes(data[p : p + 4], "big") for p in pointers]
    children.append(int.from_bytes(data[start + 8 : start + 12], "big"))  # the right-most child
    leaves = []
    for child in children:
        start, pointers = cells(child, 8)
        assert data[start] == 0x0D, "a child of the records table's root should be a leaf"
        leaves.append((child, [_varint(data, _varint(data, p)[1])[0] for p in pointers]))
    return leaves


def test_sqlite_salvage_keeps_every_row_it_read_before_the_damage(tmp_path: Path) -> None:
    kb = tmp_path / "kb"
    with MultimodalRAG.create(kb, embedder=ColorEmbedder(), description_store="sqlite") as rag:
        ids = rag.add([solid(color(i)) for i in range(109)], ids=[f"item-{i:03d}" for i in range(109)],
                      descriptions=[f"number {i}: " + "a long description " * 8 for i in range(109)], progress=False).ids
    path = current_snapshot(kb) / "descriptions" / "descriptions.sqlite"
    with sqlite3.connect(path) as db:
        id_of = dict(db.execute("SELECT seq, id FROM records"))
    db.close()
    leaves = _records_leaves(path)
    assert len(leaves) >= 4
    # The page-type byte of a leaf in the middle: SQLite can read no row of that page.
    page, rowids = leaves[len(leaves) // 2]
    data = bytearray(path.read_bytes())
    page_size = int.from_bytes(data[16:18], "big")
    data[(page - 1) * page_size] ^= 0xFF
    path.write_bytes(bytes(data))

    with MultimodalRAG.open(kb, embedder=ColorEmbedder(), salvage=True) as rag:
        report = rag.repair()
        kept = {id_: rag.get(id_).description for id_ in rag.ids()}
    lost = sorted(id_of[rowid] for rowid in rowids)
    print(f"damaged leaf page {page} (byte {(page - 1) * page_size}) of {len(leaves)}: "
          f"records_salvaged {report.records_salvaged}, records_lost {report.records_lost}")
    # Every row on the other pages comes back, those of the damaged page are named as lost.
    assert report.records_salvaged == len(ids) - len(lost) and sorted(report.lost_ids) == lost
    assert all(kept[id_] == f"number {int(id_[5:])}: " + "a long description " * 8 for id_ in ids if id_ not in lost)
    assert all(kept[id_] is None for id_ in lost)


def test_sqlite_salvage_reaches_the_rows_between_two_damaged_pages(tmp_path: Path) -> None:
    from multimodal_rag.descriptions.sqlite import SQLiteDescriptionStore
    from multimodal_rag.types import Record

    store = SQLiteDescriptionStore()
    store.put([Record(id=f"r{i:05d}", description="x" * 300 + str(i)) for i in range(600)])
    store.save(tmp_path)
    path = tmp_path / "descriptions.sqlite"
    leaves = _records_leaves(path)
    # Two leaves a third and two thirds of the way: the rows between them are reached by
    # neither end, only by seeking past the first damaged page.
    damaged = [leaves[len(leaves) // 3], leaves[2 * len(leaves) // 3]]
    data = bytearray(path.read_bytes())
    page_size = int.from_bytes(data[16:18], "big")
    for page, _ in damaged:
        data[(page - 1) * page_size] ^= 0xFF
    path.write_bytes(bytes(data))
    salvaged = SQLiteDescriptionStore.salvage(tmp_path)
    lost = {rowid - 1 for _, rowids in damaged for rowid in rowids}  # rowids count from 1
    assert sorted(record.id for record in salvaged) == [f"r{i:05d}" for i in range(600) if i not in lost]


def test_a_damaged_checksum_of_an_intact_adapter_keeps_the_adapter(tmp_path: Path) -> None:
    from adapter_helpers import DistortedEmbedder, description_of, make_images

    files = make_images(tmp_path / "images", 100)
    kb = tmp_path / "kb"
    with MultimodalRAG.create(kb, embedder=DistortedEmbedder()) as rag:
        rag.add(files, descriptions=[description_of(rag.embedder, f) for f in files], progress=False)
        assert rag.fit_adapter(kind="linear", progress=False).kept
        digest = rag.adapter.sha256
        before = [hit.id for hit in rag.search(text=description_of(rag.embedder, files[0]), k=5)]
    manifest_file = kb / "manifest.json"
    manifest = json.loads(manifest_file.read_text())
    checksum = manifest["files"]["adapter/adapter.npz"]
    # One hex digit of the manifest's checksum of the file changed; the file is as saved.
    manifest["files"]["adapter/adapter.npz"] = ("1" if checksum[0] != "1" else "2") + checksum[1:]
    manifest_file.write_text(json.dumps(manifest))
    with MultimodalRAG.open(kb, embedder=DistortedEmbedder(), salvage=True) as rag:
        report = rag.repair()
        assert not report.adapter_removed and rag.adapter is not None and rag.adapter.sha256 == digest
    with MultimodalRAG.open(kb, embedder=DistortedEmbedder()) as rag:  # the save recorded the checksum again
        assert rag.verify().ok and rag.adapter is not None and rag.adapter.sha256 == digest
        assert [hit.id for hit in rag.search(text=description_of(rag.embedder, files[0]), k=5)] == before


def test_a_permission_error_is_not_damage_and_changes_nothing(tmp_path: Path, monkeypatch) -> None:
    import multimodal_rag._kb.directory as persistence

    kb = build(tmp_path / "kb", "jsonl", first=3, second=3)
    before = tree_digest(kb)
    real = persistence.sha256_file

    def forbidden(path: Path, **kwargs):
        if path.name == "descriptions.jsonl":
            raise PermissionError(13, "Permission denied", str(path))
        return real(path, **kwargs)

    monkeypatch.setattr(persistence, "sha256_file", forbidden)
    for read_only in (True, False):
        with pytest.raises(KnowledgeBaseAccessError, match="permission problem, not damage"):
            MultimodalRAG.open(kb, embedder=ColorEmbedder(), salvage=True, read_only=read_only)
    assert tree_digest(kb) == before


# -- the journal's commit record ----------------------------------------------------------


@pytest.fixture
def journaled(tmp_path: Path) -> Path:
    """A saved knowledge base with three changes committed to the journal since."""
    kb = build(tmp_path / "kb", "sqlite", first=2, second=2)
    rag = MultimodalRAG.open(kb, embedder=ColorEmbedder())
    rag.add([solid(color(10))], ids=["j1"], descriptions=["first change"], progress=False)
    rag.describe("item-00", "second change")
    rag.add([solid(color(11))], ids=["j3"], descriptions=["third change"], progress=False)
    rag.close()
    return kb


@pytest.mark.parametrize("how", ["writer", "reader", "salvage"])
def test_a_manifest_older_than_the_journal_says_so_and_changes_nothing(journaled: Path, how: str) -> None:
    older = (journaled / "manifest.json").read_bytes()
    with MultimodalRAG.open(journaled, embedder=ColorEmbedder()) as rag:
        rag.save()
        rag.describe("item-01", "after the save")
    newer = json.loads((journaled / "manifest.json").read_text())["generation"]
    (journaled / "manifest.json").write_bytes(older)
    before = tree_digest(journaled)
    options = {"writer": {}, "reader": {"read_only": True}, "salvage": {"salvage": True}}[how]
    with pytest.raises(ManifestError) as caught:
        MultimodalRAG.open(journaled, embedder=ColorEmbedder(), **options)
    message = str(caught.value)
    assert f"names snapshot {json.loads(older)['generation']}" in message and f"snapshot {newer} was saved" in message
    assert "older than the journal" in message and "Put back the manifest.json" in message
    assert tree_digest(journaled) == before


def _older_copy(kb: Path) -> None:
    rag = MultimodalRAG.open(kb, embedder=ColorEmbedder())
    older = (kb / "journal.bin").read_bytes()
    rag.add([solid(color(12))], ids=["j4"], progress=False)
    rag.close()
    (kb / "journal.bin").write_bytes(older)


def _flip_last_entry(kb: Path) -> None:
    data = bytearray((kb / "journal.bin").read_bytes())
    data[-3] ^= 0xFF
    (kb / "journal.bin").write_bytes(bytes(data))


DAMAGE = {
    "truncated to half": lambda kb: (kb / "journal.bin").write_bytes((kb / "journal.bin").read_bytes()[: (kb / "journal.bin").stat().st_size // 2]),
    "deleted": lambda kb: (kb / "journal.bin").unlink(),
    "an older copy": _older_copy,
    "a byte flipped in its last entry": _flip_last_entry,
}


@pytest.mark.parametrize("damage", DAMAGE)
def test_a_journal_that_lost_committed_changes_is_refused_reported_and_salvaged(journaled: Path, damage: str) -> None:
    DAMAGE[damage](journaled)
    with pytest.raises(CorruptFileError, match="lost .* committed change"):
        MultimodalRAG.open(journaled, embedder=ColorEmbedder())
    with pytest.raises(CorruptFileError, match="lost"):
        MultimodalRAG.open(journaled, embedder=ColorEmbedder(), read_only=True)
    # verify (as the command line does it) names the loss.
    report = MultimodalRAG.open(journaled, embedder=ColorEmbedder(), read_only=True, salvage=True).verify()
    assert report.of_kind(ProblemKind.LOST_CHANGES) and not report.ok
    result = run_cli("--allow-module", "helpers", "verify", journaled)
    assert result.returncode == 1 and "lost" in result.stdout
    # Salvage keeps what is left; repair reports the loss once, then all is well.
    rag = MultimodalRAG.open(journaled, embedder=ColorEmbedder(), salvage=True)
    repaired = rag.repair()
    assert repaired.changes_lost >= 1 and not repaired.ok and repaired.remaining.ok
    rag.close()
    assert MultimodalRAG.open(journaled, embedder=ColorEmbedder(), read_only=True).verify().ok


def test_a_torn_tail_and_a_crash_before_the_commit_record_lose_nothing(journaled: Path) -> None:
    from multimodal_rag._kb.journal import read_commit_record

    before = descriptions(journaled)
    with open(journaled / "journal.bin", "ab") as f:
        f.write(b"\x40\x00\x00\x00\x12")  # a crash in the middle of an append
    assert descriptions(journaled) == before
    # The entry was written but the crash came before its commit record: it is kept.
    record = read_commit_record(journaled / "journal.bin")
    rag = MultimodalRAG.open(journaled, embedder=ColorEmbedder())
    rag.add([solid(color(13))], ids=["j4"], descriptions=["fourth"], progress=False)
    rag.close()
    commit = (journaled / "journal.commit").read_bytes()
    from multimodal_rag._kb.journal import _COMMIT_SLOT, _commit_slot

    stale = _commit_slot(record)
    (journaled / "journal.commit").write_bytes(stale + stale)
    assert descriptions(journaled) == {**before, "j4": "fourth"}
    assert MultimodalRAG.open(journaled, embedder=ColorEmbedder(), read_only=True).verify().ok
    assert len(commit) == 2 * _COMMIT_SLOT


def test_a_journal_of_version_1_is_replayed_and_rewritten(journaled: Path) -> None:
    import struct
    import zlib

    from multimodal_rag._kb.journal import _HEADER, _OP_V1, read_journal

    contents = read_journal(journaled / "journal.bin")
    data = bytearray(_HEADER.pack(b"MRAGJRNL", 1, contents.generation))
    for entry in contents.entries:
        header = {
            "ids": entry.ids,
            "records": [{"id": r.id, "image_path": r.image_path, "description": r.description, "metadata": r.metadata} for r in entry.records],
        }
        raw = b""
        if entry.vectors is not None:
            header["dim"] = entry.vectors.shape[1]
            raw = entry.vectors.astype("<f4").tobytes()
        text = json.dumps(header).encode()
        payload = _OP_V1.pack(entry.op, len(text)) + text + raw
        data += struct.pack("<II", len(payload), zlib.crc32(payload)) + payload
    before = descriptions(journaled)
    (journaled / "journal.bin").write_bytes(bytes(data))
    (journaled / "journal.commit").unlink()  # 0.1 wrote none
    assert descriptions(journaled) == before
    MultimodalRAG.open(journaled, embedder=ColorEmbedder()).close()  # a writer rewrites it
    assert read_journal(journaled / "journal.bin").version == 2
    assert descriptions(journaled) == before


# -- readers racing a writer ----------------------------------------------------------------


@pytest.mark.parametrize("store", ["sqlite", "jsonl"])
def test_a_reader_whose_snapshot_is_replaced_while_it_loads_starts_again(tmp_path: Path, monkeypatch, store: str) -> None:
    import multimodal_rag._kb.directory as persistence

    kb = build(tmp_path / "kb", store, first=3, second=3)
    writer = MultimodalRAG.open(kb, embedder=ColorEmbedder())
    real = persistence.KnowledgeBaseDirectory.check_snapshot
    calls = []

    def racing(self, manifest):
        calls.append(manifest.generation)
        if len(calls) == 1:  # two saves while the reader looks: its snapshot is gone
            writer.save()
            writer.save()
        return real(self, manifest)

    monkeypatch.setattr(persistence.KnowledgeBaseDirectory, "check_snapshot", racing)
    for salvage in (False, True):  # salvage is how `verify` opens
        calls.clear()
        reader = MultimodalRAG.open(kb, embedder=ColorEmbedder(), read_only=True, salvage=salvage)
        assert len(reader) == 6 and reader._state.salvage is None
        assert len(set(calls)) >= 2  # it started again on the new manifest
    monkeypatch.setattr(persistence.KnowledgeBaseDirectory, "check_snapshot", real)
    assert reader.verify().ok
    writer.close()


def test_a_sqlite_file_removed_under_a_loading_reader_is_a_library_error(tmp_path: Path) -> None:
    from multimodal_rag.descriptions.sqlite import SQLiteDescriptionStore

    with pytest.raises(CorruptFileError):
        SQLiteDescriptionStore.load(tmp_path / "gone")


# -- full and read-only disks ---------------------------------------------------------------


@pytest.mark.parametrize(
    "failure",
    [RuntimeError("Error: 'ret == (n)' failed: write error in index.faiss"), sqlite3.OperationalError("database or disk is full")],
    ids=["faiss", "sqlite"],
)
def test_a_store_failing_to_save_leaves_the_previous_save_and_no_temporary_files(tmp_path: Path, monkeypatch, failure) -> None:
    kb = build(tmp_path / "kb", "sqlite", first=2, second=2, index="faiss-flat")
    rag = MultimodalRAG.open(kb, embedder=ColorEmbedder())
    rag.add([solid(color(20))], ids=["new"], descriptions=["committed"], progress=False)
    snapshots = sorted(p.name for p in (kb / "snapshots").iterdir())

    def full(self, directory):
        (Path(directory) / "partial").write_bytes(b"x" * 10)
        raise failure

    monkeypatch.setattr(type(rag.description_store), "save", full)
    with pytest.raises(KnowledgeBaseError, match="previous save is intact"):
        rag.save()
    assert sorted(p.name for p in (kb / "snapshots").iterdir()) == snapshots
    monkeypatch.undo()
    rag.close()
    assert descriptions(kb)["new"] == "committed"


def test_cli_describe_says_the_edit_is_committed_when_the_save_after_it_fails(tmp_path: Path) -> None:
    kb = build(tmp_path / "kb", "sqlite", first=2, second=2)
    # A vectors folder that cannot be created makes every save fail after the edit is journaled.
    env_hook = tmp_path / "sitecustomize.py"
    env_hook.write_text(
        "import multimodal_rag._kb.directory as p\n"
        "def fail(*a, **k):\n"
        "    raise OSError(28, 'No space left on device')\n"
        "p.fsync_tree = fail\n"
    )
    result = run_cli("--allow-module", "helpers", "describe", kb, "item-01", "new text",
                     env={"PYTHONPATH": os.pathsep.join([str(tmp_path), str(Path(__file__).parents[1] / "src"), str(Path(__file__).parent)])})
    assert result.returncode == 0, result.stderr
    assert "committed" in result.stderr and "No space left" in result.stderr
    assert descriptions(kb)["item-01"] == "new text"


def _mount(target: Path, size: str) -> bool:
    target.mkdir()
    if os.geteuid() != 0 or not shutil.which("mount"):
        return False
    result = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(target)], capture_output=True)
    return result.returncode == 0


@pytest.fixture
def small_disk(tmp_path: Path):
    disk = tmp_path / "disk"
    if not _mount(disk, "3m"):
        pytest.skip("mounting a small tmpfs needs root and the right to mount")
    yield disk
    subprocess.run(["umount", "-l", str(disk)], check=False)


def test_a_full_disk_and_a_read_only_remount_get_the_librarys_errors(small_disk: Path) -> None:
    kb = build(small_disk / "kb", "sqlite", first=2, second=2, index="hnswlib")
    rag = MultimodalRAG.open(kb, embedder=ColorEmbedder())
    rag.describe("item-00", "committed before the disk filled up")
    filler = small_disk / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT)
    try:  # fill the disk to the last block
        while os.write(fd, b"\0" * 4096):
            pass
    except OSError:
        pass
    finally:
        os.close(fd)
    with pytest.raises(KnowledgeBaseError, match="previous save is intact"):
        rag.save()
    with pytest.raises(KnowledgeBaseError, match="No space left"):
        rag.add([solid(color(30))] * 1, ids=["too-much"], descriptions=["x" * 100_000], progress=False)
    assert "too-much" not in rag
    assert not list((kb / "snapshots").glob("*.tmp")) and not list(kb.glob(".*.tmp"))
    rag.close()
    filler.unlink()
    assert descriptions(kb)["item-00"] == "committed before the disk filled up"
    assert MultimodalRAG.open(kb, embedder=ColorEmbedder(), read_only=True).verify().ok

    subprocess.run(["mount", "-o", "remount,ro", str(small_disk)], check=True)
    with pytest.raises(KnowledgeBaseError, match="read_only=True"):
        MultimodalRAG.open(kb, embedder=ColorEmbedder())
    assert len(MultimodalRAG.open(kb, embedder=ColorEmbedder(), read_only=True)) == 4


# -- links and interrupted creates -------------------------------------------------------------


def test_a_snapshots_link_is_refused_and_nothing_outside_is_deleted(tmp_path: Path) -> None:
    kb = build(tmp_path / "kb", "jsonl", first=2, second=2)
    elsewhere = tmp_path / "elsewhere"
    shutil.copytree(kb / "snapshots", elsewhere)
    (elsewhere / "precious").mkdir()
    (elsewhere / "precious" / "data.txt").write_text("keep me")
    shutil.rmtree(kb / "snapshots")
    (kb / "snapshots").symlink_to(elsewhere)
    manifest = json.loads((kb / "manifest.json").read_text())
    manifest["files"] = {name: "0" * 64 for name in manifest["files"]}  # bad checksums
    (kb / "manifest.json").write_text(json.dumps(manifest))
    before = tree_digest(elsewhere)
    for salvage in (False, True):
        with pytest.raises(CorruptFileError, match="symbolic link"):
            MultimodalRAG.open(kb, embedder=ColorEmbedder(), salvage=salvage)
    result = run_cli("--allow-module", "helpers", "repair", kb)
    assert result.returncode == 1 and "symbolic link" in result.stderr
    assert tree_digest(elsewhere) == before and (elsewhere / "precious" / "data.txt").exists()


def test_a_linked_snapshot_file_is_damage_not_data(tmp_path: Path) -> None:
    kb = build(tmp_path / "kb", "jsonl", first=2, second=2)
    target = current_snapshot(kb) / "descriptions" / "descriptions.jsonl"
    outside = tmp_path / "outside.jsonl"
    shutil.move(target, outside)
    target.symlink_to(outside)
    with pytest.raises(CorruptFileError, match="symbolic link"):
        MultimodalRAG.open(kb, embedder=ColorEmbedder())
    rag = MultimodalRAG.open(kb, embedder=ColorEmbedder(), salvage=True)
    rag.repair()
    rag.close()
    assert outside.read_text().count("\n") == 4  # the link's target is untouched


def test_an_interrupted_create_is_recognised_and_cleaned_up(tmp_path: Path) -> None:
    kb = tmp_path / "kb"
    (kb / "snapshots" / "00000001" / "vectors").mkdir(parents=True)
    (kb / "snapshots" / "00000001" / "descriptions").mkdir()
    (kb / ".lock").write_text("12345\n")
    (kb / ".manifest.json.k2j3h4.tmp").write_text('{"format": "multimodal-rag-kn')
    with pytest.raises(KnowledgeBaseNotFoundError, match="interrupted create"):
        MultimodalRAG.open(kb, embedder=ColorEmbedder())
    result = run_cli("--allow-module", "helpers", "repair", kb)
    assert result.returncode == 1 and "interrupted create" in result.stderr
    rag = MultimodalRAG.create(kb, embedder=ColorEmbedder(), exist_ok=True)
    rag.add([solid("red")], ids=["red"], progress=False)
    rag.close()
    assert not list(kb.glob(".manifest.json.*.tmp")) and descriptions(kb) == {"red": None}


def test_a_directory_with_someone_elses_files_is_never_taken_for_an_interrupted_create(tmp_path: Path) -> None:
    from multimodal_rag.errors import KnowledgeBaseExistsError

    kb = tmp_path / "kb"
    (kb / "snapshots" / "notes").mkdir(parents=True)
    with pytest.raises(KnowledgeBaseExistsError):
        MultimodalRAG.create(kb, embedder=ColorEmbedder())
    assert (kb / "snapshots" / "notes").is_dir()
