"""Images as ``data:`` URLs a vision model accepts, no larger than it needs.

Providers limit image size (and bill by it), so every image is downscaled until its long
side fits ``max_side`` — a 12-megapixel knowledge-base photo is not sent as it is. Photos
from lossy formats (JPEG, WebP, HEIC, AVIF) are sent as JPEG; anything else as PNG, so drawings and
screenshots keep sharp edges.
"""

from __future__ import annotations

import base64
import io
import os

from multimodal_rag._images import image_bytes, open_image
from multimodal_rag.types import ImageInput

__all__ = ["image_data_url"]

_LOSSY_FORMATS = frozenset({"JPEG", "MPO", "WEBP", "HEIF", "AVIF"})
_JPEG_QUALITY = 90


def image_data_url(image: ImageInput, *, max_side: int) -> str:
    """Read ``image``, shrink it to fit ``max_side`` and encode it as a base64 data URL.

    Raises:
        ImageError: The image cannot be read (the message names it).
    """
    from PIL import Image

    from multimodal_rag._storage import is_url

    if isinstance(image, str) and is_url(image):  # fetched once: decoded and its format read from the bytes
        image = image_bytes(image)
    # JPEG decoding can skip detail we would throw away anyway.
    picture = open_image(image, draft_size=(max_side, max_side))
    width, height = picture.size
    if max(width, height) > max_side:
        scale = max_side / max(width, height)
        size = (max(1, round(width * scale)), max(1, round(height * scale)))
        picture = picture.resize(size, Image.Resampling.LANCZOS)
    buffer = io.BytesIO()
    if _source_format(image) in _LOSSY_FORMATS:
        picture.save(buffer, format="JPEG", quality=_JPEG_QUALITY)
        mime = "image/jpeg"
    else:
        picture.save(buffer, format="PNG")
        mime = "image/png"
    return f"data:{mime};base64,{base64.b64encode(buffer.getvalue()).decode('ascii')}"


def _source_format(image: ImageInput) -> str | None:
    # Only the header is read; open_image has already decoded (and validated) the image.
    from PIL import Image

    if isinstance(image, Image.Image):
        return image.format
    try:
        source: io.BytesIO | str = (
            io.BytesIO(bytes(image)) if isinstance(image, (bytes, bytearray, memoryview)) else os.fspath(image)
        )
        with Image.open(source) as opened:
            return opened.format
    except (OSError, ValueError):
        return None
