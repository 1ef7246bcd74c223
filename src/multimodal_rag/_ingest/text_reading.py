"""Reading the text in images for the records that keep it (OCR), one image's failure at a time.

A [`TextReader`][multimodal_rag.ocr.TextReader] reads a batch of images. Here the batch is
opened, read, and each result checked; an image that cannot be opened, a batch the reader
fails on (read again one image at a time, so that one bad photo costs only itself), and a
result no store could keep are reported per image as a `Skipped`, never raised. A
reader that cannot be built is reported for every image the same way by `read_images`'
callers, which build it through `build_reader`.
"""

from __future__ import annotations

import importlib.util
from collections.abc import Sequence
from typing import TYPE_CHECKING

from multimodal_rag.errors import (
    ImageError,
    InvalidInputError,
    MissingDependencyError,
    UnknownBackendError,
)
from multimodal_rag.types import ImageInput, Skipped

if TYPE_CHECKING:
    from PIL import Image

    from multimodal_rag._kb.manifest import Component
    from multimodal_rag.ocr import ReadText, TextReader

__all__ = ["OCR_EXTRA_HINT", "build_reader", "default_reader", "read_images", "reader_entry"]

#: What installs the built-in reader.
OCR_EXTRA_HINT = "pip install 'multimodal-rag[ocr]'"


def default_reader() -> TextReader:
    """The built-in reader (``rapidocr``) with its default settings.

    Raises:
        MissingDependencyError: The ``ocr`` extra is not installed.
    """
    from multimodal_rag._kb.manifest import Component

    return build_reader(Component(kind="rapidocr", config={}))


def reader_entry(reader: TextReader) -> Component:
    """How a manifest records ``reader``: its kind and the config that rebuilds it."""
    from multimodal_rag._kb.manifest import Component
    from multimodal_rag._registry import kind_of

    return Component(kind=kind_of(reader), config=dict(reader.config()))


def build_reader(entry: Component, *, allow_modules: Sequence[str] = ()) -> TextReader:
    """The reader a manifest names.

    Raises:
        MissingDependencyError: The built-in reader's packages are not installed (the
            message names ``pip install 'multimodal-rag[ocr]'``).
        UnknownBackendError: An unknown kind, or a module not allowed.
    """
    from multimodal_rag._registry import BUILTINS, resolve

    try:
        cls = resolve("text_reader", entry.kind, allow_modules=allow_modules)
    except UnknownBackendError as exc:
        if entry.kind in BUILTINS["text_reader"] and isinstance(exc.__cause__, ImportError):
            raise MissingDependencyError(
                f"reading the text in images ({entry.kind}) needs the ocr extra: {OCR_EXTRA_HINT}"
            ) from exc
        raise
    try:
        reader: TextReader = cls(**entry.config)
    except ImportError as exc:
        if isinstance(exc, MissingDependencyError):
            raise
        raise MissingDependencyError(
            f"reading the text in images needs the ocr extra: {OCR_EXTRA_HINT} ({exc})"
        ) from exc
    return reader


def ocr_installed() -> bool:
    """Whether the built-in reader's packages can be imported (checked without importing them)."""
    return all(importlib.util.find_spec(name) is not None for name in ("rapidocr", "onnxruntime"))


def read_images(
    reader: TextReader, images: Sequence[tuple[str, ImageInput]]
) -> tuple[list[ReadText | None], list[Skipped]]:
    """Read the text of each ``(source, image)``.

    Returns:
        One result per image (``None`` where it could not be read) and, for each of those,
        the source and why.
    """
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
