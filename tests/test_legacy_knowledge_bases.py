"""Knowledge bases saved by earlier versions keep opening, with their journals, and can be saved anew.

``tests/data/legacy/journal-v1`` was written by multimodal_rag 0.1.0 (a journal without entry
numbers or commit record); ``journal-v2`` by the version that added them, before the package was
reorganised. Each holds a save of three images, then, in the journal only, an added image, an
edited description and a removal. ``persian-v1`` was written by the version before lexical search
normalised text: its descriptions are Persian, its full-text index holds them as typed, and one
record was added in the journal only.
"""

from __future__ import annotations

import shutil
import sqlite3
from pathlib import Path

import pytest

from helpers import ColorEmbedder, current_snapshot, solid
from multimodal_rag import MultimodalRAG
from multimodal_rag._text_normalisation import NORMALISATION_VERSION
from multimodal_rag.descriptions import SQLiteDescriptionStore

LEGACY = Path(__file__).parent / "data" / "legacy"
EXPECTED = {
    "red": ("A red square.", {"shade": "warm"}),
    "blue": ("A blue square, described later.", {}),
    "yellow": ("A yellow square.", {}),
}


@pytest.mark.parametrize("version", ["journal-v1", "journal-v2"])
@pytest.mark.parametrize("stores", ["faiss-flat-sqlite", "hnswlib-jsonl"])
def test_a_knowledge_base_of_an_earlier_version_opens_searches_and_saves(tmp_path: Path, version: str, stores: str) -> None:
    kb = tmp_path / "kb"
    shutil.copytree(LEGACY / version / stores, kb)
    reader = MultimodalRAG.open(kb, embedder=ColorEmbedder(), read_only=True)
    assert {id_: (reader.get(id_).description, reader.get(id_).metadata) for id_ in reader.ids()} == EXPECTED
    assert reader.search(text="red", k=1)[0].id == "red"
    # Image files were recorded by absolute path where the knowledge base was made: only those may be missing.
    assert {p.kind for p in reader.verify().problems} <= {"missing-image"}

    writer = MultimodalRAG.open(kb, allow_modules=["helpers"])  # the embedder rebuilt from the manifest
    writer.save()
    writer.close()
    again = MultimodalRAG.open(kb, embedder=ColorEmbedder(), read_only=True)
    assert {id_: again.get(id_).description for id_ in again.ids()} == {k: v[0] for k, v in EXPECTED.items()}


@pytest.mark.parametrize("stores", ["faiss-flat-sqlite", "hnswlib-jsonl"])
def test_a_knowledge_base_from_before_read_text_opens_unchanged_and_reads_text_later(tmp_path: Path, stores: str) -> None:
    from ocr_helpers import TEXTS, ColourTextReader

    kb = tmp_path / "kb"
    shutil.copytree(LEGACY / "journal-v2" / stores, kb)
    reader = MultimodalRAG.open(kb, embedder=ColorEmbedder(), read_only=True)
    assert all(reader.get(id_).ocr is None for id_ in reader.ids())
    assert reader.ocr_info == {"on": False, "reader": None, "config": None, "read": 0, "with_text": 0}
    assert "text-not-read" not in {p.kind for p in reader.verify().problems}
    reader.close()

    writer = MultimodalRAG.open(kb, embedder=ColorEmbedder())
    # Its images were recorded where it was made: read the text of one this test has.
    writer.add([solid("red", size=(20, 20))], ids=["new"], ocr=ColourTextReader(), progress=False)
    writer.save()
    writer.close()
    again = MultimodalRAG.open(kb, embedder=ColorEmbedder(), read_only=True, allow_modules=["ocr_helpers"])
    assert {id_: again.get(id_).description for id_ in EXPECTED} == {k: v[0] for k, v in EXPECTED.items()}
    assert again.get("new").ocr is not None and again.get("new").ocr.text == TEXTS[(255, 0, 0)]  # type: ignore[union-attr]
    assert [h.id for h in again.search(text="XR-2000", mode="lexical")] == ["new"]
    again.close()


#: Persian query -> the record it finds, each typed as the descriptions were not: Arabic letter
#: forms, ASCII digits, ZWNJ left out or spaced.
PERSIAN_QUERIES = {
    "باتري ليتيومي": "red",  # Arabic yeh
    "2000 وات": "red",  # ASCII digits for ۲۰۰۰
    "كتاب": "blue",  # Arabic kaf
    "بیسیم": "green",  # no ZWNJ in بی‌سیم
    "می کند": "green",  # a space for the ZWNJ of می‌کند
    "چایساز 1.7": "yellow",  # only in the journal: no ZWNJ, ASCII digits and point
}


@pytest.mark.parametrize("stores", ["faiss-flat-sqlite", "hnswlib-jsonl"])
def test_a_knowledge_base_indexed_before_normalisation_is_reindexed_on_open(tmp_path: Path, stores: str) -> None:
    kb = tmp_path / "kb"
    shutil.copytree(LEGACY / "persian-v1" / stores, kb)
    reader = MultimodalRAG.open(kb, embedder=ColorEmbedder(), read_only=True)
    for query, expected in PERSIAN_QUERIES.items():
        assert [hit.id for hit in reader.search(text=query, k=1, mode="lexical")] == [expected], query
    # The records themselves are as they were typed.
    assert reader.get("green").description == "هدفون بی\u200cسیم که صدا را بهتر می\u200cکند"
    assert reader.get("red").metadata == {"brand": "سامسونگ"}
    reader.close()

    writer = MultimodalRAG.open(kb, allow_modules=["helpers"])
    vectors = writer.raw_vectors(["red", "blue"])
    writer.save()
    writer.close()
    again = MultimodalRAG.open(kb, embedder=ColorEmbedder(), read_only=True)
    for query, expected in PERSIAN_QUERIES.items():
        assert [hit.id for hit in again.search(text=query, k=1, mode="lexical")] == [expected], query
    assert (again.raw_vectors(["red", "blue"]) == vectors).all()  # re-indexed, not embedded again
    again.close()


def test_the_saved_file_holds_the_normalised_index_and_loads_without_migration(tmp_path: Path) -> None:
    kb = tmp_path / "kb"
    shutil.copytree(LEGACY / "persian-v1" / "faiss-flat-sqlite", kb)
    writer = MultimodalRAG.open(kb, allow_modules=["helpers"])
    writer.save()
    writer.close()
    descriptions = current_snapshot(kb) / "descriptions"
    db = sqlite3.connect(descriptions / "descriptions.sqlite")
    try:
        assert db.execute("PRAGMA user_version").fetchone()[0] == NORMALISATION_VERSION
        columns = {row[1] for row in db.execute("PRAGMA table_xinfo(records)")}
        assert "search_0" in columns
        assert db.execute("SELECT search_0 FROM records WHERE id = 'green'").fetchone()[0].endswith("بیسیم میکند")
    finally:
        db.close()
    store = SQLiteDescriptionStore.load(descriptions)
    assert store.search_text("كتاب", k=1)[0][0] == "blue"
