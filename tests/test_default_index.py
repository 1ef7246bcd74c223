"""A new knowledge base gets the vector store suited to its expected size."""

from __future__ import annotations

from pathlib import Path

import pytest

from multimodal_rag import MultimodalRAG
from multimodal_rag._registry import kind_of
from multimodal_rag.errors import InvalidInputError
from multimodal_rag.vectors.defaults import FLAT_MAX_SIZE, default_vector_store


@pytest.mark.parametrize(
    ("expected_size", "kind"),
    [(None, "faiss-flat"), (0, "faiss-flat"), (FLAT_MAX_SIZE, "faiss-flat"), (FLAT_MAX_SIZE + 1, "hnswlib")],
)
def test_the_default_store_follows_the_expected_size(expected_size, kind) -> None:
    assert kind_of(default_vector_store(16, expected_size=expected_size)) == kind


def test_create_records_the_chosen_kind_and_reopens_it(embedder, tmp_path: Path) -> None:
    from helpers import solid

    with MultimodalRAG.create(tmp_path / "kb", embedder=embedder, expected_size=2_000_000) as rag:
        rag.add([solid("red"), solid("blue")], ids=["r", "b"])
    reopened = MultimodalRAG.open(tmp_path / "kb", embedder=embedder, read_only=True)
    assert kind_of(reopened.vector_store) == "hnswlib"
    assert reopened.search(image=solid("red"), k=1)[0].id == "r"


def test_an_explicit_kind_wins_over_the_expected_size(embedder, tmp_path: Path) -> None:
    rag = MultimodalRAG.create(tmp_path / "kb", embedder=embedder, vector_store="faiss-hnsw", expected_size=10)
    assert kind_of(rag.vector_store) == "faiss-hnsw"
    rag.close()


def test_without_the_hnswlib_extra_a_large_collection_gets_faiss_hnsw(monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib.util

    find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "hnswlib" else find_spec(name, *a))
    assert kind_of(default_vector_store(16, expected_size=FLAT_MAX_SIZE + 1)) == "faiss-hnsw"
    assert kind_of(default_vector_store(16, expected_size=FLAT_MAX_SIZE)) == "faiss-flat"


@pytest.mark.parametrize("bad", [-1, 2.5, "many", True])
def test_a_bad_expected_size_is_refused(bad) -> None:
    with pytest.raises(InvalidInputError, match="expected_size"):
        default_vector_store(16, expected_size=bad)
