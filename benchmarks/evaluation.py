"""The evaluation tool on the stamps and on photo-sized images: what it reports, and what it costs.

Builds knowledge bases from ``../shared/data/stamps`` (785 captioned images) with two
random-weights CLIP models — a tiny one and one of ViT-B/32's shape (it costs what the real
one costs) — and from photo-sized JPEGs tiled from the stamps (as ``benchmarks/ingest.py``
makes them), then runs ``rag.evaluate()`` on each. A deliberately weak hnswlib setting
(``ef_search=1``, ``M=2``) on the tiny model shows the index-loss column at work.

Random weights say nothing about a real model's retrieval quality. What the figures do show:
that every query set, the exact-search comparison and the gate are measured; which edits
even a random network's pixels survive; and what the tool itself costs per 1,000 queries.
The same command gives the real figures with real weights.

    python benchmarks/evaluation.py             # about 10 minutes on 2 cores
    python benchmarks/evaluation.py --quick     # a smoke run

Prints a table per run and a summary, writes ``benchmarks/results/evaluation-*.json`` and
``docs/images/evaluation.png`` (the ViT-B/32-shaped run on the stamps).
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
STAMPS = ROOT.parent / "shared" / "data" / "stamps"
WORK = Path(tempfile.gettempdir()) / "multimodal-rag-bench-evaluation"

sys.path.insert(0, str(Path(__file__).resolve().parent))


def build(name: str, checkpoint: Path, images: Path, descriptions: Path | None, vector_store: object = None) -> object:
    from multimodal_rag import CLIPEmbedder, MultimodalRAG

    path = WORK / name
    shutil.rmtree(path, ignore_errors=True)
    embedder = CLIPEmbedder(checkpoint=checkpoint, model="ViT-B/32")
    rag = MultimodalRAG.create(path, embedder=embedder, vector_store=vector_store)  # type: ignore[arg-type]
    started = time.perf_counter()
    rag.add_directory(images, descriptions=descriptions, progress=False)
    print(f"{name}: indexed {len(rag)} images in {time.perf_counter() - started:.1f} s", flush=True)
    return rag


def run(name: str, rag: object, *, sample: int, plot: Path | None = None) -> dict[str, object]:
    from multimodal_rag.evaluation.render import plot_report, report_table

    report = rag.evaluate(sample=sample, seed=0, progress=False)  # type: ignore[attr-defined]
    print(f"\n== {name} ==\n{report_table(report)}\n", flush=True)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / f"evaluation-{name}.json").write_text(json.dumps(report.to_dict(), indent=1))
    if plot is not None:
        plot_report(report, plot)
    edits = [s for s in report.sets if s.query_set.startswith("edit:")]
    return {
        "run": name,
        "queries": len(report.results),
        "seconds": report.seconds,
        "seconds_per_1000": report.seconds / len(report.results) * 1000,
        "edit_r1": sum(s.recall["1"] for s in edits) / len(edits),
        "edit_loss10": max(s.index_loss["10"] for s in edits),
        "auroc": report.gate.auroc if report.gate else None,
        "latency_p50_ms": report.latency_ms["p50"],
    }


def main() -> None:
    from ingest import make_checkpoint, make_photos

    from multimodal_rag import make_random_clip_checkpoint
    from multimodal_rag.vectors.hnswlib_store import HNSWLibStore

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sample", type=int, default=100, help="images made into queries per run")
    parser.add_argument("--photos", type=int, default=200, help="photo-sized images in the third run")
    parser.add_argument("--quick", action="store_true", help="a smoke run: small samples")
    args = parser.parse_args()
    sample, photos = (10, 24) if args.quick else (args.sample, args.photos)
    WORK.mkdir(parents=True, exist_ok=True)
    tiny = make_random_clip_checkpoint(WORK / "tiny.pt", embed_dim=64, width=64, layers=2)
    vit = make_checkpoint()
    stamps, captions = STAMPS, STAMPS / "description.jsonl"

    summary = [
        run("tiny-flat", build("tiny-flat", tiny, stamps, captions), sample=sample),
        run(
            "tiny-weak-hnswlib",
            build("tiny-weak-hnswlib", tiny, stamps, captions, HNSWLibStore(64, M=2, ef_construction=8, ef_search=1)),
            sample=sample,
        ),
        run(
            "vit-b-32-flat",
            build("vit-b-32-flat", vit, stamps, captions),
            sample=sample,
            plot=None if args.quick else ROOT / "docs" / "images" / "evaluation.png",
        ),
        run("vit-b-32-photos", build("vit-b-32-photos", vit, make_photos("1080p", photos), None), sample=min(sample, photos)),
    ]
    print("| run | queries | eval s | s per 1,000 queries | mean R@1 over edits | worst loss@10 | gate AUROC | p50 ms |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for row in summary:
        auroc = f"{row['auroc']:.3f}" if row["auroc"] is not None else "-"
        print(
            f"| {row['run']} | {row['queries']} | {row['seconds']:.1f} | {row['seconds_per_1000']:.1f} | "
            f"{row['edit_r1']:.3f} | {row['edit_loss10']:.3f} | {auroc} | {row['latency_p50_ms']:.1f} |"
        )
    (RESULTS / "evaluation-summary.json").write_text(json.dumps(summary, indent=1))


if __name__ == "__main__":
    main()
