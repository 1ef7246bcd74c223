"""Ingest on a Ray cluster against the plain single-process ingest: same photos, same model,
same stores, side by side in one run.

Each run indexes the same 1080p JPEGs (tiled from ``examples/stamps``, or ``--data``) into a
fresh knowledge base: on Milvus and PostgreSQL when ``$MILVUS_URI`` and ``$DATABASE_URL`` are
set, else FAISS and SQLite in its folder. The model is a random-weights CLIP of ViT-B/32's shape
(``--quick``: a tiny one), in fp32 everywhere.

- **plain**: ``MultimodalRAG.add_directory`` in this process (the model loaded and its engine
  built before the clock starts);
- **ray, 1 actor**: ``tools.ingest_on_ray`` with one actor holding both CPUs;
- **ray, 2 actors**: two actors with one CPU each.

The Ray cluster is ``$RAY_ADDRESS``'s, or one started in this process with 2 CPUs (its own
start is not timed). For Ray, the table separates the start-up (actors started, model loaded
on each, until the first batch is stored) from the rate after it, which a longer run tends to.

Then the per-image costs the throughput model of ``docs/scale-out.md`` is built from, each
measured alone on one thread: reading and hashing, decoding to the model's input, the model,
writing to the stores (one batch of ``--batch-size``), and a rescan of the folder (listing,
reading and hashing every file, all already stored).

    python benchmarks/distributed_ingest.py            # 600 photos, ViT-B/32 shape: minutes
    python benchmarks/distributed_ingest.py --quick    # 48 photos, tiny model: about a minute

Prints a table and writes ``benchmarks/results/distributed_ingest.json``.
"""

from __future__ import annotations

import os
import secrets
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import common
import numpy as np
from common import Figure, finish, make_parser


def server_stores() -> bool:
    return bool(os.environ.get("MILVUS_URI") and os.environ.get("DATABASE_URL"))


def new_kb(path: Path, checkpoint: Path) -> Any:
    """A fresh, empty knowledge base at ``path``, on the servers when they are set."""
    from multimodal_rag import CLIPEmbedder, MultimodalRAG

    embedder = CLIPEmbedder(checkpoint=checkpoint, precision="fp32")
    if server_stores():
        return MultimodalRAG.create(
            path, embedder=embedder, vector_store="milvus", description_store="postgres"
        )
    return MultimodalRAG.create(path, embedder=embedder)


def drop(path: Path) -> None:
    """Drop what a knowledge base made on the servers."""
    from multimodal_rag import MultimodalRAG

    if server_stores():
        with MultimodalRAG.open(path) as rag:
            vectors, records = rag.vector_store, rag.description_store
        vectors.drop()  # type: ignore[attr-defined]
        records.drop()  # type: ignore[attr-defined]


def run_plain(work: Path, folder: Path, checkpoint: Path, batch_size: int) -> dict[str, Any]:
    kb = work / f"plain-{secrets.token_hex(3)}"
    rag = new_kb(kb, checkpoint)
    rag.embedder.embed_images([next(folder.glob("*.jpg"))])  # the engine is built before the clock
    start = time.perf_counter()
    result = rag.add_directory(folder, batch_size=batch_size, progress=False)
    seconds = time.perf_counter() - start
    rag.close()
    drop(kb)
    added = len(result.added)
    return {
        "mode": "plain",
        "images": added,
        "seconds": seconds,
        "startup_s": 0.0,
        "images_per_s": added / seconds,
        "steady_images_per_s": added / seconds,
    }


def run_ray(
    work: Path, folder: Path, checkpoint: Path, batch_size: int, actors: int
) -> dict[str, Any]:
    from multimodal_rag.tools import ingest_on_ray

    kb = work / f"ray{actors}-{secrets.token_hex(3)}"
    new_kb(kb, checkpoint).close()
    start = time.perf_counter()
    report = ingest_on_ray(
        kb,
        folder,
        actors=actors,
        cpus_per_actor=2 / actors,
        batch_size=batch_size,
        precision="fp32",
        progress=False,
    )
    seconds = time.perf_counter() - start
    drop(kb)
    added = len(report.result.added)
    return {
        "mode": f"ray, {actors} actor{'s' if actors > 1 else ''}",
        "images": added,
        "seconds": seconds,
        "startup_s": report.startup_seconds,
        "images_per_s": added / seconds,
        "steady_images_per_s": report.steady_images_per_s,
        "workers": [
            {"worker": w.worker, "images": w.images, "images_per_s": w.images_per_s}
            for w in report.workers
        ],
    }


def per_image_costs(
    work: Path, folder: Path, checkpoint: Path, batch_size: int
) -> dict[str, float]:
    """Milliseconds per image of each stage, each alone and on one thread."""
    import torch

    from multimodal_rag import CLIPEmbedder, Record
    from multimodal_rag.backend import content_id

    torch.set_num_threads(1)
    paths = sorted(folder.glob("*.jpg"))[: 4 * batch_size]
    embedder = CLIPEmbedder(checkpoint=checkpoint, precision="fp32", num_workers=1)
    start = time.perf_counter()
    ids = [content_id(path.read_bytes()) for path in paths]
    read_hash = (time.perf_counter() - start) / len(paths)
    start = time.perf_counter()
    pixels = np.stack([embedder.pixels_of(path) for path in paths])
    decode = (time.perf_counter() - start) / len(paths)
    embedder.embed_pixels(pixels[:batch_size])  # builds the engine
    start = time.perf_counter()
    vectors = np.concatenate(
        [
            embedder.embed_pixels(pixels[i : i + batch_size])
            for i in range(0, len(paths), batch_size)
        ]
    )
    embed = (time.perf_counter() - start) / len(paths)

    kb = work / f"costs-{secrets.token_hex(3)}"
    rag = new_kb(kb, checkpoint)
    start = time.perf_counter()
    for i in range(0, len(paths), batch_size):
        chunk = slice(i, i + batch_size)
        rag.vector_store.add(ids[chunk], vectors[chunk])
        rag.description_store.put(
            Record(id=id_, image_path=str(p)) for id_, p in zip(ids[chunk], paths[chunk])
        )
    write = (time.perf_counter() - start) / len(paths)
    rag.close()
    drop(kb)

    kb = work / f"rescan-{secrets.token_hex(3)}"
    rag = new_kb(kb, checkpoint)
    rag.add_directory(folder, batch_size=batch_size, progress=False)
    start = time.perf_counter()
    again = rag.add_directory(folder, batch_size=batch_size, progress=False)
    rescan = (time.perf_counter() - start) / len(again.duplicates)
    rag.close()
    drop(kb)
    torch.set_num_threads(os.cpu_count() or 1)
    return {
        name: 1000 * value
        for name, value in {
            "read_hash": read_hash,
            "decode": decode,
            "embed": embed,
            "store_write": write,
            "rescan": rescan,
        }.items()
    }


def connect_ray(work: Path) -> str:
    """Connect to ``$RAY_ADDRESS``'s cluster, or start one here (2 CPUs, with its own token)."""
    import ray

    address = os.environ.get("RAY_ADDRESS")
    if address:
        ray.init(address=address, log_to_driver=False)
        return address
    token = work / "ray-token"
    token.write_text(secrets.token_hex(32))
    os.environ.update(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN_PATH=str(token))
    ray.init(
        num_cpus=2, include_dashboard=False, object_store_memory=200 * 2**20, log_to_driver=False
    )
    return "in this process, 2 CPUs"


def main() -> None:
    parser = make_parser(__doc__, data=True)
    parser.add_argument("--images", type=int, help="photos to index (default 600, --quick 48)")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument(
        "--repeats", type=int, default=None, help="rounds of the three runs (default 2, --quick 1)"
    )
    args = parser.parse_args()
    try:
        import ray
        import ray.data  # noqa: F401
    except ImportError:
        common.skipped(
            "distributed_ingest", args, "ray is not installed: pip install 'multimodal-rag[ray]'"
        )
        return
    count = args.images or (48 if args.quick else 600)
    repeats = args.repeats or (1 if args.quick else 2)
    folder = common.photos("1080p", count, args.data)
    checkpoint = common.tiny_checkpoint() if args.quick else common.vit_b_32_checkpoint()
    stores = "Milvus + PostgreSQL" if server_stores() else "FAISS + SQLite"
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        started = time.perf_counter()
        cluster = connect_ray(work)
        cluster_start = time.perf_counter() - started
        runs: list[dict[str, Any]] = []
        for _ in range(
            repeats
        ):  # interleaved, so that a change in the machine's load hits all three
            runs.append(run_plain(work, folder, checkpoint, args.batch_size))
            runs.append(run_ray(work, folder, checkpoint, args.batch_size, actors=1))
            runs.append(run_ray(work, folder, checkpoint, args.batch_size, actors=2))
        ray.shutdown()
        costs = per_image_costs(work, folder, checkpoint, args.batch_size)

    modes = list(dict.fromkeys(run["mode"] for run in runs))
    summary = {
        mode: {
            key: statistics.median(run[key] for run in runs if run["mode"] == mode)
            for key in ("seconds", "startup_s", "images_per_s", "steady_images_per_s")
        }
        for mode in modes
    }
    plain = summary["plain"]["images_per_s"]
    one = summary["ray, 1 actor"]
    overhead_steady = plain / one["steady_images_per_s"] - 1
    overhead_total = plain / one["images_per_s"] - 1
    print(
        f"{count} photos (1080p JPEG), {'tiny' if args.quick else 'ViT-B/32-shape'} random CLIP in fp32, stores: {stores}"
    )
    print(
        f"Ray cluster: {cluster} (connecting/starting took {cluster_start:.1f} s, not counted); medians of {repeats} round(s)"
    )
    print(f"{'run':<16} {'seconds':>8} {'start-up s':>11} {'images/s':>9} {'after start-up':>15}")
    for mode in modes:
        row = summary[mode]
        print(
            f"{mode:<16} {row['seconds']:>8.1f} {row['startup_s']:>11.1f} {row['images_per_s']:>9.1f} {row['steady_images_per_s']:>15.1f}"
        )
    print(
        f"overhead of the Ray path at 1 actor: {100 * overhead_steady:+.1f} % after start-up, {100 * overhead_total:+.1f} % with it"
    )
    print(
        "per image, one thread (ms): "
        + ", ".join(f"{name} {value:.2f}" for name, value in costs.items())
    )
    report = {
        "images": count,
        "model": "tiny" if args.quick else "ViT-B/32 shape",
        "stores": stores,
        "cluster": cluster,
        "repeats": repeats,
        "runs": runs,
        "summary": summary,
        "overhead_at_1_actor": {"after_startup": overhead_steady, "with_startup": overhead_total},
        "per_image_ms": costs,
    }
    figures = {
        "plain_images_per_s": Figure(plain, better="higher"),
        "ray_1_actor_steady_images_per_s": Figure(one["steady_images_per_s"], better="higher"),
        "ray_2_actors_steady_images_per_s": Figure(
            summary["ray, 2 actors"]["steady_images_per_s"], better="higher"
        ),
        "ray_startup_s": Figure(one["startup_s"], better="lower"),
    }
    finish("distributed_ingest", args, report, figures)


if __name__ == "__main__":
    main()
