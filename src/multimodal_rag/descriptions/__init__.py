"""Description stores: one module per backend, all implementing [`DescriptionStore`][multimodal_rag.protocols.DescriptionStore]."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from multimodal_rag import _lazy

# Public name -> module that defines it. Keep sorted; __all__ and the imports below match it.
_EXPORTS: dict[str, str] = {
    "JSONLDescriptionStore": "multimodal_rag.descriptions.jsonl",
    "PostgresDescriptionStore": "multimodal_rag.descriptions.postgres",
    "SQLiteDescriptionStore": "multimodal_rag.descriptions.sqlite",
}

__all__ = [
    "JSONLDescriptionStore",
    "PostgresDescriptionStore",
    "SQLiteDescriptionStore",
]


def __getattr__(name: str) -> Any:
    return _lazy.attribute(__name__, name, _EXPORTS)


def __dir__() -> list[str]:
    return _lazy.names(__name__, _EXPORTS)


if TYPE_CHECKING:
    from multimodal_rag.descriptions.jsonl import JSONLDescriptionStore
    from multimodal_rag.descriptions.postgres import PostgresDescriptionStore
    from multimodal_rag.descriptions.sqlite import SQLiteDescriptionStore
