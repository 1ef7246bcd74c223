"""The on-disk cache of converted and quantized models, gate results and ``auto`` decisions.

Everything is keyed by what it depends on (weights checksum, preprocessing version,
precision, engine versions, and for measurements the CPU model), so a changed checkpoint
or an upgraded OpenVINO never reuses a stale entry. Entries are written whole into a
temporary name and renamed into place: two processes filling the cache at once each
write their own copy, one rename wins, and no reader ever sees half a file.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import platform
import shutil
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

__all__ = ["DEFAULT_CACHE_DIR", "EngineCache", "cpu_model"]

DEFAULT_CACHE_DIR = "~/.cache/multimodal_rag"


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

    def entry(self, kind: str, key: Mapping[str, Any]) -> Path:
        """Where the entry of this kind and key lives (it may not exist yet)."""
        digest = hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:24]
        return self.root / kind / digest

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
            (staging / "key.json").write_text(json.dumps(key, sort_keys=True, indent=1))
            try:
                os.replace(staging, final)
            except OSError:
                if not (final / "key.json").is_file():
                    raise
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        return final

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
        return value if isinstance(value, dict) else None

    def write_json(self, kind: str, key: Mapping[str, Any], value: Mapping[str, Any]) -> None:
        path = self.entry(kind, key).with_suffix(".json")
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, staging = tempfile.mkstemp(prefix=f".{path.name}-", dir=path.parent)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as file:
                json.dump({"key": key, "value": value}, file, sort_keys=True, indent=1)
            os.replace(staging, path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(staging)
            raise
