"""Reading images of every mode and refusing bad ones."""

from __future__ import annotations

import io
import os
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from helpers import encoded, solid
from multimodal_rag._images import IMAGE_FORMATS, content_id, image_bytes, open_image
from multimodal_rag.errors import ImageError


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
    # Over Pillow's own hard limit, which Pillow checks first: the message still states ours.
    with pytest.raises(ImageError, match="900,000,000 pixels, more than the limit of 50,000,000") as raised:
        open_image(buffer.getvalue())
    assert "178,956,970" not in str(raised.value) and "178956970" not in str(raised.value)
    # Our own, lower limit applies from the header alone.
    with pytest.raises(ImageError, match="2,000,000 pixels, more than the limit of 1,000,000"):
        open_image(encoded(Image.new("1", (2000, 1000))), max_pixels=1_000_000)


def test_content_id_is_stable_and_distinguishes_images() -> None:
    a, b = encoded(solid("red")), encoded(solid("blue"))
    assert content_id(a) == content_id(bytes(a)) and content_id(a) != content_id(b)
    assert image_bytes(solid("red")) == image_bytes(solid("red"))
    with pytest.raises(ImageError, match="expected an image path"):
        image_bytes(42)  # type: ignore[arg-type]


def test_the_default_pixel_limit_bounds_memory_per_image() -> None:
    # A 10000 x 10000 PNG compresses to a few kilobytes but decodes to 100 million pixels.
    buffer = io.BytesIO()
    Image.new("1", (10000, 10000)).save(buffer, format="PNG")
    assert len(buffer.getvalue()) < 20_000
    with pytest.raises(ImageError, match="100,000,000 pixels, more than the limit of 50,000,000"):
        open_image(buffer.getvalue())
    with pytest.raises(ImageError, match="limit of 50,000,000"):
        open_image(Image.new("1", (10000, 10000)))


def test_the_pixel_limit_counts_the_pixels_a_draft_decode_produces() -> None:
    data = encoded(solid("red", (2000, 1000)), "JPEG")
    with pytest.raises(ImageError, match="2,000,000 pixels"):
        open_image(data, max_pixels=1_000_000)
    # Decoded at 1/4 scale, it never holds more than 125,000 pixels.
    assert open_image(data, max_pixels=1_000_000, draft_size=(224, 224)).size == (500, 250)


def jpeg_declaring(width: int, height: int, *, progressive: bool, scan_components: int | None = None) -> bytes:
    """A 64x64 JPEG of a few hundred bytes whose frame header claims ``width`` x ``height``.

    ``scan_components`` rewrites how many components its first scan holds: fewer than the
    frame's three makes a sequential file one whose components come in several scans.
    """
    data = bytearray(encoded(solid("red", (64, 64)), "JPEG", progressive=progressive, subsampling=0))
    frame = data.index(b"\xff\xc2" if progressive else b"\xff\xc0")
    struct.pack_into(">HH", data, frame + 5, height, width)
    if scan_components is not None:
        data[data.index(b"\xff\xda") + 4] = scan_components
    return bytes(data)


def peak_rss_mib(code: str) -> float:
    """The peak resident memory, in MiB, of a fresh Python running ``code`` (C allocations included).

    Read from VmHWM, which starts afresh at exec; ru_maxrss keeps the forking parent's peak.
    """
    script = f"{code}\nimport re\nprint(re.search(r'VmHWM:\\s*(\\d+)', open('/proc/self/status').read())[1])"
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120, check=True)
    return int(done.stdout.split()[-1]) / 1024


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads peak memory from /proc")
def test_a_progressive_jpeg_counts_its_full_size_even_when_drafted(tmp_path: Path) -> None:
    # libjpeg keeps every coefficient of a progressive file's full size, however small the
    # draft decode: these 600 bytes claiming 13376x13376 (1672x1672 at 1/8 scale) took 1 GB.
    crafted = jpeg_declaring(13376, 13376, progressive=True)
    assert len(crafted) < 2000
    with pytest.raises(ImageError, match=r"178,917,376 pixels, more than the limit of 50,000,000; it is a progressive"):
        open_image(crafted, draft_size=(224, 224))
    path = tmp_path / "crafted.jpg"
    path.write_bytes(crafted)
    code = (
        "from multimodal_rag._images import open_image\n"
        f"try: open_image({str(path)!r}, draft_size=(224, 224))\n"
        "except ValueError: pass"
    )
    assert peak_rss_mib(code) < 150
    # Components spread over several sequential scans are buffered the same way.
    with pytest.raises(ImageError, match="multi-scan"):
        open_image(jpeg_declaring(13376, 13376, progressive=False, scan_components=1), draft_size=(224, 224))
    # A sequential file decodes at 1/8 scale without holding the full image, so it still counts reduced.
    assert open_image(jpeg_declaring(13376, 13376, progressive=False), draft_size=(224, 224)).size == (1672, 1672)
    progressive_photo = encoded(solid("red", (3000, 2000)), "JPEG", progressive=True)
    assert open_image(progressive_photo, draft_size=(224, 224)).size == (375, 250)


@pytest.mark.parametrize("fmt", ["PPM", "TGA", "ICO", "PCX", "SGI"])
def test_formats_outside_the_allow_list_are_refused_whatever_their_name(tmp_path: Path, fmt: str) -> None:
    path = tmp_path / "photo.png"
    path.write_bytes(encoded(solid("red", (32, 32)), fmt))
    with Image.open(path) as opened:
        assert opened.format == fmt  # Pillow itself would read it
    with pytest.raises(ImageError, match="photo.png.*not a known image format"):
        open_image(path)
    assert set(IMAGE_FORMATS) >= {"JPEG", "PNG", "WEBP", "GIF", "TIFF", "BMP"}


def test_an_eps_file_never_reaches_ghostscript(monkeypatch: pytest.MonkeyPatch) -> None:
    from PIL import EpsImagePlugin

    calls: list[object] = []
    monkeypatch.setattr(EpsImagePlugin, "Ghostscript", lambda *args, **kwargs: calls.append(args))
    eps = b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 32 32\nshowpage\n%%EOF\n"
    with Image.open(io.BytesIO(eps)) as opened:
        assert opened.format == "EPS"
    with pytest.raises(ImageError, match="not a known image format"):
        open_image(eps)
    assert calls == []


def test_wide_images_are_scaled_in_bands() -> None:
    # Taller than one band: every band must use the range of the whole image.
    values = np.linspace(0, 60000, 3000 * 600).reshape(3000, 600).astype(np.uint16)
    out = np.asarray(open_image(Image.fromarray(values)))
    assert out[0, 0].tolist() == [0, 0, 0] and out[-1, -1].tolist() == [255, 255, 255]
    assert abs(int(out[1500, 300, 0]) - 128) <= 1
    floats = np.array([[np.nan, 0.0], [1.0, np.inf]], dtype=np.float32)
    assert np.asarray(open_image(Image.fromarray(floats)))[1, 0].tolist() == [255, 255, 255]


def test_a_file_over_the_size_limit_is_refused_before_it_is_read(tmp_path: Path) -> None:
    path = tmp_path / "big.png"
    solid("red", (64, 64)).save(path)
    size = path.stat().st_size
    for read in (lambda: open_image(path, max_file_bytes=size - 1), lambda: image_bytes(path, max_file_bytes=size - 1)):
        with pytest.raises(ImageError, match=f"big.png.*{size:,} bytes, more than the limit of {size - 1:,}"):
            read()
    assert open_image(path, max_file_bytes=size).size == (64, 64)


def read_in_a_thread(read, path: Path) -> object:
    """What ``read(path)`` returns or raises within 10 s, or a failure naming the hang."""
    import threading

    outcome: list[object] = []

    def run() -> None:
        try:
            outcome.append(read(path))
        except Exception as exc:
            outcome.append(exc)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(10)
    if thread.is_alive():
        # Unblock the reader (a writer's open and close gives it end-of-file), then fail.
        os.close(os.open(path, os.O_WRONLY | os.O_NONBLOCK))
        thread.join(10)
        pytest.fail(f"{read.__name__} blocked on {path.name}")
    return outcome[0]


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no FIFOs here")
@pytest.mark.parametrize("read", [image_bytes, open_image])
def test_a_fifo_named_like_an_image_is_refused_without_blocking(tmp_path: Path, read) -> None:
    fifo = tmp_path / "x.jpg"
    os.mkfifo(fifo)
    error = read_in_a_thread(read, fifo)
    assert isinstance(error, ImageError) and "x.jpg" in str(error) and "FIFO" in str(error)


@pytest.mark.skipif(not os.path.exists("/dev/zero"), reason="no /dev/zero here")
@pytest.mark.parametrize("read", [image_bytes, open_image])
def test_a_device_is_refused_without_reading_it(tmp_path: Path, read) -> None:
    link = tmp_path / "zero.png"
    os.symlink("/dev/zero", link)
    for path in ("/dev/zero", link):
        with pytest.raises(ImageError, match="character device, not a regular file"):
            read(path)


# -- phone photos: HEIC/HEIF and AVIF --------------------------------------------


def _heic_bytes(image: Image.Image) -> bytes:
    pillow_heif = pytest.importorskip("pillow_heif", reason="pillow-heif (the heif extra) is not installed")
    if not pillow_heif.libheif_info().get("HEIF"):
        pytest.skip("this pillow-heif build has no HEIF encoder to write the test image")
    buffer = io.BytesIO()
    pillow_heif.from_pillow(image).save(buffer, format="HEIF", quality=95)
    return buffer.getvalue()


def _avif_bytes(image: Image.Image) -> bytes:
    from PIL import features

    if not features.check("avif"):
        pytest.skip("this Pillow is built without AVIF (Pillow 11.2 or later with libavif)")
    buffer = io.BytesIO()
    image.save(buffer, format="AVIF", quality=95)
    return buffer.getvalue()


def test_heic_and_avif_photos_are_ingested(tmp_path: Path) -> None:
    from helpers import ColorEmbedder
    from multimodal_rag import MultimodalRAG

    photos = tmp_path / "photos"
    photos.mkdir()
    (photos / "IMG_0001.HEIC").write_bytes(_heic_bytes(solid("red", (64, 48))))
    (photos / "IMG_0002.avif").write_bytes(_avif_bytes(solid("blue", (64, 48))))
    with MultimodalRAG.create(tmp_path / "kb", embedder=ColorEmbedder()) as rag:
        result = rag.add_directory(photos, progress=False)
        assert len(result.added) == 2 and result.skipped == ()
        assert rag.search(text="red", k=1)[0].image_path.endswith("IMG_0001.HEIC")
        assert rag.search(text="blue", k=1)[0].image_path.endswith("IMG_0002.avif")
    red = open_image(photos / "IMG_0001.HEIC")
    assert red.size == (64, 48) and max(abs(a - b) for a, b in zip(red.getpixel((32, 24)), (255, 0, 0))) < 12


def test_a_heic_photo_without_pillow_heif_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    import sys

    from multimodal_rag import _images as images

    data = _heic_bytes(solid("green", (16, 16)))
    images._heif_opener_registered.cache_clear()
    monkeypatch.setitem(sys.modules, "pillow_heif", None)  # as if it were not installed
    monkeypatch.setattr(Image, "OPEN", {k: v for k, v in Image.OPEN.items() if k != "HEIF"})
    try:
        with pytest.raises(ImageError, match=r"pip install 'multimodal-rag\[heif\]'"):
            open_image(data)
    finally:
        images._heif_opener_registered.cache_clear()
