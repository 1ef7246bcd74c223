"""Approximate search on a FAISS HNSW graph (``IndexHNSWFlat``, inner product)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

from multimodal_rag._validation import check_int
from multimodal_rag.protocols import IdFilter
from multimodal_rag.types import Neighbor, Vectors
from multimodal_rag.vectors.faiss_positional import PositionalFaissStore

__all__ = ["FaissHNSWStore"]


class FaissHNSWStore(PositionalFaissStore):
    """Approximate nearest neighbours on a hierarchical navigable small-world graph.

    Search time grows roughly with the logarithm of the collection, at the cost of
    recall below 1 and a slower build than flat. FAISS cannot delete from an HNSW
    graph: removed vectors become tombstones that searches skip and a save compacts
    away once they exceed a tenth of the index (see `.faiss_positional`).

    Args:
        dim: Dimension of the vectors.
        M: Graph neighbours per node; more means better recall, more memory and a slower build.
        ef_construction: Candidate-list size while building; more means a better graph.
        ef_search: Candidate-list size while searching (at least ``k`` is used);
            more means better recall and slower searches. ``search(..., ef=...)``
            overrides it for one call.
    """

    kind: ClassVar[str] = "faiss-hnsw"

    def __init__(self, dim: int, *, M: int = 32, ef_construction: int = 80, ef_search: int = 64) -> None:
        super().__init__(dim)
        self._M = check_int("M", M, minimum=2)
        self._ef_construction = check_int("ef_construction", ef_construction)
        self._ef_search = check_int("ef_search", ef_search)
        self._index = self._empty_index()

    def config(self) -> dict[str, Any]:
        return {"M": self._M, "ef_construction": self._ef_construction, "ef_search": self._ef_search}

    def search(
        self, queries: Vectors, k: int, *, filter: IdFilter | None = None, ef: int | None = None
    ) -> list[list[Neighbor]]:
        """Search as [`VectorStore.search`][multimodal_rag.protocols.VectorStore.search]; ``ef`` overrides ``ef_search`` for this call."""
        ef = None if ef is None else check_int("ef", ef)
        return self._search(queries, k, filter, ef=ef)

    def _empty_index(self) -> Any:
        import faiss

        index = faiss.IndexHNSWFlat(self._dim, self._M, faiss.METRIC_INNER_PRODUCT)
        index.hnsw.efConstruction = self._ef_construction
        return index

    def _search_parameters(self, selector: Any, k: int, *, ef: int | None = None, **other: Any) -> Any:
        import faiss

        # A fresh object per call: concurrent searches must not share mutable parameters.
        params = faiss.SearchParametersHNSW()  # type: ignore[attr-defined]  # missing from faiss's stubs
        params.efSearch = max(ef or self._ef_search, k)
        if selector is not None:
            params.sel = selector
        return params

    @classmethod
    def load(cls, directory: Path, *, dim: int | None = None, **config: Any) -> FaissHNSWStore:
        index = cls._read_index(directory, dim)
        store = cls(index.d, **config)
        store._load_files(directory, index)
        return store
