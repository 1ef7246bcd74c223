"""FAISS indexes that number vectors by position and cannot delete them in place.

``IndexHNSWFlat`` cannot remove vectors at all, and an IVF index behind an exact
re-ranking stage (``IndexRefineFlat``) cannot either. Such a store keeps the
position -> label table itself: a removed vector's position is marked dead (a
tombstone), searches skip dead positions through a FAISS ``IDSelector``, and the
index is rebuilt without them (compacted) when a save finds that more than
`COMPACT_FRACTION` of it is dead. Below that fraction the tombstones are
saved with the index and stay skipped after loading.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from multimodal_rag.errors import CorruptFileError
from multimodal_rag.vectors.label_map import LabelMap
from multimodal_rag.vectors.labelled_store import LabelledVectorStore

__all__ = ["COMPACT_FRACTION", "PositionalFaissStore"]

#: A save rebuilds the index when more than this fraction of its positions are dead.
COMPACT_FRACTION = 0.1

_INDEX_FILE = "index.faiss"
_IDS_FILE = "ids.json"
_POSITIONS_FILE = "positions.npy"
_DEAD = -1


class PositionalFaissStore(LabelledVectorStore):
    """Base of the FAISS HNSW and IVF stores; see the module docstring.

    Subclasses create ``self._index`` and implement `_empty_index` (a fresh
    index to compact into) and `_search_parameters`.
    """

    def __init__(self, dim: int) -> None:
        super().__init__(dim)
        self._index: Any = None
        # Label of the vector at each index position, or -1 once it is removed.
        self._label_at = np.empty(0, dtype=np.int64)
        self._position_of: dict[int, int] = {}
        self._dead = 0
        self._live_selector: Any = None  # cached; rebuilt after a change

    # -- hooks -------------------------------------------------------------------

    def _empty_index(self) -> Any:
        """A new empty index, ready to add to, for compaction."""
        raise NotImplementedError

    def _search_parameters(self, selector: Any, k: int, **params: Any) -> Any:
        """FAISS ``SearchParameters`` carrying ``selector`` (``None`` when nothing is dead).

        ``params`` are the backend's own search knobs, as for `_index_search`.
        """
        raise NotImplementedError

    def _extra_files(self, directory: Path) -> None:
        """Write files beyond the index and id map (e.g. a trained template)."""

    # -- index operations --------------------------------------------------------

    def _index_add(self, labels: np.ndarray, vectors: np.ndarray) -> None:
        start = self._index.ntotal
        self._index.add(vectors)
        self._label_at = np.concatenate([self._label_at, labels])
        self._position_of.update(zip(labels.tolist(), range(start, start + len(labels))))
        self._live_selector = None

    def _index_remove(self, labels: np.ndarray) -> None:
        positions = [self._position_of.pop(label) for label in labels.tolist()]
        self._label_at[positions] = _DEAD
        self._dead += len(positions)
        self._live_selector = None

    def _index_vectors(self, labels: np.ndarray) -> np.ndarray:
        positions = np.fromiter((self._position_of[label] for label in labels.tolist()), np.int64, len(labels))
        vectors: np.ndarray = self._index.reconstruct_batch(positions)
        return vectors

    def _index_search(self, queries: np.ndarray, k: int, **params: Any) -> tuple[np.ndarray, np.ndarray]:
        params = self._search_parameters(self._selector(), k, **params)
        scores, positions = self._index.search(queries, k, params=params)
        return scores, np.where(positions >= 0, self._label_at[positions], _DEAD)

    def _selector(self) -> Any:
        """An ``IDSelectorBitmap`` of live positions, or ``None`` when nothing is dead."""
        if not self._dead:
            return None
        selector = self._live_selector
        if selector is None:
            import faiss

            bitmap = np.packbits(self._label_at != _DEAD, bitorder="little")
            selector = faiss.IDSelectorBitmap(len(self._label_at), faiss.swig_ptr(bitmap))
            selector.bitmap_array = bitmap  # type: ignore[attr-defined]  # keeps the bits alive as long as the selector
            self._live_selector = selector
        return selector

    # -- compaction and persistence ----------------------------------------------

    def compact(self) -> None:
        """Rebuild the index from its live vectors, dropping removed ones for good."""
        with self._lock.write():
            self._compact()

    def _compact(self) -> None:
        live = np.flatnonzero(self._label_at != _DEAD)
        vectors = self._index.reconstruct_batch(live) if len(live) else None
        labels = self._label_at[live]
        self._index = self._empty_index()
        self._label_at = np.empty(0, dtype=np.int64)
        self._position_of = {}
        self._dead = 0
        self._live_selector = None
        if vectors is not None:
            self._index_add(labels, vectors)

    def save(self, directory: Path) -> None:
        import faiss

        directory = Path(directory)
        with self._lock.write():  # a save may compact
            if self._dead > COMPACT_FRACTION * len(self._label_at):
                self._compact()
            faiss.write_index(self._index, str(directory / _INDEX_FILE))
            np.save(directory / _POSITIONS_FILE, self._label_at)
            self._labels.save(directory / _IDS_FILE)
            self._extra_files(directory)

    @staticmethod
    def _read_index(directory: Path, dim: int | None) -> Any:
        """The FAISS index `save` wrote, for `_load_files`; its ``d`` is the store's dim.

        Raises:
            CorruptFileError: An unreadable index, or one of another dimension than ``dim``.
        """
        import faiss

        try:
            index = faiss.read_index(str(Path(directory) / _INDEX_FILE))
        except Exception as exc:
            raise CorruptFileError(f"cannot read the FAISS index in {str(directory)!r}: {exc}") from exc
        if dim is not None and index.d != dim:
            raise CorruptFileError(
                f"the FAISS index in {str(directory)!r} holds vectors of dimension {index.d}, not {dim}"
            )
        return index

    def _load_files(self, directory: Path, index: Any) -> None:
        """Read the rest of what `save` wrote into this (new, empty) store, around ``index``."""
        directory = Path(directory)
        try:
            label_at = np.load(directory / _POSITIONS_FILE, allow_pickle=False)
        except Exception as exc:  # numpy parses the header with Python's tokenizer: any error is possible
            raise CorruptFileError(f"cannot read the FAISS index in {str(directory)!r}: {exc}") from exc
        labels = LabelMap.load(directory / _IDS_FILE)
        if label_at.dtype != np.int64 or label_at.ndim != 1:
            raise CorruptFileError(f"the label file in {str(directory)!r} is not a list of 64-bit labels")
        live = label_at[label_at != _DEAD]
        if (
            index.d != self._dim
            or index.ntotal != len(label_at)
            or label_at.dtype != np.int64
            or sorted(live.tolist()) != sorted(labels.id_of)
        ):
            raise CorruptFileError(
                f"the FAISS index in {str(directory)!r} holds {index.ntotal} vectors of dimension "
                f"{index.d}, which does not match its id map ({len(labels)} ids, dimension {self._dim})"
            )
        self._index, self._labels, self._label_at = index, labels, label_at
        self._position_of = {label: position for position, label in enumerate(label_at.tolist()) if label != _DEAD}
        self._dead = len(label_at) - len(live)
