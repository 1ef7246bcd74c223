"""Lexical search with and without BM25 pruning, side by side, at 10,000 and 100,000 records.

``SQLiteDescriptionStore.search_text`` skips the records that hold only common words when
they cannot reach the top k (``descriptions/bm25_pruning.py``); without that, FTS5's
``bm25()`` scores every match. This times both on the same store and the same queries,
interleaved query by query so that a busy moment hits both alike, and checks that they
return the same hits in the same order. Records: ten words from a Zipf-distributed
vocabulary and a model number (as ``benchmarks/search.py`` makes them); queries: two words
and a model number ("mixed"), and three words alone ("common words").

    python benchmarks/bm25_pruning.py            # 10,000 and 100,000 records
    python benchmarks/bm25_pruning.py --quick    # 2,000 and 10,000 records

Switching the pruning off reaches into the module that runs it (there is no public switch).
Prints a table and writes ``benchmarks/results/bm25_pruning.json``.
"""

from __future__ import annotations

import statistics
import time
from typing import Any

import numpy as np
from common import Figure, finish, make_parser
from search import WORDS


def store_of(n: int) -> tuple[Any, list[str], list[str]]:
    from multimodal_rag import Record, SQLiteDescriptionStore

    rng = np.random.default_rng(0)
    vocabulary = WORDS + [f"{a}{b}" for a in WORDS[:60] for b in WORDS[-40:]]
    weights = 1.0 / np.arange(1, len(vocabulary) + 1)
    weights /= weights.sum()

    def words(count: int) -> str:
        return " ".join(rng.choice(vocabulary, count, p=weights))

    store = SQLiteDescriptionStore()
    for start in range(0, n, 5000):
        store.put(
            [Record(id=f"item-{i:06d}", description=words(10) + f" model XR-{i % 5000:04d}") for i in range(start, min(n, start + 5000))]
        )
    mixed = [words(2) + f" XR-{int(rng.integers(5000)):04d}" for _ in range(60)]
    common = [words(3) for _ in range(60)]
    return store, mixed, common


def side_by_side(store: Any, queries: list[str], k: int = 10) -> dict[str, Any]:
    from multimodal_rag.descriptions import full_text

    pruned_top_k = full_text.pruned_top_k

    def plain(*args: Any) -> None:
        return None  # the caller then runs bm25() over every match

    times: dict[str, list[float]] = {"pruned": [], "plain": []}
    # CPU time of this thread too: SQLite runs in it, and on a shared machine waiting for a
    # core inflates the wall time, not the CPU time.
    cpu: dict[str, list[float]] = {"pruned": [], "plain": []}
    differ = 0
    for turn, query in enumerate([queries[0], *queries]):
        hits = {}
        order = ("pruned", "plain") if turn % 2 else ("plain", "pruned")
        for name in order:
            full_text.pruned_top_k = pruned_top_k if name == "pruned" else plain  # type: ignore[assignment]
            try:
                started, started_cpu = time.perf_counter(), time.thread_time()
                hits[name] = store.search_text(query, k)
                elapsed = (time.perf_counter() - started) * 1000
                elapsed_cpu = (time.thread_time() - started_cpu) * 1000
            finally:
                full_text.pruned_top_k = pruned_top_k
            if turn:  # the first query warms the page cache for both
                times[name].append(elapsed)
                cpu[name].append(elapsed_cpu)
        differ += [i for i, _ in hits["pruned"]] != [i for i, _ in hits["plain"]]
    pruned, plain_ms = statistics.median(times["pruned"]), statistics.median(times["plain"])
    pruned_cpu, plain_cpu = statistics.median(cpu["pruned"]), statistics.median(cpu["plain"])
    return {"pruned_p50_ms": pruned, "plain_p50_ms": plain_ms, "speedup": plain_ms / pruned,
            "pruned_cpu_p50_ms": pruned_cpu, "plain_cpu_p50_ms": plain_cpu, "cpu_speedup": plain_cpu / pruned_cpu,
            "queries": len(queries), "results_differ": differ}  # fmt: skip


def main() -> None:
    parser = make_parser(__doc__)
    args = parser.parse_args()
    rows = []
    for n in (2_000, 10_000) if args.quick else (10_000, 100_000):
        store, mixed, common_words = store_of(n)
        for kind, queries in (("mixed", mixed), ("common words", common_words)):
            rows.append({"records": n, "queries_kind": kind, **side_by_side(store, queries)})
        del store
    print("| records | queries | pruned p50 ms (CPU) | plain bm25() p50 ms (CPU) | plain / pruned (CPU) | results differ |")
    print("|---:|---|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['records']:,} | {r['queries_kind']} | {r['pruned_p50_ms']:.2f} ({r['pruned_cpu_p50_ms']:.2f}) | "
              f"{r['plain_p50_ms']:.2f} ({r['plain_cpu_p50_ms']:.2f}) | {r['speedup']:.2f}x ({r['cpu_speedup']:.2f}x) | "
              f"{r['results_differ']} |")  # fmt: skip
    figures = {"results_differ": Figure(sum(r["results_differ"] for r in rows), "equal", 0.0)}
    for r in rows:
        key = f"{r['records']}_{r['queries_kind'].replace(' ', '_')}"
        figures[f"cpu_speedup_{key}"] = Figure(r["cpu_speedup"], "higher", 0.5)
    finish("bm25_pruning", args, {"rows": rows}, figures)


if __name__ == "__main__":
    main()
