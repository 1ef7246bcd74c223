"""A deterministic text reader for tests: it "reads" the text a table gives for an image's colour.

The real reader (``multimodal_rag.ocr.rapid``) runs a model; these tests check what the
knowledge base does with what a reader returns, so they use a reader whose answers are known.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar

from PIL import Image

from multimodal_rag.ocr import ReadText, TextLine

BOX = ((1.0, 2.0), (30.0, 2.0), (30.0, 12.0), (1.0, 12.0))

#: The text each colour's image holds; any other colour holds none.
TEXTS = {
    (255, 0, 0): "XR-2000 battery\n12V 7Ah",
    (0, 0, 255): "lamp LX-40",
}
#: A colour this reader fails on (a reader's own bug), to show one image costs only itself.
FAILING = (0, 0, 0)


class ColourTextReader:
    """Reads the text `TEXTS` gives for the colour of an image's top-left pixel.

    Args:
        confidence: The confidence given to every line.
    """

    calls: ClassVar[list[int]] = []

    def __init__(self, *, confidence: float = 0.9) -> None:
        self.confidence = confidence

    def read(self, images: Sequence[Image.Image]) -> list[ReadText]:
        ColourTextReader.calls.append(len(images))
        out = []
        for image in images:
            colour = image.convert("RGB").getpixel((0, 0))
            if colour == FAILING:
                raise RuntimeError("the model crashed on this image")
            text = TEXTS.get(colour)  # type: ignore[call-overload]
            lines = (
                [
                    TextLine(text=line, confidence=self.confidence, box=BOX)
                    for line in text.split("\n")
                ]
                if text
                else []
            )
            out.append(ReadText(lines=lines))
        return out

    def config(self) -> dict[str, Any]:
        return {"confidence": self.confidence}


class BrokenReader:
    """A reader whose model cannot be loaded."""

    def __init__(self) -> None:
        raise ImportError("No module named 'rapidocr'")

    def read(
        self, images: Sequence[Image.Image]
    ) -> list[ReadText]:  # pragma: no cover - never built
        raise AssertionError

    def config(self) -> dict[str, Any]:  # pragma: no cover - never built
        return {}
