"""Embedders: models that map images and texts into one vector space.

Each backend lives in its own module and imports its heavy dependencies (torch,
clip) only when an embedder is built, so importing this package stays cheap.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from multimodal_rag import _lazy

# Public name -> module that defines it. Keep sorted; __all__ and the imports below match it.
_EXPORTS: dict[str, str] = {
    "CLIPEmbedder": "multimodal_rag.embedders.clip",
    "ModelFolder": "multimodal_rag.embedders.model_folder",
    "OpenCLIPEmbedder": "multimodal_rag.embedders.openclip",
    "fetch_model": "multimodal_rag.embedders.model_folder",
}

__all__ = [
    "CLIPEmbedder",
    "ModelFolder",
    "OpenCLIPEmbedder",
    "fetch_model",
]


def __getattr__(name: str) -> Any:
    return _lazy.attribute(__name__, name, _EXPORTS)


def __dir__() -> list[str]:
    return _lazy.names(__name__, _EXPORTS)


if TYPE_CHECKING:
    from multimodal_rag.embedders.clip import CLIPEmbedder
    from multimodal_rag.embedders.model_folder import ModelFolder, fetch_model
    from multimodal_rag.embedders.openclip import OpenCLIPEmbedder
