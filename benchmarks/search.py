"""Search modes compared: recall per kind of question on the stamps, and latency at 10k and 100k records.

1. **Recall per mode.** A knowledge base of a generated catalogue (coloured shapes, each
   caption naming its colours, shape and a model number ``XR-0042``; 1,000 images, 300
   with ``--quick``) with a tiny random-weights CLIP, and labelled queries made from the
   captions (a **code** set: one model number, one right image; a **keyword** set: a colour
   and a shape, every image whose caption has both), evaluated with ``rag.evaluate(mode=...)``
   for vector, lexical and hybrid search (reciprocal-rank and weighted fusion); and the
   optional second vector set, every description embedded with the text tower, alone and
   fused with hybrid search's two channels. ``--data ../shared/data/stamps`` runs it on the
   785 captioned stamps with ``benchmarks/data/stamps-queries.jsonl`` (keyword, code-style
   and paraphrase queries); ``--checkpoint`` with real weights.
2. **Latency.** SQLite description stores of 10,000 and 100,000 synthetic records (ten words
   from a Zipf-distributed vocabulary of 2,500, a model number, a category and a price;
   2,000 and 5,000 with ``--quick``) beside an exact FAISS store of random 512-d vectors:
   p50/p95 of a lexical search (two words and a model number, and three common words alone),
   of a vector search filtered to 1 % of the records (one category; in a store without
   indexed fields and in one with ``indexed_fields=("category",)``), of a hybrid search, and
   of the fusion alone. ``benchmarks/bm25_pruning.py`` compares the lexical search with and
   without its pruning.

    python benchmarks/search.py            # a few minutes on 2 cores
    python benchmarks/search.py --quick    # about half a minute

The second vector set and the fusion alone have no public entry point (they measure a
channel the facade does not offer, and ``fuse`` itself); those two parts import the
library's modules.

Prints tables and writes ``benchmarks/results/search.json``.
"""

from __future__ import annotations

import hashlib
import statistics
import time
from pathlib import Path
from typing import Any

import numpy as np
from common import ROOT, Figure, catalogue, catalogue_queries, finish, make_parser, tiny_embedder

STAMPS_QUERIES = ROOT / "benchmarks" / "data" / "stamps-queries.jsonl"


def recall_per_mode(images: Path, descriptions: Path, queries: Path, checkpoint: Path | None = None) -> list[dict[str, Any]]:
    from multimodal_rag import MultimodalRAG

    rag = MultimodalRAG(tiny_embedder(checkpoint))
    rag.add_directory(images, descriptions=descriptions, progress=False)
    rows = []
    for mode, fusion in (("vector", "rrf"), ("lexical", "rrf"), ("hybrid", "rrf"), ("hybrid", "weighted")):
        report = rag.evaluate(queries=queries, edits=[], sample=1, mode=mode, fusion=fusion, progress=False)
        for s in report.sets:
            rows.append(
                {
                    "mode": mode if mode != "hybrid" else f"hybrid ({fusion})",
                    "set": s.query_set,
                    "queries": s.queries,
                    "r1": s.recall["1"],
                    "r5": s.recall["5"],
                    "r10": s.recall["10"],
                    "mrr": s.mrr,
                }
            )
    rows += description_vectors(rag, queries)
    rag.close()
    print("| mode | query set | queries | R@1 | R@5 | R@10 | MRR |\n|---|---|---:|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['mode']} | {r['set']} | {r['queries']} | {r['r1']:.3f} | {r['r5']:.3f} | {r['r10']:.3f} | {r['mrr']:.3f} |")
    return rows


def description_vectors(rag: Any, queries_file: Path) -> list[dict[str, Any]]:
    """The optional second vector set: every description embedded with the text tower, searched
    with the query's text vector, alone and fused with the two channels hybrid search has."""
    from multimodal_rag.evaluation.metrics import mean_metrics, query_metrics
    from multimodal_rag.evaluation.queries import read_labelled_queries
    from multimodal_rag.tools import fuse

    records = {record.id: record for record in rag.description_store}
    ids = sorted(records)
    matrix = rag.embedder.embed_texts([records[i].description or "" for i in ids])
    queries = [q for q in read_labelled_queries(queries_file, records) if q.text is not None]
    per_set: dict[tuple[str, str], list[Any]] = {}
    for query in queries:
        scores = matrix @ rag.embedder.embed_texts([query.text])[0]
        order = np.argsort(-scores, kind="stable")[:50]
        described = [(ids[i], float(scores[i])) for i in order]
        hits = rag.search(text=query.text, k=50, mode="hybrid")
        vector = [(h.id, h.signals["vector"].score) for h in sorted(
            (h for h in hits if "vector" in h.signals), key=lambda h: h.signals["vector"].rank)]
        lexical = [(h.id, h.signals["lexical"].score) for h in sorted(
            (h for h in hits if "lexical" in h.signals), key=lambda h: h.signals["lexical"].rank)]
        fused = [(id_, score) for id_, score, _ in fuse({"vector": vector, "lexical": lexical, "descriptions": described})]
        for name, ranked in (("description vectors", described), ("hybrid + description vectors", fused)):
            metrics = query_metrics([i for i, _ in ranked], [sc for _, sc in ranked], query.expected)
            per_set.setdefault((name, query.query_set), []).append(metrics)
    rows = []
    for (name, query_set), items in per_set.items():
        recall, mrr, _ = mean_metrics(items)
        rows.append({"mode": name, "set": query_set, "queries": len(items), "r1": recall[1], "r5": recall[5],
                     "r10": recall[10], "mrr": mrr})
    return rows


WORDS = ["battery", "generator", "solar", "panel", "inverter", "cable", "charger", "lamp", "torch", "fridge", "heater", "fan", "pump", "drill", "saw", "hammer", "wrench", "ladder", "tent", "stove", "kettle", "kayak", "helmet", "glove", "boot", "jacket", "radio", "speaker", "camera", "lens", "tripod", "router", "switch", "adapter", "portable", "compact", "outdoor", "heavy", "duty", "wireless", "rechargeable", "red", "blue", "green", "black", "white", "silver", "steel", "aluminium", "plastic", "wooden", "folding", "waterproof"]


class _Vectors:
    """An embedder stand-in: the latency runs give query vectors directly; a text's vector
    is drawn from its hash, so that hybrid search runs through the public ``search``."""

    kind = "bench-vectors"

    def __init__(self, dim: int) -> None:
        self.dim = dim
        self.fingerprint = f"bench:{dim}"

    def config(self) -> dict[str, Any]:
        return {"dim": self.dim}

    def embed_images(self, images: Any) -> np.ndarray:
        raise NotImplementedError

    def embed_texts(self, texts: Any) -> np.ndarray:
        rows = []
        for text in texts:
            seed = int.from_bytes(hashlib.blake2b(text.encode(), digest_size=8).digest(), "little")
            row = np.random.default_rng(seed).standard_normal(self.dim)
            rows.append(row / np.linalg.norm(row))
        return np.asarray(rows, dtype=np.float32)


def latency(n: int, *, dim: int = 512, repeat: int = 60) -> dict[str, Any]:
    from multimodal_rag import FaissFlatStore, MultimodalRAG, Record, SQLiteDescriptionStore
    from multimodal_rag.tools import fuse

    rng = np.random.default_rng(0)
    ids = [f"item-{i:06d}" for i in range(n)]
    # A catalogue's words: a few common ones, a long tail of rare ones (Zipf), as in real text.
    vocabulary = WORDS + [f"{a}{b}" for a in WORDS[:60] for b in WORDS[-40:]]
    weights = 1.0 / np.arange(1, len(vocabulary) + 1)
    weights /= weights.sum()

    def words(count: int) -> str:
        return " ".join(rng.choice(vocabulary, count, p=weights))

    records = [
        Record(
            id=id_,
            description=words(10) + f" model XR-{i % 5000:04d}",
            metadata={"category": int(i % 100), "price": float(rng.integers(5, 2000))},
        )
        for i, id_ in enumerate(ids)
    ]
    vectors = rng.standard_normal((n, dim)).astype(np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    descriptions, store = SQLiteDescriptionStore(indexed_fields=("category",)), FaissFlatStore(dim)
    unindexed = SQLiteDescriptionStore()
    for start in range(0, n, 5000):
        descriptions.put(records[start : start + 5000])
        unindexed.put(records[start : start + 5000])
        store.add(ids[start : start + 5000], vectors[start : start + 5000])
    rag = MultimodalRAG(_Vectors(dim), store, descriptions, answerer=None)  # type: ignore[arg-type]
    rag_unindexed = MultimodalRAG(_Vectors(dim), store, unindexed, answerer=None)  # type: ignore[arg-type]
    queries = [words(2) + f" XR-{int(rng.integers(5000)):04d}" for _ in range(repeat)]
    # Common words alone: the case that skips the fewest records.
    plain_words = [words(3) for _ in range(repeat)]
    qvectors = rng.standard_normal((repeat, dim)).astype(np.float32)
    qvectors /= np.linalg.norm(qvectors, axis=1, keepdims=True)

    def timed(run: Any) -> dict[str, float]:
        run(0)  # warm up
        samples, cpu = [], []
        for i in range(repeat):
            begin, begin_cpu = time.perf_counter(), time.thread_time()
            run(i)
            samples.append((time.perf_counter() - begin) * 1000)
            cpu.append((time.thread_time() - begin_cpu) * 1000)
        # CPU time of this thread as well as wall time: on a shared machine, waiting for a
        # core inflates the wall time, not the CPU time (all of these run in one thread).
        return {
            "p50": statistics.median(samples),
            "p95": float(np.percentile(samples, 95)),
            "cpu_p50": statistics.median(cpu),
        }

    lexical = [descriptions.search_text(q, 50) for q in queries]
    vector = [[(h.id, h.score) for h in rag.search_by_vector(v, k=50)] for v in qvectors]
    result = {
        "records": n,
        "lexical": timed(lambda i: descriptions.search_text(queries[i], 10)),
        "lexical_common_words": timed(lambda i: descriptions.search_text(plain_words[i], 10)),
        "vector": timed(lambda i: rag.search_by_vector(qvectors[i], k=10)),
        "vector_filtered_1pct": timed(
            lambda i: rag_unindexed.search_by_vector(qvectors[i], k=10, filter={"category": i % 100})
        ),
        "vector_filtered_1pct_indexed": timed(
            lambda i: rag.search_by_vector(qvectors[i], k=10, filter={"category": i % 100})
        ),
        "hybrid": timed(lambda i: rag.search(text=queries[i], k=10, mode="hybrid")),
        "fusion": timed(lambda i: fuse({"vector": vector[i], "lexical": lexical[i]})),
    }
    return result


def main() -> None:
    parser = make_parser(__doc__, data=True)
    parser.add_argument(
        "--checkpoint", type=Path, help="real CLIP weights for the recall part (default: a tiny random model)"
    )
    parser.add_argument(
        "--queries", type=Path, help="labelled queries for --data (default benchmarks/data/stamps-queries.jsonl)"
    )
    args = parser.parse_args()
    if args.data is None:
        folder, descriptions = catalogue(120 if args.quick else 1000)
        queries = catalogue_queries(descriptions, per_set=10 if args.quick else 40)
    else:
        folder, descriptions = args.data, args.data / "description.jsonl"
        queries = args.queries or STAMPS_QUERIES
    rows = recall_per_mode(folder, descriptions, queries, args.checkpoint)
    sizes = (2_000, 5_000) if args.quick else (10_000, 100_000)
    timings = [latency(n, repeat=20 if args.quick else 60) for n in sizes]
    print("\n| records | lexical p50 / p95 ms (CPU p50) | common words only |")
    print("|---:|---:|---:|")
    for t in timings:
        cells = [
            f"{t[name]['p50']:.2f} / {t[name]['p95']:.2f} ({t[name]['cpu_p50']:.2f})"
            for name in ("lexical", "lexical_common_words")
        ]
        print(f"| {t['records']:,} | " + " | ".join(cells) + " |")
    print(
        "\n| records | lexical p50 / p95 ms | vector p50 | vector, 1 % filter p50 / p95 "
        "| same, field indexed p50 / p95 | hybrid p50 / p95 | fusion p50 |"
    )
    print("|---:|---:|---:|---:|---:|---:|---:|")
    for t in timings:
        print(
            f"| {t['records']:,} | {t['lexical']['p50']:.2f} / {t['lexical']['p95']:.2f} | {t['vector']['p50']:.2f} | "
            f"{t['vector_filtered_1pct']['p50']:.2f} / {t['vector_filtered_1pct']['p95']:.2f} | "
            f"{t['vector_filtered_1pct_indexed']['p50']:.2f} / {t['vector_filtered_1pct_indexed']['p95']:.2f} | "
            f"{t['hybrid']['p50']:.2f} / {t['hybrid']['p95']:.2f} | {t['fusion']['p50']:.3f} |"
        )
    figures = {}
    for row in rows:
        key = f"{row['mode']}_{row['set']}_r10".replace(" ", "_").replace("(", "").replace(")", "").replace("+", "and")
        figures[key] = Figure(row["r10"], "higher", 0.05)
    largest = timings[-1]
    for name in ("lexical", "vector", "vector_filtered_1pct_indexed", "hybrid"):
        figures[f"{name}_p50_ms_{largest['records']}"] = Figure(largest[name]["p50"], "lower", 2.0)
    report = {"data": str(args.data or "generated catalogue"), "queries": str(queries), "recall": rows, "latency": timings}
    finish("search", args, report, figures)


if __name__ == "__main__":
    main()
