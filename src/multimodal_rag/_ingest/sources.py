"""Finding images in a folder or a bucket, and their entries in a cookbook-style descriptions file.

`Source` is where an ingest or a sync reads from: a local folder (a path or ``file://``
URL) or an fsspec URL (``s3://bucket/prefix``). ``Source(location).files()`` lists its
images lazily, page by page, as `SourceFile` s (the location ``image_path`` keeps, the
size and a version token that changes when the bytes do); ``Source.read(file)`` returns
one file's bytes, whose hash is its content id wherever it is stored.
"""

from __future__ import annotations

import errno
import io
import os
import posixpath
import stat
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path
from typing import Any, BinaryIO
from urllib.parse import urlsplit

from attrs import frozen

from multimodal_rag._images import DEFAULT_MAX_FILE_BYTES, IMAGE_SUFFIXES, file_kind, image_bytes
from multimodal_rag._storage import canonical, is_url, list_files, local_path, read_url, redact
from multimodal_rag._validation import RESERVED_KEYS
from multimodal_rag.descriptions.jsonl import parse_jsonl
from multimodal_rag.errors import CorruptFileError, ImageError, InvalidInputError
from multimodal_rag.types import Skipped

__all__ = [
    "DescriptionEntry",
    "DescriptionsFile",
    "Source",
    "SourceFile",
    "find_images",
    "is_inside",
    "outside_root",
    "scan_images",
]


@frozen
class SourceFile:
    """One image a `Source` lists.

    Attributes:
        location: Where it is, as a record's ``image_path`` keeps it: an absolute local path,
            or the URL without credentials (``s3://bucket/photos/a.jpg``).
        size: Its size in bytes, where the listing gives it.
        version: A token that changes whenever its bytes change (an object's ETag or
            generation; a local file's size and modification time), or ``None``.
    """

    location: str
    size: int | None
    version: str | None


class Source:
    """The images in a local folder or under a URL prefix, listed lazily.

    Args:
        location: A folder (path or ``file://`` URL) or an fsspec URL (``s3://bucket/prefix``,
            ``gs://...``, ``az://...``). Credentials come from the filesystem's environment.
        recursive: Include sub-folders (sub-prefixes).
        allow_outside: For a local folder, accept symlinks leading outside it.
        page_size: Keys per listing request for S3 (at most 1000; the store's default when ``None``).

    Raises:
        InvalidInputError: A local folder that is not a folder; an unsupported URL scheme.
        MissingDependencyError: The URL scheme's package is not installed (names the extra).
    """

    def __init__(
        self,
        location: str | os.PathLike[str],
        *,
        recursive: bool = True,
        allow_outside: bool = False,
        page_size: int | None = None,
    ) -> None:
        name = os.fspath(location)
        self.remote = is_url(name)
        self.recursive = recursive
        self.allow_outside = allow_outside
        self.page_size = page_size
        #: Images listed but refused without being read (local folders: FIFOs, broken
        #: links, symlinks leading outside); filled as `files` runs.
        self.refused: list[Skipped] = []
        if self.remote:
            # An unsupported scheme or a missing extra fails here, not mid-listing.
            self.location = canonical(name)
            self._url = name
        else:
            self.root = Path(local_path(name))
            if not self.root.is_dir():
                raise InvalidInputError(f"not a directory: {name!r}")
            self.location = str(self.root.resolve())

    def files(self) -> Iterator[SourceFile]:
        """The image files (by suffix, any letter case), streamed as they are listed.

        Raises:
            InvalidInputError: The bucket or prefix cannot be listed (missing, access denied).
        """
        if self.remote:
            for found in list_files(self._url, recursive=self.recursive, page_size=self.page_size):
                if os.path.splitext(found.url)[1].lower() in IMAGE_SUFFIXES:
                    yield SourceFile(location=found.url, size=found.size, version=found.version)
            return
        files, not_files = scan_images(self.root, recursive=self.recursive)
        escaping = set() if self.allow_outside else set(outside_root(files, self.root))
        self.refused += [
            Skipped(
                source=str(file),
                reason=f"a symlink to {os.path.realpath(file)!r}, outside {str(self.root)!r}",
            )
            for file in sorted(escaping)
        ]
        self.refused += [Skipped(source=str(path), reason=reason) for path, reason in not_files]
        for file in files:
            if file in escaping:
                continue
            try:
                info = file.stat()
            except OSError as exc:  # vanished since it was listed
                self.refused.append(
                    Skipped(source=str(file), reason=f"cannot be read: {exc.strerror or exc}")
                )
                continue
            yield SourceFile(
                location=str(file.resolve()),
                size=info.st_size,
                version=f"{info.st_size}:{info.st_mtime_ns}",
            )

    def read(self, file: SourceFile | str, *, max_bytes: int = DEFAULT_MAX_FILE_BYTES) -> bytes:
        """The bytes of one listed file (read into memory, never copied to disk).

        Raises:
            ImageError: It is missing, unreadable or larger than ``max_bytes``.
        """
        return image_bytes(
            file.location if isinstance(file, SourceFile) else file, max_file_bytes=max_bytes
        )

    def holds(self, image_path: str | None) -> bool:
        """Whether a stored ``image_path`` lies in this source (where a sync looks for vanished files)."""
        if not image_path:
            return False
        if self.remote:
            return (
                image_path.startswith(self.location + "/")
                if self.recursive
                else os.path.dirname(image_path) == self.location
            )
        if is_url(image_path):
            return False
        path = os.path.normpath(image_path)
        if self.recursive:
            return path.startswith(self.location.rstrip(os.sep) + os.sep)
        return os.path.dirname(path) == self.location


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
    provided only one entry has that name. The file and the images may each be local
    or at a URL (``s3://bucket/descriptions.jsonl``, ``https://...``).

    Args:
        path: The JSON Lines file: a path or a URL.
        image_root: The folder being indexed: a path, or a source's URL.
        allow_outside: Accept entries whose ``image_path`` leads outside ``image_root``.

    Raises:
        InvalidInputError: A missing file, a line that is not UTF-8 JSON, an entry
            without ``image_path``, or one that leads outside ``image_root``.
    """

    #: A descriptions file at a URL is read into memory; past this it is refused.
    MAX_URL_BYTES = 1 << 30

    def __init__(
        self,
        path: str | os.PathLike[str],
        image_root: str | os.PathLike[str],
        *,
        allow_outside: bool = False,
    ) -> None:
        name = os.fspath(path)
        self._by_path: dict[str, DescriptionEntry] = {}
        by_name: dict[str, list[DescriptionEntry]] = defaultdict(list)
        remote_root = is_url(os.fspath(image_root))
        root = (
            canonical(os.fspath(image_root))
            if remote_root
            else str(Path(local_path(os.fspath(image_root))).resolve())
        )
        if is_url(name):
            self.path: str | Path = redact(name)
            shown = self.path
            try:
                data = read_url(name, max_bytes=self.MAX_URL_BYTES)
            except ImageError as exc:
                raise InvalidInputError(f"descriptions file: {exc}") from None
            lines: BinaryIO = io.BytesIO(data)
            here = canonical(name).rpartition("/")[0]
        else:
            self.path = Path(local_path(name))
            shown = str(path)
            if not self.path.is_file():
                raise InvalidInputError(f"descriptions file not found: {shown!r}")
            lines = open(self.path, "rb")  # noqa: SIM115 - closed below
            here = str(self.path.resolve().parent)
        bases = [here, root]
        try:
            with lines:
                parsed = list(parse_jsonl(lines, shown))
        except CorruptFileError as exc:
            # The file is the caller's input, not part of a knowledge base: bad input.
            raise InvalidInputError(str(exc)) from exc
        for line, obj in parsed:
            image_path = obj.get("image_path")
            if not isinstance(image_path, str) or not image_path or "\0" in image_path:
                raise InvalidInputError(f"{shown!r} line {line} has no usable 'image_path' string")
            # A descriptions file may come from someone else: it must not point the
            # library at files outside the folder being indexed ("../", absolute paths).
            if not allow_outside and not any(
                _inside(_join(base, image_path), root) for base in bases
            ):
                raise InvalidInputError(
                    f"{shown!r} line {line}: image_path {redact(image_path)!r} points outside the image "
                    f"directory {root!r}; pass allow_outside=True to accept it"
                )
            description = obj.get("description")
            if description is not None and not isinstance(description, str):
                raise InvalidInputError(f"{shown!r} line {line}: 'description' must be a string")
            metadata = {k: v for k, v in obj.items() if k not in RESERVED_KEYS}
            entry = DescriptionEntry(description, metadata, line)
            for base in bases:
                self._by_path.setdefault(_join(base, image_path), entry)
            by_name[posixpath.basename(image_path.replace(os.sep, "/"))].append(entry)
        self._by_name = {name: entries[0] for name, entries in by_name.items() if len(entries) == 1}

    def lookup(self, image: str | os.PathLike[str]) -> DescriptionEntry | None:
        """The entry describing ``image`` (a path, or a listed file's URL), or ``None``."""
        name = os.fspath(image)
        if is_url(name):
            entry = self._by_path.get(name)
            return entry if entry is not None else self._by_name.get(posixpath.basename(name))
        entry = self._by_path.get(os.path.normpath(Path(name).resolve()))
        if entry is None:
            entry = self._by_path.get(os.path.normpath(Path(name).absolute()))
        return entry if entry is not None else self._by_name.get(Path(name).name)


def _join(base: str, image_path: str) -> str:
    """Where ``image_path`` (relative, absolute or a URL) leads from the folder ``base``."""
    if is_url(image_path):
        return redact(image_path)
    if is_url(base):
        parts = urlsplit(base)
        # Built by hand: urlunsplit drops the "//" of a URL with no host (memory:///bucket).
        path = posixpath.normpath(posixpath.join(parts.path or "/", image_path))
        return f"{parts.scheme}://{parts.netloc}{path}"
    return os.path.normpath(os.path.join(base, image_path))


def _inside(location: str, root: str) -> bool:
    if is_url(root) or is_url(location):
        return location.startswith(root.rstrip("/") + "/")
    return is_inside(Path(location), Path(root))
