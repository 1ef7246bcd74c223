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

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Literal, Protocol, runtime_checkable

from attrs import field, frozen

from multimodal_rag import _lazy

if TYPE_CHECKING:
    from PIL import Image

    from multimodal_rag.ocr.rapid import RapidOCRReader

__all__ = ["OCREngine", "RapidOCRReader", "ReadText", "TextLine", "TextReader"]

# Public name -> module that defines it, imported on first use: importing this package
# imports neither rapidocr nor its engines.
_EXPORTS: dict[str, str] = {
    "RapidOCRReader": "multimodal_rag.ocr.rapid",
}


def __getattr__(name: str) -> Any:
    return _lazy.attribute(__name__, name, _EXPORTS)


def __dir__() -> list[str]:
    return _lazy.names(__name__, _EXPORTS)


#: What `RapidOCRReader` runs its models on.
OCREngine = Literal["onnxruntime", "openvino"]

#: A text line's quadrilateral in the image's pixels: four (x, y) corners, clockwise from top left.
Quad = tuple[tuple[float, float], tuple[float, float], tuple[float, float], tuple[float, float]]


@frozen(kw_only=True)
class TextLine:
    """One line of text read from an image.

    Attributes:
        text: The recognised text, as read (not normalised).
        confidence: The recogniser's confidence, 0 to 1.
        box: Where the line is, in the pixels of the image as given (before any rotation
            the reader tried).
    """

    text: str
    confidence: float
    box: Quad


def _lines(value: Sequence[TextLine]) -> tuple[TextLine, ...]:
    return tuple(value)


@frozen(kw_only=True)
class ReadText:
    """What a reader read in one image.

    Attributes:
        lines: The lines kept, in reading order (top to bottom, then left to right).
        dropped: How many lines the reader found and dropped (low confidence, or a script
            inconsistent with the rest of the image).
    """

    lines: tuple[TextLine, ...] = field(factory=tuple, converter=_lines)
    dropped: int = 0

    @property
    def text(self) -> str:
        """The kept lines joined by newlines ("" when nothing was read)."""
        return "\n".join(line.text for line in self.lines)

    def to_json(self) -> dict[str, Any]:
        """The result as JSON (the form the journal and the stores keep)."""
        return {
            "lines": [
                {
                    "text": line.text,
                    "confidence": line.confidence,
                    "box": [list(point) for point in line.box],
                }
                for line in self.lines
            ],
            "dropped": self.dropped,
        }

    @classmethod
    def from_json(cls, obj: dict[str, Any]) -> ReadText:
        """The result [`to_json`][multimodal_rag.ocr.ReadText.to_json] gave ``obj`` for."""
        lines = [
            TextLine(
                text=str(line["text"]),
                confidence=float(line["confidence"]),
                box=tuple((float(x), float(y)) for x, y in line["box"]),  # type: ignore[arg-type]
            )
            for line in obj.get("lines", [])
        ]
        return cls(lines=lines, dropped=int(obj.get("dropped", 0)))


@runtime_checkable
class TextReader(Protocol):
    """Reads the text in images.

    ``read`` must not raise for an image it cannot read: it returns an empty
    [`ReadText`][multimodal_rag.ocr.ReadText] for it, so one bad photo never stops an
    ingest. It raises only when the reader itself cannot work (its model fails to load).
    """

    def read(self, images: Sequence[Image.Image]) -> list[ReadText]:
        """Read each image; one result per image, in order."""
        ...

    def config(self) -> dict[str, Any]:
        """JSON-serialisable settings that rebuild the same reader (stored in the manifest)."""
        ...
