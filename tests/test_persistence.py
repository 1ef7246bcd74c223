"""Knowledge bases on disk: manifest, checksums, embedder checks, the writer's lock."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from helpers import ColorEmbedder, current_snapshot, solid
from multimodal_rag import MultimodalRAG
from multimodal_rag.errors import (
    CorruptFileError,
    EmbedderMismatchError,
    KnowledgeBaseError,
    KnowledgeBaseExistsError,
    KnowledgeBaseLockedError,
    KnowledgeBaseNotFoundError,
    ManifestError,
    UnknownBackendError,
)


@pytest.fixture
def kb(tmp_path: Path, embedder: ColorEmbedder) -> Path:
    rag = MultimodalRAG.create(tmp_path / "kb", embedder=embedder)
    rag.add([solid("red"), solid("blue")], descriptions=["r", "b"], progress=False)
    rag.save()
    rag.close()
    return tmp_path / "kb"


def test_manifest_records_components_versions_and_checksums(kb: Path) -> None:
    manifest = json.loads((kb / "manifest.json").read_text())
    assert manifest["format"] == "multimodal-rag-knowledge-base" and manifest["format_version"] == 1
    assert manifest["library_version"]
    assert manifest["embedder"]["fingerprint"] == "test-color:grid=4" and manifest["embedder"]["dim"] == 48
    assert manifest["vector_store"]["kind"] == "faiss-flat"
    assert manifest["description_store"]["kind"] == "sqlite"
    assert manifest["counts"] == {"vectors": 2, "descriptions": 2}
    assert set(manifest["files"]) == {"vectors/index.faiss", "vectors/ids.json", "descriptions/descriptions.sqlite"}
    assert set(manifest["sizes"]) == set(manifest["files"])
    current = f"{manifest['generation']:08d}"
    # Beside the current snapshot, only the previous one's descriptions are kept.
    assert {p.name for p in (kb / "snapshots").iterdir()} - {current} == {f"{manifest['generation'] - 1:08d}"}
    assert [p.name for p in (kb / "snapshots" / f"{manifest['generation'] - 1:08d}").iterdir()] == ["descriptions"]


def test_open_with_another_embedder_names_both(kb: Path) -> None:
    with pytest.raises(EmbedderMismatchError, match=r"test-color:grid=4.*48-d.*test-color:grid=2.*12-d"):
        MultimodalRAG.open(kb, embedder=ColorEmbedder(grid=2))


def test_embedder_is_rebuilt_from_the_manifest_only_when_allowed(kb: Path) -> None:
    with pytest.raises(UnknownBackendError, match="allow_modules"):
        MultimodalRAG.open(kb, read_only=True)
    rag = MultimodalRAG.open(kb, read_only=True, allow_modules=["helpers"])
    assert isinstance(rag.embedder, ColorEmbedder) and len(rag) == 2


def test_unknown_format_version_fails_clearly(kb: Path, embedder) -> None:
    manifest = json.loads((kb / "manifest.json").read_text())
    manifest["format_version"] = 99
    (kb / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(ManifestError, match="format version 99"):
        MultimodalRAG.open(kb, embedder=embedder)
    (kb / "manifest.json").write_text("{not json")
    with pytest.raises(ManifestError, match="manifest.json"):
        MultimodalRAG.open(kb, embedder=embedder)


def test_a_changed_file_is_reported_by_name(kb: Path, embedder) -> None:
    [index] = current_snapshot(kb).glob("vectors/index.faiss")
    data = bytearray(index.read_bytes())
    data[-5] ^= 0xFF
    index.write_bytes(bytes(data))
    with pytest.raises(CorruptFileError, match="index.faiss"):
        MultimodalRAG.open(kb, embedder=embedder)


def test_missing_and_existing_knowledge_bases(tmp_path: Path, kb: Path, embedder) -> None:
    with pytest.raises(KnowledgeBaseNotFoundError):
        MultimodalRAG.open(tmp_path / "nothing", embedder=embedder)
    with pytest.raises(KnowledgeBaseExistsError, match="a knowledge base already exists"):
        MultimodalRAG.create(kb, embedder=embedder)
    (tmp_path / "busy").mkdir()
    (tmp_path / "busy" / "file.txt").write_text("x")
    with pytest.raises(KnowledgeBaseExistsError, match="not an empty directory"):
        MultimodalRAG.create(tmp_path / "busy", embedder=embedder)
    rag = MultimodalRAG.create(kb, embedder=embedder, exist_ok=True)
    assert len(rag) == 2


def test_second_writer_is_refused_with_the_holders_pid(kb: Path, embedder) -> None:
    holder = subprocess.Popen(
        [sys.executable, "-c",
         "import sys, time; sys.path[:0] = ['src', 'tests'];"
         "from helpers import ColorEmbedder; from multimodal_rag import MultimodalRAG;"
         f"rag = MultimodalRAG.open({str(kb)!r}, embedder=ColorEmbedder()); print('ready', flush=True);"
         "time.sleep(30)"],
        stdout=subprocess.PIPE, text=True, cwd=Path(__file__).resolve().parents[1],
    )
    try:
        assert holder.stdout.readline().strip() == "ready"
        with pytest.raises(KnowledgeBaseLockedError, match=f"pid {holder.pid}"):
            MultimodalRAG.open(kb, embedder=embedder)
        assert len(MultimodalRAG.open(kb, embedder=embedder, read_only=True)) == 2
    finally:
        holder.kill()
        holder.wait()
        holder.stdout.close()
    MultimodalRAG.open(kb, embedder=embedder).close()  # released when the holder died


def test_failed_save_keeps_the_previous_state(kb: Path, embedder, monkeypatch) -> None:
    rag = MultimodalRAG.open(kb, embedder=embedder)
    rag.add([solid("green")], progress=False)

    def disk_full(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(type(rag.description_store), "save", disk_full)
    with pytest.raises(KnowledgeBaseError, match="No space left.*previous save is intact"):
        rag.save()
    generation = json.loads((kb / "manifest.json").read_text())["generation"]
    rag.close()
    # The old snapshot is still the current one; the committed add survives in the journal.
    assert json.loads((kb / "manifest.json").read_text())["generation"] == generation
    assert sorted((kb / "snapshots").iterdir())[-1].name == f"{generation:08d}"
    assert not list((kb / "snapshots").glob("*.tmp"))
    reopened = MultimodalRAG.open(kb, embedder=embedder, read_only=True)
    assert len(reopened) == 3 and reopened.verify().ok


def test_stale_snapshots_are_removed_on_open(kb: Path, embedder) -> None:
    (kb / "snapshots" / "99999999.tmp").mkdir()
    (kb / "snapshots" / "00000000").mkdir()
    MultimodalRAG.open(kb, embedder=embedder).close()
    assert not (kb / "snapshots" / "99999999.tmp").exists() and not (kb / "snapshots" / "00000000").exists()
    assert current_snapshot(kb).is_dir()


# -- a knowledge base can be moved, copied and opened from anywhere --------------------

KEPT = {"red": "a red square", "blue": "a blue square", "green": "a green square"}


def _kept_images(path: str | Path) -> dict[str, str]:
    """A knowledge base, made at ``path`` as given (relative to the working directory),
    holding images given in memory (encoded bytes, and a PIL image); returns id -> description."""
    from helpers import encoded

    with MultimodalRAG.create(path, embedder=ColorEmbedder(), description_store="sqlite") as rag:
        result = rag.add([encoded(solid("red")), encoded(solid("blue"), "JPEG"), solid("green")],
                         descriptions=list(KEPT.values()), progress=False)
        return dict(zip(result.ids, KEPT.values(), strict=True))


def _assert_reads_its_own_images(kb: Path, descriptions: dict[str, str], *, read_only: bool = True) -> None:
    from multimodal_rag._images import open_image

    with MultimodalRAG.open(kb, embedder=ColorEmbedder(), read_only=read_only) as rag:
        assert rag.verify().ok, rag.verify().problems
        for id_, description in descriptions.items():
            record = rag.get(id_)
            assert record.description == description
            assert Path(record.image_path).parent == (kb / "images").resolve()
            assert open_image(record.image_path).size == solid("red").size  # readable, and what was added
        hit = rag.search(text="red", k=1)[0]
        assert Path(hit.image_path).parent == (kb / "images").resolve()


def test_a_knowledge_base_moved_copied_or_opened_elsewhere_reads_its_own_images(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    descriptions = _kept_images("C")  # as people type it: relative to where they are
    (tmp_path / "C").rename(tmp_path / "A")  # mv C A
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    _assert_reads_its_own_images(tmp_path / "A", descriptions)
    # cp -r A B, then A goes: the copy reads its own files, never the original's.
    import shutil

    shutil.copytree(tmp_path / "A", tmp_path / "B")
    shutil.rmtree(tmp_path / "A")
    _assert_reads_its_own_images(tmp_path / "B", descriptions, read_only=False)
    with MultimodalRAG.open(tmp_path / "B", embedder=ColorEmbedder()) as rag:
        stored = {record.id: record.image_path for record in rag.description_store}
        rag.describe(next(iter(descriptions)), "edited in the copy")  # a rewrite stays relative
        assert rag.description_store.get(next(iter(descriptions))).image_path == stored[next(iter(descriptions))]
    assert all(path is not None and path.startswith("images/") for path in stored.values())


def test_records_of_earlier_versions_naming_the_old_folder_are_found_and_stored_relative(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from multimodal_rag.types import Record

    monkeypatch.chdir(tmp_path)
    descriptions = _kept_images("C")
    elsewhere = tmp_path / "elsewhere.png"
    solid("white").save(elsewhere)
    # What earlier versions stored: the folder's path as given ("C/images/..."), or absolute.
    with MultimodalRAG.open("C", embedder=ColorEmbedder()) as rag:
        ids = list(descriptions)
        old = [Record(id=ids[0], image_path=f"C/images/{Path(rag.get(ids[0]).image_path).name}", description=KEPT["red"]),
               Record(id=ids[1], image_path=str(tmp_path / "C" / "images" / Path(rag.get(ids[1]).image_path).name),
                      description=KEPT["blue"])]
        rag.description_store.put(old)
        added = rag.add([elsewhere], descriptions=["given by path"], progress=False).ids[0]
    (tmp_path / "C").rename(tmp_path / "moved")
    monkeypatch.chdir(tmp_path / "moved")
    _assert_reads_its_own_images(tmp_path / "moved", descriptions)  # found where they are, read-only
    with MultimodalRAG.open(tmp_path / "moved", embedder=ColorEmbedder()) as rag:
        assert rag.get(added).image_path == str(elsewhere.resolve())  # images given by path stay as given
    with MultimodalRAG.open(tmp_path / "moved", embedder=ColorEmbedder(), read_only=True) as rag:
        stored = {record.id: record.image_path for record in rag.description_store}
    assert all(stored[id_].startswith("images/") for id_ in descriptions)  # the writer stored them anew
    assert stored[added] == str(elsewhere.resolve())
    _assert_reads_its_own_images(tmp_path / "moved", descriptions)
