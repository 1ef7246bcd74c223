"""The on-disk cache of converted and quantized models, gate results and ``auto`` decisions.

Everything is keyed by what it depends on (weights checksum, preprocessing version,
precision, engine versions, and for measurements the CPU model), so a changed checkpoint
or an upgraded OpenVINO never reuses a stale entry. Entries are written whole into a
temporary name and renamed into place: two processes filling the cache at once each
write their own copy, one rename wins, and no reader ever sees half a file. A folder
that another program fills in place (OpenVINO its compiled blobs) cannot be renamed into
place: one process at a time fills it, under `EngineCache.exclusive`.

Nothing in the cache is trusted as it lies on disk. Every entry records the SHA-256 of
its content when it is written, and a read checks it: a file that was altered, truncated
or replaced since (never judged by its modification time, which a copy or a restore keeps)
is logged, dropped and made again, as if it had never been cached.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import os
import platform
import shutil
import tempfile
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path
from typing import Any

from multimodal_rag._hashing import sha256_file

__all__ = ["CONTENTS_FILE", "DEFAULT_CACHE_DIR", "EngineCache", "cpu_model"]

logger = logging.getLogger(__name__)

DEFAULT_CACHE_DIR = "~/.cache/multimodal_rag"

#: The record, in each folder entry, of the SHA-256 of every file it holds.
CONTENTS_FILE = "contents.json"


def cpu_model() -> str:
    """The CPU's model name (``/proc/cpuinfo``), or what the platform says elsewhere."""
    with (
        contextlib.suppress(OSError),
        open("/proc/cpuinfo", encoding="utf-8", errors="replace") as cpuinfo,
    ):
        for line in cpuinfo:
            if line.lower().startswith("model name"):
                return line.partition(":")[2].strip()
    return platform.processor() or platform.machine() or "unknown"


class EngineCache:
    """A folder of cache entries, each named by a digest of the key it was made for.

    Args:
        root: The folder (default ``~/.cache/multimodal_rag``); created on first write.
    """

    def __init__(self, root: str | os.PathLike[str] | None = None) -> None:
        self.root = Path(root if root is not None else DEFAULT_CACHE_DIR).expanduser()
        # Folders this process checked (or wrote): each is hashed once per load, not per use.
        self._verified: dict[Path, dict[str, str]] = {}

    def entry(self, kind: str, key: Mapping[str, Any]) -> Path:
        """Where the entry of this kind and key lives (it may not exist yet)."""
        digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:24]
        return self.root / kind / digest

    @contextlib.contextmanager
    def exclusive(self, final: Path) -> Iterator[bool]:
        """Hold the entry ``final`` for this process until the block ends, if no other process
        (or thread) holds it; yields whether it is held. Nobody waits: a caller that does not
        get it works without the entry, so a process never stalls behind another (say the
        background preparation, which runs at the lowest priority).

        For a folder that another program fills in place (OpenVINO its compiled blobs): a
        process checking it while another still fills it would take it for a cut-short one
        and remove it under the writer. The lock is an OS file lock (``flock``) on a file
        beside the entry, so the kernel releases it when its holder dies.
        """
        final.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(final.parent / f".{final.name}.lock", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                yield False
            else:
                yield True
        finally:
            os.close(fd)  # closing the descriptor releases the flock

    def publish_dir(
        self, final: Path, key: Mapping[str, Any], write: Callable[[Path], None]
    ) -> Path:
        """Fill a temporary folder with ``write`` and rename it to ``final``.

        When another process published ``final`` first, its copy is kept and ours dropped:
        both were made for the same key.
        """
        final.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{final.name}-", dir=final.parent))
        try:
            write(staging)
            contents = {
                path.name: sha256_file(path) for path in sorted(staging.iterdir()) if path.is_file()
            }
            (staging / "key.json").write_text(json.dumps(key, sort_keys=True, indent=1))
            # Written last: a folder with its record is whole.
            (staging / CONTENTS_FILE).write_text(
                json.dumps({"key": key, "sha256": contents}, sort_keys=True, indent=1)
            )
            try:
                os.replace(staging, final)
                self._verified[final] = contents
            except OSError:
                if not (final / "key.json").is_file():
                    raise
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        return final

    def verified_dir(self, final: Path, key: Mapping[str, Any]) -> dict[str, str] | None:
        """The SHA-256 of each file of the folder entry ``final``, once every file is checked
        against the record made when it was written; None when absent or when a check fails.

        A folder that fails (a file altered, missing or added, a record unreadable or made for
        another key) is logged and removed, so that the caller makes it again.
        """
        if final in self._verified:
            return self._verified[final]
        if not final.is_dir():
            return None
        problem = _folder_problem(final, key)
        if problem is None:
            record = json.loads((final / CONTENTS_FILE).read_text(encoding="utf-8"))
            self._verified[final] = contents = dict(record["sha256"])
            return contents
        logger.warning(
            "engine cache: %s %s; removed, it is made again", _shown(self.root, final), problem
        )
        self.discard(final)
        return None

    def verified_files(self, folder: Path) -> bool:
        """Whether every file in ``folder``, which another program fills (OpenVINO its
        compiled blobs), is as `record_files` recorded it. A folder that is not is
        logged and removed, so that its files are made again; a missing one is not logged."""
        if folder in self._verified:
            return True
        if not folder.is_dir():
            return False
        problem = _folder_problem(folder, None)
        if problem is None:
            record = json.loads((folder / CONTENTS_FILE).read_text(encoding="utf-8"))
            self._verified[folder] = dict(record["sha256"])
            return True
        logger.warning(
            "engine cache: %s %s; removed, it is made again", _shown(self.root, folder), problem
        )
        self.discard(folder)
        return False

    def record_files(self, folder: Path) -> None:
        """Record the SHA-256 of every file in ``folder`` (only when they changed since it was
        last checked: a folder whose files were just verified is not hashed twice)."""
        present = {p.name for p in folder.iterdir() if p.is_file()} - {CONTENTS_FILE}
        if set(self._verified.get(folder, {})) == present:
            return
        contents = {name: sha256_file(folder / name) for name in sorted(present)}
        fd, staging = tempfile.mkstemp(prefix=f".{CONTENTS_FILE}-", dir=folder)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as file:
                json.dump({"key": None, "sha256": contents}, file, sort_keys=True, indent=1)
            os.replace(staging, folder / CONTENTS_FILE)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(staging)
            raise
        self._verified[folder] = contents

    def recorded(self, final: Path) -> dict[str, str] | None:
        """The SHA-256 of each file of the folder entry ``final`` as recorded when it was
        written (checked by `verified_dir` when this process did), or None."""
        if final in self._verified:
            return self._verified[final]
        with contextlib.suppress(OSError, ValueError, KeyError, TypeError):
            record = json.loads((final / CONTENTS_FILE).read_text(encoding="utf-8"))
            return dict(record["sha256"])
        return None

    def discard(self, final: Path) -> None:
        """Remove the folder entry ``final`` (moved aside first, so no reader sees it half gone)."""
        self._verified.pop(final, None)
        with contextlib.suppress(OSError):
            aside = Path(tempfile.mkdtemp(prefix=f".{final.name}-stale-", dir=final.parent))
            os.replace(final, aside / final.name)
            shutil.rmtree(aside, ignore_errors=True)
        shutil.rmtree(final, ignore_errors=True)

    def read_json(self, kind: str, key: Mapping[str, Any]) -> dict[str, Any] | None:
        """The JSON entry for this key, or None when absent or unreadable (then it is remade)."""
        path = self.entry(kind, key).with_suffix(".json")
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        if not isinstance(data, dict) or data.get("key") != json.loads(json.dumps(key)):
            return None
        value = data.get("value")
        if not isinstance(value, dict) or data.get("sha256") != _json_sha256(data["key"], value):
            logger.warning(
                "engine cache: %s does not match its recorded SHA-256; ignored, it is made again",
                _shown(self.root, path),
            )
            return None
        return value

    def write_json(self, kind: str, key: Mapping[str, Any], value: Mapping[str, Any]) -> None:
        path = self.entry(kind, key).with_suffix(".json")
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, staging = tempfile.mkstemp(prefix=f".{path.name}-", dir=path.parent)
        try:
            # Round-tripped first, so that the digest is of what a reader parses back.
            key, value = json.loads(json.dumps(key)), json.loads(json.dumps(value))
            entry = {"key": key, "value": value, "sha256": _json_sha256(key, value)}
            with os.fdopen(fd, "w", encoding="utf-8") as file:
                json.dump(entry, file, sort_keys=True, indent=1)
            os.replace(staging, path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(staging)
            raise


def _json_sha256(key: Any, value: Any) -> str:
    canonical = json.dumps({"key": key, "value": value}, sort_keys=True)
    return hashlib.sha256(canonical.encode()).hexdigest()


def _folder_problem(final: Path, key: Mapping[str, Any] | None) -> str | None:
    """What is wrong with the folder entry ``final`` made for ``key``, or None."""
    try:
        record = json.loads((final / CONTENTS_FILE).read_text(encoding="utf-8"))
        recorded = dict(record["sha256"])
        made_for = record["key"]
    except (OSError, ValueError, KeyError, TypeError):
        return "has no readable record of its contents (written by an older release, or cut short)"
    if made_for != json.loads(json.dumps(key)):
        return "was recorded for another key"
    bookkeeping = {CONTENTS_FILE} if key is None else {CONTENTS_FILE, "key.json"}
    present = {p.name for p in final.iterdir() if p.is_file()} - bookkeeping
    if present != set(recorded):
        return f"holds {sorted(present)}, not the files recorded ({sorted(recorded)})"
    for name, digest in recorded.items():
        if sha256_file(final / name) != digest:
            return f"has a {name} that does not match its recorded SHA-256 (altered since written)"
    return None


def _shown(root: Path, path: Path) -> str:
    with contextlib.suppress(ValueError):
        return str(path.relative_to(root))
    return str(path)
