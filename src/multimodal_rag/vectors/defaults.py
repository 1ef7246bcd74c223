"""Which vector store a new knowledge base gets, from the size it is expected to reach.

The rule comes from ``benchmarks/compare_indexes.py`` (see ``docs/choosing-an-index.md``):

- Up to `FLAT_MAX_SIZE` vectors, exact search ([`FaissFlatStore`][multimodal_rag.vectors.faiss_flat.FaissFlatStore]): a single
  query reads every vector once, which at that size still takes only milliseconds,
  recall is perfect, adding is instant and nothing needs tuning.
- Beyond it, an HNSW graph ([`HNSWLibStore`][multimodal_rag.vectors.hnswlib_store.HNSWLibStore] with its defaults, ``ef_search=128``):
  measured recall@10 1.00 at 100,000 vectors and 0.97 at one million, with single queries
  in 0.2-0.4 ms, at the cost of a much slower build. Without the ``hnswlib`` extra (it
  needs a C++ compiler to install), FAISS's HNSW ([`FaissHNSWStore`][multimodal_rag.vectors.faiss_hnsw.FaissHNSWStore]), which the
  default install has.
"""

from __future__ import annotations

from multimodal_rag._validation import check_int
from multimodal_rag.protocols import VectorStore

__all__ = ["FLAT_MAX_SIZE", "default_vector_store"]

#: Largest expected size for which exact search is the default.
FLAT_MAX_SIZE = 100_000


def default_vector_store(dim: int, *, expected_size: int | None = None) -> VectorStore:
    """A new, empty vector store suited to ``expected_size`` vectors.

    Args:
        dim: Dimension of the vectors.
        expected_size: How many vectors the knowledge base is expected to hold;
            ``None`` (unknown) gives exact search, which is right for most collections
            and can be swapped later by rebuilding.

    Raises:
        InvalidInputError: A negative or non-integer ``expected_size``.
    """
    if expected_size is not None:
        expected_size = check_int("expected_size", expected_size, minimum=0)
    if expected_size is None or expected_size <= FLAT_MAX_SIZE:
        from multimodal_rag.vectors.faiss_flat import FaissFlatStore

        return FaissFlatStore(dim)
    import importlib.util

    if importlib.util.find_spec("hnswlib") is None:
        from multimodal_rag.vectors.faiss_hnsw import FaissHNSWStore

        return FaissHNSWStore(dim)
    from multimodal_rag.vectors.hnswlib_store import HNSWLibStore

    return HNSWLibStore(dim)
