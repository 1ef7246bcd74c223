"""The knowledge-base directory on disk: snapshots, checksums and the writer's lock.

Layout:

```text
kb/
  manifest.json            what the knowledge base is, and which snapshot is current
  snapshots/00000007/      the current snapshot, written whole by one save
    vectors/               the vector store's files
    descriptions/          the description store's files
    adapter/adapter.npz    the adapter's weights, while one is applied
    raw-vectors/           the embedder's own vectors, while an adapter is applied
  snapshots/00000006/      the previous snapshot's descriptions, kept for salvage
  journal.bin              changes committed since that snapshot (see journal.py)
  journal.commit           how many journal entries were committed
  images/                  images added from memory (bytes, PIL), named by content hash;
                           records name them relative to the knowledge base (images/<hash>.png)
  damaged/                 files that repair set aside instead of deleting
  adapter-reports/         one JSON report per adapter fit, kept or not
  .lock                    held (flock) by the one process that may write
```

A save writes a new snapshot directory beside the current one, fsyncs it,
records its files' sizes and checksums in a new manifest, and atomically
replaces the manifest. A crash at any moment leaves the old manifest pointing
at the old, complete snapshot; snapshots no manifest names are removed on the
next writable open, except the descriptions of the one before the current,
which can be read back should the current description file be damaged.

A knowledge base may come from someone else, so nothing in it is trusted to
point where it should: every internal path must be a real file or directory
(not a symbolic link) inside the knowledge base, and only names this module
creates are ever deleted.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import os
import re
import shutil
import stat
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import attrs

from multimodal_rag._hashing import sha256_file
from multimodal_rag._kb.fileio import atomic_write_bytes, fsync_directory, fsync_tree
from multimodal_rag._kb.manifest import MANIFEST_FILE, Manifest
from multimodal_rag._storage import is_url
from multimodal_rag._version import __version__
from multimodal_rag.errors import (
    CorruptFileError,
    KnowledgeBaseAccessError,
    KnowledgeBaseError,
    KnowledgeBaseExistsError,
    KnowledgeBaseLockedError,
)
from multimodal_rag.types import Record

__all__ = [
    "ADAPTER",
    "ADAPTER_FILE",
    "ADAPTER_REPORTS",
    "RAW_VECTORS",
    "KnowledgeBaseDirectory",
    "check_writable_platform",
    "damaged_parts",
    "remove_tree",
]

SNAPSHOTS = "snapshots"
IMAGES = "images"
VECTORS = "vectors"
DESCRIPTIONS = "descriptions"
DAMAGED = "damaged"
#: Snapshot parts that exist while an adapter is applied: its weights, and the raw vectors.
ADAPTER = "adapter"
ADAPTER_FILE = "adapter/adapter.npz"
RAW_VECTORS = "raw-vectors"
ADAPTER_REPORTS = "adapter-reports"
LOCK_FILE = ".lock"
JOURNAL_FILE = "journal.bin"
COMMIT_FILE = "journal.commit"
#: Snapshot directories, finished or being written: the only names under snapshots/ ever deleted.
_SNAPSHOT_NAME = re.compile(r"^\d{8}(\.tmp)?$")
#: Temporary files of atomic writes (fileio.atomic_write_bytes) of the top-level files.
_TEMPORARY_NAME = re.compile(r"^\.(manifest\.json|journal\.bin|journal\.commit)\..+\.tmp$")
#: Names of images kept from memory: the 32 hex digits of their content hash and a suffix.
_KEPT_IMAGE = re.compile(r"[0-9a-f]{32}\.[a-z0-9]+")
#: Writing takes an ``flock`` and the journal writes with ``pwrite``: POSIX only.
_POSIX = os.name == "posix"


def check_writable_platform(path: Path) -> None:
    """Refuse, with a clear message, to open for writing where POSIX file locks are missing.

    Raises:
        KnowledgeBaseError: Not a POSIX system (Windows).
    """
    if not _POSIX:
        raise KnowledgeBaseError(
            f"cannot open knowledge base {str(path)!r} for writing: writing needs a POSIX system "
            f"(Linux, macOS, or WSL on Windows) for its file locks, and this is {os.name!r}"
        )


class KnowledgeBaseDirectory:
    """One knowledge-base directory: where its snapshots are and who may write them."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._lock_fd: int | None = None

    @property
    def images(self) -> Path:
        return self.path / IMAGES

    @property
    def journal(self) -> Path:
        return self.path / JOURNAL_FILE

    @property
    def damaged(self) -> Path:
        return self.path / DAMAGED

    def snapshot(self, generation: int) -> Path:
        return self.path / SNAPSHOTS / f"{generation:08d}"

    def older_snapshots(self, generation: int) -> list[Path]:
        """Snapshot directories older than ``generation``, newest first."""
        root = self.path / SNAPSHOTS
        if not _is_real_directory(root):
            return []
        found = [
            entry
            for entry in root.iterdir()
            if _SNAPSHOT_NAME.match(entry.name) and not entry.name.endswith(".tmp") and int(entry.name) < generation
        ]
        return sorted((entry for entry in found if _is_real_directory(entry)), reverse=True)

    # -- trust ---------------------------------------------------------------

    def check_layout(self) -> None:
        """Refuse a knowledge base whose own paths lead elsewhere (symbolic links).

        A knowledge base may come from someone else: a ``snapshots`` that links to
        another folder would have saves and clean-ups write and delete there.

        Raises:
            CorruptFileError: An internal path is a symbolic link or not what it should be.
        """
        for name, want_dir in (
            (SNAPSHOTS, True),
            (IMAGES, True),
            (DAMAGED, True),
            (ADAPTER_REPORTS, True),
            (JOURNAL_FILE, False),
            (COMMIT_FILE, False),
            (LOCK_FILE, False),
        ):
            entry = self.path / name
            try:
                mode = os.lstat(entry).st_mode
            except FileNotFoundError:
                continue
            except OSError as exc:
                raise _access_error(entry, exc) from exc
            if stat.S_ISLNK(mode):
                raise CorruptFileError(
                    f"{str(entry)!r} is a symbolic link (to {os.readlink(entry)!r}); a knowledge base holds "
                    "only its own files and folders, so it is refused"
                )
            if want_dir != stat.S_ISDIR(mode) or not (want_dir or stat.S_ISREG(mode)):
                raise CorruptFileError(f"{str(entry)!r} is not a {'folder' if want_dir else 'regular file'}")

    # -- images given in memory ---------------------------------------------

    def images_folder(self) -> Path:
        """The folder that keeps images given in memory, made if needed.

        Raises:
            KnowledgeBaseError: It cannot be made; nothing was stored.
        """
        folder = self.images
        try:
            folder.mkdir(exist_ok=True)
        except OSError as exc:
            raise KnowledgeBaseError(
                f"cannot make the folder {str(folder)!r} for images given in memory: {exc}; nothing was stored"
            ) from exc
        return folder

    def keep_image(self, data: bytes, suffix: str, *, source: str) -> str:
        """Keep an image given in memory as ``images/<hash of its bytes>.<suffix>``; returns that
        path, relative to the knowledge base, for its record (see `image_file`).

        Named by the hash of the bytes, never by the caller's id: an id cannot lead the
        file out of the folder, an existing file is the same image, and an id given again
        for another picture gets a file of its own.

        Raises:
            KnowledgeBaseError: The file cannot be written; the batch holding it is not stored.
        """
        from multimodal_rag._images import content_id

        path = self.images_folder() / f"{content_id(data)}.{suffix}"
        try:
            if not path.exists():
                atomic_write_bytes(path, data)
        except OSError as exc:
            raise KnowledgeBaseError(
                f"cannot keep image {source} as {str(path)!r}: {exc}; the batch holding it was not stored"
            ) from exc
        return f"{IMAGES}/{path.name}"

    # -- where records' images are -------------------------------------------
    #
    # A record of an image this knowledge base keeps names it relative to the knowledge
    # base, so that the folder can be moved or copied (a copy then reads its own files)
    # and opened from any working directory. Those given by path are absolute.

    @functools.cached_property
    def root(self) -> Path:
        """The knowledge base's folder as an absolute path, links resolved."""
        return self.path.resolve()

    def image_file(self, image_path: str | None) -> str | None:
        """Where a record's image is: a relative ``image_path`` is relative to the knowledge base,
        and one of this knowledge base's images named by an earlier version is found here."""
        if image_path is None or is_url(image_path):  # an image in a bucket stays there
            return image_path
        relocated = self.relocated_image_path(image_path)
        if relocated is not None:
            return str(self.root / relocated)
        return image_path if os.path.isabs(image_path) else str(self.root / image_path)

    def with_image_file(self, record: Record) -> Record:
        """``record`` with its image where `image_file` finds it."""
        found = self.image_file(record.image_path)
        return record if found == record.image_path else attrs.evolve(record, image_path=found)

    def stored_image_path(self, image_path: str | None) -> str | None:
        """The path to store for an image: relative for a file of ``images/``, as given otherwise."""
        relocated = self.relocated_image_path(image_path)
        if relocated is not None:
            return relocated
        if image_path is not None and os.path.isabs(image_path):
            path = Path(image_path)
            if path.parent in (self.root / IMAGES, Path(os.path.abspath(self.path)) / IMAGES):
                return f"{IMAGES}/{path.name}"
        return image_path

    def with_stored_image_path(self, record: Record) -> Record:
        """``record`` as it is stored: see `stored_image_path`."""
        stored = self.stored_image_path(record.image_path)
        return record if stored == record.image_path else attrs.evolve(record, image_path=stored)

    def relocated_image_path(self, image_path: str | None) -> str | None:
        """The relative path of an image kept here that a record of an earlier version names by
        the folder's old location (``kb/images/<hash>.png``, or absolute); ``None`` for any other.

        Kept images are named by the hash of their bytes, so a file of that name in this
        knowledge base's ``images/`` holds the same picture: nothing is lost by pointing there.
        """
        if image_path is None or image_path.startswith(f"{IMAGES}/") or is_url(image_path):
            return None
        path = Path(image_path)
        if path.parent.name != IMAGES or not _KEPT_IMAGE.fullmatch(path.name):
            return None
        try:
            if not stat.S_ISREG(os.lstat(self.images / path.name).st_mode):
                return None
        except OSError:
            return None
        return f"{IMAGES}/{path.name}"

    # -- adapter reports ----------------------------------------------------

    def write_adapter_report(self, report: Mapping[str, Any]) -> Path:
        """Keep an adapter fit's report as ``adapter-reports/<UTC time>.json``; returns the file.

        Raises:
            KnowledgeBaseError: The file cannot be written.
        """
        from multimodal_rag._kb.fileio import atomic_write_json

        folder = self.path / ADAPTER_REPORTS
        stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
        try:
            self.check_layout()
            folder.mkdir(exist_ok=True)
            path = folder / f"{stamp}.json"
            number = 1
            while path.exists():  # two fits in one second keep both reports
                number += 1
                path = folder / f"{stamp}-{number}.json"
            atomic_write_json(path, dict(report))
        except OSError as exc:
            raise KnowledgeBaseError(f"cannot write the adapter report under {str(folder)!r}: {exc.strerror or exc}") from exc
        return path

    # -- the writer's lock ---------------------------------------------------

    def lock(self) -> None:
        """Take the exclusive writer's lock, or fail naming the process that holds it.

        The lock is an OS file lock (``flock``), so the kernel releases it when its
        holder exits or crashes: a stale lock never needs cleaning by hand.
        """
        check_writable_platform(self.path)
        import fcntl

        try:
            fd = os.open(self.path / LOCK_FILE, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o644)
        except OSError as exc:
            raise KnowledgeBaseError(
                f"cannot open knowledge base {str(self.path)!r} for writing: {exc.strerror or exc}"
                + ("; open it with read_only=True to search it" if exc.errno in (errno.EROFS, errno.EACCES, errno.EPERM) else "")
            ) from exc
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            holder = os.pread(fd, 32, 0).decode("ascii", "replace").strip() or "?"
            os.close(fd)
            if exc.errno in (errno.EAGAIN, errno.EACCES):
                raise KnowledgeBaseLockedError(
                    f"knowledge base {str(self.path)!r} is open for writing in another process "
                    f"(locked by pid {holder}); open it with read_only=True to search it"
                ) from None
            raise KnowledgeBaseError(f"cannot lock knowledge base {str(self.path)!r}: {exc.strerror or exc}") from exc
        with contextlib.suppress(OSError):  # the pid is a courtesy to the next writer; the lock is what counts
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._lock_fd = fd

    def unlock(self) -> None:
        if self._lock_fd is not None:
            os.close(self._lock_fd)  # closing the descriptor releases the flock
            self._lock_fd = None

    # -- snapshots -----------------------------------------------------------

    def write_snapshot(
        self,
        generation: int,
        vector_store: Any,
        description_store: Any,
        manifest: Manifest,
        *,
        parts: Mapping[str, Callable[[Path], object]] | None = None,
    ) -> Manifest:
        """Save both stores as snapshot ``generation`` and point the manifest at it.

        ``parts`` are further folders of the snapshot (the adapter, the raw vectors), each
        written by its function into the folder it is given; their files are checksummed
        like the stores'.

        Every file is fsynced and its size and checksum recorded before the manifest
        is swapped; any failure (a full disk, a read-only file system, a store's own
        error) removes what this save wrote and leaves the previous save as it was.

        Returns the manifest that was written.

        Raises:
            KnowledgeBaseError: The save failed; the previous save is intact.
        """
        final = self.snapshot(generation)
        staging = final.with_name(final.name + ".tmp")
        swapped = False
        try:
            (self.path / SNAPSHOTS).mkdir(exist_ok=True)
            self.check_layout()
            remove_tree(staging)
            remove_tree(final)
            (staging / VECTORS).mkdir(parents=True)
            (staging / DESCRIPTIONS).mkdir()
            vector_store.save(staging / VECTORS)
            description_store.save(staging / DESCRIPTIONS)
            for name, write in (parts or {}).items():
                (staging / name).mkdir()
                write(staging / name)
            fsync_tree(staging)
            files, sizes = {}, {}
            for file in sorted(staging.rglob("*")):
                if file.is_symlink() or not (file.is_file() or file.is_dir()):
                    raise KnowledgeBaseError(f"a store saved {str(file)!r}, which is not a regular file")
                if file.is_file():
                    relative = str(file.relative_to(staging))
                    files[relative], sizes[relative] = sha256_file(file), file.stat().st_size
            os.replace(staging, final)
            fsync_directory(final.parent)
            for relative, size in sizes.items():
                # Cheap, and catches a file shortened between the checksum and the rename.
                if (final / relative).stat().st_size != size:
                    raise OSError(errno.EIO, f"{relative} changed size while the snapshot was written")
            manifest = manifest.saved(
                generation=generation,
                files=files,
                sizes=sizes,
                saved_at=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                library_version=__version__,
            )
            manifest.write(self.path)
            swapped = True
        except BaseException as exc:
            with contextlib.suppress(OSError):
                remove_tree(staging)
                if not swapped:
                    remove_tree(final)
            if isinstance(exc, KnowledgeBaseError) or not isinstance(exc, Exception):
                raise
            reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
            raise KnowledgeBaseError(
                f"cannot save knowledge base {str(self.path)!r}: {reason}; the previous save is intact"
            ) from exc
        self.remove_stale_snapshots(keep=generation)
        return manifest

    def verify_snapshot(self, manifest: Manifest) -> Path:
        """Check every file of the manifest's snapshot against its checksum.

        Raises:
            CorruptFileError: A file is missing or its content changed; names the file.
            KnowledgeBaseAccessError: A file may not be read (not damage).
        """
        for path, reason in self.check_snapshot(manifest):
            raise CorruptFileError(f"knowledge-base file {str(path)!r} {reason}")
        return self.snapshot(manifest.generation)

    def check_snapshot(self, manifest: Manifest) -> list[tuple[Path, str]]:
        """``(file, what is wrong)`` for each file of the manifest's snapshot that fails its checksum.

        Raises:
            KnowledgeBaseAccessError: A file may not be read: a permission problem, not damage.
        """
        snapshot = self.snapshot(manifest.generation)
        sizes = manifest.sizes
        problems = []
        for relative, expected in manifest.files.items():
            path = snapshot / relative
            if not _inside(path, snapshot):
                problems.append((path, "is named by the manifest outside its snapshot"))
                continue
            # No link anywhere on the way: the file must be where its name says.
            expected_real = os.path.join(os.path.realpath(self.path), SNAPSHOTS, snapshot.name, os.path.normpath(relative))
            if os.path.lexists(path) and os.path.realpath(path) != expected_real:
                problems.append((path, "leads outside the knowledge base through a symbolic link"))
                continue
            try:
                info = os.lstat(path)
                if stat.S_ISLNK(info.st_mode) or not stat.S_ISREG(info.st_mode):
                    problems.append((path, "is not a regular file (a knowledge base holds no links)"))
                    continue
                if relative in sizes and info.st_size != sizes[relative]:
                    problems.append((path, f"is corrupt: {info.st_size} bytes where {sizes[relative]} were saved"))
                    continue
                actual = sha256_file(path)
            except (PermissionError, IsADirectoryError) as exc:
                raise _access_error(path, exc) from exc
            except OSError as exc:
                problems.append((path, f"cannot be read: {exc.strerror or exc}"))
                continue
            if actual != expected:
                problems.append((path, "is corrupt: its checksum does not match the manifest"))
        return problems

    def remove_stale_snapshots(self, *, keep: int) -> None:
        """Delete snapshots other than ``keep``, left by earlier saves or by a crash.

        The newest older snapshot keeps its descriptions (not its vectors, which can be
        embedded again) so that a damaged description file can be salvaged from it.
        """
        root = self.path / SNAPSHOTS
        if not _is_real_directory(root):
            return
        previous = self.older_snapshots(keep)[:1]
        for entry in root.iterdir():
            if entry.name == f"{keep:08d}" or not _SNAPSHOT_NAME.match(entry.name):
                continue  # the current snapshot, or nothing this library made
            if previous and entry == previous[0]:
                for part in entry.iterdir():
                    if part.name != DESCRIPTIONS:
                        remove_tree(part)
                continue
            remove_tree(entry)

    # -- an interrupted create -----------------------------------------------

    def check_new(self) -> bool:
        """Check that a knowledge base may be created here; True when an interrupted create must be cleaned first.

        A create killed before its first manifest leaves only the library's own files
        (see `is_unfinished`); anything else is someone's and stops the create.

        Raises:
            KnowledgeBaseExistsError: The path holds a knowledge base or other files.
            KnowledgeBaseError: Not a POSIX system, where writing is not supported.
        """
        if (self.path / MANIFEST_FILE).exists():
            raise KnowledgeBaseExistsError(f"a knowledge base already exists at {str(self.path)!r}")
        check_writable_platform(self.path)  # before the create makes any folder
        unfinished = self.is_unfinished()
        if self.path.exists() and not unfinished and (not self.path.is_dir() or any(self.path.iterdir())):
            raise KnowledgeBaseExistsError(f"{str(self.path)!r} exists and is not an empty directory; choose a new path")
        return unfinished

    def is_unfinished(self) -> bool:
        """True for a directory holding only what a create killed before its first manifest leaves.

        That is: the lock file, temporary files of the first manifest or journal, and
        snapshot directories; nothing a person put there, and no manifest.
        """
        if not _is_real_directory(self.path) or (self.path / MANIFEST_FILE).exists():
            return False
        entries = list(self.path.iterdir())
        if not entries:
            return False
        for entry in entries:
            if entry.name == LOCK_FILE or _TEMPORARY_NAME.match(entry.name):
                continue
            if (
                entry.name == SNAPSHOTS
                and _is_real_directory(entry)
                and all(_SNAPSHOT_NAME.match(child.name) for child in entry.iterdir())
            ):
                continue
            return False
        return True

    def remove_unfinished(self) -> None:
        """Delete what an interrupted create left (see `is_unfinished`); the lock stays."""
        for entry in self.path.iterdir():
            if entry.name == SNAPSHOTS or _TEMPORARY_NAME.match(entry.name):
                remove_tree(entry)


def remove_tree(path: Path) -> None:
    """Delete ``path`` (a file or a folder) without ever following a symbolic link.

    A link is removed itself; what it points at is never touched.
    """
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        return
    if stat.S_ISDIR(mode):
        # rmtree does not follow links inside the tree, and refuses a link as its root.
        shutil.rmtree(path)
    else:
        os.unlink(path)


def damaged_parts(snapshot: Path, problems: list[tuple[Path, str]]) -> set[str]:
    """Which parts of ``snapshot`` (``"vectors"``, ``"descriptions"``) the problems of
    `KnowledgeBaseDirectory.check_snapshot` fall in."""
    parts = set()
    for path, _ in problems:
        try:
            parts.add(path.relative_to(snapshot).parts[0])
        except (ValueError, IndexError):
            parts.update((VECTORS, DESCRIPTIONS))  # a manifest naming odd paths: trust neither
    return parts


def _is_real_directory(path: Path) -> bool:
    try:
        return stat.S_ISDIR(os.lstat(path).st_mode)
    except OSError:
        return False


def _inside(path: Path, root: Path) -> bool:
    relative = os.path.normpath(os.path.relpath(path, root))
    return not (relative == ".." or relative.startswith(".." + os.sep) or os.path.isabs(relative))


def _access_error(path: Path, exc: OSError) -> KnowledgeBaseAccessError:
    return KnowledgeBaseAccessError(
        f"cannot read knowledge-base file {str(path)!r}: {exc.strerror or exc}. This is a permission "
        "problem, not damage: nothing was changed; give this process access to the file and try again"
    )
