"""SIGKILL at random points of an ingest and of its saves, then reopen and verify.

A child process (``ingest_worker.py``) ingests a folder batch by batch and saves
every few batches, printing what it has committed. The parent kills it at random
moments — half of them while a save is running — and after each kill checks that
the knowledge base opens, verifies clean, holds every batch the child reported as
committed and holds no batch in part. Re-running the ingest then finishes the job
without duplicates.
"""

from __future__ import annotations

import os
import queue
import random
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
from PIL import Image

from helpers import ColorEmbedder
from multimodal_rag import MultimodalRAG
from multimodal_rag._images import content_id

REPO = Path(__file__).resolve().parents[1]
WORKER = REPO / "tests" / "ingest_worker.py"
N_IMAGES, BATCH, SAVE_EVERY = 2000, 25, 8
KILLS, TIME_LIMIT_S = 24, 100.0


def make_images(folder: Path) -> list[list[str]]:
    """Write distinct small images; return the ids of each batch the worker will commit."""
    folder.mkdir()
    rng = np.random.default_rng(0)
    files = []
    for i in range(N_IMAGES):
        path = folder / f"{i:05d}.png"
        Image.fromarray(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)).save(path)
        files.append(path)
    ids = [content_id(p.read_bytes()) for p in files]
    assert len(set(ids)) == len(ids)
    return [ids[i : i + BATCH] for i in range(0, len(ids), BATCH)]


class Worker:
    """The child process, with its output lines collected by a thread."""

    def __init__(self, kb: Path, images: Path) -> None:
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO / "src"), str(REPO / "tests")])}
        self.proc = subprocess.Popen(
            [sys.executable, str(WORKER), str(kb), str(images), str(BATCH), str(SAVE_EVERY)],
            stdout=subprocess.PIPE, text=True, env=env,
        )
        self.lines: queue.Queue[str] = queue.Queue()
        self.seen: list[str] = []
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stdout is not None
        for line in self.proc.stdout:
            self.lines.put(line.strip())
        self.lines.put("<eof>")

    def wait_for(self, wanted: str, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while (left := deadline - time.monotonic()) > 0:
            try:
                line = self.lines.get(timeout=left)
            except queue.Empty:
                return False
            self.seen.append(line)
            if line == wanted:
                return True
            if line == "<eof>":
                return False
        return False

    def kill(self) -> list[str]:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()
        self.wait_for("<eof>", timeout=10)
        assert self.proc.stdout is not None
        self.proc.stdout.close()
        return self.seen


def check(kb: Path, batches: list[list[str]], committed: set[int]) -> int:
    """Reopen after a kill; return how many batches are stored."""
    if not (kb / "manifest.json").exists():
        assert not committed, "batches were reported committed but no knowledge base exists"
        return 0
    rag = MultimodalRAG.open(kb, embedder=ColorEmbedder())  # a writer: cuts torn tails, drops stale snapshots
    try:
        report = rag.verify()
        assert report.ok, str(report)
        present = set(rag.ids())
        stored = 0
        for number, ids in enumerate(batches):
            got = present & set(ids)
            assert got in (set(), set(ids)), f"batch {number} is stored in part ({len(got)} of {len(ids)})"
            assert number not in committed or got, f"batch {number} was reported committed but is gone"
            stored += bool(got)
        assert len(present) == stored * BATCH
        sample = rag.get(next(iter(present))) if present else None
        assert sample is None or sample.description == f"image {Path(sample.image_path).stem}"
        return stored
    finally:
        rag.close()


def test_sigkill_at_random_points_never_loses_a_committed_batch(tmp_path: Path) -> None:
    batches = make_images(tmp_path / "images")
    kb = tmp_path / "kb"
    rng = random.Random(20240601)
    kills = in_save = restarts = 0
    committed: set[int] = set()
    started = time.monotonic()
    while kills < KILLS and time.monotonic() - started < TIME_LIMIT_S:
        worker = Worker(kb, tmp_path / "images")
        assert worker.wait_for("ready", timeout=60), worker.seen
        if kills % 2:  # during a save
            if worker.wait_for("saving", timeout=30):
                time.sleep(rng.uniform(0, 0.03))
                in_save += 1
        else:  # anywhere in the ingest: embedding, committing, between batches
            time.sleep(rng.uniform(0, 0.4))
        lines = worker.kill()
        kills += 1
        committed |= {int(line.split()[1]) for line in lines if line.startswith("committed ")}
        check(kb, batches, committed)
        if "done" in lines:  # finished before the kill: start over, to keep killing mid-ingest
            restarts += 1
            committed.clear()
            for path in sorted(kb.rglob("*"), reverse=True):
                path.rmdir() if path.is_dir() else path.unlink()
            kb.rmdir()
    elapsed = time.monotonic() - started
    print(f"\nkill test: {kills} kills ({in_save} during a save), {restarts} restarts, {elapsed:.1f} s")
    assert kills >= 20 and in_save >= 8

    # Re-running the same ingest finishes the job, without duplicates.
    worker = Worker(kb, tmp_path / "images")
    assert worker.wait_for("done", timeout=120), worker.seen
    worker.proc.wait()
    assert worker.proc.stdout is not None
    worker.proc.stdout.close()
    assert check(kb, batches, set(range(len(batches)))) == len(batches)
    rag = MultimodalRAG.open(kb, embedder=ColorEmbedder(), read_only=True)
    assert len(rag) == N_IMAGES == len(set(rag.ids())) == len(rag.description_store)
