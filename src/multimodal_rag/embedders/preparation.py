"""Preparing a model's OpenVINO engine in the background while the first run goes on.

On a machine that has never run a model on OpenVINO, making its engine (converting the
towers, calibrating int8, holding it to the quality gate, timing the candidates) costs far
more than a first ingest of a few hundred photos, and its peak memory is several times the
ingest's (see docs/embedders.md, "The first run"). So with ``precision="auto"`` the first run
does not wait for it. The embedder runs at once on the fastest engine it has ready (torch,
in the precision torch's own ``auto`` picks), keeps a sample spread over the images it
ingests, and when the ingest ends starts a separate process at the lowest CPU priority that
makes the OpenVINO engine from that sample and caches it. The next load on this machine
compiles the cached models; a process that keeps the embedder switches to them at its next
call once the preparation has finished.

One knowledge base may thus hold vectors from two engines. Every reduced precision is held
to the quality gate against fp32 on the same weights, so two vectors of one image made by
two engines differ by no more than the gate allows twice over (cosine at least about 0.98 at
the default bounds, 0.996 on average): the same bound that already lets a knowledge base
built in fp32 be searched in int8 (see ``CLIPEmbedder.fingerprint``).

``MULTIMODAL_RAG_ENGINE_PREPARATION`` chooses: ``background`` (the default), ``now`` (the
first ingest waits while the engine is made, on its own images) or ``off`` (the first run's
engine is kept; nothing is prepared).

A preparation that failed (it raised, or was killed: out of memory, say) is remembered in its
folder and not started again in the background, where nobody would see it fail each time at
the cost of minutes and gigabytes; the runtime report says so, and ``now`` tries again in the
command, where its error shows.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import numpy as np

from multimodal_rag.embedders.engine_cache import EngineCache
from multimodal_rag.errors import InvalidInputError

__all__ = ["ENV", "BackgroundPreparation", "Reservoir", "preparation_mode"]

logger = logging.getLogger(__name__)

ENV = "MULTIMODAL_RAG_ENGINE_PREPARATION"
Mode = Literal["background", "now", "off"]
_MODES: tuple[Mode, ...] = ("background", "now", "off")

#: int8 calibration inputs the background preparation samples from the first ingest: a
#: few dozen images spread over the whole ingest cover a collection's range of activations
#: (NNCF's ranges and SmoothQuant's scales), at a fifth of the default 300's cost.
FIRST_RUN_CALIBRATION = 64

#: The file in a preparation's folder that says why it failed.
_FAILED = "failed.txt"


def preparation_mode() -> Mode:
    """How an engine not yet cached is made (``MULTIMODAL_RAG_ENGINE_PREPARATION``).

    Raises:
        InvalidInputError: The variable holds another value.
    """
    value = os.environ.get(ENV, "background").strip().lower() or "background"
    if value not in _MODES:
        raise InvalidInputError(f"{ENV} must be one of {', '.join(_MODES)}; got {value!r}")
    return value


class Reservoir:
    """A uniform sample of at most ``size`` arrays from a stream of unknown length.

    Seeded, so the same ingest gives the same sample (and the same int8 model).
    """

    def __init__(self, size: int) -> None:
        self.size = size
        self.items: list[np.ndarray] = []
        self.seen = 0
        self._rng = np.random.default_rng(0)

    def offer(self, item: np.ndarray) -> None:
        self.seen += 1
        if len(self.items) < self.size:
            self.items.append(item)
            return
        slot = int(self._rng.integers(0, self.seen))
        if slot < self.size:
            self.items[slot] = item

    def sample(self) -> np.ndarray | None:
        return np.stack(self.items) if self.items else None


class BackgroundPreparation:
    """One preparation process: started once per model and cache, polled by the embedder.

    Args:
        cache: The engine cache the preparation fills.
        key: What identifies the model (its engine identity): one preparation per key.
    """

    def __init__(self, cache: EngineCache, key: Mapping[str, Any]) -> None:
        self.folder = cache.entry("preparing", key)
        self.cache = cache
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def log(self) -> Path:
        return self.folder / "log.txt"

    def failure(self) -> str | None:
        """Why an earlier preparation of this model failed, or None.

        One that raised wrote why; one that was killed left its pid file behind (a preparation
        that succeeds removes it).
        """
        try:
            return (self.folder / _FAILED).read_text(encoding="utf-8").strip() or "it failed"
        except OSError:
            pass
        if (self.folder / "pid").is_file() and not self.running_elsewhere():
            return "its process ended before finishing (killed, perhaps for lack of memory)"
        return None

    def running_elsewhere(self) -> bool:
        """Whether another process is preparing the same model now."""
        try:
            pid = int((self.folder / "pid").read_text())
        except (OSError, ValueError):
            return False
        try:
            os.kill(pid, 0)
        except OSError:
            return False
        return True

    def start(self, kind: str, config: Mapping[str, Any], sample: np.ndarray | None) -> bool:
        """Start the process unless one already prepares this model; True when started."""
        if self.running_elsewhere():
            return False
        self.folder.mkdir(parents=True, exist_ok=True)
        (self.folder / _FAILED).unlink(missing_ok=True)
        if sample is not None:
            np.save(self.folder / "sample.npy", sample)
        else:
            (self.folder / "sample.npy").unlink(missing_ok=True)
        job = {"kind": kind, "config": dict(config), "cache_dir": str(self.cache.root)}
        (self.folder / "job.json").write_text(json.dumps(job), encoding="utf-8")
        with open(self.log, "wb") as log:
            # Its own session: an interrupted command (Ctrl-C) does not stop it half-way, and
            # it outlives the command, whose ingest is done.
            self.process = subprocess.Popen(
                [sys.executable, "-m", __name__, str(self.folder)],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        (self.folder / "pid").write_text(str(self.process.pid), encoding="utf-8")
        logger.info(
            "preparing the OpenVINO engine in the background (process %d, log %s)",
            self.process.pid,
            self.log,
        )
        return True

    def finished(self) -> bool | None:
        """None while it runs (or was never started here); else whether it succeeded."""
        if self.process is None or self.process.poll() is None:
            return None
        return self.process.returncode == 0

    def wait(self, timeout: float | None = None) -> bool | None:
        """Wait for the process (tests and benchmarks); whether it succeeded."""
        if self.process is None:
            return None
        self.process.wait(timeout)
        return self.process.returncode == 0


def _prepare(folder: Path) -> None:
    """The background process: build the embedder's OpenVINO engine, filling the cache."""
    # Before anything starts a thread: every thread made later (OpenVINO's, torch's) inherits
    # the lowest priority, so the preparation takes only what the machine leaves idle.
    os.nice(19)
    os.environ[ENV] = "now"
    from multimodal_rag._registry import resolve

    job = json.loads((folder / "job.json").read_text(encoding="utf-8"))
    sample_file = folder / "sample.npy"
    sample = np.load(sample_file) if sample_file.is_file() else None
    cls = resolve("embedder", str(job["kind"]))
    config = {**job["config"], "engine": "openvino", "precision": "auto"}
    embedder = cls(**config, cache_dir=job["cache_dir"], calibration_size=FIRST_RUN_CALIBRATION)
    embedder._build_engine(sample)  # noqa: SLF001 - the embedder's own deferred build
    print(json.dumps(embedder.runtime), flush=True)
    sample_file.unlink(missing_ok=True)
    (folder / "pid").unlink(missing_ok=True)


def _main(folder: Path) -> None:
    try:
        _prepare(folder)
    except BaseException as error:
        # Written before the pid file goes, so no reader sees neither.
        (folder / _FAILED).write_text(f"{type(error).__name__}: {error}"[:2000], encoding="utf-8")
        (folder / "pid").unlink(missing_ok=True)
        raise


if __name__ == "__main__":
    _main(Path(sys.argv[1]))
