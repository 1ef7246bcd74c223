"""Fitting the embedding space to a catalogue: a small projection trained on its own pairs."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from multimodal_rag import _lazy

# Public name -> module that defines it. Keep sorted; __all__ and the imports below match it.
_EXPORTS: dict[str, str] = {
    "Adapter": "multimodal_rag.adapter.projection",
    "AdapterReport": "multimodal_rag.adapter.fitting",
}

__all__ = [
    "Adapter",
    "AdapterReport",
]


def __getattr__(name: str) -> Any:
    return _lazy.attribute(__name__, name, _EXPORTS)


def __dir__() -> list[str]:
    return _lazy.names(__name__, _EXPORTS)


if TYPE_CHECKING:
    from multimodal_rag.adapter.fitting import AdapterReport
    from multimodal_rag.adapter.projection import Adapter
