"""Soak: ingest, remove and save continuously while threads search, then report errors and memory.

One thread keeps a sliding window of images in a knowledge base on disk: it adds a
batch, removes the oldest batch once the window is full, and saves every few
batches. Meanwhile ``--threads`` threads search by text, by image and with a
metadata filter, and look records up. Because the window keeps the knowledge
base the same size, resident memory should level off once the window is full and
the warm-up has passed: steady growth after that would be a leak.

    python benchmarks/soak.py                   # 60 s, 4 search threads, a window of 4,000 images
    python benchmarks/soak.py --quick           # 10 s, 2 threads, a window of 300
    python benchmarks/soak.py --seconds 600 --threads 8

Prints a table and writes ``benchmarks/results/soak.json``. Exits with status 1 when
a query or an ingest failed or memory grew by 5% or more after the warm-up (``--quick``
reports the growth but is too short to judge it).
"""

from __future__ import annotations

import argparse
import tempfile
import threading
import time
import traceback
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
from common import Figure, finish, make_parser, rss_mib
from PIL import Image

from multimodal_rag import Embedder, MultimodalRAG
from multimodal_rag.errors import NotFoundError

GRID = 8
WORDS = ["red", "green", "blue", "dark", "bright", "grey", "warm", "cold"]


class PixelEmbedder(Embedder):
    """Downsampled, centred pixels: a model-free embedder, so the soak measures the library."""

    kind: ClassVar[str] = "soak-pixels"

    @property
    def dim(self) -> int:
        return 3 * GRID * GRID

    @property
    def fingerprint(self) -> str:
        return f"soak-pixels:{GRID}"

    def config(self) -> dict[str, Any]:
        return {}

    def embed_images(self, images: Sequence[Any]) -> np.ndarray:
        rows = [_pixels(image) for image in images]
        return _normalise(np.stack(rows)) if rows else np.zeros((0, self.dim), np.float32)

    def embed_texts(self, texts: Sequence[str]) -> np.ndarray:
        rows = [np.random.default_rng(abs(hash(t)) % (1 << 32)).standard_normal(self.dim) for t in texts]
        return _normalise(np.stack(rows))


def _pixels(image: Any) -> np.ndarray:
    picture = image if isinstance(image, Image.Image) else Image.open(image)
    with picture:
        small = picture.convert("RGB").resize((GRID, GRID))
    return np.asarray(small, dtype=np.float32).reshape(-1) / 255.0 - 0.45


def _normalise(rows: np.ndarray) -> np.ndarray:
    rows = rows.astype(np.float32)
    return rows / np.linalg.norm(rows, axis=1, keepdims=True)


def make_pool(folder: Path, count: int) -> list[Path]:
    rng = np.random.default_rng(0)
    files = []
    for i in range(count):
        path = folder / f"{i:06d}.png"
        Image.fromarray(rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)).save(path)
        files.append(path)
    return files


class Soak:
    def __init__(self, rag: MultimodalRAG, files: list[Path], args: argparse.Namespace) -> None:
        self.rag, self.files, self.args = rag, files, args
        self.stop = threading.Event()
        self.queries = [0] * args.threads
        self.gone = [0] * args.threads
        self.errors: list[str] = []
        self.added = self.removed = self.saves = 0
        self.full_at: float | None = None  # when the window first filled: the size is steady from then

    def search_loop(self, worker: int) -> None:
        rng = np.random.default_rng(worker)
        while not self.stop.is_set():
            try:
                kind = worker % 4
                if kind == 0:
                    hits = self.rag.search(text=WORDS[rng.integers(len(WORDS))], k=5)
                elif kind == 1:
                    hits = self.rag.search(image=self.files[rng.integers(len(self.files))], k=5)
                elif kind == 2:
                    hits = self.rag.search(text="warm", k=5, filter={"bucket": int(rng.integers(10))})
                else:
                    hits = self.rag.search_by_vector(self.rag.embedder.embed_texts(["cold"])[0], k=10)
                for hit in hits:
                    if hit.description is None:
                        raise AssertionError(f"hit {hit.id} has no description")
                    try:
                        if self.rag.get(hit.id).description is None:
                            raise AssertionError(f"record {hit.id} has no description")
                    except NotFoundError:
                        self.gone[worker] += 1  # removed since the search: a correct answer
                self.queries[worker] += 1
            except Exception:  # counted, and shown at the end
                self.errors.append(traceback.format_exc(limit=3))

    def ingest_loop(self) -> None:
        batch, window = self.args.batch, self.args.window
        batches: list[list[str]] = []
        position = number = 0
        while not self.stop.is_set():
            try:
                chunk = [self.files[(position + i) % len(self.files)] for i in range(batch)]
                position += batch
                result = self.rag.add(
                    chunk,
                    descriptions=[f"soak image {p.stem}" for p in chunk],
                    metadata=[{"bucket": int(p.stem) % 10} for p in chunk],
                    on_error="skip",
                    batch_size=batch,
                    progress=False,
                )
                self.added += len(result.added)
                batches.append(list(result.ids))
                if len(batches) * batch > window:
                    self.removed += self.rag.remove(batches.pop(0))
                    if self.full_at is None:
                        self.full_at = time.monotonic()
                number += 1
                if number % self.args.save_every == 0:
                    self.rag.save()
                    self.saves += 1
            except Exception:
                self.errors.append(traceback.format_exc(limit=3))


def main() -> None:
    parser = make_parser(__doc__)
    parser.add_argument("--seconds", type=float, help="how long to run (default 60; 10 with --quick)")
    parser.add_argument(
        "--warmup", type=float, help="least seconds before the memory baseline (also waits for a full window; default 10, 3 with --quick)"
    )
    parser.add_argument("--threads", type=int, help="searching threads (default 4; 2 with --quick)")
    parser.add_argument("--window", type=int, help="images kept in the knowledge base (default 4000; 300 with --quick)")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--save-every", type=int, default=20, help="save after this many batches")
    parser.add_argument("--vector-store", default="faiss-flat")
    parser.add_argument("--description-store", default="sqlite")
    args = parser.parse_args()
    for name, full, quick in (("seconds", 60.0, 10.0), ("warmup", 10.0, 3.0), ("threads", 4, 2), ("window", 4000, 300)):
        if getattr(args, name) is None:
            setattr(args, name, quick if args.quick else full)

    with tempfile.TemporaryDirectory() as tmp:
        pool = Path(tmp) / "pool"
        pool.mkdir()
        files = make_pool(pool, 2 * args.window)
        rag = MultimodalRAG.create(
            Path(tmp) / "kb",
            embedder=PixelEmbedder(),
            vector_store=args.vector_store,
            description_store=args.description_store,
        )
        soak = Soak(rag, files, args)
        threads = [threading.Thread(target=soak.ingest_loop)]
        threads += [threading.Thread(target=soak.search_loop, args=(w,)) for w in range(args.threads)]
        rss_start_of_run = rss_mib()
        started = time.monotonic()
        for thread in threads:
            thread.start()
        samples: list[tuple[float, float]] = []
        while (elapsed := time.monotonic() - started) < args.seconds:
            time.sleep(1.0)
            samples.append((round(elapsed, 1), round(rss_mib(), 1)))
        soak.stop.set()
        for thread in threads:
            thread.join()
        duration = time.monotonic() - started
        size = len(rag)
        verified = rag.verify()
        rag.close()

    # The baseline is taken once the knowledge base has reached its steady size and the
    # warm-up has passed, whichever is later.
    steady = max(args.warmup, (soak.full_at - started) if soak.full_at is not None else duration)
    after_warmup = [rss for t, rss in samples if t >= steady] or [samples[-1][1]]
    rss_start, rss_end = after_warmup[0], after_warmup[-1]
    growth = (rss_end - rss_start) / rss_start * 100
    result = {
        "seconds": round(duration, 1),
        "threads": args.threads,
        "vector_store": args.vector_store,
        "description_store": args.description_store,
        "window": args.window,
        "queries_served": sum(soak.queries),
        "queries_per_second": round(sum(soak.queries) / duration, 1),
        "queries_per_thread": soak.queries,
        "lookups_of_ids_removed_since_the_search": sum(soak.gone),
        "images_added": soak.added,
        "images_removed": soak.removed,
        "saves": soak.saves,
        "final_size": size,
        "errors": len(soak.errors),
        "verify_ok": verified.ok,
        "rss_mib_before_run": round(rss_start_of_run, 1),
        "baseline_at_s": round(steady, 1),
        "rss_mib_after_warmup": rss_start,
        "rss_mib_end": rss_end,
        "rss_mib_max": max(rss for _, rss in samples),
        "rss_growth_percent_after_warmup": round(growth, 2),
        "rss_timeline": samples,
    }

    rows = [
        ("duration (s)", result["seconds"]),
        ("search threads", args.threads),
        ("queries served", result["queries_served"]),
        ("queries / s", result["queries_per_second"]),
        ("images added / removed", f"{soak.added} / {soak.removed}"),
        ("saves", soak.saves),
        ("errors", result["errors"]),
        ("verify after the run", "ok" if verified.ok else str(verified)),
        ("RSS before the run (MiB)", result["rss_mib_before_run"]),
        (f"RSS once steady, at {steady:.0f} s (MiB)", rss_start),
        ("RSS at the end (MiB)", rss_end),
        ("RSS growth after warm-up", f"{growth:+.2f}%"),
    ]
    width = max(len(name) for name, _ in rows)
    for name, value in rows:
        print(f"{name:<{width}}  {value}")
    for error in soak.errors[:3]:
        print(error)
    figures = {
        "errors": Figure(len(soak.errors), "equal", 0.0),
        "queries_per_second": Figure(result["queries_per_second"], "higher", 0.8),
    }
    finish("soak", args, result, figures)
    if soak.errors or not verified.ok or (growth >= 5.0 and not args.quick):
        raise SystemExit(1)


if __name__ == "__main__":
    main()
