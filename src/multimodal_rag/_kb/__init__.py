"""The knowledge base on disk: its directory, manifest, journal, durable writes and loading.

Nothing here imports the facade; [`MultimodalRAG`][multimodal_rag._rag.MultimodalRAG] composes these parts.
"""
