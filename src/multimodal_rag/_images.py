"""Reading images from paths, bytes or PIL objects into clean RGB pictures.

Every embedder and answerer reads images through `open_image`, so that all
of them see the same pixels: EXIF orientation applied, transparency composited
on white, any mode (P, L, LA, CMYK, 16-bit, float) converted to 8-bit RGB, and
decompression bombs refused before they are decoded.

Memory per image is bounded by two limits, both checked before anything is
decoded: ``max_file_bytes`` on the file read (only regular files are read, never a
FIFO or a device, which could block or never end) and ``max_pixels`` on the pixels
decoded. Decoding and conversion to RGB take 5 to 10 bytes per pixel, so the
default of 50 million pixels bounds one image to about 500 MB. A JPEG decoded with
``draft_size`` counts only the pixels of its reduced decode, so large photos that
are shrunk anyway stay accepted, unless it is progressive or spreads its components
over several scans: libjpeg then holds every coefficient of the full-size image
(2 bytes per coefficient, up to 6 bytes per pixel) however small the decode, so such
a file counts at its full size.

Only the formats in `IMAGE_FORMATS` are opened, whatever the file's name or
declared type says: Pillow's other readers (EPS runs Ghostscript, for one) never see
the bytes.
"""

from __future__ import annotations

import functools
import hashlib
import io
import os
import re
import stat
import warnings
from typing import TYPE_CHECKING, BinaryIO, cast

from multimodal_rag.errors import ImageError
from multimodal_rag.types import ImageInput, source_name

if TYPE_CHECKING:
    from PIL import Image as PILImage

__all__ = [
    "DEFAULT_MAX_FILE_BYTES",
    "DEFAULT_MAX_PIXELS",
    "IMAGE_FORMATS",
    "IMAGE_SUFFIXES",
    "check_image",
    "content_id",
    "file_kind",
    "image_bytes",
    "open_image",
    "to_rgb",
]

#: Images that would decode to more pixels than this are refused (a 12 MP photo is 12e6).
#: At 5 to 10 bytes per pixel while decoding, one image takes at most about 500 MB.
DEFAULT_MAX_PIXELS = 50_000_000

#: Image files larger than this are refused before they are read (256 MiB; a 50 MP
#: photo is about 25 MB as a JPEG and 150 MB as an uncompressed TIFF).
DEFAULT_MAX_FILE_BYTES = 256 * 1024 * 1024

#: File suffixes directory ingest treats as images (compared in lower case). HEIC/HEIF
#: (phone photos) read with the ``heif`` extra (pillow-heif); AVIF with a Pillow built
#: with libavif (its wheels from 11.2 on).
IMAGE_SUFFIXES = frozenset(
    {".jpg", ".jpeg", ".png", ".webp", ".gif", ".bmp", ".tif", ".tiff", ".heic", ".heif", ".avif"}
)

#: Pillow formats `open_image` reads (HEIF and AVIF where a reader is installed); a file
#: in any other format is refused as not a known image format, before its reader runs.
IMAGE_FORMATS = ("JPEG", "PNG", "WEBP", "GIF", "TIFF", "BMP", "HEIF", "AVIF")

#: ISO base media file brands (bytes 8-12, after ``ftyp``) of HEIF and AVIF images.
_HEIF_BRANDS = frozenset(
    {b"heic", b"heix", b"heim", b"heis", b"hevc", b"hevx", b"hevm", b"hevs", b"mif1", b"msf1"}
)
_AVIF_BRANDS = frozenset({b"avif", b"avis"})


def content_id(data: bytes) -> str:
    """Stable id of an image: 32 hex digits of the BLAKE2b hash of its bytes."""
    return hashlib.blake2b(data, digest_size=16).hexdigest()


def image_bytes(image: ImageInput, *, max_file_bytes: int = DEFAULT_MAX_FILE_BYTES) -> bytes:
    """The bytes an image's id is computed from.

    Files and bytes hash as they are encoded; a PIL image hashes its mode, size
    and pixels, so equal pictures get equal ids.

    Raises:
        ImageError: A path that does not exist, cannot be read, is not a regular
            file, is empty or is larger than ``max_file_bytes``.
    """
    if isinstance(image, (bytes, bytearray, memoryview)):
        return bytes(image)
    if isinstance(image, (str, os.PathLike)):
        name = os.fspath(image)
        with _open_regular_file(name, max_file_bytes) as file:
            try:
                data = file.read(max_file_bytes + 1)
            except OSError as exc:
                raise ImageError(f"cannot read image file {name!r}: {exc.strerror or exc}", source=name) from exc
        if len(data) > max_file_bytes:  # it grew after its size was checked
            raise _too_many_bytes(name, len(data), max_file_bytes)
        return data
    pil = _require_pil_image(image)
    header = f"{pil.mode}:{pil.size[0]}x{pil.size[1]}:".encode()
    return header + pil.tobytes()


def open_image(
    image: ImageInput,
    *,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    draft_size: tuple[int, int] | None = None,
    max_file_bytes: int = DEFAULT_MAX_FILE_BYTES,
) -> PILImage.Image:
    """Decode an image into an 8-bit RGB PIL image.

    Args:
        image: A path, encoded bytes or a PIL image.
        max_pixels: Refuse images that would decode to more pixels than this
            (decompression bombs); checked from the header, before decoding.
        draft_size: If given, let JPEG decoding reduce the image by a power of two
            as long as both sides stay at least this large (much faster for large
            photos that will be shrunk anyway). ``max_pixels`` then applies to the
            reduced size.
        max_file_bytes: Refuse image files larger than this, before reading them.

    Raises:
        ImageError: Missing file, not a regular file, a file too large, not an
            image, truncated or corrupt data, or too many pixels. The message
            names the image.
    """
    from PIL import Image

    if isinstance(image, Image.Image):
        _check_pixels(image.size, max_pixels, source_name(image))
        return to_rgb(image)
    picture = _read(image, max_pixels=max_pixels, draft_size=draft_size, max_file_bytes=max_file_bytes, decode=True)
    return cast("PILImage.Image", picture)


def check_image(
    image: str | os.PathLike[str] | bytes,
    *,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    max_file_bytes: int = DEFAULT_MAX_FILE_BYTES,
) -> tuple[int, int]:
    """Check an encoded image from its header, without decoding it; return its width and height.

    What [`open_image`][multimodal_rag._images.open_image] refuses before decoding is refused here too, and the pixels
    are counted at full size whatever a later decode may draft, so the result bounds what
    decoding the image can cost (5 to 10 bytes per pixel).

    Raises:
        ImageError: As [`open_image`][multimodal_rag._images.open_image].
    """
    size = _read(image, max_pixels=max_pixels, draft_size=None, max_file_bytes=max_file_bytes, decode=False)
    return cast("tuple[int, int]", size)


def _read(
    image: str | os.PathLike[str] | bytes | bytearray | memoryview,
    *,
    max_pixels: int,
    draft_size: tuple[int, int] | None,
    max_file_bytes: int,
    decode: bool,
) -> PILImage.Image | tuple[int, int]:
    """[`open_image`][multimodal_rag._images.open_image] of an encoded image, or with ``decode=False`` only its checked size."""
    from PIL import Image, UnidentifiedImageError

    name = source_name(image)
    try:
        if isinstance(image, (bytes, bytearray, memoryview)):
            if len(image) == 0:
                raise ImageError("cannot read image <bytes>: it is empty", source=name)
            fp: BinaryIO = io.BytesIO(bytes(image))
        else:
            fp = _open_regular_file(os.fspath(image), max_file_bytes)
        with fp, warnings.catch_warnings():
            # We enforce our own pixel limit below; PIL's warning would be noise.
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            missing = _register_opener_for(fp)
            if missing is not None:
                raise ImageError(f"cannot read image {name!r}: {missing}", source=name)
            with Image.open(fp, formats=_installed_formats()) as opened:
                if draft_size is not None and opened.format == "JPEG":
                    if _jpeg_keeps_every_coefficient(fp):
                        _check_pixels(opened.size, max_pixels, name, why=_WHOLE_IMAGE)
                    # Only the reduced image is decoded, so only its pixels count.
                    opened.draft("RGB", draft_size)
                _check_pixels(opened.size, max_pixels, name)
                if not decode:
                    return opened.size
                opened.load()
                return to_rgb(opened)
    except ImageError:
        raise
    except UnidentifiedImageError as exc:
        raise ImageError(f"cannot read image {name!r}: not a known image format", source=name) from exc
    except Image.DecompressionBombError as exc:
        # PIL refuses images over twice its own limit (Image.MAX_IMAGE_PIXELS) before we
        # see their size; report our limit, or PIL's where the caller raised ours past it.
        found = re.search(r"\((\d+) pixels\)", str(exc))
        pixels = f"{int(found.group(1)):,} pixels" if found else "more pixels"
        limit = 2 * (Image.MAX_IMAGE_PIXELS or 0)
        if max_pixels < limit:
            message = f"image {name!r} is {pixels}, more than the limit of {max_pixels:,} (raise max_pixels to accept it)"
        else:
            message = (
                f"image {name!r} is {pixels}, more than Pillow's own limit of {limit:,} "
                "(raise PIL.Image.MAX_IMAGE_PIXELS as well as max_pixels to accept it)"
            )
        raise ImageError(message, source=name) from exc
    except (OSError, ValueError, SyntaxError) as exc:
        # Truncated and corrupt files surface as OSError (or SyntaxError in some plugins).
        raise ImageError(f"cannot read image {name!r}: {exc}", source=name) from exc


_WHOLE_IMAGE = (
    "; it is a progressive (or multi-scan) JPEG, whose full-size coefficients are all held "
    "in memory however small the decode, so its full size counts"
)

# Markers that start a frame of a progressive JPEG (Huffman or arithmetic, any precision).
_PROGRESSIVE_FRAMES = frozenset({0xC2, 0xC6, 0xCA, 0xCE})
# Markers that carry no length: TEM and the restart markers.
_STANDALONE = frozenset({0x01, *range(0xD0, 0xD8)})


def _jpeg_keeps_every_coefficient(fp: BinaryIO) -> bool:
    """Whether libjpeg will buffer the whole image's coefficients to decode this JPEG.

    It does for a progressive frame, and for a sequential one whose first scan holds
    fewer components than the frame (the others come in later scans); either way, a
    reduced (draft) decode costs as much memory as the full-size image. Read from the
    markers before the first scan, a few bytes each; anything unexpected counts as
    buffered, which only makes the pixel limit stricter.
    """
    start = fp.tell()
    try:
        fp.seek(0)
        if fp.read(2) != b"\xff\xd8":
            return True
        frame_components = None
        for _ in range(4096):  # a real file has a few dozen segments before its first scan
            head = fp.read(2)
            while head[:1] == b"\xff" and head[1:2] == b"\xff":  # fill bytes before a marker
                head = head[1:] + fp.read(1)
            if len(head) < 2 or head[0] != 0xFF:
                return True
            marker = head[1]
            if marker in _STANDALONE:
                continue
            length = int.from_bytes(fp.read(2), "big")
            if length < 2:
                return True
            if marker in _PROGRESSIVE_FRAMES:
                return True
            if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):  # any other frame
                frame_components = fp.read(6)[5:6]
                fp.seek(length - 8, io.SEEK_CUR)
            elif marker == 0xDA:  # start of the first scan
                scan_components = fp.read(1)
                return not frame_components or scan_components != frame_components
            else:
                fp.seek(length - 2, io.SEEK_CUR)
        return True
    finally:
        fp.seek(start)


def _installed_formats() -> list[str]:
    """`IMAGE_FORMATS` that have a reader here (Pillow refuses to be asked for one it lacks)."""
    from PIL import Image

    Image.init()  # registers every built-in reader once; returns at once after that
    return [name for name in IMAGE_FORMATS if name in Image.OPEN]


def _register_opener_for(fp: BinaryIO) -> str | None:
    """Register Pillow's opener for a HEIF or AVIF file, on first need; say what is missing.

    Pillow reads AVIF itself when built with libavif; HEIC/HEIF needs pillow-heif,
    imported only when such a file comes, so other images never pay for it.

    Returns:
        ``None``, or why the file cannot be read here (the package that would read it).
    """
    head = fp.read(12)
    fp.seek(0)
    brand = head[8:12] if head[4:8] == b"ftyp" else b""
    if brand in _AVIF_BRANDS:
        from PIL import features

        if features.check("avif"):
            return None
        return "an AVIF image, and this Pillow has no AVIF support (Pillow 11.2 or later reads AVIF)"
    if brand in _HEIF_BRANDS:
        if _heif_opener_registered():
            return None
        return "a HEIC/HEIF image, which needs the pillow-heif package: pip install 'multimodal-rag[heif]'"
    return None


@functools.cache
def _heif_opener_registered() -> bool:
    try:
        import pillow_heif  # type: ignore[import-not-found, unused-ignore]
    except ImportError:
        return False
    pillow_heif.register_heif_opener()
    return True


def to_rgb(image: PILImage.Image) -> PILImage.Image:
    """Convert any PIL image to upright 8-bit RGB, compositing transparency on white."""
    from PIL import Image, ImageOps

    image = ImageOps.exif_transpose(image) or image
    if image.mode in ("I;16", "I;16L", "I;16B", "I;16N", "I", "F"):
        image = _wide_to_8_bit(image)
    if image.mode == "P":
        image = image.convert("RGBA" if "transparency" in image.info else "RGB")
    if image.mode in ("LA", "La", "PA"):
        image = image.convert("RGBA")
    if image.mode == "RGBa":
        image = image.convert("RGBA")
    if image.mode == "RGBA":
        background = Image.new("RGB", image.size, (255, 255, 255))
        background.paste(image, mask=image)  # an RGBA mask pastes by its alpha, without a copy of it
        return background
    if image.mode != "RGB":
        image = image.convert("RGB")
    return image


def _wide_to_8_bit(image: PILImage.Image) -> PILImage.Image:
    """Scale a 16-bit, 32-bit or float image's actual range into 8-bit L, a band of rows at a time.

    Converting the whole array to float64 at once cost 8 bytes per pixel more
    than the image itself; bands keep the extra memory to one band.
    """
    import numpy as np
    from PIL import Image

    array = np.asarray(image)
    low, high = float(array.min()), float(array.max())
    if not (np.isfinite(low) and np.isfinite(high)):  # float images may hold NaN or inf
        array = np.nan_to_num(array.astype(np.float32), nan=0.0, posinf=0.0, neginf=0.0)
        low, high = float(array.min()), float(array.max())
    scale = 255.0 / (high - low) if high > low else 0.0
    out = np.empty(array.shape, dtype=np.uint8)
    band = max(1, (1 << 20) // max(1, array.shape[1]))
    for top in range(0, array.shape[0], band):
        rows = array[top : top + band].astype(np.float64)
        out[top : top + band] = ((rows - low) * scale).round()
    return Image.fromarray(out, mode="L")


def _open_regular_file(name: str, max_file_bytes: int) -> BinaryIO:
    """Open an image file for reading, after checking it is a regular file of acceptable size.

    A FIFO would block the read forever and a device such as ``/dev/zero`` never
    ends; both are refused before they are opened, and what was opened is checked
    again, in case the path changed in between. An fsspec URL (``s3://...``) is read whole
    into memory instead, through `multimodal_rag._storage`, with the same size limit.
    """
    from multimodal_rag._storage import is_url, local_path, read_url, redact

    if is_url(name):
        data = read_url(name, max_bytes=max_file_bytes)
        if not data:
            raise ImageError(f"cannot read image {redact(name)!r}: the file is empty", source=redact(name))
        return io.BytesIO(data)
    name = local_path(name)
    try:
        _check_regular(os.stat(name), name, max_file_bytes)
        flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0)
        fd = os.open(name, flags)
    except FileNotFoundError:
        raise ImageError(f"image file not found: {name!r}", source=name) from None
    except ImageError:
        raise
    except (OSError, ValueError) as exc:  # ValueError: a NUL byte in the path
        raise ImageError(f"cannot read image file {name!r}: {getattr(exc, 'strerror', None) or exc}", source=name) from exc
    try:
        _check_regular(os.fstat(fd), name, max_file_bytes)
    except BaseException:
        os.close(fd)
        raise
    return os.fdopen(fd, "rb")


_FILE_KINDS = (
    (stat.S_ISDIR, "a directory"),
    (stat.S_ISFIFO, "a FIFO (named pipe)"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISSOCK, "a socket"),
)


def file_kind(mode: int) -> str:
    """What a file that is not a regular file is, in words (``"a FIFO (named pipe)"``)."""
    return next((kind for test, kind in _FILE_KINDS if test(mode)), "not a regular file")


def _check_regular(info: os.stat_result, name: str, max_file_bytes: int) -> None:
    if not stat.S_ISREG(info.st_mode):
        raise ImageError(
            f"cannot read image {name!r}: it is {file_kind(info.st_mode)}, not a regular file", source=name
        )
    if info.st_size == 0:
        raise ImageError(f"cannot read image {name!r}: the file is empty", source=name)
    if info.st_size > max_file_bytes:
        raise _too_many_bytes(name, info.st_size, max_file_bytes)


def _too_many_bytes(name: str, size: int, max_file_bytes: int) -> ImageError:
    return ImageError(
        f"image file {name!r} is {size:,} bytes, more than the limit of {max_file_bytes:,} "
        "(raise max_file_bytes to accept it)",
        source=name,
    )


def _check_pixels(size: tuple[int, int], max_pixels: int, name: str, *, why: str = "") -> None:
    width, height = size
    if width <= 0 or height <= 0:
        raise ImageError(f"cannot read image {name!r}: it has no pixels ({width}x{height})", source=name)
    if width * height > max_pixels:
        raise ImageError(
            f"image {name!r} is {width}x{height} = {width * height:,} pixels, more than the "
            f"limit of {max_pixels:,}{why} (raise max_pixels to accept it)",
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
