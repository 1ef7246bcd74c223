"""Vector stores: one module per backend, all implementing [`VectorStore`][multimodal_rag.protocols.VectorStore].

Backends: ``faiss_flat``, ``faiss_hnsw``, ``faiss_ivf``, ``hnswlib_store`` and ``milvus``;
``defaults`` picks one for a new knowledge base. What the built-in stores share:
``labelled_store`` (the base class: locking, filters, exact fallback), ``label_map`` (string
ids to the int64 labels an index stores), ``faiss_positional`` (tombstones for the FAISS
indexes that cannot delete) and ``ranking`` (top-k, exact and filtered search). The input
checks every store uses, a user's own included, are in `multimodal_rag._validation`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from multimodal_rag import _lazy

# Public name -> module that defines it. Keep sorted; __all__ and the imports below match it.
_EXPORTS: dict[str, str] = {
    "FaissFlatStore": "multimodal_rag.vectors.faiss_flat",
    "FaissHNSWStore": "multimodal_rag.vectors.faiss_hnsw",
    "FaissIVFStore": "multimodal_rag.vectors.faiss_ivf",
    "HNSWLibStore": "multimodal_rag.vectors.hnswlib_store",
    "MilvusVectorStore": "multimodal_rag.vectors.milvus",
}

__all__ = [
    "FaissFlatStore",
    "FaissHNSWStore",
    "FaissIVFStore",
    "HNSWLibStore",
    "MilvusVectorStore",
]


def __getattr__(name: str) -> Any:
    return _lazy.attribute(__name__, name, _EXPORTS)


def __dir__() -> list[str]:
    return _lazy.names(__name__, _EXPORTS)


if TYPE_CHECKING:
    from multimodal_rag.vectors.faiss_flat import FaissFlatStore
    from multimodal_rag.vectors.faiss_hnsw import FaissHNSWStore
    from multimodal_rag.vectors.faiss_ivf import FaissIVFStore
    from multimodal_rag.vectors.hnswlib_store import HNSWLibStore
    from multimodal_rag.vectors.milvus import MilvusVectorStore
