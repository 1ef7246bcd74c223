"""Adapters: a task with a known answer, the stamps, and what training costs.

1. **Synthetic, known answer.** Image and text vectors related by a hidden linear distortion
   plus noise: text-to-image retrieval starts near chance. A linear adapter must bring
   held-out recall@1 to at least 0.9 (the script fails otherwise); a low-rank one is shown
   beside it.
2. **A catalogue** (generated: 400 captioned images, 120 with ``--quick``; ``--data
   ../shared/data/stamps`` for the 785 stamps) indexed with a tiny random-weights CLIP (as
   ``benchmarks/evaluation.py`` does), then ``rag.fit_adapter()``:
   the before/after report and whether the acceptance rule kept it. Random weights know
   nothing of frogs or teapots, so this shows the machinery on real files and captions
   (pairs gathered, edits made, the rule applied, the cost), not what an adapter does for a
   trained model.
3. **Cost.** Training time and peak memory for 1,000, 10,000 and 100,000 pairs of
   512-d vectors (each size in its own process, so its peak is its own).

    python benchmarks/adapter.py            # a few minutes on 2 cores
    python benchmarks/adapter.py --quick    # parts 1 and 2 only: 300 pairs, 120 images

Parts 1 and 3 train on arrays, without a knowledge base: they call the training function
``rag.fit_adapter()`` runs (``multimodal_rag.adapter.training``), which has no public name.

Prints a table per part and writes ``benchmarks/results/adapter.json``.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import common
import numpy as np
from common import Figure, finish, make_parser


def unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def distorted(n: int, dim: int, *, seed: int = 0, noise: float = 0.3) -> tuple[np.ndarray, np.ndarray]:
    """Images, and texts made from them by a hidden random matrix plus noise."""
    rng = np.random.default_rng(seed)
    images = unit(rng.standard_normal((n, dim)))
    texts = unit(images @ rng.standard_normal((dim, dim)) + noise * rng.standard_normal((n, dim)))
    return images, texts


def synthetic(n: int, dim: int) -> list[dict[str, Any]]:
    from multimodal_rag.adapter.fitting import recall_at
    from multimodal_rag.adapter.training import fit_adapter_weights, split_pairs

    images, texts = distorted(n, dim)
    train, held = split_pairs(n, holdout=0.2, seed=0)
    expected = [[row] for row in held]
    before = recall_at(texts[held], images, expected)
    rows = []
    for kind in ("linear", "low-rank"):
        fit = fit_adapter_weights(images, texts, train=train, holdout=held, kind=kind, rank=32)
        adapter = fit.adapter
        after = recall_at(adapter.apply(texts[held], "text"), adapter.apply(images, "image"), expected)
        rows.append(
            {
                "kind": kind,
                "pairs": n,
                "dim": dim,
                "before": before,
                "after": after,
                "epochs": fit.epochs,
                "seconds": round(fit.seconds, 2),
            }
        )
    print(f"\n== 1. synthetic: {n} pairs, {dim}-d, texts = images @ hidden matrix + noise (held-out {len(held)}) ==")
    print("| adapter | R@1 before | R@1 after | R@5 before | R@5 after | epochs | s |")
    print("|---|---:|---:|---:|---:|---:|---:|")
    for row in rows:
        print(
            f"| {row['kind']} | {row['before']['1']:.3f} | {row['after']['1']:.3f} | {row['before']['5']:.3f} | "
            f"{row['after']['5']:.3f} | {row['epochs']} | {row['seconds']:.1f} |"
        )
    linear = rows[0]["after"]["1"]
    if linear < 0.9:
        raise SystemExit(f"the linear adapter reached held-out recall@1 {linear:.3f}, below 0.9")
    return rows


def catalogue(quick: bool, data: Path | None) -> list[dict[str, Any]]:
    from multimodal_rag import MultimodalRAG

    if data is not None:
        images, descriptions = data / "images", data / "description.jsonl"
    else:
        folder, descriptions = common.catalogue(120 if quick else 400)
        images = folder / "images"
    rag = MultimodalRAG(common.tiny_embedder())
    started = time.perf_counter()
    rag.add_directory(images, descriptions=descriptions, progress=False)
    print(f"\n== 2. catalogue: indexed {len(rag)} images with a tiny random-weights CLIP in {time.perf_counter() - started:.1f} s ==")
    rows = []
    for kind, rank in (("low-rank", 32), ("linear", 64)) if not quick else (("low-rank", 32),):
        report = rag.fit_adapter(kind=kind, rank=rank, progress=False)
        print(f"-- {kind} --\n{report}")
        rows.append(report.to_dict())
        if report.kept:
            rag.remove_adapter()  # each kind judged against the raw vectors
    rag.close()
    return rows


def cost_child(n: int, dim: int) -> None:
    """Run in a process of its own: one fit of ``n`` pairs, its time and the process's peak memory."""
    import torch

    from multimodal_rag.adapter.training import fit_adapter_weights, split_pairs

    baseline = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    images, texts = distorted(n, dim, noise=1.0)
    train, held = split_pairs(n, holdout=0.2, seed=0)
    fit = fit_adapter_weights(images, texts, train=train, holdout=held, kind="low-rank", rank=32)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    print(
        json.dumps(
            {
                "pairs": n,
                "dim": dim,
                "kind": "low-rank",
                "rank": 32,
                "epochs": fit.epochs,
                "seconds": round(fit.seconds, 2),
                "seconds_per_epoch": round(fit.seconds / max(1, fit.epochs), 3),
                "peak_rss_mib": round(peak / 1024, 1),
                "rss_before_data_mib": round(baseline / 1024, 1),
                "torch_threads": torch.get_num_threads(),
            }
        )
    )


def cost(sizes: list[int]) -> list[dict[str, Any]]:
    rows = []
    for n in sizes:
        out = subprocess.run(
            [sys.executable, __file__, "--cost-child", str(n)], capture_output=True, text=True, check=True
        )
        rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
    print("\n== 3. training cost: low-rank (rank 32), 512-d, batch 256, 20% held out for stopping ==")
    print("| pairs | epochs | seconds | s per epoch | peak RSS MiB | torch threads |")
    print("|---:|---:|---:|---:|---:|---:|")
    for row in rows:
        print(
            f"| {row['pairs']:,} | {row['epochs']} | {row['seconds']:.1f} | {row['seconds_per_epoch']:.3f} | "
            f"{row['peak_rss_mib']:.0f} | {row['torch_threads']} |"
        )
    return rows


def main() -> None:
    parser = make_parser(__doc__, data=True)
    parser.add_argument("--cost-child", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--skip-catalogue", action="store_true", help="leave out part 2")
    args = parser.parse_args()
    if args.cost_child:
        cost_child(args.cost_child, 512)
        return
    results: dict[str, Any] = {"synthetic": synthetic(300 if args.quick else 4000, 64)}
    if not args.skip_catalogue:
        results["catalogue"] = catalogue(args.quick, args.data)
    # Training cost needs sizes of its own to mean anything: --quick leaves it out.
    results["cost"] = [] if args.quick else cost([1000, 10_000, 100_000])
    figures = {}
    for row in results["synthetic"]:
        figures[f"synthetic_{row['kind']}_r1_after"] = Figure(row["after"]["1"], "higher", 0.05)
    figures["synthetic_r1_before"] = Figure(results["synthetic"][0]["before"]["1"], "lower", 1.0)
    for row in results["cost"]:
        figures[f"cost_seconds_per_epoch_{row['pairs']}"] = Figure(row["seconds_per_epoch"], "lower", 2.0)
        figures[f"cost_peak_rss_mib_{row['pairs']}"] = Figure(row["peak_rss_mib"], "lower", 0.5)
    finish("adapter", args, results, figures)


if __name__ == "__main__":
    main()
