"""Finding images in a directory and their entries in a cookbook-style descriptions file."""

from __future__ import annotations

import errno
import os
import stat
from collections import defaultdict
from pathlib import Path
from typing import Any

from attrs import frozen

from multimodal_rag._images import IMAGE_SUFFIXES, file_kind
from multimodal_rag._validation import RESERVED_KEYS
from multimodal_rag.descriptions.jsonl import read_jsonl
from multimodal_rag.errors import CorruptFileError, InvalidInputError

__all__ = ["DescriptionEntry", "DescriptionsFile", "find_images", "is_inside", "outside_root", "scan_images"]


def is_inside(path: Path, root: Path) -> bool:
    """Whether ``path``, with symlinks and ``..`` resolved, lies within ``root``."""
    return Path(os.path.realpath(path)).is_relative_to(os.path.realpath(root))


def outside_root(files: list[Path], root: Path) -> list[Path]:
    """The ``files`` that resolve outside ``root``: symlinks (to files or folders) leading out of it."""
    return [file for file in files if not is_inside(file, root)]


def find_images(directory: Path, *, recursive: bool = True) -> list[Path]:
    """Image files under ``directory`` (by suffix, any letter case), in sorted order.

    Raises:
        InvalidInputError: ``directory`` is not a directory.
    """
    return scan_images(directory, recursive=recursive)[0]


def scan_images(directory: Path, *, recursive: bool = True) -> tuple[list[Path], list[tuple[Path, str]]]:
    """Image files under ``directory`` and the image names that cannot be read as files.

    Returns:
        The regular files with an image suffix (any letter case), in sorted order,
        and ``(path, reason)`` for each entry with an image suffix that is not a
        regular file or a folder: a FIFO, a device, a socket, a symlink loop or a
        broken symlink. Reading those would block, never end or fail, so they are
        reported instead of read.

    Raises:
        InvalidInputError: ``directory`` is not a directory.
    """
    directory = Path(directory)
    if not directory.is_dir():
        raise InvalidInputError(f"not a directory: {str(directory)!r}")
    pattern = "**/*" if recursive else "*"
    files, unreadable = [], []
    for path in directory.glob(pattern):
        if path.suffix.lower() not in IMAGE_SUFFIXES:
            continue
        try:
            mode = os.stat(path).st_mode
        except OSError as exc:
            if exc.errno == errno.ELOOP:
                unreadable.append((path, "a symlink loop"))
            elif path.is_symlink():
                unreadable.append((path, f"a broken symlink to {os.readlink(path)!r}"))
            else:  # vanished since it was listed, or not readable
                unreadable.append((path, f"cannot be read: {exc.strerror or exc}"))
            continue
        if stat.S_ISREG(mode):
            files.append(path)
        elif not stat.S_ISDIR(mode):  # a folder named like an image is simply a folder
            via = f" (a symlink to {os.readlink(path)!r})" if path.is_symlink() else ""
            unreadable.append((path, f"{file_kind(mode)}{via}, not a regular file"))
    return sorted(files), sorted(unreadable)


@frozen
class DescriptionEntry:
    description: str | None
    metadata: dict[str, Any]
    line: int


class DescriptionsFile:
    """The entries of a descriptions file, looked up by image file.

    An entry's ``image_path`` may be relative to the descriptions file's folder or to
    the image directory; when neither matches, an image is matched by its file name,
    provided only one entry has that name.

    Args:
        path: The JSON Lines file.
        image_root: The folder being indexed.
        allow_outside: Accept entries whose ``image_path`` leads outside ``image_root``.

    Raises:
        InvalidInputError: A missing file, a line that is not UTF-8 JSON, an entry
            without ``image_path``, or one that leads outside ``image_root``.
    """

    def __init__(self, path: Path, image_root: Path, *, allow_outside: bool = False) -> None:
        self.path = Path(path)
        self._by_path: dict[str, DescriptionEntry] = {}
        by_name: dict[str, list[DescriptionEntry]] = defaultdict(list)
        root = Path(image_root).resolve()
        bases = [self.path.resolve().parent, root]
        if not self.path.is_file():
            raise InvalidInputError(f"descriptions file not found: {str(path)!r}")
        try:
            lines = list(read_jsonl(self.path))
        except CorruptFileError as exc:
            # The file is the caller's input, not part of a knowledge base: bad input.
            raise InvalidInputError(str(exc)) from exc
        for line, obj in lines:
            image_path = obj.get("image_path")
            if not isinstance(image_path, str) or not image_path or "\0" in image_path:
                raise InvalidInputError(f"{str(path)!r} line {line} has no usable 'image_path' string")
            # A descriptions file may come from someone else: it must not point the
            # library at files outside the folder being indexed ("../", absolute paths).
            if not allow_outside and not any(is_inside(base / image_path, root) for base in bases):
                raise InvalidInputError(
                    f"{str(path)!r} line {line}: image_path {image_path!r} points outside the image "
                    f"directory {str(root)!r}; pass allow_outside=True to accept it"
                )
            description = obj.get("description")
            if description is not None and not isinstance(description, str):
                raise InvalidInputError(f"{str(path)!r} line {line}: 'description' must be a string")
            metadata = {k: v for k, v in obj.items() if k not in RESERVED_KEYS}
            entry = DescriptionEntry(description, metadata, line)
            for base in bases:
                self._by_path.setdefault(os.path.normpath(base / image_path), entry)
            by_name[Path(image_path).name].append(entry)
        self._by_name = {name: entries[0] for name, entries in by_name.items() if len(entries) == 1}

    def lookup(self, image: Path) -> DescriptionEntry | None:
        """The entry describing ``image``, or ``None``."""
        entry = self._by_path.get(os.path.normpath(Path(image).resolve()))
        if entry is None:
            entry = self._by_path.get(os.path.normpath(Path(image).absolute()))
        return entry if entry is not None else self._by_name.get(Path(image).name)
