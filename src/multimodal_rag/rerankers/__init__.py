"""Rerankers: one module per backend, all implementing [`Reranker`][multimodal_rag.protocols.Reranker].

``vision_llm`` asks a vision model behind any OpenAI-compatible chat-completions endpoint
to order the best search results by looking at their images and descriptions.
"""
