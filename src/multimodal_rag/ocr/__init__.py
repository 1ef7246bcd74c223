"""Reading the text printed in photos (labels, model numbers, capacities).

A [`TextReader`][multimodal_rag.ocr.TextReader] turns images into
[`ReadText`][multimodal_rag.ocr.ReadText]: lines of recognised text, each with its
confidence and the quadrilateral it was found in. The knowledge base stores what a reader
read beside each record (never mixed into the user's description) and searches it with the
description store's full-text engine; a query photo is read the same way.

`RapidOCRReader` (the ``ocr`` extra) is the built-in reader. A reader of your own is any
class with the same ``read`` and ``config`` methods.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from multimodal_rag import _lazy
from multimodal_rag.ocr._types import OCREngine, Quad, ReadText, TextLine, TextReader

if TYPE_CHECKING:
    # Only type checkers read this; at run time the name comes from __getattr__ below. The
    # reader's module imports `_types`, never this package, so there is no cycle.
    from multimodal_rag.ocr.rapid import RapidOCRReader

__all__ = ["OCREngine", "Quad", "RapidOCRReader", "ReadText", "TextLine", "TextReader"]

# Public name -> module that defines it, imported on first use: importing this package
# imports neither rapidocr nor its engines.
_EXPORTS: dict[str, str] = {
    "RapidOCRReader": "multimodal_rag.ocr.rapid",
}


def __getattr__(name: str) -> Any:
    return _lazy.attribute(__name__, name, _EXPORTS)


def __dir__() -> list[str]:
    return _lazy.names(__name__, _EXPORTS)
