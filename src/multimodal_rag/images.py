"""Reading images from paths, bytes or PIL objects into clean RGB pictures.

Every embedder and answerer reads images through :func:`open_image`, so that all
of them see the same pixels: EXIF orientation applied, transparency composited
on white, any mode (P, L, LA, CMYK, 16-bit, float) converted to 8-bit RGB, and
decompression bombs refused before they are decoded.
"""

from __future__ import annotations

import hashlib
import io
import os
import warnings
from pathlib import Path
from typing import TYPE_CHECKING

from multimodal_rag.errors import ImageError
from multimodal_rag.types import ImageInput, source_name

if TYPE_CHECKING:
    from PIL import Image as PILImage

__all__ = [
    "DEFAULT_MAX_PIXELS",
    "IMAGE_SUFFIXES",
    "content_id",
    "image_bytes",
    "open_image",
    "to_rgb",
]

#: Images larger than this many pixels are refused (a 12 MP photo is 12e6).
DEFAULT_MAX_PIXELS = 100_000_000

#: File suffixes directory ingest treats as images (compared in lower case).
IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".webp", ".gif", ".bmp", ".tif", ".tiff"})


def content_id(data: bytes) -> str:
    """Stable id of an image: 32 hex digits of the BLAKE2b hash of its bytes."""
    return hashlib.blake2b(data, digest_size=16).hexdigest()


def image_bytes(image: ImageInput) -> bytes:
    """The bytes an image's id is computed from.

    Files and bytes hash as they are encoded; a PIL image hashes its mode, size
    and pixels, so equal pictures get equal ids.

    Raises:
        ImageError: A path that does not exist or cannot be read.
    """
    if isinstance(image, (bytes, bytearray, memoryview)):
        return bytes(image)
    if isinstance(image, (str, os.PathLike)):
        try:
            return Path(image).read_bytes()
        except OSError as exc:
            raise ImageError(
                f"cannot read image file {os.fspath(image)!r}: {exc.strerror or exc}",
                source=os.fspath(image),
            ) from exc
    pil = _require_pil_image(image)
    header = f"{pil.mode}:{pil.size[0]}x{pil.size[1]}:".encode()
    return header + pil.tobytes()


def open_image(
    image: ImageInput,
    *,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    draft_size: tuple[int, int] | None = None,
) -> PILImage.Image:
    """Decode an image into an 8-bit RGB PIL image.

    Args:
        image: A path, encoded bytes or a PIL image.
        max_pixels: Refuse images with more pixels than this (decompression bombs).
        draft_size: If given, let JPEG decoding reduce the image by a power of two
            as long as both sides stay at least this large (much faster for large
            photos that will be shrunk anyway).

    Raises:
        ImageError: Missing file, not an image, truncated or corrupt data, or too
            many pixels. The message names the image.
    """
    from PIL import Image, UnidentifiedImageError

    name = source_name(image)
    if isinstance(image, Image.Image):
        _check_pixels(image.size, max_pixels, name)
        return to_rgb(image)
    try:
        if isinstance(image, (bytes, bytearray, memoryview)):
            if len(image) == 0:
                raise ImageError("cannot read image <bytes>: it is empty", source=name)
            fp: io.BytesIO | Path = io.BytesIO(bytes(image))
        else:
            fp = Path(os.fspath(image))
            if not fp.is_file():
                raise ImageError(f"image file not found: {name!r}", source=name)
            if fp.stat().st_size == 0:
                raise ImageError(f"cannot read image {name!r}: the file is empty", source=name)
        with warnings.catch_warnings():
            # We enforce our own pixel limit below; PIL's warning would be noise.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(fp) as opened:
                _check_pixels(opened.size, max_pixels, name)
                if draft_size is not None and opened.format == "JPEG":
                    opened.draft("RGB", draft_size)
                opened.load()
                return to_rgb(opened)
    except ImageError:
        raise
    except UnidentifiedImageError as exc:
        raise ImageError(f"cannot read image {name!r}: not a known image format", source=name) from exc
    except Image.DecompressionBombError as exc:
        # PIL refuses images over twice its own limit before we see their size.
        raise ImageError(f"image {name!r} is too large to decode safely: {exc}", source=name) from exc
    except (OSError, ValueError, SyntaxError) as exc:
        # Truncated and corrupt files surface as OSError (or SyntaxError in some plugins).
        raise ImageError(f"cannot read image {name!r}: {exc}", source=name) from exc


def to_rgb(image: PILImage.Image) -> PILImage.Image:
    """Convert any PIL image to upright 8-bit RGB, compositing transparency on white."""
    import numpy as np
    from PIL import Image, ImageOps

    image = ImageOps.exif_transpose(image) or image
    if image.mode in ("I;16", "I;16L", "I;16B", "I;16N", "I", "F"):
        # Wide integer and float images: scale their actual range into 8 bits.
        array = np.asarray(image, dtype=np.float64)
        low, high = float(array.min()), float(array.max())
        scale = 255.0 / (high - low) if high > low else 0.0
        image = Image.fromarray(((array - low) * scale).round().astype(np.uint8), mode="L")
    if image.mode == "P":
        image = image.convert("RGBA" if "transparency" in image.info else "RGB")
    if image.mode in ("LA", "La", "PA"):
        image = image.convert("RGBA")
    if image.mode == "RGBa":
        image = image.convert("RGBA")
    if image.mode == "RGBA":
        background = Image.new("RGB", image.size, (255, 255, 255))
        background.paste(image, mask=image.getchannel("A"))
        return background
    if image.mode != "RGB":
        image = image.convert("RGB")
    return image


def _check_pixels(size: tuple[int, int], max_pixels: int, name: str) -> None:
    width, height = size
    if width <= 0 or height <= 0:
        raise ImageError(f"cannot read image {name!r}: it has no pixels ({width}x{height})", source=name)
    if width * height > max_pixels:
        raise ImageError(
            f"image {name!r} is {width}x{height} = {width * height:,} pixels, more than the "
            f"limit of {max_pixels:,} (raise max_pixels to accept it)",
            source=name,
        )


def _require_pil_image(image: object) -> PILImage.Image:
    from PIL import Image

    if not isinstance(image, Image.Image):
        raise ImageError(
            f"expected an image path, bytes or a PIL image, got {type(image).__name__}",
            source=repr(image)[:80],
        )
    return image
