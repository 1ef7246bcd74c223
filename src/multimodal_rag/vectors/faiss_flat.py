"""Exact search with FAISS: every query is compared with every stored vector."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from multimodal_rag.errors import CorruptFileError, InvalidInputError
from multimodal_rag.protocols import IdFilter, VectorStore
from multimodal_rag.types import Neighbor
from multimodal_rag.vectors._common import (
    LabelMap,
    check_ids,
    check_queries,
    check_vectors,
    filtered_search,
)

__all__ = ["FaissFlatStore"]

_INDEX_FILE = "index.faiss"
_IDS_FILE = "ids.json"


class FaissFlatStore(VectorStore):
    """Exact inner-product search (cosine on normalised vectors) with ``faiss.IndexFlatIP``.

    Best for up to a few hundred thousand vectors: no training, no recall loss.
    Ids map to int64 labels through a :class:`LabelMap` whose counter only grows.

    Args:
        dim: Dimension of the vectors.
    """

    kind: ClassVar[str] = "faiss-flat"

    def __init__(self, dim: int) -> None:
        if not isinstance(dim, int) or dim < 1:
            raise InvalidInputError(f"dim must be a positive integer, got {dim!r}")
        import faiss

        self._dim = dim
        self._index = faiss.IndexIDMap2(faiss.IndexFlatIP(dim))
        self._labels = LabelMap()

    @property
    def dim(self) -> int:
        return self._dim

    def config(self) -> dict[str, Any]:
        return {}

    def __len__(self) -> int:
        return len(self._labels)

    def __contains__(self, id: object) -> bool:
        return id in self._labels

    def ids(self) -> list[str]:
        return list(self._labels.label_of)

    def add(self, ids: Sequence[str], vectors: np.ndarray) -> None:
        ids = check_ids(ids)
        array = check_vectors(vectors, self._dim, count=len(ids))
        if not ids:
            return
        self._remove_labels(self._labels.pop([i for i in ids if i in self._labels]))
        self._index.add_with_ids(array, self._labels.assign(ids))

    def remove(self, ids: Iterable[str]) -> int:
        if isinstance(ids, str):
            ids = [ids]
        labels = self._labels.pop(ids)
        self._remove_labels(labels)
        return len(labels)

    def _remove_labels(self, labels: np.ndarray) -> None:
        if len(labels):
            import faiss

            self._index.remove_ids(faiss.IDSelectorBatch(labels))

    def get_vectors(self, ids: Sequence[str]) -> np.ndarray:
        labels = self._labels.labels(ids)
        out = np.empty((len(labels), self._dim), dtype=np.float32)
        for row, label in enumerate(labels.tolist()):
            out[row] = self._index.reconstruct(label)
        return out

    def search(
        self, queries: np.ndarray, k: int, *, filter: IdFilter | None = None
    ) -> list[list[Neighbor]]:
        array = check_queries(queries, self._dim, k)
        if filter is not None:
            return filtered_search(self._search, array, k, len(self), filter)
        return self._search(array, k)

    def _search(self, queries: np.ndarray, k: int) -> list[list[Neighbor]]:
        k = min(k, len(self))
        if k == 0:
            return [[] for _ in range(len(queries))]
        scores, labels = self._index.search(queries, k)
        id_of = self._labels.id_of
        return [
            [Neighbor(id_of[label], float(score)) for score, label in zip(srow, lrow) if label >= 0]
            for srow, lrow in zip(scores.tolist(), labels.tolist())
        ]

    def save(self, directory: Path) -> None:
        import faiss

        faiss.write_index(self._index, str(Path(directory) / _INDEX_FILE))
        self._labels.save(Path(directory) / _IDS_FILE)

    @classmethod
    def load(cls, directory: Path, *, dim: int, **config: Any) -> FaissFlatStore:
        import faiss

        store = cls(dim, **config)
        path = Path(directory) / _INDEX_FILE
        try:
            index = faiss.read_index(str(path))
        except RuntimeError as exc:
            raise CorruptFileError(f"cannot read the FAISS index {str(path)!r}: {exc}") from exc
        labels = LabelMap.load(Path(directory) / _IDS_FILE)
        if index.d != dim or index.ntotal != len(labels):
            raise CorruptFileError(
                f"the FAISS index {str(path)!r} holds {index.ntotal} vectors of dimension "
                f"{index.d}, but the id map has {len(labels)} ids of dimension {dim}"
            )
        store._index, store._labels = index, labels
        return store
