"""verify() finds each kind of damage; repair() fixes what can be fixed and keeps descriptions."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from helpers import ColorEmbedder, current_snapshot, solid
from multimodal_rag import MultimodalRAG
from multimodal_rag._verify import ProblemKind
from multimodal_rag.errors import ReadOnlyError
from multimodal_rag.types import Record


@pytest.fixture
def kb(tmp_path: Path, embedder: ColorEmbedder):
    images = tmp_path / "images"
    images.mkdir()
    paths = []
    for color in ("red", "green", "blue"):
        solid(color).save(images / f"{color}.png")
        paths.append(images / f"{color}.png")
    rag = MultimodalRAG.create(tmp_path / "kb", embedder=embedder)
    rag.add(paths, descriptions=["r", "g", "b"], progress=False)
    rag.save()
    yield rag
    rag.close()


def kinds(report) -> list[tuple[str, str | None]]:
    return sorted((p.kind, p.id) for p in report.problems)


def test_a_healthy_knowledge_base_verifies_ok(kb) -> None:
    report = kb.verify()
    assert report.ok and report.problems == () and report.vectors == 3 and report.records == 3
    assert "no problems" in str(report)


def test_vectors_and_records_that_drifted_apart_are_reported_by_id(kb) -> None:
    red, green, _ = kb.ids()
    kb.description_store.delete([red])
    kb.vector_store.remove([green])
    report = kb.verify()
    assert not report.ok
    assert kinds(report) == sorted(
        [(ProblemKind.VECTOR_WITHOUT_RECORD, red), (ProblemKind.RECORD_WITHOUT_VECTOR, green)]
    )
    assert all(p.detail and p.id in p.detail for p in report.problems)


def test_an_image_at_a_url_this_reader_may_not_check_is_not_called_missing(
    tmp_path: Path, embedder: ColorEmbedder, monkeypatch: pytest.MonkeyPatch
) -> None:
    import io

    import fsspec

    memory = fsspec.filesystem("memory")
    for color in ("red", "blue"):
        encoded = io.BytesIO()
        solid(color).save(encoded, format="PNG")
        memory.pipe(f"/verify-bucket/{color}.png", encoded.getvalue())
    with MultimodalRAG.create(tmp_path / "kb", embedder=embedder) as rag:
        assert len(rag.add_directory("memory://verify-bucket", progress=False).added) == 2
        assert rag.verify().ok
        memory.rm("/verify-bucket/blue.png")
        [gone] = rag.verify().problems
        assert gone.kind == ProblemKind.MISSING_IMAGE and "blue.png" in gone.detail

        def refused(url: str) -> object:
            raise PermissionError("403 Forbidden")

        monkeypatch.setattr("multimodal_rag._storage.filesystem", refused)
        problems = rag.verify().problems
        assert {p.kind for p in problems} == {ProblemKind.UNREACHABLE_IMAGE}
        assert len(problems) == 2 and all("access denied" in p.detail for p in problems)
    memory.rm("/verify-bucket", recursive=True)


def test_missing_image_files_are_reported(kb, tmp_path: Path) -> None:
    (tmp_path / "images" / "blue.png").unlink()
    report = kb.verify()
    [problem] = report.problems
    assert problem.kind == ProblemKind.MISSING_IMAGE and "blue.png" in problem.detail
    assert problem.id == kb.get(problem.id).id


def test_changed_files_on_disk_are_reported_by_name(kb) -> None:
    [sqlite] = current_snapshot(kb.path).glob("descriptions/descriptions.sqlite")
    sqlite.write_bytes(sqlite.read_bytes()[:-10])
    [ids] = current_snapshot(kb.path).glob("vectors/ids.json")
    ids.unlink()
    report = kb.verify()
    details = [p.detail for p in report.of_kind(ProblemKind.CORRUPT_FILE)]
    assert len(details) == 2 and all(p.id is None for p in report.problems)
    assert any("descriptions.sqlite" in d and "corrupt" in d for d in details)
    assert any("ids.json" in d and "cannot be read" in d for d in details)


def test_bad_vectors_are_reported(embedder: ColorEmbedder) -> None:
    rag = MultimodalRAG(embedder)
    rag.add([solid("red"), solid("blue")], ids=["r", "b"], progress=False)
    original = rag.vector_store.get_vectors

    def damaged(ids):
        out = original(ids)
        out[[i for i, id_ in enumerate(ids) if id_ == "b"]] = np.nan
        return out

    rag.vector_store.get_vectors = damaged  # type: ignore[method-assign]
    assert kinds(rag.verify()) == [(ProblemKind.BAD_VECTOR, "b")]


def test_repair_reembeds_lost_vectors_and_keeps_every_description(kb) -> None:
    red, green, blue = kb.ids()
    descriptions = {id_: kb.get(id_).description for id_ in kb.ids()}
    kb.vector_store.remove([red, green])
    kb.description_store.put([Record(id="orphan-record", description="kept", image_path="/nowhere.png")])
    report = kb.repair()
    assert sorted(report.reembedded) == sorted([red, green])
    assert kinds(report.remaining) == [
        (ProblemKind.MISSING_IMAGE, "orphan-record"),
        (ProblemKind.RECORD_WITHOUT_VECTOR, "orphan-record"),
    ]
    for id_, text in descriptions.items():
        assert kb.get(id_).description == text
    assert kb.description_store.get("orphan-record").description == "kept"
    assert kb.search(image=solid("red"), k=1)[0].id == red
    # The repair was saved: a fresh open sees it and the files verify.
    kb.close()
    reopened = MultimodalRAG.open(kb.path, embedder=ColorEmbedder(), read_only=True)
    assert len(reopened) == 3 and not reopened.verify().of_kind(ProblemKind.CORRUPT_FILE)


def test_repair_gives_orphan_vectors_a_record_and_rebuilds_a_damaged_index(embedder) -> None:
    rag = MultimodalRAG(embedder)
    rag.add([solid("red"), solid("blue")], ids=["r", "b"], descriptions=["red", None], progress=False)
    rag.description_store.delete(["b"])
    store = rag.vector_store
    original = store.get_vectors

    def damaged(ids):
        out = original(ids)
        out[[i for i, id_ in enumerate(ids) if id_ == "r"]] = 0.0
        return out

    store.get_vectors = damaged  # type: ignore[method-assign]
    report = rag.repair()
    assert report.records_created == ("b",) and report.index_rebuilt
    assert rag.vector_store is not store and rag.ids() == ["b"]
    # The zeroed vector was dropped from the index; its record stays, reported.
    assert kinds(report.remaining) == [(ProblemKind.RECORD_WITHOUT_VECTOR, "r")]
    assert rag.description_store.get("r").description == "red"


def test_repair_is_refused_read_only(kb) -> None:
    kb.close()
    reader = MultimodalRAG.open(kb.path, embedder=ColorEmbedder(), read_only=True)
    assert reader.verify().ok
    with pytest.raises(ReadOnlyError):
        reader.repair()


def flip_a_byte(path: Path, offset: int = -5) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0xFF
    path.write_bytes(bytes(data))


def test_a_corrupt_index_is_salvaged_by_reembedding_and_no_description_is_lost(kb) -> None:
    from multimodal_rag.errors import CorruptFileError

    descriptions = {id_: kb.get(id_).description for id_ in kb.ids()}
    kb.close()
    [index] = current_snapshot(kb.path).glob("vectors/index.faiss")
    flip_a_byte(index)
    with pytest.raises(CorruptFileError, match="index.faiss"):
        MultimodalRAG.open(kb.path, embedder=ColorEmbedder())
    rag = MultimodalRAG.open(kb.path, embedder=ColorEmbedder(), salvage=True)
    report = rag.verify()
    assert [p.detail for p in report.of_kind(ProblemKind.CORRUPT_FILE)] == [
        f"knowledge-base file {str(index)!r} is corrupt: its checksum does not match the manifest"
    ]
    assert sorted(p.id for p in report.of_kind(ProblemKind.RECORD_WITHOUT_VECTOR)) == sorted(descriptions)
    repaired = rag.repair()
    assert repaired.ok and sorted(repaired.reembedded) == sorted(descriptions)
    rag.close()
    reopened = MultimodalRAG.open(kb.path, embedder=ColorEmbedder())  # no salvage needed any more
    assert {id_: reopened.get(id_).description for id_ in reopened.ids()} == descriptions
    assert reopened.search(image=solid("green"), k=1)[0].description == "g"
    reopened.close()


def test_corrupt_descriptions_keep_the_vectors_and_the_journal_restores_recent_records(kb) -> None:
    kb.add([solid("yellow")], ids=["recent"], descriptions=["journaled"], progress=False)
    kb.close()
    [database] = current_snapshot(kb.path).glob("descriptions/descriptions.sqlite")
    database.write_bytes(b"garbage" * 100)
    rag = MultimodalRAG.open(kb.path, embedder=ColorEmbedder(), salvage=True)
    report = rag.repair()
    # The saved descriptions are gone with their file (and the snapshot before held none);
    # the vectors stay, each with an empty record, the loss is reported, and the batch
    # committed after the save comes back from the journal.
    assert len(report.records_created) == 3 and report.records_lost == 3 and not report.ok
    assert sorted(report.lost_ids) == sorted(report.records_created) and report.remaining.ok
    assert rag.get("recent").description == "journaled" and len(rag) == 4
    [kept] = report.set_aside
    assert Path(kept).read_bytes() == b"garbage" * 100  # set aside, not deleted
    rag.close()


def test_a_journal_damaged_in_the_middle_is_salvaged_up_to_the_damage(kb) -> None:
    from multimodal_rag.errors import CorruptFileError

    journal = kb.path / "journal.bin"
    kb.add([solid("yellow")], ids=["first"], progress=False)
    first_entry_end = journal.stat().st_size
    kb.add([solid("cyan")], ids=["second"], progress=False)
    kb.add([solid("magenta")], ids=["third"], progress=False)
    kb.close()
    flip_a_byte(journal, first_entry_end + 30)  # inside the second entry, with a third after it
    with pytest.raises(CorruptFileError, match="journal.bin"):
        MultimodalRAG.open(kb.path, embedder=ColorEmbedder())
    rag = MultimodalRAG.open(kb.path, embedder=ColorEmbedder(), salvage=True)
    assert "first" in rag and "second" not in rag and "third" not in rag and len(rag) == 4
    rag.save()
    rag.close()
    assert MultimodalRAG.open(kb.path, embedder=ColorEmbedder(), read_only=True).verify().ok
