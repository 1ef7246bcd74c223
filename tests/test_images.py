"""Reading images of every mode and refusing bad ones."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from helpers import encoded, solid
from multimodal_rag.errors import ImageError
from multimodal_rag.images import content_id, image_bytes, open_image


def test_transparent_areas_become_white() -> None:
    rgba = Image.new("RGBA", (4, 4), (255, 0, 0, 0))
    rgba.putpixel((0, 0), (0, 0, 255, 255))
    out = open_image(encoded(rgba))
    assert out.mode == "RGB"
    assert out.getpixel((1, 1)) == (255, 255, 255) and out.getpixel((0, 0)) == (0, 0, 255)


@pytest.mark.parametrize("mode", ["L", "P", "CMYK", "LA", "1", "I;16", "I", "F"])
def test_every_mode_becomes_8_bit_rgb(mode: str) -> None:
    if mode in ("I;16", "I", "F"):
        dtype = {"I;16": np.uint16, "I": np.int32, "F": np.float32}[mode]
        image = Image.fromarray(np.linspace(0, 60000, 64).reshape(8, 8).astype(dtype))
        assert image.mode == mode
        out = open_image(image)
        assert out.getpixel((0, 0)) == (0, 0, 0) and out.getpixel((7, 7)) == (255, 255, 255)
    else:
        out = open_image(solid("white", (8, 8)).convert(mode))
        assert out.getpixel((3, 3)) == (255, 255, 255)
    assert out.mode == "RGB"


def test_exif_orientation_is_applied() -> None:
    image = Image.new("RGB", (20, 10), (0, 0, 0))
    exif = image.getexif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise to display
    data = encoded(image, "JPEG", exif=exif.tobytes())
    assert open_image(data).size == (10, 20)


def test_draft_decoding_shrinks_large_jpegs() -> None:
    data = encoded(solid("red", (2000, 1000)), "JPEG")
    assert open_image(data, draft_size=(224, 224)).size == (500, 250)
    assert open_image(encoded(solid("red", (2000, 1000))), draft_size=(224, 224)).size == (2000, 1000)


@pytest.mark.parametrize(
    ("payload", "message"),
    [
        (b"", "empty"),
        (b"hello, I am text", "not a known image format"),
        (encoded(solid("red", (64, 64)), "JPEG")[:60], "cannot read image"),
    ],
)
def test_bad_data_raises_image_error_naming_the_file(tmp_path: Path, payload: bytes, message: str) -> None:
    path = tmp_path / "photo.jpg"
    path.write_bytes(payload)
    with pytest.raises(ImageError, match=message) as info:
        open_image(path)
    assert "photo.jpg" in str(info.value) and info.value.source == str(path)


def test_missing_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(ImageError, match="not found.*nothere.png"):
        open_image(tmp_path / "nothere.png")
    with pytest.raises(ImageError, match="nothere.png"):
        image_bytes(tmp_path / "nothere.png")


def test_decompression_bomb_is_refused_before_decoding() -> None:
    # A 1-bit PNG of 30000 x 30000 compresses to a few kilobytes.
    buffer = io.BytesIO()
    Image.new("1", (30000, 30000)).save(buffer, format="PNG")
    assert len(buffer.getvalue()) < 1_000_000
    with pytest.raises(ImageError, match="too large"):
        open_image(buffer.getvalue())
    # Our own, lower limit applies from the header alone.
    with pytest.raises(ImageError, match="2,000,000 pixels, more than the limit of 1,000,000"):
        open_image(encoded(Image.new("1", (2000, 1000))), max_pixels=1_000_000)


def test_content_id_is_stable_and_distinguishes_images() -> None:
    a, b = encoded(solid("red")), encoded(solid("blue"))
    assert content_id(a) == content_id(bytes(a)) and content_id(a) != content_id(b)
    assert image_bytes(solid("red")) == image_bytes(solid("red"))
    with pytest.raises(ImageError, match="expected an image path"):
        image_bytes(42)  # type: ignore[arg-type]
