"""Search modes compared: recall per kind of question on the stamps, and latency at 10k and 100k records.

1. **Recall per mode.** A knowledge base of ``../shared/data/stamps`` (785 captioned images)
   with a tiny random-weights CLIP, and the labelled queries of
   ``benchmarks/data/stamps-queries.jsonl`` (keyword queries taken from the captions,
   code-style queries such as "F-22" or "10 cents", and paraphrases that share no word with
   the caption), evaluated with ``rag.evaluate(mode=...)`` for vector, lexical and hybrid
   search (reciprocal-rank and weighted fusion).
2. **Latency.** SQLite description stores of 10,000 and 100,000 synthetic records (ten words
   from a Zipf-distributed vocabulary of 2,500, a model number, a category and a price) beside an exact FAISS store of random 512-d vectors:
   p50/p95 of a lexical search, of a vector search filtered to 1 % of the records (one
   category; in a store without indexed fields and in one with ``indexed_fields=("category",)``),
   of a hybrid search given its query vector, and of the fusion alone.

    python benchmarks/search.py            # a few minutes on 2 cores
    python benchmarks/search.py --quick    # 2,000 and 10,000 records

Prints tables and writes ``benchmarks/results/search.json``.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
STAMPS = ROOT.parent / "shared" / "data" / "stamps"
QUERIES = ROOT / "benchmarks" / "data" / "stamps-queries.jsonl"
WORK = Path(tempfile.gettempdir()) / "multimodal-rag-bench-search"

sys.path.insert(0, str(Path(__file__).resolve().parent))


def recall_per_mode() -> list[dict[str, Any]]:
    from multimodal_rag import CLIPEmbedder, MultimodalRAG, make_random_clip_checkpoint

    checkpoint = make_random_clip_checkpoint(WORK / "tiny.pt", embed_dim=64, width=64, layers=2)
    path = WORK / "stamps"
    shutil.rmtree(path, ignore_errors=True)
    rag = MultimodalRAG.create(path, embedder=CLIPEmbedder(checkpoint=checkpoint))
    rag.add_directory(STAMPS, descriptions=STAMPS / "description.jsonl", progress=False)
    rows = []
    for mode, fusion in (("vector", "rrf"), ("lexical", "rrf"), ("hybrid", "rrf"), ("hybrid", "weighted")):
        report = rag.evaluate(queries=QUERIES, edits=[], sample=1, mode=mode, fusion=fusion, progress=False)
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
    rag.close()
    print("| mode | query set | queries | R@1 | R@5 | R@10 | MRR |\n|---|---|---:|---:|---:|---:|---:|")
    for r in rows:
        print(f"| {r['mode']} | {r['set']} | {r['queries']} | {r['r1']:.3f} | {r['r5']:.3f} | {r['r10']:.3f} | {r['mrr']:.3f} |")
    return rows


WORDS = ["battery", "generator", "solar", "panel", "inverter", "cable", "charger", "lamp", "torch", "fridge", "heater", "fan", "pump", "drill", "saw", "hammer", "wrench", "ladder", "tent", "stove", "kettle", "kayak", "helmet", "glove", "boot", "jacket", "radio", "speaker", "camera", "lens", "tripod", "router", "switch", "adapter", "portable", "compact", "outdoor", "heavy", "duty", "wireless", "rechargeable", "red", "blue", "green", "black", "white", "silver", "steel", "aluminium", "plastic", "wooden", "folding", "waterproof"]


class _Vectors:
    """An embedder stand-in: the latency runs give query vectors directly."""

    kind = "bench-vectors"

    def __init__(self, dim: int) -> None:
        self.dim = dim
        self.fingerprint = f"bench:{dim}"

    def config(self) -> dict[str, Any]:
        return {"dim": self.dim}

    def embed_images(self, images: Any) -> np.ndarray:
        raise NotImplementedError

    def embed_texts(self, texts: Any) -> np.ndarray:
        raise NotImplementedError


def latency(n: int, *, dim: int = 512, repeat: int = 60) -> dict[str, Any]:
    from multimodal_rag import MultimodalRAG
    from multimodal_rag.descriptions.sqlite import SQLiteDescriptionStore
    from multimodal_rag.fusion import fuse
    from multimodal_rag.types import Record
    from multimodal_rag.vectors.faiss_flat import FaissFlatStore

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
    qvectors = rng.standard_normal((repeat, dim)).astype(np.float32)
    qvectors /= np.linalg.norm(qvectors, axis=1, keepdims=True)

    def timed(run: Any) -> dict[str, float]:
        run(0)  # warm up
        samples = []
        for i in range(repeat):
            begin = time.perf_counter()
            run(i)
            samples.append((time.perf_counter() - begin) * 1000)
        return {"p50": statistics.median(samples), "p95": float(np.percentile(samples, 95))}

    lexical = [descriptions.search_text(q, 50) for q in queries]
    vector = [[(h.id, h.score) for h in rag.search_by_vector(v, k=50)] for v in qvectors]
    result = {
        "records": n,
        "lexical": timed(lambda i: descriptions.search_text(queries[i], 10)),
        "vector": timed(lambda i: rag.search_by_vector(qvectors[i], k=10)),
        "vector_filtered_1pct": timed(
            lambda i: rag_unindexed.search_by_vector(qvectors[i], k=10, filter={"category": i % 100})
        ),
        "vector_filtered_1pct_indexed": timed(
            lambda i: rag.search_by_vector(qvectors[i], k=10, filter={"category": i % 100})
        ),
        "hybrid": timed(lambda i: rag._search_text(queries[i], qvectors[i], depth=10, filter=None, fusion="rrf")),
        "fusion": timed(lambda i: fuse({"vector": vector[i], "lexical": lexical[i]})),
    }
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="smaller stores")
    args = parser.parse_args()
    WORK.mkdir(parents=True, exist_ok=True)
    rows = recall_per_mode()
    sizes = (2_000, 10_000) if args.quick else (10_000, 100_000)
    timings = [latency(n) for n in sizes]
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
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "search.json").write_text(json.dumps({"recall": rows, "latency": timings}, indent=1))


if __name__ == "__main__":
    main()
