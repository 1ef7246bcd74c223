"""CLIP's image preprocessing in numpy and PIL, without torch or torchvision.

:func:`clip_pixels` reproduces ``clip.load(...)[1]`` (torchvision's ``Resize`` on
the shorter side with PIL bicubic, ``CenterCrop``, ``ToTensor``, ``Normalize``)
to within float rounding, so it can run in worker threads that never touch torch.

Draft decoding (:func:`draft_size`) is the one deliberate difference: a JPEG much
larger than the model input is decoded at 1/2, 1/4 or 1/8 scale by the JPEG
decoder itself before the bicubic resize. The resize then starts from fewer,
already averaged pixels, so the input tensor differs slightly from a full
decode (``benchmarks/ingest.py`` reports the cosine between the two embeddings).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from multimodal_rag.images import DEFAULT_MAX_FILE_BYTES, DEFAULT_MAX_PIXELS, open_image
from multimodal_rag.types import ImageInput

if TYPE_CHECKING:
    from PIL import Image as PILImage

__all__ = [
    "CLIP_MEAN",
    "CLIP_STD",
    "PREPROCESS_VERSION",
    "clip_pixels",
    "draft_size",
    "load_clip_pixels",
]

#: Bumped whenever the pixels given to the model change; part of the embedder fingerprint.
PREPROCESS_VERSION = 1

#: Per-channel normalisation of the openai/CLIP models (RGB).
CLIP_MEAN = np.array([0.48145466, 0.4578275, 0.40821073], dtype=np.float32)
CLIP_STD = np.array([0.26862954, 0.26130258, 0.27577711], dtype=np.float32)


def draft_size(resolution: int) -> tuple[int, int]:
    """The smallest size a JPEG may be draft-decoded to for a model of this input resolution.

    The JPEG decoder picks the largest reduction (up to 1/8) that keeps both sides at
    least this large, so the shorter side is never upscaled before the resize.
    """
    return (resolution, resolution)


def clip_pixels(image: PILImage.Image, resolution: int) -> np.ndarray:
    """Turn an RGB image into CLIP's input: float32, shape ``(3, resolution, resolution)``."""
    from PIL import Image

    width, height = image.size
    # torchvision's Resize(int): the shorter side becomes `resolution`, the longer
    # side is scaled and truncated (int(), not round()) exactly as torchvision does.
    if width <= height:
        size = (resolution, int(resolution * height / width))
    else:
        size = (int(resolution * width / height), resolution)
    if size != image.size:
        image = image.resize(size, Image.Resampling.BICUBIC)
    # torchvision's CenterCrop rounds the offsets the same way.
    top = int(round((size[1] - resolution) / 2.0))
    left = int(round((size[0] - resolution) / 2.0))
    pixels = np.asarray(image, dtype=np.uint8)[top : top + resolution, left : left + resolution]
    # Same float32 operations, in the same order, as ToTensor then Normalize.
    scaled = pixels.astype(np.float32) / np.float32(255.0)
    normalised = (scaled - CLIP_MEAN) / CLIP_STD
    return np.ascontiguousarray(normalised.transpose(2, 0, 1))


def load_clip_pixels(
    image: ImageInput,
    resolution: int,
    *,
    draft: bool = True,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    max_file_bytes: int = DEFAULT_MAX_FILE_BYTES,
) -> np.ndarray:
    """Decode an image (path, bytes or PIL image) and preprocess it for CLIP.

    ``max_pixels`` counts the pixels actually decoded: with ``draft``, a large JPEG
    counts at its reduced size (see :func:`~multimodal_rag.images.open_image`).

    Raises:
        ImageError: The image cannot be read; the message names it.
    """
    picture = open_image(
        image,
        max_pixels=max_pixels,
        draft_size=draft_size(resolution) if draft else None,
        max_file_bytes=max_file_bytes,
    )
    return clip_pixels(picture, resolution)
