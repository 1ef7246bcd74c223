"""The knowledge base on disk: its directory, manifest, journal, durable writes and loading.

Nothing here imports the facade; [`MultimodalRAG`][multimodal_rag.rag.MultimodalRAG] composes these parts.
"""
