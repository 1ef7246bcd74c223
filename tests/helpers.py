"""Small deterministic parts for tests: an embedder that needs no model, and test images."""

from __future__ import annotations

import hashlib
import io
from collections.abc import Sequence
from typing import Any, ClassVar

import numpy as np
from PIL import Image

from multimodal_rag._images import open_image
from multimodal_rag.protocols import Embedder

COLORS = {
    "red": (255, 0, 0),
    "green": (0, 255, 0),
    "blue": (0, 0, 255),
    "yellow": (255, 255, 0),
    "cyan": (0, 255, 255),
    "magenta": (255, 0, 255),
    "white": (255, 255, 255),
    "black": (0, 0, 0),
}


class ColorEmbedder(Embedder):
    """Embeds an image as its downsampled, centred colours; a colour word as that colour.

    Images of one colour land near the text naming it, so text and image search
    can be tested without a neural network. Other words map to a fixed
    pseudo-random vector per word.
    """

    kind: ClassVar[str] = "test-color"

    def __init__(self, grid: int = 4) -> None:
        self.grid = grid
        self.calls = 0

    @property
    def dim(self) -> int:
        return 3 * self.grid * self.grid

    @property
    def fingerprint(self) -> str:
        return f"test-color:grid={self.grid}"

    def config(self) -> dict[str, Any]:
        return {"grid": self.grid}

    def _normalise(self, rows: np.ndarray) -> np.ndarray:
        rows = rows.astype(np.float32)
        return rows / np.linalg.norm(rows, axis=1, keepdims=True)

    def _color_vector(self, rgb: Sequence[float]) -> np.ndarray:
        # Offset so black is not the zero vector.
        cell = (np.asarray(rgb, dtype=np.float32) / 255.0) - 0.45
        return np.tile(cell, self.grid * self.grid)

    def embed_images(self, images: Sequence[Any]) -> np.ndarray:
        self.calls += 1
        rows = []
        for index, image in enumerate(images):
            try:
                picture = open_image(image)
            except Exception as exc:
                exc.index = index  # type: ignore[attr-defined]
                raise
            small = np.asarray(picture.resize((self.grid, self.grid), Image.BILINEAR), dtype=np.float32)
            rows.append((small / 255.0 - 0.45).reshape(-1))
        return self._normalise(np.stack(rows)) if rows else np.zeros((0, self.dim), np.float32)

    def embed_texts(self, texts: Sequence[str]) -> np.ndarray:
        rows = []
        for text in texts:
            words = [w for w in text.lower().split() if w in COLORS]
            if words:
                rows.append(np.mean([self._color_vector(COLORS[w]) for w in words], axis=0))
            else:
                seed = int.from_bytes(hashlib.sha256(text.encode()).digest()[:4], "little")
                rows.append(np.random.default_rng(seed).standard_normal(self.dim))
        return self._normalise(np.stack(rows)) if rows else np.zeros((0, self.dim), np.float32)


def solid(color: str | tuple[int, int, int], size: tuple[int, int] = (32, 24), mode: str = "RGB") -> Image.Image:
    rgb = COLORS[color] if isinstance(color, str) else color
    return Image.new("RGB", size, rgb).convert(mode)


def encoded(image: Image.Image, fmt: str = "PNG", **params: Any) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **params)
    return buffer.getvalue()


def two_tone(left: str, right: str, size: tuple[int, int] = (32, 32)) -> Image.Image:
    image = solid(left, size)
    image.paste(solid(right, (size[0] // 2, size[1])), (size[0] // 2, 0))
    return image


def varied_pictures(seed: int, *, gradient: bool = True) -> list[Image.Image]:
    """Pictures that differ in colour, layout and aspect ratio: solids, two tones, noise
    drawn from ``seed``, and a grey gradient unless ``gradient=False``."""
    noise = np.random.default_rng(seed).integers(0, 256, (40, 56, 3), dtype=np.uint8)
    pictures = [
        solid("red", (48, 40)),
        solid("blue", (30, 60)),
        two_tone("green", "magenta", (64, 64)),
        Image.fromarray(noise),
    ]
    if gradient:
        pictures.append(Image.linear_gradient("L").resize((70, 50)).convert("RGB"))
    return pictures


def current_snapshot(kb: Any) -> Any:
    """The snapshot directory the manifest of the knowledge base at ``kb`` names."""
    import json
    from pathlib import Path

    generation = json.loads((Path(kb) / "manifest.json").read_text())["generation"]
    return Path(kb) / "snapshots" / f"{generation:08d}"
