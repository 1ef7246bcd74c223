"""OCR retrieval: do look-alike products' printed model numbers find them, through ``multimodal-rag eval``?

Writes the catalogue of ``ocr_catalogue.py`` (groups of four products that share backdrop,
brand, colour, spec line and label layout and differ only in the order of their model
number's digits; half the descriptions omit the model number), indexes it twice with the
command line, as a user would (``multimodal-rag index --descriptions``: once without OCR, once
with ``--ocr``), and evaluates its labelled queries with ``multimodal-rag eval --json``:

- **image, vector only**: the query photos searched by their picture (``--mode vector``);
- **image, query OCR only**: the knowledge base reads no text; the query photo's text is read
  (``--query-ocr``) and its words matched against the descriptions (``--mode hybrid``);
- **image, OCR on both sides**: the knowledge base read its photos' text (``--ocr``), and the
  query photo's text is read too (``--mode hybrid``, the default reading);
- **text**, by the full model number, by its digits alone, and with one OCR confusion
  (O/0, I/1, S/5, B/8), in hybrid mode on the knowledge base without and with OCR.

A query photo whose text is read is fused by weighted scores (``search``'s default for it);
the run also evaluates it with ``--fusion rrf``, reciprocal-rank fusion, to show what that costs.

Top-1 is hit@1 (each query has one right product), recall@5 the share with it in the first
five. **The embedder is a random-weights CLIP** (``multimodal-rag random-checkpoint``): no real
CLIP weights can be had here, so the picture channel cannot tell the digits apart (nor, at this
size, much else): the run reports how often its first hit is a product of the right group (a
group of 4 makes chance within it 0.25). The OCR reader is real (rapidocr's bundled PP-OCR
models).

Targets with OCR on both sides: image-query top-1 >= 0.95; digits-only text top-1 >= 0.90;
turned query photos (90, 180, 270 degrees plus tilt) no more than 5 points below upright ones.

    python benchmarks/ocr_retrieval.py            # 24 groups, 96 products
    python benchmarks/ocr_retrieval.py --quick    # 4 groups, 16 products

Prints a table and writes ``benchmarks/results/ocr_retrieval.json``; needs the ``ocr`` extra.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from common import CACHE, ROOT, Figure, finish, make_parser, skipped
from ocr_catalogue import write_catalogue

#: (run, knowledge base, ``eval`` options): what each evaluation is.
RUNS = (
    ("vector only", "plain", ("--mode", "vector")),
    ("query OCR only", "plain", ("--mode", "hybrid", "--query-ocr")),
    ("OCR on both sides", "ocr", ("--mode", "hybrid")),
    ("OCR on both sides, rank fusion", "ocr", ("--mode", "hybrid", "--fusion", "rrf")),
)
#: (row of the table, run, query sets): the rows reported.
ROWS = (
    ("image, vector only", "vector only", ("image:photo", "image:photo-turned")),
    ("image, query OCR only", "query OCR only", ("image:photo", "image:photo-turned")),
    ("image, OCR on both sides", "OCR on both sides", ("image:photo", "image:photo-turned")),
    ("image, both sides, --fusion rrf", "OCR on both sides, rank fusion", ("image:photo", "image:photo-turned")),
    ("text, KB without OCR", "query OCR only", ("text:model", "text:digits", "text:confusion")),
    ("text, KB with OCR", "OCR on both sides", ("text:model", "text:digits", "text:confusion")),
)
TARGETS = {"image_top1": 0.95, "digits_top1": 0.90, "turned_gap": 0.05}


def cli(*args: str) -> str:
    """``multimodal-rag ARGS`` in its own process, from this checkout; its standard output."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT / "src"), os.environ.get("PYTHONPATH")]))}
    done = subprocess.run([sys.executable, "-m", "multimodal_rag", *args], env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"multimodal-rag {' '.join(args)} failed ({done.returncode}):\n{done.stderr[-3000:]}")
    return done.stdout


def group_top1(report: dict[str, Any], kb: Path, groups: dict[str, int], sets: tuple[str, ...]) -> float:
    """The share of ``sets``' queries whose first hit is a product of the right group."""
    from multimodal_rag import MultimodalRAG

    with MultimodalRAG.open(kb, read_only=True) as rag:
        paths = {id_: Path(record.image_path or "").name for id_, record in rag.get_many(rag.ids()).items()}
    results = [r for r in report["results"] if r["query_set"] in sets]
    same = [bool(r["ranked"]) and groups[paths[r["ranked"][0]]] == groups[paths[r["expected"][0]]] for r in results]
    return sum(same) / len(same)


def main() -> None:
    parser = make_parser(__doc__ or "", data=True)
    parser.add_argument("--groups", type=int, help="groups of four products (default 24; 4 with --quick)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    try:
        import rapidocr  # noqa: F401
    except ImportError:
        skipped("ocr_retrieval", args, "the ocr extra is not installed (pip install 'multimodal-rag[ocr]')")
        return
    groups = args.groups or (4 if args.quick else 24)
    work = CACHE / f"ocr-retrieval-{groups}-{args.seed}"
    shutil.rmtree(work, ignore_errors=True)  # knowledge bases are built afresh each run
    catalogue = work / "catalogue"
    written = write_catalogue(catalogue, groups=groups, seed=args.seed, data=args.data)
    group_of = {Path(json.loads(line)["image_path"]).name: json.loads(line)["group"]
                for line in (catalogue / "description.jsonl").read_text().splitlines()}  # fmt: skip
    checkpoint = work / "clip-random.pt"
    cli("random-checkpoint", str(checkpoint))

    index_seconds = {}
    for name, extra in (("plain", ()), ("ocr", ("--ocr",))):
        started = time.perf_counter()
        cli("index", str(catalogue / "images"), "--kb", str(work / name), "--descriptions", str(catalogue / "description.jsonl"),
            "--checkpoint", str(checkpoint), "--precision", "fp32", "--no-progress", *extra)  # fmt: skip
        index_seconds[name] = round(time.perf_counter() - started, 2)

    reports: dict[str, dict[str, Any]] = {}
    commands: dict[str, str] = {}
    for run, kb, options in RUNS:
        args_ = ("eval", str(work / kb), "--queries", str(catalogue / "queries.jsonl"), "--edits", "none", "--no-progress", *options, "--json")
        commands[run] = "multimodal-rag " + " ".join(args_)
        reports[run] = json.loads(cli(*args_))

    def figures_of(run: str, sets: tuple[str, ...]) -> dict[str, Any]:
        by_set = {s["query_set"]: s for s in reports[run]["sets"]}
        out = {}
        for name in sets:
            s = by_set[name]
            out[name] = {"queries": s["queries"], "top1": s["recall"]["1"], "r5": s["recall"]["5"],
                         "p50_ms": s.get("latency_ms", {}).get("p50")}  # fmt: skip
        return out

    rows = []
    for row, run, sets in ROWS:
        for name, figures in figures_of(run, sets).items():
            rows.append({"row": row, "run": run, "set": name, **figures})
    both = {r["set"]: r for r in rows if r["row"] == "image, OCR on both sides"}
    text_ocr = {r["set"]: r for r in rows if r["row"] == "text, KB with OCR"}
    image_queries = sum(r["queries"] for r in both.values())
    image_top1 = sum(r["top1"] * r["queries"] for r in both.values()) / image_queries
    turned_gap = both["image:photo"]["top1"] - both["image:photo-turned"]["top1"]
    vector_group = group_top1(reports["vector only"], work / "plain", group_of, ("image:photo", "image:photo-turned"))
    targets = {
        "image_top1": {"value": image_top1, "target": f">= {TARGETS['image_top1']}", "met": image_top1 >= TARGETS["image_top1"]},
        "digits_top1": {"value": text_ocr["text:digits"]["top1"], "target": f">= {TARGETS['digits_top1']}",
                        "met": text_ocr["text:digits"]["top1"] >= TARGETS["digits_top1"]},  # fmt: skip
        "turned_gap": {"value": turned_gap, "target": f"<= {TARGETS['turned_gap']}", "met": turned_gap <= TARGETS["turned_gap"] + 1e-9},
    }

    print(f"{written['products']} products in {groups} groups of 4; {written['descriptions_with_model']} descriptions name the model number")
    print("embedder: a random-weights CLIP (multimodal-rag random-checkpoint); no real CLIP weights are available here,")
    print("so the picture channel cannot read the digits. OCR: rapidocr's bundled models (real weights).")
    print(f"indexing: {index_seconds['plain']} s without OCR, {index_seconds['ocr']} s with --ocr (each a fresh process)\n")
    print("| query | query set | queries | top-1 | recall@5 | p50 ms |")
    print("|---|---|---:|---:|---:|---:|")
    for r in rows:
        p50 = f"{r['p50_ms']:.0f}" if r["p50_ms"] is not None else "-"
        print(f"| {r['row']} | {r['set'].split(':', 1)[1]} | {r['queries']} | {r['top1']:.3f} | {r['r5']:.3f} | {p50} |")
    print(f"\nvector only: first hit a product of the right group {vector_group:.3f} ({groups} groups; within a group, chance is 0.25)")
    print("targets, OCR on both sides:")
    for name, t in targets.items():
        print(f"  {name:<12} {t['value']:.3f}  target {t['target']:<7} {'met' if t['met'] else 'MISSED'}")
    print("\ncommands:")
    for run, command in commands.items():
        print(f"  {run}: {command}")

    figures = {f"{r['run']}/{r['set']}/top1": Figure(r["top1"], better="higher", tolerance=0.05) for r in rows}
    figures["image_top1_both"] = Figure(image_top1, better="higher", tolerance=0.02)
    figures["digits_top1_both"] = Figure(text_ocr["text:digits"]["top1"], better="higher", tolerance=0.02)
    finish("ocr_retrieval", args, {"catalogue": written, "index_seconds": index_seconds, "rows": rows,
                                   "vector_group_top1": vector_group, "targets": targets, "commands": commands,
                                   "reports": {run: {k: v for k, v in rep.items() if k != "results"} for run, rep in reports.items()}},
           figures)  # fmt: skip


if __name__ == "__main__":
    main()
