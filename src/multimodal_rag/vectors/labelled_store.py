"""The skeleton the in-process vector stores (FAISS, hnswlib) share.

A store keeps string ids in a `LabelMap` and int64 labels in its index.
This base class checks inputs (with `multimodal_rag._validation`), maps labels back to ids, applies filters, falls back
to exact search when an approximate index comes up short, and guards everything
with a `ReadWriteLock` so that many threads may search while one adds or
removes. A backend implements only the index operations (the ``_index_*`` hooks).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Sequence
from typing import Any

import numpy as np

from multimodal_rag._locks import ReadWriteLock
from multimodal_rag._validation import check_ids, check_int, check_queries, check_vectors
from multimodal_rag.protocols import IdFilter, VectorStore
from multimodal_rag.types import Neighbor, Vectors
from multimodal_rag.vectors.label_map import LabelMap
from multimodal_rag.vectors.ranking import exact_top_k, filtered_search

__all__ = ["LabelledVectorStore"]

#: Rows per chunk when an exact fallback walks over every stored vector.
_EXACT_CHUNK = 65_536


class LabelledVectorStore(VectorStore):
    """Base of the built-in stores; see the module docstring.

    Thread safety: searches, ``get_vectors``, ``ids`` and ``save`` share a read lock;
    ``add`` and ``remove`` take it exclusively. A search ``filter`` runs under the read
    lock, so it must not add to or remove from the same store.

    Args:
        dim: Dimension of the vectors.
    """

    def __init__(self, dim: int) -> None:
        self._dim = check_int("dim", dim)
        self._labels = LabelMap()
        self._lock = ReadWriteLock()

    # -- hooks a backend implements (called with the lock held) -------------------

    def _index_add(self, labels: np.ndarray, vectors: np.ndarray) -> None:
        raise NotImplementedError

    def _index_remove(self, labels: np.ndarray) -> None:
        raise NotImplementedError

    def _index_search(self, queries: np.ndarray, k: int, **params: Any) -> tuple[np.ndarray, np.ndarray]:
        """``(scores, labels)`` of the ``k`` best per query; labels of -1 or of removed ids are skipped.

        ``params`` are the knobs the backend's own ``search`` passes (``ef``, ``nprobe``...);
        an override names those it takes and keeps ``**other`` to match this signature.
        """
        raise NotImplementedError

    def _index_vectors(self, labels: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    # -- VectorStore -------------------------------------------------------------

    @property
    def dim(self) -> int:
        return self._dim

    def __len__(self) -> int:
        return len(self._labels)

    def __contains__(self, id: object) -> bool:
        return id in self._labels

    def ids(self) -> list[str]:
        with self._lock.read():
            return list(self._labels.label_of)

    def add(self, ids: Sequence[str], vectors: Vectors) -> None:
        ids = check_ids(ids)
        array = check_vectors(vectors, self._dim, count=len(ids))
        if not ids:
            return
        with self._lock.write():
            replaced = self._labels.pop([i for i in ids if i in self._labels])
            if len(replaced):
                self._index_remove(replaced)
            self._index_add(self._labels.assign(ids), array)

    def remove(self, ids: Iterable[str]) -> int:
        if isinstance(ids, str):
            ids = [ids]
        with self._lock.write():
            labels = self._labels.pop(ids)
            if len(labels):
                self._index_remove(labels)
        return len(labels)

    def get_vectors(self, ids: Sequence[str]) -> Vectors:
        with self._lock.read():
            labels = self._labels.labels(ids)
            if not len(labels):
                return np.empty((0, self._dim), dtype=np.float32)
            return np.asarray(self._index_vectors(labels), dtype=np.float32).reshape(len(labels), self._dim)

    def search(
        self, queries: Vectors, k: int, *, filter: IdFilter | None = None
    ) -> list[list[Neighbor]]:
        return self._search(queries, k, filter)

    # -- shared search path ------------------------------------------------------

    def _search(
        self, queries: Any, k: int, filter: IdFilter | None, *, exclusive: bool = False, **params: Any
    ) -> list[list[Neighbor]]:
        """Checked, locked search; ``exclusive`` holds the write lock (for knobs that are shared state)."""
        array = check_queries(queries, self._dim, k)
        guard = self._lock.write() if exclusive else self._lock.read()
        with guard:
            if filter is None:
                return self._search_unlocked(array, k, **params)
            return filtered_search(
                lambda q, n: self._search_unlocked(q, n, **params), array, k, len(self._labels), filter
            )

    def _search_unlocked(self, queries: np.ndarray, k: int, **params: Any) -> list[list[Neighbor]]:
        k = min(k, len(self._labels))
        if k == 0:
            return [[] for _ in range(len(queries))]
        scores, labels = self._index_search(queries, k, **params)
        results = self._neighbors(scores, labels)
        short = [row for row, hits in enumerate(results) if len(hits) < k]
        if short:
            # An approximate index may find fewer than k live vectors (few probed lists,
            # removed vectors crowding the graph): answer those queries exactly.
            exact_scores, exact_labels = exact_top_k(queries[short], k, self._live_chunks())
            for row, hits in zip(short, self._neighbors(exact_scores, exact_labels)):
                results[row] = hits
        return results

    def _neighbors(self, scores: np.ndarray, labels: np.ndarray) -> list[list[Neighbor]]:
        id_of = self._labels.id_of
        return [
            [Neighbor(id_of[label], score) for score, label in zip(srow, lrow) if label in id_of]
            for srow, lrow in zip(scores.tolist(), labels.tolist())
        ]

    def _live_chunks(self) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        labels = np.fromiter(self._labels.id_of, dtype=np.int64, count=len(self._labels))
        for start in range(0, len(labels), _EXACT_CHUNK):
            chunk = labels[start : start + _EXACT_CHUNK]
            yield chunk, np.asarray(self._index_vectors(chunk), dtype=np.float32).reshape(len(chunk), self._dim)
