"""What a text reader reads, and the protocol every reader follows (re-exported by
`multimodal_rag.ocr`, where they are documented and imported from)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Literal, Protocol, runtime_checkable

from attrs import field, frozen

if TYPE_CHECKING:
    from PIL import Image

__all__ = ["OCREngine", "Quad", "ReadText", "TextLine", "TextReader"]


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
