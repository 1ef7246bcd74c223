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
start is not timed). Each mode runs on a quarter of the photos and on all of them; the line
through the two times, ``seconds = fixed + images / rate``, separates what a run pays once
(for Ray: starting the actors, loading the model on each, Ray Data's planning) from the
marginal rate a longer run tends to. The overhead of the Ray path is compared on that rate, and
also shown over the larger run with its start-up.

Then the per-image costs the throughput model of ``docs/scale-out.md`` is built from, each
measured alone on one thread: reading and hashing, decoding to the model's input, the model,
writing to the stores (one batch of ``--batch-size``), and a rescan of the folder (listing,
reading and hashing every file, all already stored).

    python benchmarks/distributed_ingest.py            # 100 and 400 photos, ViT-B/32 shape: minutes
    python benchmarks/distributed_ingest.py --quick    # 12 and 48 photos, tiny model: a few minutes

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


def subset(folder: Path, count: int, work: Path) -> Path:
    """The first ``count`` photos of ``folder`` in a folder of their own (hard links: the same
    bytes, so the same ids)."""
    part = work / f"first-{count}"
    part.mkdir()
    for photo in sorted(folder.glob("*.jpg"))[:count]:
        os.link(photo, part / photo.name)
    return part


def fit(runs: list[dict[str, Any]], mode: str) -> dict[str, float]:
    """``seconds = fixed + images * per_image`` through the mode's small and large runs (medians):
    the marginal rate, without the cost paid once per run."""
    sizes = sorted({run["images"] for run in runs if run["mode"] == mode})
    small, large = (
        statistics.median(
            run["seconds"] for run in runs if run["mode"] == mode and run["images"] == n
        )
        for n in sizes
    )
    per_image = (large - small) / (sizes[1] - sizes[0])
    return {
        "seconds_small": small,
        "seconds_large": large,
        "fixed_s": small - sizes[0] * per_image,
        "marginal_images_per_s": 1 / per_image if per_image > 0 else float("inf"),
        "images_per_s_large": sizes[1] / large,
        "startup_s": statistics.median(
            run["startup_s"] for run in runs if run["mode"] == mode and run["images"] == sizes[1]
        ),
    }


def main() -> None:
    parser = make_parser(__doc__, data=True)
    parser.add_argument(
        "--images",
        type=int,
        help="photos to index in the large runs (default 400, --quick 48); the small runs take a quarter",
    )
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--repeats", type=int, default=1, help="rounds of the six runs")
    args = parser.parse_args()
    try:
        import ray
        import ray.data  # noqa: F401
    except ImportError:
        common.skipped(
            "distributed_ingest", args, "ray is not installed: pip install 'multimodal-rag[ray]'"
        )
        return
    count = args.images or (48 if args.quick else 400)
    folder = common.photos("1080p", count, args.data)
    checkpoint = common.tiny_checkpoint() if args.quick else common.vit_b_32_checkpoint()
    stores = "Milvus + PostgreSQL" if server_stores() else "FAISS + SQLite"
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        small = subset(folder, count // 4, work)
        started = time.perf_counter()
        cluster = connect_ray(work)
        cluster_start = time.perf_counter() - started
        runs: list[dict[str, Any]] = []
        for _ in range(
            args.repeats
        ):  # interleaved, so that a change in the machine's load hits every run
            for photos in (small, folder):
                runs.append(run_plain(work, photos, checkpoint, args.batch_size))
                runs.append(run_ray(work, photos, checkpoint, args.batch_size, actors=1))
                runs.append(run_ray(work, photos, checkpoint, args.batch_size, actors=2))
        ray.shutdown()
        costs = per_image_costs(work, folder, checkpoint, args.batch_size)

    modes = list(dict.fromkeys(run["mode"] for run in runs))
    summary = {mode: fit(runs, mode) for mode in modes}
    plain, one, two = (summary[mode] for mode in ("plain", "ray, 1 actor", "ray, 2 actors"))
    overhead = plain["marginal_images_per_s"] / one["marginal_images_per_s"] - 1
    overhead_large = plain["images_per_s_large"] / one["images_per_s_large"] - 1
    print(
        f"{count // 4} and {count} photos (1080p JPEG), {'tiny' if args.quick else 'ViT-B/32-shape'} random CLIP in fp32, stores: {stores}"
    )
    print(
        f"Ray cluster: {cluster} (connecting/starting took {cluster_start:.1f} s, not counted); medians of {args.repeats} round(s)"
    )
    print(
        f"{'run':<14} {f's ({count // 4})':>9} {f's ({count})':>9} {'fixed s':>8} {'start-up s':>10} {f'img/s ({count})':>12} {'marginal img/s':>15}"
    )
    for mode in modes:
        row = summary[mode]
        print(
            f"{mode:<14} {row['seconds_small']:>9.1f} {row['seconds_large']:>9.1f} {row['fixed_s']:>8.1f} "
            f"{row['startup_s']:>10.1f} {row['images_per_s_large']:>12.1f} {row['marginal_images_per_s']:>15.1f}"
        )
    print(
        f"overhead of the Ray path at 1 actor: {100 * overhead:+.1f} % per image (marginal), {100 * overhead_large:+.1f} % over {count} photos with its start-up"
    )
    print(
        f"2 actors against 1: x{two['marginal_images_per_s'] / one['marginal_images_per_s']:.2f} (marginal)"
    )
    print(
        "per image, one thread (ms): "
        + ", ".join(f"{name} {value:.2f}" for name, value in costs.items())
    )
    report = {
        "images": [count // 4, count],
        "model": "tiny" if args.quick else "ViT-B/32 shape",
        "stores": stores,
        "cluster": cluster,
        "repeats": args.repeats,
        "runs": runs,
        "summary": summary,
        "overhead_at_1_actor": {"marginal": overhead, f"over_{count}_with_startup": overhead_large},
        "per_image_ms": costs,
    }
    figures = {
        "plain_marginal_images_per_s": Figure(plain["marginal_images_per_s"], better="higher"),
        "ray_1_actor_marginal_images_per_s": Figure(one["marginal_images_per_s"], better="higher"),
        "ray_2_actors_marginal_images_per_s": Figure(two["marginal_images_per_s"], better="higher"),
        "ray_1_actor_startup_s": Figure(one["startup_s"], better="lower"),
    }
    finish("distributed_ingest", args, report, figures)


if __name__ == "__main__":
    main()
