"""Answerers: one module per backend, all implementing [`Answerer`][multimodal_rag.protocols.Answerer].

``extractive`` answers offline from the best match's description; ``openai`` asks a vision
model behind any OpenAI-compatible chat-completions endpoint. ``prompt`` holds the template
the model is given, ``data_urls`` turns images into what it is sent, ``matches`` decides
which matches an answer may use and cites them, and ``default`` picks an answerer when none
is given.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from multimodal_rag import _lazy

# Public name -> module that defines it. Keep sorted; __all__ and the imports below match it.
_EXPORTS: dict[str, str] = {
    "ExtractiveAnswerer": "multimodal_rag.answerers.extractive",
    "OpenAIAnswerer": "multimodal_rag.answerers.openai",
    "PromptTemplate": "multimodal_rag.answerers.prompt",
}

__all__ = [
    "ExtractiveAnswerer",
    "OpenAIAnswerer",
    "PromptTemplate",
]


def __getattr__(name: str) -> Any:
    return _lazy.attribute(__name__, name, _EXPORTS)


def __dir__() -> list[str]:
    return _lazy.names(__name__, _EXPORTS)


if TYPE_CHECKING:
    from multimodal_rag.answerers.extractive import ExtractiveAnswerer
    from multimodal_rag.answerers.openai import OpenAIAnswerer
    from multimodal_rag.answerers.prompt import PromptTemplate
