"""The query photo's text read by the real reader (rapidocr's bundled models): a photo of a
product's label finds the product whose label holds the same model number, among labels that
look alike to the picture embedder.

The labels are drawn here with Pillow's bundled font, so every machine draws the same pixels.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image, ImageDraw, ImageFilter, ImageFont

from helpers import ColorEmbedder
from multimodal_rag import ExtractiveAnswerer, MultimodalRAG

pytest.importorskip("rapidocr")
rapid = pytest.importorskip("multimodal_rag.ocr.rapid")

MODELS = ("XG-2047", "QT-5512", "LX-4090")


def label(model: str, *, scale: float = 1.0, seed: int = 7) -> Image.Image:
    """A grey case with a light label: a brand, the model number and a spec line."""
    width, height = round(800 * scale), round(600 * scale)
    rng = np.random.default_rng(seed)
    ground = rng.normal(0, 1, (height // 8 + 1, width // 8 + 1, 3))
    ground = np.kron(ground, np.ones((8, 8, 1)))[:height, :width] * 12 + (96, 120, 104)
    image = Image.fromarray(np.clip(ground, 0, 255).astype(np.uint8)).filter(ImageFilter.GaussianBlur(2))
    draw = ImageDraw.Draw(image)
    s = scale
    draw.rounded_rectangle((100 * s, 90 * s, 700 * s, 520 * s), radius=20 * s, fill=(120, 124, 130))
    draw.rounded_rectangle((190 * s, 150 * s, 610 * s, 420 * s), radius=10 * s, fill=(244, 241, 232))
    for text, size, y in (("VOLTARA", 60, 200), (model, 46, 290), ("2000 Wh", 36, 365)):
        font = ImageFont.load_default(size=round(size * s))
        draw.text((400 * s, y * s), text, font=font, fill=(20, 20, 24), anchor="mm")
    return image


def jpeg(image: Image.Image, quality: int = 70) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=quality)
    return buffer.getvalue()


@pytest.mark.slow
def test_a_label_photo_finds_the_product_with_its_model_number(tmp_path: Path) -> None:
    reader = rapid.RapidOCRReader()
    rag = MultimodalRAG.create(tmp_path / "kb", embedder=ColorEmbedder())
    rag.add([label(model) for model in MODELS], ids=list(MODELS), ocr=reader, progress=False)
    assert {id_: "".join(rag.get(id_).ocr.text.split()) for id_ in MODELS} == {  # type: ignore[union-attr]
        model: f"VOLTARA{model}2000Wh" for model in MODELS
    }
    # Another photo of the XG-2047's label: smaller, another backdrop, JPEG.
    photo = jpeg(label("XG-2047", scale=0.8, seed=3))
    hits = rag.search(image=photo, k=3)
    assert hits[0].id == "XG-2047" and "identifier" in hits[0].signals
    assert "XG-2047" in hits[0].matched
    # The other labels share the brand and the spec line, not the model number.
    assert all("XG-2047" not in hit.matched for hit in hits[1:])

    rag.answerer = ExtractiveAnswerer()
    answer = rag.ask("Which model is this?", image=photo, k=2)
    assert "XG-2047" in answer.text.splitlines()[0] and answer.sources[0].id == "XG-2047"
