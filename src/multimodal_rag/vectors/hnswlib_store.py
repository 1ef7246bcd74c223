"""Approximate search on an hnswlib HNSW graph (``space="ip"``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from multimodal_rag.errors import CorruptFileError
from multimodal_rag.protocols import IdFilter
from multimodal_rag.types import Neighbor
from multimodal_rag.vectors._base import LabelledVectorStore, check_knob
from multimodal_rag.vectors._common import LabelMap

__all__ = ["HNSWLibStore"]

_INDEX_FILE = "index.hnsw"
_IDS_FILE = "ids.json"
_INITIAL_CAPACITY = 1024


class HNSWLibStore(LabelledVectorStore):
    """Approximate nearest neighbours on an hnswlib graph.

    Removal uses hnswlib's ``mark_deleted``; later adds reuse the slots of removed
    vectors (``replace_deleted``), and the capacity doubles by itself when full, so
    nobody has to guess ``max_elements``.

    hnswlib keeps ``ef`` as one setting of the whole index, so a search that overrides
    it (``search(..., ef=...)``) holds the store's lock exclusively: it never changes
    the ``ef`` of a search running in another thread, but runs alone.

    Args:
        dim: Dimension of the vectors.
        M: Graph neighbours per node; more means better recall, more memory and a slower build.
        ef_construction: Candidate-list size while building; more means a better graph.
        ef_search: Candidate-list size while searching (hnswlib uses at least ``k``). The
            default, 128, measured recall@10 0.97 at one million CLIP-like vectors (0.90 with
            64) and 1.00 at 100,000, at well under a millisecond per query.
    """

    kind: ClassVar[str] = "hnswlib"

    def __init__(self, dim: int, *, M: int = 16, ef_construction: int = 100, ef_search: int = 128) -> None:
        super().__init__(dim)
        self._M = check_knob("M", M, minimum=2)
        self._ef_construction = check_knob("ef_construction", ef_construction)
        self._ef_search = check_knob("ef_search", ef_search)
        import hnswlib

        self._index = hnswlib.Index(space="ip", dim=dim)
        self._index.init_index(
            max_elements=_INITIAL_CAPACITY,
            M=self._M,
            ef_construction=self._ef_construction,
            allow_replace_deleted=True,
        )
        self._index.set_ef(self._ef_search)

    def config(self) -> dict[str, Any]:
        return {"M": self._M, "ef_construction": self._ef_construction, "ef_search": self._ef_search}

    def search(
        self, queries: np.ndarray, k: int, *, filter: IdFilter | None = None, ef: int | None = None
    ) -> list[list[Neighbor]]:
        """Search as :meth:`VectorStore.search`; ``ef`` overrides ``ef_search`` for this call."""
        ef = check_knob("ef", ef, optional=True)
        if ef is None or ef == self._ef_search:
            return self._search(queries, k, filter)
        return self._search(queries, k, filter, exclusive=True, ef=ef)

    def _index_add(self, labels: np.ndarray, vectors: np.ndarray) -> None:
        index = self._index
        needed = index.get_current_count() + len(labels)
        if needed > index.get_max_elements():
            index.resize_index(max(needed, 2 * index.get_max_elements()))
        index.add_items(vectors, labels, replace_deleted=True)

    def _index_remove(self, labels: np.ndarray) -> None:
        for label in labels.tolist():
            self._index.mark_deleted(label)

    def _index_vectors(self, labels: np.ndarray) -> np.ndarray:
        return np.asarray(self._index.get_items(labels), dtype=np.float32)

    def _index_search(
        self, queries: np.ndarray, k: int, *, ef: int | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        if ef is not None:
            self._index.set_ef(ef)  # under the exclusive lock; restored below
        try:
            # One thread for a single query: a thread pool costs more than it saves.
            labels, distances = self._index.knn_query(queries, k, num_threads=1 if len(queries) == 1 else -1)
        except RuntimeError:
            # hnswlib found fewer than k live neighbours (removals can cut the graph);
            # the base class answers such queries exactly.
            return np.zeros((len(queries), 0), np.float32), np.zeros((len(queries), 0), np.int64)
        finally:
            if ef is not None:
                self._index.set_ef(self._ef_search)
        # hnswlib's "ip" distance is 1 - inner product.
        return 1.0 - distances, labels.astype(np.int64)

    def save(self, directory: Path) -> None:
        with self._lock.read():
            self._index.save_index(str(Path(directory) / _INDEX_FILE))
            self._labels.save(Path(directory) / _IDS_FILE)

    @classmethod
    def load(cls, directory: Path, *, dim: int, **config: Any) -> HNSWLibStore:
        store = cls(dim, **config)
        path = Path(directory) / _INDEX_FILE
        labels = LabelMap.load(Path(directory) / _IDS_FILE)
        import hnswlib

        # A fresh object: load_index on the one __init__ made would discard it noisily.
        store._index = hnswlib.Index(space="ip", dim=dim)
        try:
            store._index.load_index(str(path), allow_replace_deleted=True)
        except (RuntimeError, OSError) as exc:
            raise CorruptFileError(f"cannot read the hnswlib index {str(path)!r}: {exc}") from exc
        index = store._index
        # hnswlib does not report which of its labels are deleted; every live one must be there.
        if index.dim != dim or not set(labels.id_of) <= set(index.get_ids_list()):
            raise CorruptFileError(
                f"the hnswlib index {str(path)!r} ({index.element_count} vectors of dimension "
                f"{index.dim}) lacks vectors of its id map ({len(labels)} ids of dimension {dim})"
            )
        index.set_ef(store._ef_search)
        store._labels = labels
        return store
