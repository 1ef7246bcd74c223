"""Vector stores: one module per backend, all implementing [`VectorStore`][multimodal_rag.protocols.VectorStore].

Backends: ``faiss_flat``, ``faiss_hnsw``, ``faiss_ivf``, ``hnswlib_store`` and ``milvus``;
``defaults`` picks one for a new knowledge base. What the built-in stores share:
``labelled_store`` (the base class: locking, filters, exact fallback), ``label_map`` (string
ids to the int64 labels an index stores), ``faiss_positional`` (tombstones for the FAISS
indexes that cannot delete) and ``ranking`` (top-k, exact and filtered search). The input
checks every store uses, a user's own included, are in `multimodal_rag.validation`.
"""
