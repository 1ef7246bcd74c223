"""The evaluation tool on the stamps and on photo-sized images: what it reports, and what it costs.

Builds knowledge bases from a generated catalogue (400 captioned images; ``--data
../shared/data/stamps`` for the 785 stamps) with two random-weights CLIP models — a tiny one
and one of ViT-B/32's shape (it costs what the real one costs) — and from photo-sized JPEGs
tiled from ``examples/stamps`` (as ``benchmarks/ingest.py`` makes them), then runs
``rag.evaluate()`` on each. ``--quick`` runs only the tiny model, on 80 images. A deliberately weak hnswlib setting
(``ef_search=1``, ``M=2``) on the tiny model shows the index-loss column at work.

Random weights say nothing about a real model's retrieval quality. What the figures do show:
that every query set, the exact-search comparison and the gate are measured; which edits
even a random network's pixels survive; and what the tool itself costs per 1,000 queries.
The same command gives the real figures with real weights.

``--engines`` instead asks whether a faster engine costs recall: it builds the stamps'
knowledge base with the ViT-B/32-shaped model in torch fp32, then evaluates it twice with
the same sample and seed, once with fp32 queries and once with queries embedded by the
OpenVINO int8 engine (calibrated on the stamps), and checks that no image query set loses
more than 1 point of recall@10.

    python benchmarks/evaluation.py             # about 10 minutes on 2 cores
    python benchmarks/evaluation.py --quick     # the tiny model only, well under a minute
    python benchmarks/evaluation.py --engines   # fp32 against int8 queries, about 5 minutes

Prints a table per run and a summary, writes ``benchmarks/results/evaluation-*.json`` and
``docs/images/evaluation.png`` (the ViT-B/32-shaped run on the stamps); with ``--engines``,
the two runs side by side and ``benchmarks/results/evaluation-engines.json``. The tables
come from the evaluation tool's renderer, which has no public name.
"""

from __future__ import annotations

import importlib.util
import json
import shutil
import time
from pathlib import Path

import common
from common import RESULTS, ROOT, Figure, finish, make_parser

WORK = common.CACHE / "evaluation"
#: The most recall@10 (in points) an image query set may lose to int8 queries in ``--engines``.
ENGINE_BOUND = 1.0


def build(
    name: str,
    checkpoint: Path,
    images: Path,
    descriptions: Path | None,
    vector_store: object = None,
    *,
    precision: str = "auto",
) -> object:
    from multimodal_rag import CLIPEmbedder, MultimodalRAG

    path = WORK / name
    shutil.rmtree(path, ignore_errors=True)
    embedder = CLIPEmbedder(checkpoint=checkpoint, model="ViT-B/32", precision=precision)
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


def engines(sample: int, data: Path | None) -> None:
    """``--engines``: one fp32-built knowledge base, evaluated with fp32 and with int8 queries."""
    if importlib.util.find_spec("openvino") is None or importlib.util.find_spec("nncf") is None:
        print(
            "--engines: skipped, openvino and nncf are not installed (pip install 'multimodal-rag[openvino]')"
        )
        return
    from multimodal_rag import CLIPEmbedder, MultimodalRAG
    from multimodal_rag.evaluation.render import report_differences, report_table

    started = time.perf_counter()
    WORK.mkdir(parents=True, exist_ok=True)
    checkpoint = common.vit_b_32_checkpoint()
    folder, captions = (data, data / "description.jsonl") if data is not None else common.catalogue(400)
    stamps = folder / "images"
    reference = CLIPEmbedder(
        checkpoint=checkpoint, model="ViT-B/32", engine="torch", precision="fp32"
    )
    # Reused only when a finished build with these very weights is recorded beside it: an
    # interrupted build, or one from other weights, is built again.
    name, marker = "vit-b-32-fp32", WORK / "vit-b-32-fp32.built"
    if not (
        marker.is_file() and marker.read_text() == reference.fingerprint and (WORK / name).is_dir()
    ):
        marker.unlink(missing_ok=True)
        rag = build(name, checkpoint, folder, captions, precision="fp32")
        rag.save()  # type: ignore[attr-defined]
        rag.close()  # type: ignore[attr-defined]
        marker.write_text(reference.fingerprint)
    else:
        print(f"{name}: reusing the fp32 knowledge base in {WORK / name}", flush=True)

    # A fresh engine cache: a cached int8 model is reused whatever ``calibration`` says, so
    # only an empty cache makes sure that this int8 model was calibrated on the catalogue.
    cache = WORK / "openvino-cache"
    shutil.rmtree(cache, ignore_errors=True)
    calibrating = time.perf_counter()
    int8 = CLIPEmbedder(
        checkpoint=checkpoint,
        model="ViT-B/32",
        engine="openvino",
        precision="int8",
        calibration=stamps,
        cache_dir=cache,
    )
    calibration_s = time.perf_counter() - calibrating
    calibration = f"{stamps} (the catalogue's own images, seeded sample)"
    print(f"int8: converted and calibrated on {calibration} in {calibration_s:.1f} s", flush=True)

    reports = {}
    for label, embedder in (("fp32", reference), ("int8", int8)):
        with MultimodalRAG.open(WORK / name, embedder=embedder, read_only=True) as rag:
            reports[label] = rag.evaluate(sample=sample, seed=0, progress=False)
            images = len(rag)
        runtime = embedder.runtime
        print(
            f"\n== {name}, {label} queries: {runtime['engine']} {runtime['precision']} ==",
            flush=True,
        )
        for fallback in runtime.get("fallbacks", []):
            print(f"  fallback: {fallback}")
        print(f"{report_table(reports[label])}\n", flush=True)

    differences = report_differences(reports["fp32"], reports["int8"], names=("fp32", "int8"))
    # Queries found in the top 10 by one engine and not by the other: the recall difference
    # is their net, and both directions show whether it is noise or a bias.
    found = {
        label: {
            (r.query_set, r.query) for r in report.results if r.rank is not None and r.rank <= 10
        }
        for label, report in reports.items()
    }
    rows = []
    for entry in differences["sets"]:
        query_set, metrics = entry["query_set"], entry["metrics"]
        keys = {(r.query_set, r.query) for r in reports["fp32"].results if r.query_set == query_set}
        rows.append(
            {
                "query_set": query_set,
                "queries": entry["queries"]["a"],
                "fp32": {k: metrics[f"recall@{k}"]["a"] for k in ("1", "5", "10")},
                "int8": {k: metrics[f"recall@{k}"]["b"] for k in ("1", "5", "10")},
                "delta_r10_points": round(metrics["recall@10"]["delta"] * 100, 6),
                "lost_at_10": len(keys & found["fp32"] - found["int8"]),
                "gained_at_10": len(keys & found["int8"] - found["fp32"]),
            }
        )
    print(
        "| query set | queries | fp32 R@1 | fp32 R@5 | fp32 R@10 | int8 R@1 | int8 R@5 | int8 R@10 "
        "| Δ R@10 (points) | lost / gained at 10 |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
    for row in rows:
        a, b = row["fp32"], row["int8"]
        print(
            f"| {row['query_set']} | {row['queries']} | {a['1']:.3f} | {a['5']:.3f} | {a['10']:.3f} | "
            f"{b['1']:.3f} | {b['5']:.3f} | {b['10']:.3f} | {row['delta_r10_points']:+.1f} | "
            f"{row['lost_at_10']} / {row['gained_at_10']} |"
        )
    # The bound is on the image query sets: with random weights the text tower puts
    # descriptions near chance in both engines, so their recall says nothing either way.
    image_rows = [row for row in rows if not row["query_set"].startswith("text:")]
    max_loss = max(0.0, *(-row["delta_r10_points"] for row in image_rows))
    passed = max_loss <= ENGINE_BOUND
    print(
        f"\nmax recall@10 loss over image query sets: {max_loss:.1f} points "
        f"(bound {ENGINE_BOUND:.0f}; one query in {sample} is {100 / sample:.1f}) -> {'PASS' if passed else 'FAIL'}"
    )
    print(
        "random weights: text:descriptions is near chance for both engines and says nothing about "
        "int8; the edit (image) query sets are what the bound is checked on. "
        f"int8 calibrated on {calibration}."
    )
    # A tower whose int8 fails the quality gate runs in the next precision: say what ran.
    towers = int8.runtime.get("towers", {})
    print(f"int8 run: image tower {towers.get('image')}, text tower {towers.get('text')}")
    wall_s = time.perf_counter() - started
    print(f"wall time: {wall_s:.0f} s", flush=True)
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "evaluation-engines.json").write_text(
        json.dumps(
            {
                "sample": sample,
                "seed": 0,
                "knowledge_base": {"name": name, "images": images, "built_with": "torch fp32"},
                "calibration": calibration,
                "calibration_seconds": calibration_s,
                "runtimes": {"fp32": reference.runtime, "int8": int8.runtime},
                "sets": rows,
                "max_image_r10_loss_points": max_loss,
                "bound_points": ENGINE_BOUND,
                "passed": passed,
                "evaluation_seconds": {label: report.seconds for label, report in reports.items()},
                "latency_ms": {label: report.latency_ms for label, report in reports.items()},
                "wall_seconds": wall_s,
                "note": "random weights: text query sets are near chance; the bound is checked on image query sets",
            },
            indent=1,
        )
    )


def main() -> None:
    parser = make_parser(__doc__, data=True)
    parser.add_argument(
        "--sample", type=int, help="images made into queries per run (100; 200 with --engines; 10 with --quick)"
    )
    parser.add_argument("--photos", type=int, default=200, help="photo-sized images in the fourth run")
    parser.add_argument(
        "--engines",
        action="store_true",
        help="only compare fp32 and OpenVINO int8 queries on an fp32-built knowledge base (sample 200 by default)",
    )
    args = parser.parse_args()
    if args.engines:
        # 200 images: one query is half a point of recall, fine enough for a 1-point bound.
        engines(10 if args.quick else args.sample or 200, args.data)
        return
    from multimodal_rag import HNSWLibStore

    sample = args.sample or (10 if args.quick else 100)
    WORK.mkdir(parents=True, exist_ok=True)
    tiny = common.tiny_checkpoint()
    if args.data is not None:
        stamps, captions = args.data, args.data / "description.jsonl"
    else:
        stamps, captions = common.catalogue(80 if args.quick else 400)

    summary = [
        run("tiny-flat", build("tiny-flat", tiny, stamps, captions, precision="fp32"), sample=sample),
        run(
            "tiny-weak-hnswlib",
            build(
                "tiny-weak-hnswlib",
                tiny,
                stamps,
                captions,
                HNSWLibStore(64, M=2, ef_construction=8, ef_search=1),
                precision="fp32",
            ),
            sample=sample,
        ),
    ]
    if not args.quick:
        vit = common.vit_b_32_checkpoint()
        summary.append(
            run(
                "vit-b-32-flat",
                build("vit-b-32-flat", vit, stamps, captions),
                sample=sample,
                plot=ROOT / "docs" / "images" / "evaluation.png",
            )
        )
        photos = common.photos("1080p", args.photos)
        summary.append(
            run("vit-b-32-photos", build("vit-b-32-photos", vit, photos, None), sample=min(sample, args.photos))
        )
    print(
        "| run | queries | eval s | s per 1,000 queries | mean R@1 over edits | worst loss@10 | gate AUROC | p50 ms |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for row in summary:
        auroc = f"{row['auroc']:.3f}" if row["auroc"] is not None else "-"
        print(
            f"| {row['run']} | {row['queries']} | {row['seconds']:.1f} | {row['seconds_per_1000']:.1f} | "
            f"{row['edit_r1']:.3f} | {row['edit_loss10']:.3f} | {auroc} | {row['latency_p50_ms']:.1f} |"
        )
    figures = {}
    for row in summary:
        name = str(row["run"]).replace("-", "_")
        figures[f"{name}_queries"] = Figure(float(row["queries"]), "equal", 0.0)  # type: ignore[arg-type]
        figures[f"{name}_edit_r1"] = Figure(float(row["edit_r1"]), "higher", 0.1)  # type: ignore[arg-type]
        figures[f"{name}_worst_loss_at_10"] = Figure(float(row["edit_loss10"]), "lower", 0.5)  # type: ignore[arg-type]
        figures[f"{name}_seconds_per_1000"] = Figure(float(row["seconds_per_1000"]), "lower", 2.0)  # type: ignore[arg-type]
    finish("evaluation", args, {"data": str(args.data or "generated catalogue"), "runs": summary}, figures)


if __name__ == "__main__":
    main()
