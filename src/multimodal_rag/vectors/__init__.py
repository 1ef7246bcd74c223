"""Vector stores: one module per backend, all implementing :class:`~multimodal_rag.VectorStore`."""
