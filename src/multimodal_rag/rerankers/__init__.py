"""Rerankers: one module per backend, all implementing [`Reranker`][multimodal_rag.protocols.Reranker].

``vision_llm`` asks a vision model behind any OpenAI-compatible chat-completions endpoint
to order the best search results by looking at their images and descriptions.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from multimodal_rag import _lazy

# Public name -> module that defines it. Keep sorted; __all__ and the imports below match it.
_EXPORTS: dict[str, str] = {
    "VisionLLMReranker": "multimodal_rag.rerankers.vision_llm",
}

__all__ = [
    "VisionLLMReranker",
]


def __getattr__(name: str) -> Any:
    return _lazy.attribute(__name__, name, _EXPORTS)


def __dir__() -> list[str]:
    return _lazy.names(__name__, _EXPORTS)


if TYPE_CHECKING:
    from multimodal_rag.rerankers.vision_llm import VisionLLMReranker
