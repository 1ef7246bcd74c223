"""A test embedder whose texts are a hidden linear distortion of its images, and its images.

Each image is a small picture of random colour blocks, embedded as its downsampled colours.
A description written by :func:`description_of` names the image's vector; the embedder maps
it through a fixed random matrix plus noise, so text-to-image search starts near chance and
a linear adapter can learn the way back: a task with a known answer, with no model.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
from PIL import Image

from multimodal_rag._images import open_image
from multimodal_rag.protocols import Embedder

GRID = 4


def _unit(rows: np.ndarray) -> np.ndarray:
    rows = np.asarray(rows, dtype=np.float32)
    return rows / np.linalg.norm(rows, axis=1, keepdims=True)


class DistortedEmbedder(Embedder):
    """Images: their colours on a 4x4 grid (48-d). Texts ``"v x1 x2 ..."``: that vector through
    a hidden matrix (the identity with ``distortion=0``) plus ``noise``; other texts: random."""

    kind: ClassVar[str] = "test-distorted"

    def __init__(self, distortion: float = 1.0, noise: float = 0.3) -> None:
        self.distortion = distortion
        self.noise = noise
        rng = np.random.default_rng(7)
        dim = self.dim
        self._matrix = (1 - distortion) * np.eye(dim) + distortion * rng.standard_normal((dim, dim)) / np.sqrt(dim)

    @property
    def dim(self) -> int:
        return 3 * GRID * GRID

    @property
    def fingerprint(self) -> str:
        return f"test-distorted:{self.distortion}:{self.noise}"

    def config(self) -> dict[str, Any]:
        return {"distortion": self.distortion, "noise": self.noise}

    def embed_images(self, images: Sequence[Any]) -> np.ndarray:
        rows = []
        for image in images:
            small = np.asarray(open_image(image).resize((GRID, GRID), Image.BILINEAR), dtype=np.float32)
            rows.append((small / 255.0 - 0.45).reshape(-1))
        return _unit(np.stack(rows)) if rows else np.zeros((0, self.dim), np.float32)

    def embed_texts(self, texts: Sequence[str]) -> np.ndarray:
        rows = []
        for text in texts:
            seed = int.from_bytes(hashlib.sha256(text.encode()).digest()[:4], "little")
            noise = np.random.default_rng(seed).standard_normal(self.dim)
            if text.startswith("v "):
                vector = _unit(np.array([[float(x) for x in text.split()[1:]]]))[0]
                rows.append(vector @ self._matrix + self.noise * noise / np.sqrt(self.dim))
            else:
                rows.append(noise)
        return _unit(np.stack(rows)) if rows else np.zeros((0, self.dim), np.float32)


def description_of(embedder: DistortedEmbedder, path: Path) -> str:
    """The description that names the image at ``path``."""
    vector = embedder.embed_images([path])[0]
    return "v " + " ".join(f"{x:.4f}" for x in vector)


def make_images(folder: Path, n: int, *, seed: int = 0) -> list[Path]:
    """``n`` pictures of 4x4 random colour blocks, 32x32 pixels."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    files = []
    for i in range(n):
        blocks = rng.integers(0, 256, (GRID, GRID, 3), dtype=np.uint8)
        path = folder / f"{i:04d}.png"
        Image.fromarray(blocks).resize((32, 32), Image.NEAREST).save(path)
        files.append(path)
    return files


class RotatedEmbedder(DistortedEmbedder):
    """Texts ``"v x1 x2 ..."``: that vector through a fixed random rotation (an orthogonal
    matrix) plus ``noise``. One linear map undoes it for every pair: a task with a true answer
    that text-to-image search starts at chance on."""

    kind: ClassVar[str] = "test-rotated"

    def __init__(self, noise: float = 0.3) -> None:
        super().__init__(distortion=1.0, noise=noise)
        q, r = np.linalg.qr(np.random.default_rng(11).standard_normal((self.dim, self.dim)))
        self._matrix = q * np.sign(np.diag(r))  # the signs make it a uniformly random rotation

    @property
    def fingerprint(self) -> str:
        return f"test-rotated:{self.noise}"

    def config(self) -> dict[str, Any]:
        return {"noise": self.noise}


def keep_rule_task(root: Path, n: int, *, shuffled: bool, seed: int = 0) -> Path:
    """A knowledge base of ``n`` images described for :class:`RotatedEmbedder`: each description
    names its own image's vector (a true map exists), or with ``shuffled`` another image's.

    The shuffle is a derangement (one cycle through all images): no description names its
    own image, and since the images are random, nothing links a description to its image;
    any text-to-image gain a fit shows on held-out records is chance.
    """
    from multimodal_rag import MultimodalRAG

    embedder = RotatedEmbedder()
    files = make_images(root / "images", n, seed=seed)
    named = list(range(n))
    if shuffled:
        order = np.random.default_rng(seed).permutation(n)
        for i in range(n):
            named[order[i]] = int(order[(i + 1) % n])
    kb = root / "kb"
    with MultimodalRAG.create(kb, embedder=embedder) as rag:
        rag.add(files, descriptions=[description_of(embedder, files[j]) for j in named], progress=False)
    return kb
