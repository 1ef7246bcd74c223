"""Persian search: does a query find the same product however it is typed?

A knowledge base of ``benchmarks/data/persian_catalogue.jsonl`` (48 products described in
Persian, numbers and brand names in both scripts, a few typed on an Arabic keyboard or with
ASCII digits, as real catalogues are) with a tiny random-weights CLIP, searched with the
labelled queries of ``benchmarks/data/persian_queries.jsonl`` (one right product each) typed
the ways people type them:

- **canonical**: Persian letters and digits, ZWNJ where Persian spelling puts it;
- **arabic-letters**: ``ي`` and ``ك`` for ``ی`` and ``ک`` (an Arabic keyboard layout);
- **ascii-digits**: ``0-9`` (and ``.``) for ``۰-۹`` (and ``٫``);
- **no-zwnj**: ZWNJ left out (``میدارد``);
- **zwnj-as-space**: a space for each ZWNJ (``می دارد``);
- **misplaced-space**: the query's own misspacing, written by hand (``لباس شویی`` for
  ``لباسشویی``, ``بی‌ سیم``);
- **all-at-once**: Arabic letters, ASCII digits and no ZWNJ together.

Each way of typing is scored on the queries it changes, beside the canonical spelling of
those same queries: top-1 (the right product first) and recall@5, of lexical search and of
hybrid search (reciprocal-rank fusion). The target is every way within 2 points (0.02) of
the canonical. With random weights the vector channel is noise, so hybrid figures show what
fusion keeps of the lexical ranking, not what a real CLIP adds.

    python benchmarks/persian_search.py            # SQLite and JSON Lines stores, both fusions
    python benchmarks/persian_search.py --quick    # the SQLite store, reciprocal-rank fusion

Prints a table and writes ``benchmarks/results/persian_search.json``.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

from common import ROOT, Figure, finish, make_parser, persian_catalogue, tiny_embedder

QUERIES = ROOT / "benchmarks" / "data" / "persian_queries.jsonl"
ZWNJ = "\u200c"
PERSIAN_DIGITS = str.maketrans("۰۱۲۳۴۵۶۷۸۹٫", "0123456789.")
ARABIC_LETTERS = str.maketrans("یک", "يك")
#: How far below the canonical spelling a way of typing may score (absolute, on a 0-1 scale).
TARGET = 0.02


def _all_at_once(query: dict[str, Any]) -> str:
    text: str = query["query"]
    return text.translate(ARABIC_LETTERS).translate(PERSIAN_DIGITS).replace(ZWNJ, "")


#: Way of typing -> the query typed that way.
VARIANTS: dict[str, Callable[[dict[str, Any]], str]] = {
    "canonical": lambda q: q["query"],
    "arabic-letters": lambda q: q["query"].translate(ARABIC_LETTERS),
    "ascii-digits": lambda q: q["query"].translate(PERSIAN_DIGITS),
    "no-zwnj": lambda q: q["query"].replace(ZWNJ, ""),
    "zwnj-as-space": lambda q: q["query"].replace(ZWNJ, " "),
    "misplaced-space": lambda q: q.get("misspaced", q["query"]),
    "all-at-once": _all_at_once,
}


def rank_of(rag: Any, text: str, expected: str, mode: str, fusion: str) -> int | None:
    """1-based rank of the expected image among the first 5 hits, or None."""
    hits = rag.search(text=text, k=5, mode=mode, fusion=fusion)
    for rank, hit in enumerate(hits, start=1):
        if hit.image_path is not None and Path(hit.image_path).as_posix().endswith(expected):
            return rank
    return None


def scores(ranks: list[int | None]) -> tuple[float, float]:
    """(top-1, recall@5) over queries with one right answer each."""
    n = len(ranks)
    return sum(r == 1 for r in ranks) / n, sum(r is not None for r in ranks) / n


def run(store: str, channels: list[tuple[str, str]]) -> list[dict[str, Any]]:
    from multimodal_rag import JSONLDescriptionStore, MultimodalRAG, SQLiteDescriptionStore

    folder, descriptions = persian_catalogue()
    queries = [json.loads(line) for line in QUERIES.read_text(encoding="utf-8").splitlines() if line.strip()]
    descriptions_store = SQLiteDescriptionStore() if store == "sqlite" else JSONLDescriptionStore()
    rag = MultimodalRAG(tiny_embedder(), description_store=descriptions_store)
    rag.add_directory(folder / "images", descriptions=descriptions, progress=False)
    rows = []
    for channel, (mode, fusion) in ((f"{m}" if m == "lexical" else f"{m} ({f})", (m, f)) for m, f in channels):
        canonical = {q["query"]: rank_of(rag, q["query"], q["expected"][0], mode, fusion) for q in queries}
        for name, typed in VARIANTS.items():
            changed = [q for q in queries if typed(q) != q["query"]] if name != "canonical" else queries
            ranks = [rank_of(rag, typed(q), q["expected"][0], mode, fusion) for q in changed]
            top1, r5 = scores(ranks)
            base_top1, base_r5 = scores([canonical[q["query"]] for q in changed])
            rows.append(
                {
                    "store": store,
                    "channel": channel,
                    "typed": name,
                    "queries": len(changed),
                    "top1": top1,
                    "r5": r5,
                    "canonical_top1": base_top1,
                    "canonical_r5": base_r5,
                    "within_target": top1 >= base_top1 - TARGET and r5 >= base_r5 - TARGET,
                    "missed": [typed(q) for q, r in zip(changed, ranks, strict=True) if r != 1],
                }
            )
    rag.close()
    return rows


def main() -> None:
    parser = make_parser(__doc__)
    args = parser.parse_args()
    stores = ["sqlite"] if args.quick else ["sqlite", "jsonl"]
    channels = [("lexical", "rrf"), ("hybrid", "rrf")] + ([] if args.quick else [("hybrid", "weighted")])
    rows = [row for store in stores for row in run(store, channels)]
    print("Each cell: the way of typing, then (the canonical spelling of the same queries).\n")
    print("| store | search | typed as | queries | top-1 | recall@5 | within 2 points |")
    print("|---|---|---|---:|---:|---:|---|")
    for r in rows:
        print(
            f"| {r['store']} | {r['channel']} | {r['typed']} | {r['queries']} | "
            f"{r['top1']:.3f} ({r['canonical_top1']:.3f}) | {r['r5']:.3f} ({r['canonical_r5']:.3f}) | "
            f"{'yes' if r['within_target'] else 'NO'} |"
        )
    misses = sorted({q for r in rows if r["channel"] == "lexical" for q in r["missed"]})
    print("\nQueries whose product lexical search did not rank first:", ", ".join(misses) or "none")
    figures = {}
    for r in rows:
        if r["store"] != "sqlite":
            continue
        key = f"{r['channel'].replace(' (', '_').rstrip(')')}:{r['typed']}"
        figures[f"{key}:top1"] = Figure(r["top1"], better="higher", tolerance=0.05)
        figures[f"{key}:r5"] = Figure(r["r5"], better="higher", tolerance=0.05)
    figures["lexical_outside_target"] = Figure(
        float(sum(not r["within_target"] for r in rows if r["channel"] == "lexical")), better="lower", tolerance=0.0
    )
    finish("persian_search", args, {"target": TARGET, "rows": rows}, figures)


if __name__ == "__main__":
    main()
