"""Does the adapter's acceptance rule refuse chance and keep a true map? Counted over seeds.

Two knowledge bases of the same random images, with :class:`RotatedEmbedder` (in
``tests/adapter_helpers.py``): a text is the vector it names through a fixed random
rotation, plus noise.

- **true map**: each description names its own image's vector. One linear map undoes the
  rotation for every pair; text-to-image search starts at chance and a fit should fix it.
- **shuffled**: each description names another image's vector (a derangement, one cycle
  through all images). No map can find a held-out description's image: whatever it gains
  is chance, and the rule must refuse it.

Each knowledge base is fitted with ``seed`` 0..N-1 (the seed draws the held-out records,
the edits and the initial weights) for both kinds, through ``fit_and_judge``, the function
``MultimodalRAG.fit_adapter`` runs (nothing is applied). For comparison, the table also
counts what the former rule ("recall@5 went up", no test) would have kept.

    python benchmarks/adapter_keep_rule.py              # 20 seeds, 1,220 images: ~10 CPU-minutes
    python benchmarks/adapter_keep_rule.py --seeds 3 --images 300

Prints a table and writes ``benchmarks/results/adapter_keep_rule.json``.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
sys.path.insert(0, str(ROOT / "tests"))  # the task's embedder and images, shared with the tests

KINDS = ("linear", "low-rank")
TASKS = {"shuffled": True, "true map": False}


def run(images: int, seeds: int) -> list[dict[str, Any]]:
    from adapter_helpers import RotatedEmbedder, keep_rule_task
    from multimodal_rag import MultimodalRAG
    from multimodal_rag.adapter.fitting import IMAGE_TOLERANCE, RECALL_AT, fit_and_judge

    rows = []
    with tempfile.TemporaryDirectory() as work:
        for task, shuffled in TASKS.items():
            kb = keep_rule_task(Path(work) / task.replace(" ", "-"), images, shuffled=shuffled)
            with MultimodalRAG.open(kb, embedder=RotatedEmbedder()) as rag:
                for kind in KINDS:
                    for seed in range(seeds):
                        report, _ = fit_and_judge(rag, kind=kind, seed=seed, progress=False)
                        before, after = report.before, report.after
                        images_kept = all(
                            after["image->image"][str(k)] >= before["image->image"][str(k)] - IMAGE_TOLERANCE
                            for k in RECALL_AT
                        )
                        rows.append(
                            {
                                "task": task,
                                "kind": kind,
                                "seed": seed,
                                "kept": report.kept,
                                "former_rule_kept": after["text->image"]["5"] > before["text->image"]["5"] and images_kept,
                                "holdout": report.records["holdout"],
                                "before": before,
                                "after": after,
                                "test": report.test,
                                "reason": report.reason,
                                "seconds": round(report.seconds, 2),
                            }
                        )
                        print(f"{task:<9} {kind:<9} seed {seed:>2}: {'kept' if report.kept else 'refused'} ({report.reason})", flush=True)
    return rows


def table(rows: list[dict[str, Any]]) -> str:
    lines = [
        "| task | adapter | seeds | kept | refused | former rule kept | held-out t→i R@5 after (min–max) | gained / lost (max) | sign-test p (min–max) |",
        "|---|---|---:|---:|---:|---:|---|---|---|",
    ]
    for task in TASKS:
        for kind in KINDS:
            group = [row for row in rows if row["task"] == task and row["kind"] == kind]
            if not group:
                continue
            kept = sum(row["kept"] for row in group)
            former = sum(row["former_rule_kept"] for row in group)
            recall = [row["after"]["text->image"]["5"] for row in group]
            p = [row["test"]["p_value"] for row in group]
            gained = max(int(row["test"]["gained"]) for row in group)
            lost = max(int(row["test"]["lost"]) for row in group)
            lines.append(
                f"| {task} | {kind} | {len(group)} | {kept} | {len(group) - kept} | {former} | "
                f"{min(recall):.3f}–{max(recall):.3f} | {gained} / {lost} | {min(p):.2g}–{max(p):.2g} |"
            )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, default=20)
    parser.add_argument("--images", type=int, default=1220, help="images per knowledge base (a fifth is held out)")
    args = parser.parse_args()
    import torch

    # The fits are tiny (48-d): one thread each is fastest, and does not fight a busy machine.
    torch.set_num_threads(1)
    started = time.perf_counter()
    rows = run(args.images, args.seeds)
    print()
    print(table(rows))
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = RESULTS / "adapter_keep_rule.json"
    out.write_text(json.dumps({"images": args.images, "seeds": args.seeds, "seconds": round(time.perf_counter() - started, 1), "fits": rows}, indent=1))
    print(f"\nwritten to {out.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
