"""Which text reader a knowledge base uses: the manifest's entry for a reader, and the reader
an entry names (built lazily, with the ``ocr`` extra's install hint when it is missing)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from multimodal_rag._ingest.text_reading import OCR_EXTRA_HINT
from multimodal_rag._kb.manifest import Component
from multimodal_rag.errors import MissingDependencyError, UnknownBackendError

if TYPE_CHECKING:
    from multimodal_rag.ocr import TextReader

__all__ = ["build_reader", "default_reader", "reader_entry"]


def default_reader() -> TextReader:
    """The built-in reader (``rapidocr``) with its default settings.

    Raises:
        MissingDependencyError: The ``ocr`` extra is not installed.
    """
    return build_reader(Component(kind="rapidocr", config={}))


def reader_entry(reader: TextReader) -> Component:
    """How a manifest records ``reader``: its kind and the config that rebuilds it."""
    from multimodal_rag._registry import kind_of

    return Component(kind=kind_of(reader), config=dict(reader.config()))


def build_reader(entry: Component, *, allow_modules: Sequence[str] = ()) -> TextReader:
    """The reader a manifest names.

    Raises:
        MissingDependencyError: The built-in reader's packages are not installed (the
            message names ``pip install 'multimodal-rag[ocr]'``).
        UnknownBackendError: An unknown kind, or a module not allowed.
    """
    from multimodal_rag._registry import BUILTINS, resolve

    try:
        cls = resolve("text_reader", entry.kind, allow_modules=allow_modules)
    except UnknownBackendError as exc:
        if entry.kind in BUILTINS["text_reader"] and isinstance(exc.__cause__, ImportError):
            raise MissingDependencyError(
                f"reading the text in images ({entry.kind}) needs the ocr extra: {OCR_EXTRA_HINT}"
            ) from exc
        raise
    try:
        reader: TextReader = cls(**entry.config)
    except ImportError as exc:
        if isinstance(exc, MissingDependencyError):
            raise
        raise MissingDependencyError(
            f"reading the text in images needs the ocr extra: {OCR_EXTRA_HINT} ({exc})"
        ) from exc
    return reader
