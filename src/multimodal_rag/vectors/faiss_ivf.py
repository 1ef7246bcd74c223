"""Approximate search with a FAISS inverted-file index (IVF-Flat, or IVF-PQ with exact re-ranking)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from multimodal_rag._validation import check_int, check_vectors
from multimodal_rag.errors import CorruptFileError, InvalidInputError
from multimodal_rag.protocols import IdFilter
from multimodal_rag.types import Neighbor, Vectors
from multimodal_rag.vectors.faiss_positional import PositionalFaissStore

__all__ = ["FaissIVFStore"]

_TEMPLATE_FILE = "trained.faiss"

#: k-means wants at least this many training points per list (FAISS warns below it).
_MIN_POINTS_PER_LIST = 39
#: FAISS samples at most this many points per list for k-means; we sample the same.
_MAX_POINTS_PER_LIST = 256


class FaissIVFStore(PositionalFaissStore):
    """Approximate nearest neighbours in an inverted file: vectors are bucketed by their
    nearest of ``nlist`` k-means centroids, and a search scans only the ``nprobe``
    buckets nearest the query.

    With ``pq_m`` set, the buckets hold 4-bit product-quantisation codes scanned with
    SIMD (``IVF{nlist},PQ{pq_m}x4fs,RFlat``), and the best ``k * k_factor`` candidates
    are re-ranked exactly against the full vectors, which the index also keeps.

    Training. The centroids are learnt from the first ``train_size`` vectors added
    (or from an explicit sample given to [`train`][multimodal_rag.vectors.faiss_ivf.FaissIVFStore.train]). **Until then the store searches
    exactly**, like [`FaissFlatStore`][multimodal_rag.vectors.faiss_flat.FaissFlatStore]: with too few vectors k-means cannot learn
    ``nlist`` centroids, and at that size exact search is fast anyway. The moment the
    store holds ``train_size`` vectors it trains and moves them into the IVF index.

    Removal leaves tombstones that searches skip and a save compacts (see
    `.faiss_positional`); compaction reuses the trained centroids.

    Args:
        dim: Dimension of the vectors.
        nlist: Number of k-means buckets; about ``4 * sqrt(n)`` to ``16 * sqrt(n)``
            for ``n`` vectors.
        nprobe: Buckets scanned per query; more means better recall and slower
            searches. ``search(..., nprobe=...)`` overrides it for one call.
        pq_m: Sub-quantisers of the PQ codes (must divide ``dim``; ``dim / 8`` is a
            good start), or ``None`` for IVF-Flat (full vectors in the buckets).
        k_factor: With ``pq_m``, candidates re-ranked exactly per result wanted.
            ``search(..., k_factor=...)`` overrides it for one call.
        train_size: Vectors to collect before training; by default ``39 * nlist``,
            the fewest k-means accepts without warning.
    """

    kind: ClassVar[str] = "faiss-ivf"

    def __init__(
        self,
        dim: int,
        *,
        nlist: int = 1024,
        nprobe: int = 16,
        pq_m: int | None = None,
        k_factor: int = 16,
        train_size: int | None = None,
    ) -> None:
        super().__init__(dim)
        self._nlist = check_int("nlist", nlist)
        self._nprobe = check_int("nprobe", nprobe)
        self._pq_m = None if pq_m is None else check_int("pq_m", pq_m)
        self._k_factor = check_int("k_factor", k_factor)
        self._train_size = None if train_size is None else check_int("train_size", train_size, minimum=self._nlist)
        if self._pq_m is not None and dim % self._pq_m:
            raise InvalidInputError(f"pq_m must divide the dimension {dim}, got {self._pq_m}")
        # The trained, empty index, serialised: compaction starts from a copy of it.
        self._template: np.ndarray | None = None
        self._index = self._empty_index()

    @property
    def factory(self) -> str:
        """The FAISS factory string of the trained index."""
        if self._pq_m is None:
            return f"IVF{self._nlist},Flat"
        return f"IVF{self._nlist},PQ{self._pq_m}x4fs,RFlat"

    @property
    def is_trained(self) -> bool:
        """Whether the centroids are learnt (before that, searches are exact)."""
        return self._template is not None

    def config(self) -> dict[str, Any]:
        return {
            "nlist": self._nlist,
            "nprobe": self._nprobe,
            "pq_m": self._pq_m,
            "k_factor": self._k_factor,
            "train_size": self._train_size,
        }

    def search(
        self,
        queries: Vectors,
        k: int,
        *,
        filter: IdFilter | None = None,
        nprobe: int | None = None,
        k_factor: int | None = None,
    ) -> list[list[Neighbor]]:
        """Search as [`VectorStore.search`][multimodal_rag.protocols.VectorStore.search]; ``nprobe`` and ``k_factor`` override the store's for this call."""
        nprobe = None if nprobe is None else check_int("nprobe", nprobe)
        k_factor = None if k_factor is None else check_int("k_factor", k_factor)
        return self._search(queries, k, filter, nprobe=nprobe, k_factor=k_factor)

    def train(self, sample: Vectors) -> None:
        """Learn the centroids from ``sample`` now, instead of from the first vectors added.

        Vectors already stored move into the trained index.

        Raises:
            InvalidInputError: Fewer sample rows than ``nlist``, or bad vectors.
            DimensionMismatchError: A sample of another dimension.
        """
        array = check_vectors(sample, self._dim, what="training vectors")
        if len(array) < self._nlist:
            raise InvalidInputError(
                f"training needs at least nlist={self._nlist} vectors, got {len(array)}"
            )
        with self._lock.write():
            self._train(array)
            self._compact()

    # -- index hooks -------------------------------------------------------------

    def _index_add(self, labels: np.ndarray, vectors: np.ndarray) -> None:
        live = len(self._position_of)
        if not self.is_trained and live + len(vectors) >= (self._train_size or _MIN_POINTS_PER_LIST * self._nlist):
            stored = self._index.reconstruct_batch(np.fromiter(self._position_of.values(), np.int64, live))
            self._train(np.concatenate([stored.reshape(live, self._dim), vectors]))
            self._compact()  # moves the stored vectors into the trained index
        super()._index_add(labels, vectors)

    def _train(self, vectors: np.ndarray) -> None:
        import faiss

        limit = _MAX_POINTS_PER_LIST * self._nlist
        if len(vectors) > limit:
            rows = np.random.default_rng(0).choice(len(vectors), limit, replace=False)
            vectors = vectors[np.sort(rows)]
        index = faiss.index_factory(self._dim, self.factory, faiss.METRIC_INNER_PRODUCT)
        index.train(np.ascontiguousarray(vectors))
        self._template = faiss.serialize_index(index)

    def _empty_index(self) -> Any:
        import faiss

        if self._template is None:
            return faiss.IndexFlatIP(self._dim)
        index = faiss.deserialize_index(self._template)
        if self._pq_m is None:
            # deserialize_index returns the concrete IndexIVF; faiss's stubs say Index.
            index.make_direct_map()  # type: ignore[attr-defined]  # lets get_vectors reconstruct by position
        return index

    def _search_parameters(
        self,
        selector: Any,
        k: int,
        *,
        nprobe: int | None = None,
        k_factor: int | None = None,
        **other: Any,
    ) -> Any:
        import faiss

        # Fresh objects per call: concurrent searches must not share mutable parameters.
        if not self.is_trained:
            params = faiss.SearchParameters()
        else:
            params = faiss.SearchParametersIVF()
            params.nprobe = min(nprobe or self._nprobe, self._nlist)
        if selector is not None:
            params.sel = selector
        if self.is_trained and self._pq_m is not None:
            refine = faiss.IndexRefineSearchParameters()
            refine.k_factor = float(k_factor or self._k_factor)
            refine.base_index_params = params
            refine.base_params = params  # type: ignore[attr-defined]  # SWIG keeps no reference; this one does
            params = refine
        return params

    # -- persistence -------------------------------------------------------------

    def _extra_files(self, directory: Path) -> None:
        if self._template is not None:
            (directory / _TEMPLATE_FILE).write_bytes(self._template.tobytes())

    @classmethod
    def load(cls, directory: Path, *, dim: int | None = None, **config: Any) -> FaissIVFStore:
        index = cls._read_index(directory, dim)
        store = cls(index.d, **config)
        template = Path(directory) / _TEMPLATE_FILE
        if template.exists():
            store._template = np.frombuffer(template.read_bytes(), dtype=np.uint8)
        store._load_files(directory, index)
        import faiss

        if store.is_trained == isinstance(store._index, faiss.IndexFlat):
            raise CorruptFileError(f"the IVF index in {str(directory)!r} does not match its trained template")
        return store
