"""Exact search with FAISS: every query is compared with every stored vector."""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from multimodal_rag.errors import CorruptFileError
from multimodal_rag.vectors.label_map import LabelMap
from multimodal_rag.vectors.labelled_store import LabelledVectorStore
from multimodal_rag.vectors.ranking import top_k

__all__ = ["FaissFlatStore"]

_INDEX_FILE = "index.faiss"
_IDS_FILE = "ids.json"

#: Up to this many queries go through one BLAS matrix product plus a linear-time top-k.
#: FAISS scans a handful of queries on a single thread, while the BLAS product streams
#: the stored vectors once using every core, so small batches are memory-bound and about
#: twice as fast this way; larger batches go to FAISS, which blocks the product in cache.
_MATMUL_MAX_QUERIES = 16


class FaissFlatStore(LabelledVectorStore):
    """Exact inner-product search (cosine on normalised vectors) with ``faiss.IndexFlatIP``.

    Best for up to a few hundred thousand vectors: no training, no recall loss.
    Ids map to int64 labels through a `LabelMap` whose counter only grows.
    Safe to search from many threads while one thread adds or removes.

    Args:
        dim: Dimension of the vectors.
    """

    kind: ClassVar[str] = "faiss-flat"

    def __init__(self, dim: int) -> None:
        super().__init__(dim)
        import faiss

        self._index = faiss.IndexIDMap2(faiss.IndexFlatIP(self._dim))
        self._view: tuple[np.ndarray, np.ndarray] | None = None

    def config(self) -> dict[str, Any]:
        return {}

    def _index_add(self, labels: np.ndarray, vectors: np.ndarray) -> None:
        self._view = None
        self._index.add_with_ids(vectors, labels)

    def _index_remove(self, labels: np.ndarray) -> None:
        import faiss

        self._view = None
        self._index.remove_ids(faiss.IDSelectorBatch(labels))

    def _index_vectors(self, labels: np.ndarray) -> np.ndarray:
        return np.stack([self._index.reconstruct(label) for label in labels.tolist()])

    def _index_search(self, queries: np.ndarray, k: int, **params: Any) -> tuple[np.ndarray, np.ndarray]:
        if len(queries) > _MATMUL_MAX_QUERIES:
            return self._index.search(queries, k)
        vectors, labels = self._stored()
        # (n, d) @ (d, q) streams the stored vectors once, row-major, on every BLAS thread.
        scores, positions = top_k(np.ascontiguousarray((vectors @ queries.T).T), k)
        return scores, labels[positions]

    def _stored(self) -> tuple[np.ndarray, np.ndarray]:
        """Zero-copy views of FAISS's vectors and labels, valid until the next change.

        Only changes (under the write lock) reset the cache, so concurrent readers at
        worst build it twice.
        """
        view = self._view
        if view is None:
            import faiss

            n = self._index.ntotal
            flat = faiss.downcast_index(self._index.index)
            # downcast_index returns the concrete IndexFlatIP; faiss's stubs say Index.
            xb = flat.get_xb()  # type: ignore[attr-defined]
            vectors = faiss.rev_swig_ptr(xb, n * self._dim).reshape(n, self._dim)
            labels = faiss.vector_to_array(self._index.id_map)
            view = self._view = (vectors, labels)
        return view

    def save(self, directory: Path) -> None:
        import faiss

        with self._lock.read():
            faiss.write_index(self._index, str(Path(directory) / _INDEX_FILE))
            self._labels.save(Path(directory) / _IDS_FILE)

    @classmethod
    def load(cls, directory: Path, *, dim: int | None = None, **config: Any) -> FaissFlatStore:
        import faiss

        path = Path(directory) / _INDEX_FILE
        try:
            index = faiss.read_index(str(path))
        except RuntimeError as exc:
            raise CorruptFileError(f"cannot read the FAISS index {str(path)!r}: {exc}") from exc
        store = cls(index.d if dim is None else dim, **config)
        dim = store.dim
        labels = LabelMap.load(Path(directory) / _IDS_FILE)
        if index.d != dim or index.ntotal != len(labels):
            raise CorruptFileError(
                f"the FAISS index {str(path)!r} holds {index.ntotal} vectors of dimension "
                f"{index.d}, but the id map has {len(labels)} ids of dimension {dim}"
            )
        # read_index returns the concrete IndexIDMap2 that save wrote; faiss's stubs say Index.
        store._index, store._labels = index, labels  # type: ignore[assignment]
        return store
