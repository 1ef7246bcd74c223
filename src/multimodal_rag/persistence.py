"""The knowledge-base directory on disk: snapshots, checksums and the writer's lock.

Layout::

    kb/
      manifest.json            what the knowledge base is, and which snapshot is current
      snapshots/00000007/      the current snapshot, written whole by one save
        vectors/               the vector store's files
        descriptions/          the description store's files
      journal.bin              changes committed since that snapshot (see journal.py)
      images/                  images added from memory (bytes, PIL), named by id
      .lock                    held (flock) by the one process that may write

A save writes a new snapshot directory beside the current one, fsyncs it,
records its files' checksums in a new manifest, and atomically replaces the
manifest. A crash at any moment leaves the old manifest pointing at the old,
complete snapshot; snapshots no manifest names are removed on the next
writable open.
"""

from __future__ import annotations

import errno
import os
import shutil
import time
from pathlib import Path
from typing import Any

from multimodal_rag._version import __version__
from multimodal_rag.errors import (
    CorruptFileError,
    KnowledgeBaseError,
    KnowledgeBaseLockedError,
)
from multimodal_rag.fileio import atomic_write_json, fsync_directory, fsync_tree, sha256_file
from multimodal_rag.manifest import FORMAT_NAME, FORMAT_VERSION, MANIFEST_FILE

__all__ = ["CREATE_LEFTOVERS", "KnowledgeBaseDirectory", "damaged_parts"]

SNAPSHOTS = "snapshots"
IMAGES = "images"
VECTORS = "vectors"
DESCRIPTIONS = "descriptions"
LOCK_FILE = ".lock"
JOURNAL_FILE = "journal.bin"
#: What a create that crashed before writing its manifest can leave behind.
CREATE_LEFTOVERS = frozenset({LOCK_FILE, SNAPSHOTS})


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

    def snapshot(self, generation: int) -> Path:
        return self.path / SNAPSHOTS / f"{generation:08d}"

    # -- the writer's lock ---------------------------------------------------

    def lock(self) -> None:
        """Take the exclusive writer's lock, or fail naming the process that holds it.

        The lock is an OS file lock (``flock``), so the kernel releases it when its
        holder exits or crashes: a stale lock never needs cleaning by hand.
        """
        import fcntl

        fd = os.open(self.path / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
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
            raise
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._lock_fd = fd

    def unlock(self) -> None:
        if self._lock_fd is not None:
            os.close(self._lock_fd)  # closing the descriptor releases the flock
            self._lock_fd = None

    # -- snapshots -----------------------------------------------------------

    def write_snapshot(
        self, generation: int, vector_store: Any, description_store: Any, manifest: dict[str, Any]
    ) -> dict[str, Any]:
        """Save both stores as snapshot ``generation`` and point the manifest at it.

        Returns the manifest that was written.
        """
        final = self.snapshot(generation)
        staging = final.with_name(final.name + ".tmp")
        try:
            shutil.rmtree(staging, ignore_errors=True)
            shutil.rmtree(final, ignore_errors=True)
            (staging / VECTORS).mkdir(parents=True)
            (staging / DESCRIPTIONS).mkdir()
            vector_store.save(staging / VECTORS)
            description_store.save(staging / DESCRIPTIONS)
            fsync_tree(staging)
            os.replace(staging, final)
            fsync_directory(final.parent)
            files = {
                str(p.relative_to(final)): sha256_file(p) for p in sorted(final.rglob("*")) if p.is_file()
            }
            manifest = {
                **manifest,
                "format": FORMAT_NAME,
                "format_version": FORMAT_VERSION,
                "library_version": __version__,
                "generation": generation,
                "saved_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                "files": files,
            }
            atomic_write_json(self.path / MANIFEST_FILE, manifest)
        except OSError as exc:
            shutil.rmtree(staging, ignore_errors=True)
            if isinstance(exc, KnowledgeBaseError):
                raise
            raise KnowledgeBaseError(
                f"cannot save knowledge base {str(self.path)!r}: {exc}; the previous save is intact"
            ) from exc
        self.remove_stale_snapshots(keep=generation)
        return manifest

    def verify_snapshot(self, manifest: dict[str, Any]) -> Path:
        """Check every file of the manifest's snapshot against its checksum.

        Raises:
            CorruptFileError: A file is missing or its content changed; names the file.
        """
        for path, reason in self.check_snapshot(manifest):
            raise CorruptFileError(f"knowledge-base file {str(path)!r} {reason}")
        return self.snapshot(manifest["generation"])

    def check_snapshot(self, manifest: dict[str, Any]) -> list[tuple[Path, str]]:
        """``(file, what is wrong)`` for each file of the manifest's snapshot that fails its checksum."""
        snapshot = self.snapshot(manifest["generation"])
        problems = []
        for relative, expected in manifest["files"].items():
            path = snapshot / relative
            try:
                actual = sha256_file(path)
            except OSError as exc:
                problems.append((path, f"cannot be read: {exc}"))
                continue
            if actual != expected:
                problems.append((path, "is corrupt: its checksum does not match the manifest"))
        return problems

    def remove_stale_snapshots(self, *, keep: int) -> None:
        """Delete snapshots other than ``keep`` (left by earlier saves or by a crash)."""
        root = self.path / SNAPSHOTS
        if not root.is_dir():
            return
        for entry in root.iterdir():
            if entry.name != f"{keep:08d}":
                shutil.rmtree(entry, ignore_errors=True)


def damaged_parts(directory: KnowledgeBaseDirectory, manifest: dict[str, Any]) -> set[str]:
    """Which parts of the manifest's snapshot (``"vectors"``, ``"descriptions"``) fail their checksums."""
    snapshot = directory.snapshot(manifest["generation"])
    return {path.relative_to(snapshot).parts[0] for path, _ in directory.check_snapshot(manifest)}
