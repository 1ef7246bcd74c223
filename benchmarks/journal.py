"""What durability costs: committing a batch to the journal, against a full save, as a knowledge base grows.

For knowledge bases of several sizes (512-d vectors, as CLIP ViT-B/32 makes), times
``add`` of one batch of images on disk (which appends one journal entry and fsyncs it)
and in memory (no journal), and times a full ``save``. A batch's commit should cost the
same whatever the size of the knowledge base; a save grows with it.

The journal's cost is timed around the journal's own append inside each on-disk ``add``
(no public name reaches it), not as the on-disk time less the in-memory one: that small
difference of two larger timings is lost in the noise of a busy machine, and can come out
negative.

    python benchmarks/journal.py            # 0, 10,000 and 50,000 images, about a minute
    python benchmarks/journal.py --quick    # 0 and 2,000 images
    python benchmarks/journal.py --sizes 0 100000 --batch 64 --repeat 9

Prints a table and writes ``benchmarks/results/journal.json``.
"""

from __future__ import annotations

import hashlib
import statistics
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
from common import Figure, finish, make_parser, png_bytes

from multimodal_rag import Embedder, MultimodalRAG, Record
from multimodal_rag._kb.journal import Journal

DIM = 512


class HashEmbedder(Embedder):
    """A vector derived from the image's bytes: no model, so only the storage path is timed."""

    kind: ClassVar[str] = "bench-hash"

    @property
    def dim(self) -> int:
        return DIM

    @property
    def fingerprint(self) -> str:
        return "bench-hash"

    def config(self) -> dict[str, Any]:
        return {}

    def embed_images(self, images: Sequence[Any]) -> np.ndarray:
        rows = [self._vector(_content(image)) for image in images]
        return np.stack(rows) if rows else np.zeros((0, DIM), np.float32)

    def embed_texts(self, texts: Sequence[str]) -> np.ndarray:
        return np.stack([self._vector(text.encode()) for text in texts])

    @staticmethod
    def _vector(data: bytes) -> np.ndarray:
        seed = int.from_bytes(hashlib.blake2b(data, digest_size=8).digest(), "little")
        row = np.random.default_rng(seed).standard_normal(DIM).astype(np.float32)
        return row / np.linalg.norm(row)


def _content(image: Any) -> bytes:
    """The bytes an image input stands for: a file's, or the bytes themselves, or a PIL image's pixels."""
    if isinstance(image, (str, Path)):
        return Path(image).read_bytes()
    if isinstance(image, bytes):
        return image
    return bytes(image.tobytes())


def prefill(rag: MultimodalRAG, size: int) -> None:
    """Fill the stores directly (fast), as if earlier ingests had been saved."""
    rng = np.random.default_rng(size)
    for start in range(0, size, 5000):
        count = min(5000, size - start)
        ids = [f"pre-{start + i}" for i in range(count)]
        vectors = rng.standard_normal((count, DIM)).astype(np.float32)
        rag.vector_store.add(ids, vectors / np.linalg.norm(vectors, axis=1, keepdims=True))
        rag.description_store.put([Record(id=i, description=f"image {i}") for i in ids])


def timing_journal_adds(timings: list[float]) -> None:
    """Record how long each journal append of an ingest batch takes (written and fsynced)."""
    append = Journal.add

    def timed(self: Journal, *args: Any, **kwargs: Any) -> None:
        started = time.perf_counter()
        try:
            append(self, *args, **kwargs)
        finally:
            timings.append(time.perf_counter() - started)

    Journal.add = timed  # type: ignore[method-assign]


def main() -> None:
    parser = make_parser(__doc__)
    parser.add_argument("--sizes", type=int, nargs="+", help="knowledge-base sizes (default 0 10000 50000)")
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args()
    if args.sizes is None:
        args.sizes = [0, 2_000] if args.quick else [0, 10_000, 50_000]

    seed = 0
    rows = []
    journal_adds: list[float] = []
    timing_journal_adds(journal_adds)
    for size in args.sizes:
        with tempfile.TemporaryDirectory() as tmp:
            images = Path(tmp) / "images"
            images.mkdir()
            on_disk = MultimodalRAG.create(Path(tmp) / "kb", embedder=HashEmbedder())
            in_memory = MultimodalRAG(HashEmbedder())
            for rag in (on_disk, in_memory):
                prefill(rag, size)
            started = time.perf_counter()
            on_disk.save()
            save_s = time.perf_counter() - started
            timings: dict[str, list[float]] = {"disk": [], "memory": []}
            journal_adds.clear()
            for _ in range(args.repeat):
                paths = []
                for _ in range(args.batch):
                    seed += 1
                    path = images / f"{seed}.png"
                    path.write_bytes(png_bytes(seed))
                    paths.append(path)
                for name, rag in (("disk", on_disk), ("memory", in_memory)):
                    started = time.perf_counter()
                    rag.add(paths, descriptions=["a description"] * len(paths), on_error="skip",
                            batch_size=args.batch, progress=False)
                    timings[name].append(time.perf_counter() - started)
            journal_bytes = (Path(tmp) / "kb" / "journal.bin").stat().st_size
            on_disk.close()
        disk_ms = statistics.median(timings["disk"]) * 1000
        memory_ms = statistics.median(timings["memory"]) * 1000
        # One append per on-disk batch: fewer means a batch was committed without its entry.
        if len(journal_adds) != args.repeat:
            raise SystemExit(f"{len(journal_adds)} journal appends for {args.repeat} batches on disk")
        rows.append(
            {
                "size": size,
                "batch": args.batch,
                "add_batch_on_disk_ms": round(disk_ms, 2),
                "add_batch_in_memory_ms": round(memory_ms, 2),
                "journal_cost_ms": round(statistics.median(journal_adds) * 1000, 2),
                "journal_bytes_per_image": round(journal_bytes / (args.batch * args.repeat)),
                "save_ms": round(save_s * 1000, 1),
            }
        )

    header = (
        f"{'images':>8}{'batch':>7}{'add on disk ms':>16}{'add in memory ms':>18}"
        f"{'journal ms':>12}{'bytes/image':>13}{'save ms':>10}"
    )
    print(header)
    print("-" * len(header))
    for row in rows:
        print(
            f"{row['size']:>8}{row['batch']:>7}{row['add_batch_on_disk_ms']:>16.2f}"
            f"{row['add_batch_in_memory_ms']:>18.2f}{row['journal_cost_ms']:>12.2f}"
            f"{row['journal_bytes_per_image']:>13}{row['save_ms']:>10.1f}"
        )
    small, large = rows[0], rows[-1]
    figures = {
        # A batch's commit should not grow with the knowledge base; a full save does.
        "commit_large_over_small": Figure(large["add_batch_on_disk_ms"] / small["add_batch_on_disk_ms"], "lower", 1.0),
        "journal_cost_ms": Figure(large["journal_cost_ms"], "lower", 2.0),
        "journal_bytes_per_image": Figure(large["journal_bytes_per_image"], "lower", 0.1),
        "save_ms_largest": Figure(large["save_ms"], "lower", 2.0),
    }
    finish("journal", args, {"settings": {"sizes": args.sizes, "batch": args.batch, "repeat": args.repeat}, "rows": rows}, figures)


if __name__ == "__main__":
    main()
