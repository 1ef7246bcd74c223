"""Copying a knowledge base between stores: embedded files, servers, and back."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from conftest import on_server, server_uri
from helpers import ColorEmbedder, encoded, solid, two_tone
from multimodal_rag import MultimodalRAG
from multimodal_rag.errors import KnowledgeBaseExistsError, MigrationError
from multimodal_rag.tools import migrate
from multimodal_rag.vectors.faiss_flat import FaissFlatStore

QUERIES = [two_tone("red", "green"), two_tone("blue", "white"), solid("magenta")]


@pytest.fixture
def source(tmp_path: Path, image_dir: Path) -> Path:
    """A knowledge base on FAISS + SQLite with images on disk and one kept inside it."""
    kb = tmp_path / "source"
    with MultimodalRAG.create(kb, embedder=ColorEmbedder()) as rag:
        rag.add_directory(image_dir, descriptions=image_dir / "description.json", progress=False)
        rag.add([encoded(two_tone("cyan", "black"))], descriptions=["kept inside"], progress=False)
    return kb


def _hits(kb: Path) -> list[list[tuple[str, str | None, float]]]:
    with MultimodalRAG.open(kb, embedder=ColorEmbedder(), read_only=True) as rag:
        return [
            [(h.id, h.description, h.score) for h in rag.search(image=query, k=20)]
            for query in QUERIES
        ]


def _assert_same_hits(a: list, b: list) -> None:
    """Equal hits and scores; ids whose scores tie may come in either order."""

    def ranked(rows: list) -> list:
        return [
            sorted((round(score, 4), id_, description) for id_, description, score in row)
            for row in rows
        ]

    assert ranked(a) == ranked(b)


def test_copy_to_other_embedded_stores_keeps_search_results_and_images(
    source: Path, tmp_path: Path
) -> None:
    target = tmp_path / "target"
    report = migrate(
        source, target, vector_store="hnswlib", description_store="jsonl", embedder=ColorEmbedder()
    )
    assert report.counts_match and report.vectors == (9, 9) and report.descriptions == (9, 9)
    assert report.images == 1 and report.sampled == 9 and report.overlap == 1.0
    _assert_same_hits(_hits(source), _hits(target))
    with MultimodalRAG.open(target, embedder=ColorEmbedder(), read_only=True) as rag:
        kept = next(r for r in rag.description_store if r.description == "kept inside")
        assert kept.image_path == f"images/{Path(kept.image_path).name}"  # stored relative to the knowledge base
        image = rag.get(kept.id).image_path
        assert Path(image).parent == (target / "images").resolve() and Path(image).is_file()
        assert rag.vector_store.kind == "hnswlib"
    assert len(list((source / "images").iterdir())) == 1  # the source is untouched


def test_round_trip_through_milvus_and_postgres(source: Path, tmp_path: Path) -> None:
    from multimodal_rag.descriptions.postgres import PostgresDescriptionStore
    from multimodal_rag.vectors.milvus import MilvusVectorStore

    vectors = on_server(
        MilvusVectorStore(ColorEmbedder().dim, uri=server_uri("MILVUS_URI", "Milvus"))
    )
    records = on_server(PostgresDescriptionStore(server_uri("DATABASE_URL", "PostgreSQL")))
    served, back = tmp_path / "served", tmp_path / "back"
    to_servers = migrate(
        source, served, vector_store=vectors, description_store=records, embedder=ColorEmbedder()
    )
    assert to_servers.counts_match and to_servers.overlap == 1.0
    from_servers = migrate(served, back, embedder=ColorEmbedder())  # FAISS + SQLite by default
    assert from_servers.counts_match and from_servers.overlap == 1.0
    original = _hits(source)
    _assert_same_hits(original, _hits(served))
    _assert_same_hits(original, _hits(back))


class _LossyStore(FaissFlatStore):
    """Loses the last vector of every add, as a broken backend might."""

    def add(self, ids, vectors) -> None:  # type: ignore[no-untyped-def]
        super().add(list(ids)[:-1], np.asarray(vectors)[:-1])


def test_a_copy_that_loses_data_is_reported(source: Path, tmp_path: Path) -> None:
    with pytest.raises(MigrationError, match="holds 8 vectors") as caught:
        migrate(source, tmp_path / "t", vector_store=_LossyStore(48), embedder=ColorEmbedder())
    assert caught.value.report.vectors == (9, 8) and not caught.value.report.counts_match


def test_an_existing_target_is_refused(source: Path) -> None:
    with pytest.raises(KnowledgeBaseExistsError):
        migrate(source, source, embedder=ColorEmbedder())


def test_an_adapted_source_is_compared_in_the_raw_space_it_is_copied_in(source: Path, tmp_path: Path) -> None:
    """The copy holds the embedder's raw vectors; its searches are compared with exact searches
    of the raw vectors kept beside the source's adapted index, not with that index."""
    from multimodal_rag._kb.directory import ADAPTER_FILE
    from multimodal_rag._kb.manifest import AdapterEntry
    from multimodal_rag.adapter import Adapter

    dim = ColorEmbedder().dim
    rng = np.random.default_rng(0)
    # A map far from the identity, so that adapted neighbours differ from raw ones.
    arrays = {f"{side}.weight": rng.standard_normal((dim, dim)) for side in ("image", "text")}
    adapter = Adapter(kind="linear", dim=dim, arrays=arrays)
    with MultimodalRAG.open(source, embedder=ColorEmbedder()) as rag:
        rag._adapting.switch(adapter, AdapterEntry(kind="linear", rank=dim, sha256=adapter.sha256, file=ADAPTER_FILE))
        ids = sorted(rag.ids())
        raw = rag.raw_vectors(ids)
        adapted = rag.vector_store.get_vectors(ids)
        assert not np.allclose(raw @ raw.T, adapted @ adapted.T, atol=1e-3)
    report = migrate(source, tmp_path / "target", embedder=ColorEmbedder(), k=2, min_overlap=1.0)
    assert report.sampled == 9 and report.overlap == 1.0
    with MultimodalRAG.open(tmp_path / "target", embedder=ColorEmbedder(), read_only=True) as copy:
        assert copy.adapter is None
        np.testing.assert_allclose(copy.raw_vectors(ids), raw, atol=1e-6)
