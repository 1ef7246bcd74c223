"""Reading the text in images for the records that keep it (OCR), one image's failure at a time.

A [`TextReader`][multimodal_rag.ocr.TextReader] reads a batch of images. Here the batch is
opened, read, and each result checked; an image that cannot be opened, a batch the reader
fails on (read again one image at a time, so that one bad photo costs only itself), and a
result no store could keep are reported per image as a `Skipped`, never raised. A
reader that cannot be built is reported for every image the same way by `read_images`'
callers, which build it through `multimodal_rag._facade.readers.build_reader`.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Sequence
from typing import TYPE_CHECKING

from multimodal_rag.errors import (
    ImageError,
    InvalidInputError,
)
from multimodal_rag.types import ImageInput, Skipped

if TYPE_CHECKING:
    from PIL import Image

    from multimodal_rag.ocr import ReadText, TextReader

__all__ = ["OCR_EXTRA_HINT", "READ_GROUP", "ocr_installed", "read_images"]

#: What installs the built-in reader.
OCR_EXTRA_HINT = "pip install 'multimodal-rag[ocr]'"


def ocr_installed() -> bool:
    """Whether the built-in reader's packages can be imported (checked without importing them)."""
    return all(importlib.util.find_spec(name) is not None for name in ("rapidocr", "onnxruntime"))


#: Images opened and handed to the reader at a time. A batch of 32 photos at 1080p would hold
#: 200 MB of decoded pixels at once; a few at a time holds a few, and the reader still gets
#: more than one image per call.
READ_GROUP = 4


def read_images(
    reader: TextReader, images: Sequence[tuple[str, ImageInput]]
) -> tuple[list[ReadText | None], list[Skipped]]:
    """Read the text of each ``(source, image)``, `READ_GROUP` images at a time.

    Returns:
        One result per image (``None`` where it could not be read) and, for each of those,
        the source and why.
    """
    results: list[ReadText | None] = []
    failures: list[Skipped] = []
    for start in range(0, len(images), READ_GROUP):
        group_results, group_failures = _read_group(reader, images[start : start + READ_GROUP])
        results += group_results
        failures += group_failures
    return results, failures


def _read_group(
    reader: TextReader, images: Sequence[tuple[str, ImageInput]]
) -> tuple[list[ReadText | None], list[Skipped]]:
    from multimodal_rag._images import open_image

    results: list[ReadText | None] = [None] * len(images)
    failures: dict[int, Skipped] = {}
    opened: list[tuple[int, Image.Image]] = []
    for i, (source, image) in enumerate(images):
        try:
            opened.append((i, open_image(image)))
        except ImageError as exc:
            failures[i] = Skipped(source=source, reason=f"its text was not read: {exc}")
    try:
        batch = _read_checked(reader, [picture for _, picture in opened])
    except Exception:  # noqa: BLE001 - one bad photo must not cost the batch: read them one by one
        batch = None
    if batch is not None:
        for (i, _), read in zip(opened, batch):
            results[i] = read
    else:
        for i, picture in opened:
            try:
                results[i] = _read_checked(reader, [picture])[0]
            except Exception as exc:  # noqa: BLE001 - a reader's own failure, reported per image
                failures[i] = Skipped(
                    source=images[i][0], reason=f"its text could not be read: {_reason(exc)}"
                )
    return results, [failures[i] for i in sorted(failures)]


def _read_checked(reader: TextReader, pictures: list[Image.Image]) -> list[ReadText]:
    from multimodal_rag._validation import check_read_text

    if not pictures:
        return []
    read = list(reader.read(pictures))
    if len(read) != len(pictures):
        raise InvalidInputError(
            f"{type(reader).__name__}.read returned {len(read)} results for {len(pictures)} images"
        )
    for number, result in enumerate(read):
        check_read_text(result, owner=f"image {number} of the batch")
    return read


def _reason(exc: BaseException) -> str:
    return (
        f"{type(exc).__name__}: {exc}" if not str(exc).startswith(type(exc).__name__) else str(exc)
    )
