"""Which vector index for which collection size: build time, memory, speed and recall.

For each size, builds every store on CLIP-like synthetic vectors (or on real embeddings
given with ``--real``) and measures:

- build time (adding every vector, training included) and bytes per vector on disk;
- single-query latency (p50, p99) through the store and through the raw FAISS /
  hnswlib call on the same index, so the library's own overhead shows as a ratio;
- batched throughput (queries per second, all queries in one call);
- recall@1 and recall@10 against exact search,

sweeping ``ef`` for the HNSW stores and ``nprobe`` / ``k_factor`` for IVF. For flat
search it also measures the memory bandwidth of this machine, since an exact scan of
``n`` vectors cannot beat reading them once.

    python benchmarks/compare_indexes.py                 # 10,000 and 100,000 vectors, 512-d
    python benchmarks/compare_indexes.py --quick         # 2,000 vectors, 64-d, two settings each
    python benchmarks/compare_indexes.py --sizes 1000000 --only flat,hnswlib

The raw calls search the engine's own index, loaded from the file the store saves (the
knowledge-base format): the library's overhead is measured against exactly the index it wraps,
with no private attribute read.

Prints a table, writes ``benchmarks/results/compare_indexes.json`` and draws
recall-vs-latency curves to ``benchmarks/results/compare_indexes.png``.

Recall is never judged on isotropic random vectors: in 512 dimensions their nearest
neighbour is barely nearer than the tenth, and every approximate index looks broken.
The synthetic vectors instead resemble CLIP image embeddings: a direction shared by
all, many clusters, a low-dimensional latent within each cluster, plus noise
(nearest-neighbour cosine about 0.87, random pairs about 0.4; printed for each run).
"""

from __future__ import annotations

import argparse
import functools
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
from common import RESULTS, Figure, finish, make_parser

from multimodal_rag import FaissFlatStore, FaissHNSWStore, HNSWLibStore
from multimodal_rag.vectors import FaissIVFStore

K = 10


# -- data ----------------------------------------------------------------------------


def clip_like(n: int, dim: int, *, seed: int, clusters: int, latent: int = 8) -> np.ndarray:
    """Normalised vectors shaped like CLIP image embeddings (see the module docstring).

    Energy shares: 40% a shared direction (so random pairs have cosine ~0.4), 30% one
    of ``clusters`` centres, 20% a per-cluster ``latent``-dimensional subspace, 10%
    isotropic noise. The space itself (direction, centres, subspaces) depends only on
    ``clusters``; ``seed`` draws the points, so queries drawn with the same ``clusters``
    come from the same distribution as the stored vectors.
    """
    space = np.random.default_rng(12345)
    shared = space.standard_normal(dim)
    shared /= np.linalg.norm(shared)
    centres = space.standard_normal((clusters, dim)) / np.sqrt(dim)
    subspaces = space.standard_normal((min(clusters, 997), latent, dim)) / np.sqrt(dim)
    rng = np.random.default_rng(seed)
    out = np.empty((n, dim), dtype=np.float32)
    for start in range(0, n, 50_000):  # bounded temporary memory
        m = min(50_000, n - start)
        cluster = rng.integers(0, clusters, m)
        z = rng.standard_normal((m, latent)) / np.sqrt(latent)
        rows = (
            np.sqrt(0.4) * shared
            + np.sqrt(0.3) * centres[cluster]
            + np.sqrt(0.2) * np.einsum("nl,nld->nd", z, subspaces[cluster % len(subspaces)])
            + np.sqrt(0.1) * rng.standard_normal((m, dim)) / np.sqrt(dim)
        )
        out[start : start + m] = rows / np.linalg.norm(rows, axis=1, keepdims=True)
    return out


def load_real(path: Path, n: int, queries: int) -> tuple[np.ndarray, np.ndarray]:
    """Base and query rows from a ``.npy`` of real embeddings (queries are held out)."""
    data = np.load(path).astype(np.float32)
    data /= np.linalg.norm(data, axis=1, keepdims=True)
    rng = np.random.default_rng(0)
    data = data[rng.permutation(len(data))]
    queries = min(queries, len(data) // 10)
    return data[queries : queries + n], data[:queries]


def similarity_profile(base: np.ndarray, truth_scores: np.ndarray) -> dict[str, float]:
    rng = np.random.default_rng(1)
    pairs = rng.integers(0, len(base), (4000, 2))
    sample = base[rng.choice(len(base), min(500, len(base)), replace=False)]
    stored_nn, _ = exact(base, sample, 2)  # column 0 is the vector itself
    return {
        "stored_nn_cosine": float(stored_nn[:, 1].mean()),
        "query_nn_cosine": float(truth_scores[:, 0].mean()),
        "query_10th_cosine": float(truth_scores[:, K - 1].mean()),
        "random_pair_cosine": float((base[pairs[:, 0]] * base[pairs[:, 1]]).sum(1).mean()),
    }


# -- measurement helpers ---------------------------------------------------------------


def exact(base: np.ndarray, queries: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    import faiss

    index = faiss.IndexFlatIP(base.shape[1])
    index.add(base)
    return index.search(queries, k)


def recall_at(found: list[list[int]], truth: np.ndarray, at: int) -> float:
    return float(np.mean([len(set(f[:at]) & set(t[:at].tolist())) / at for f, t in zip(found, truth)]))


def paired_latency(
    store_call: Callable[[np.ndarray], Any], raw_call: Callable[[np.ndarray], Any], queries: np.ndarray
) -> dict[str, float]:
    """Single-query latency through the store and through the raw call.

    The two are interleaved query by query, so that load from other processes hits
    both alike, and take turns going first, since the second call of a query finds
    the index pages it touches already in cache.
    """
    store_call(queries[:1])
    raw_call(queries[:1])
    times: dict[str, list[float]] = {"store": [], "raw": []}
    for i in range(len(queries)):
        q = queries[i : i + 1]
        order = [("raw", raw_call), ("store", store_call)]
        for name, call in order if i % 2 else order[::-1]:
            start = time.perf_counter()
            call(q)
            times[name].append(time.perf_counter() - start)
    p50, raw_p50 = float(np.median(times["store"])), float(np.median(times["raw"]))
    # The library's own cost, free of cache effects: the same query, warm, many times.
    warm: dict[str, list[float]] = {"store": [], "raw": []}
    for q in queries[:20]:
        q = q[None, :]
        for _ in range(15):
            for name, call in (("raw", raw_call), ("store", store_call)):
                start = time.perf_counter()
                call(q)
                warm[name].append(time.perf_counter() - start)
    warm_store, warm_raw = float(np.median(warm["store"])), float(np.median(warm["raw"]))
    return {
        "p50_ms": 1000 * p50,
        "p99_ms": 1000 * float(np.percentile(times["store"], 99)),
        "min_ms": 1000 * float(np.min(times["store"])),
        "raw_p50_ms": 1000 * raw_p50,
        "overhead": p50 / raw_p50 - 1.0,
        "warm_overhead_us": 1e6 * (warm_store - warm_raw),
        "warm_overhead": warm_store / warm_raw - 1.0,
    }


def batched_qps(call: Callable[[np.ndarray], Any], queries: np.ndarray) -> tuple[float, Any]:
    start = time.perf_counter()
    result = call(queries)
    return len(queries) / (time.perf_counter() - start), result


def bytes_on_disk(store: Any) -> int:
    with tempfile.TemporaryDirectory() as tmp:
        store.save(Path(tmp))
        return sum(f.stat().st_size for f in Path(tmp).iterdir())


@functools.lru_cache(maxsize=1)  # one store is measured at a time, at several settings
def native_index(store: Any) -> Any:
    """The engine's own index, loaded from the file the store saves (the knowledge-base format,
    docs/knowledge-base-format.md): the raw engine the store's overhead is measured against."""
    import faiss

    with tempfile.TemporaryDirectory() as tmp:
        store.save(Path(tmp))
        if (Path(tmp) / "index.hnsw").exists():
            import hnswlib

            index = hnswlib.Index(space="ip", dim=store.dim)
            index.load_index(str(Path(tmp) / "index.hnsw"))
            return index
        return faiss.read_index(str(Path(tmp) / "index.faiss"))


def bandwidth_floor_ms(vectors: np.ndarray, threads: int = 2) -> float:
    """Time to read ``vectors`` once with ``threads`` threads (numpy sums release the GIL)."""
    parts = np.array_split(vectors, threads)

    def read_all() -> None:
        workers = [threading.Thread(target=np.add.reduce, args=(p,), kwargs={"axis": None}) for p in parts]
        for w in workers:
            w.start()
        for w in workers:
            w.join()

    times = []
    for _ in range(7):
        start = time.perf_counter()
        read_all()
        times.append(time.perf_counter() - start)
    return 1000 * float(np.min(times))


# -- the indexes ----------------------------------------------------------------------


def nlist_for(n: int) -> int:
    """A power of two near 4 * sqrt(n), with at least 39 training vectors per list."""
    target = 4 * np.sqrt(n)
    nlist = int(2 ** round(np.log2(target)))
    while nlist > 1 and nlist * 39 > n:
        nlist //= 2
    return max(nlist, 1)


def families(n: int, dim: int, args: argparse.Namespace) -> Iterator[tuple[str, Callable[[], Any], list]]:
    """(family, make_store, sweep); each sweep point is (label, search_kwargs, raw_call_factory)."""
    import faiss

    def flat_raw(store: FaissFlatStore) -> Callable[[np.ndarray], Any]:
        vectors = store.get_vectors(store.ids())

        def matmul_top_k(q: np.ndarray) -> Any:
            scores = vectors @ q[0]
            top = np.argpartition(-scores, K - 1)[:K]
            return top[np.argsort(-scores[top])]

        return matmul_top_k

    yield "flat", lambda: FaissFlatStore(dim), [("exact", {}, flat_raw)]

    def hnsw_raw(ef: int) -> Callable[[Any], Callable[[np.ndarray], Any]]:
        def factory(store: FaissHNSWStore) -> Callable[[np.ndarray], Any]:
            index = native_index(store)

            def call(q: np.ndarray) -> Any:
                params = faiss.SearchParametersHNSW()
                params.efSearch = ef
                return index.search(q, K, params=params)

            return call

        return factory

    m, efc = args.faiss_hnsw
    yield (
        f"faiss-hnsw M{m} efc{efc}",
        lambda: FaissHNSWStore(dim, M=m, ef_construction=efc),
        [(f"ef={ef}", {"ef": ef}, hnsw_raw(ef)) for ef in args.ef],
    )

    def hnswlib_raw(ef: int) -> Callable[[Any], Callable[[np.ndarray], Any]]:
        def factory(store: HNSWLibStore) -> Callable[[np.ndarray], Any]:
            index = native_index(store)

            def call(q: np.ndarray) -> Any:
                index.set_ef(ef)
                return index.knn_query(q, K, num_threads=1)

            return call

        return factory

    m, efc = args.hnswlib
    yield (
        f"hnswlib M{m} efc{efc}",
        lambda: HNSWLibStore(dim, M=m, ef_construction=efc),
        [(f"ef={ef}", {"ef": ef}, hnswlib_raw(ef)) for ef in args.ef],
    )

    nlist = nlist_for(n)

    def ivf_raw(nprobe: int, k_factor: int | None) -> Callable[[Any], Callable[[np.ndarray], Any]]:
        def factory(store: FaissIVFStore) -> Callable[[np.ndarray], Any]:
            index = native_index(store)

            def call(q: np.ndarray) -> Any:
                params = faiss.SearchParametersIVF()
                params.nprobe = nprobe
                if k_factor is not None:
                    refine = faiss.IndexRefineSearchParameters()
                    refine.k_factor = k_factor
                    refine.base_index_params = params
                    return index.search(q, K, params=refine)
                return index.search(q, K, params=params)

            return call

        return factory

    probes = [p for p in args.nprobe if p <= nlist]
    yield (
        f"faiss-ivf IVF{nlist},Flat",
        lambda: FaissIVFStore(dim, nlist=nlist, train_size=n),
        [(f"nprobe={p}", {"nprobe": p}, ivf_raw(p, None)) for p in probes],
    )
    pq_m = dim // 8
    yield (
        f"faiss-ivf IVF{nlist},PQ{pq_m}x4fs,RFlat",
        lambda: FaissIVFStore(dim, nlist=nlist, pq_m=pq_m, train_size=n),
        [
            (f"nprobe={p} k_factor={f}", {"nprobe": p, "k_factor": f}, ivf_raw(p, f))
            for p in probes
            if p >= 8 or p == max(probes)
            for f in args.k_factor
        ],
    )


def run_size(base: np.ndarray, queries: np.ndarray, args: argparse.Namespace) -> dict[str, Any]:
    n, dim = base.shape
    truth_scores, truth = exact(base, queries, K)
    single = queries[: args.queries]
    ids = [str(i) for i in range(n)]
    out: dict[str, Any] = {"n": n, "dim": dim, "data": similarity_profile(base, truth_scores), "rows": []}
    print(f"\n== n={n:,} dim={dim}: " + ", ".join(f"{k} {v:.3f}" for k, v in out["data"].items()))
    for family, make, sweep in families(n, dim, args):
        if args.only and not any(family.startswith(o) for o in args.only):
            continue
        store = make()
        start = time.perf_counter()
        store.add(ids, base)
        build_s = time.perf_counter() - start
        size = bytes_on_disk(store)
        for label, params, raw_factory in sweep:
            latency = paired_latency(lambda q, p=params, s=store: s.search(q, K, **p), raw_factory(store), single)
            qps, batch = batched_qps(lambda q, p=params, s=store: s.search(q, K, **p), queries)
            found = [[int(neighbor.id) for neighbor in row] for row in batch]
            row = {
                "family": family,
                "setting": label,
                "params": params,
                "build_s": build_s,
                "bytes_per_vector": size / n,
                **latency,
                "batch_qps": qps,
                "recall_at_1": recall_at(found, truth, 1),
                "recall_at_10": recall_at(found, truth, 10),
            }
            out["rows"].append(row)
            print(
                f"{family:32s} {label:22s} build {build_s:7.1f}s {size / n:7.0f} B/vec  "
                f"p50 {row['p50_ms']:8.3f} ms (raw {row['raw_p50_ms']:8.3f}, {100 * row['overhead']:+5.1f}%; "
                f"warm {row['warm_overhead_us']:+4.0f} us {100 * row['warm_overhead']:+5.1f}%)  "
                f"p99 {row['p99_ms']:8.3f}  batch {qps:9.0f} q/s  R@1 {row['recall_at_1']:.3f}  "
                f"R@10 {row['recall_at_10']:.3f}",
                flush=True,
            )
        if family == "flat":
            vectors = store.get_vectors(store.ids())
            out["flat_bandwidth_floor_ms"] = bandwidth_floor_ms(vectors)
            flat = out["rows"][-1]
            floor = out["flat_bandwidth_floor_ms"]
            print(
                f"{'':32s} 2-core memory-bandwidth floor {floor:.3f} ms (best of 7 reads): flat single "
                f"query at {flat['min_ms'] / floor:.2f}x the floor at best, {flat['p50_ms'] / floor:.2f}x at p50"
            )
        del store
    return out


def plot(results: list[dict[str, Any]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(results), figsize=(6.5 * len(results), 5), squeeze=False)
    for ax, result in zip(axes[0], results):
        by_family: dict[str, list[dict[str, Any]]] = {}
        for row in result["rows"]:
            by_family.setdefault(row["family"], []).append(row)
        for family, rows in by_family.items():
            if family.startswith("faiss-ivf") and "PQ" in family:
                # One curve per k_factor: nprobe grows along it.
                for factor in sorted({r["params"]["k_factor"] for r in rows}):
                    pts = sorted((r for r in rows if r["params"]["k_factor"] == factor), key=lambda r: r["p50_ms"])
                    ax.plot(
                        [r["p50_ms"] for r in pts], [r["recall_at_10"] for r in pts], "o-", ms=3,
                        label=f"{family.split(' ', 1)[1]} k_factor={factor}",
                    )
                continue
            rows = sorted(rows, key=lambda r: r["p50_ms"])
            marker = "*" if family == "flat" else "o-"
            ax.plot([r["p50_ms"] for r in rows], [r["recall_at_10"] for r in rows], marker, ms=4 if marker == "o-" else 12, label=family)
        ax.set_xscale("log")
        ax.set_xlabel("single-query latency, p50 (ms, log scale)")
        ax.set_ylabel("recall@10 vs exact")
        ax.set_title(f"n = {result['n']:,}, {result['dim']}-d, k = {K}")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def markdown_table(results: list[dict[str, Any]], settings: set[str] | None = None) -> str:
    """The measurements as a Markdown table (only ``settings`` when given, plus flat)."""
    lines = [
        "| n | index | setting | build (s) | bytes/vector | p50 (ms) | raw p50 (ms) | overhead "
        "| warm overhead | batch (q/s) | recall@1 | recall@10 |",
        "|---:|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for result in results:
        for r in result["rows"]:
            if settings is not None and r["family"] != "flat" and r["setting"] not in settings:
                continue
            lines.append(
                f"| {result['n']:,} | {r['family']} | {r['setting']} | {r['build_s']:.1f} "
                f"| {r['bytes_per_vector']:.0f} | {r['p50_ms']:.3f} | {r['raw_p50_ms']:.3f} "
                f"| {100 * r['overhead']:+.0f}% | {r['warm_overhead_us']:+.0f} µs ({100 * r['warm_overhead']:+.0f}%) "
                f"| {r['batch_qps']:,.0f} | {r['recall_at_1']:.3f} "
                f"| {r['recall_at_10']:.3f} |"
            )
    return "\n".join(lines)


def main() -> None:
    parser = make_parser(__doc__)
    parser.add_argument("--sizes", help="comma-separated collection sizes (default 10000,100000; 2000 with --quick)")
    parser.add_argument("--dim", type=int, help="vector length (default 512; 64 with --quick)")
    parser.add_argument("--queries", type=int, help="single queries timed per setting (default 200; 30 with --quick)")
    parser.add_argument("--batch-queries", type=int, help="queries in the batched call, recall too (default 1000; 100 with --quick)")
    parser.add_argument("--ef", help="HNSW search depths (default 16,32,64,128,256; 16,64 with --quick)")
    parser.add_argument("--nprobe", help="IVF lists probed (default 4,8,16,32,64; 4,8 with --quick)")
    parser.add_argument("--k-factor", help="IVF-PQ refinement factors (default 4,8,16; 8 with --quick)")
    parser.add_argument("--faiss-hnsw", default="32,80", help="M,ef_construction")
    parser.add_argument("--hnswlib", default="16,100", help="M,ef_construction")
    parser.add_argument("--only", default="", help="comma-separated family prefixes to run (default all)")
    parser.add_argument("--real", type=Path, help=".npy of real embeddings to use instead of synthetic ones")
    parser.add_argument("--plot", type=Path, default=RESULTS / "compare_indexes.png", help="recall-vs-latency curves (needs matplotlib)")
    args = parser.parse_args()
    defaults = {
        "sizes": ("10000,100000", "2000"), "dim": (512, 64), "queries": (200, 30), "batch_queries": (1000, 100),
        "ef": ("16,32,64,128,256", "16,64"), "nprobe": ("4,8,16,32,64", "4,8"), "k_factor": ("4,8,16", "8"),
    }  # fmt: skip
    for name, (full, quick) in defaults.items():
        if getattr(args, name) is None:
            setattr(args, name, quick if args.quick else full)
    ints = lambda text: [int(v) for v in text.split(",") if v]  # noqa: E731
    args.ef, args.nprobe, args.k_factor = ints(args.ef), ints(args.nprobe), ints(args.k_factor)
    args.faiss_hnsw, args.hnswlib = tuple(ints(args.faiss_hnsw)), tuple(ints(args.hnswlib))
    args.only = [o for o in args.only.split(",") if o]

    import faiss

    results = []
    for n in ints(args.sizes):
        if args.real is not None:
            base, queries = load_real(args.real, n, args.batch_queries)
        else:
            clusters = max(8, n // 200)  # about 200 vectors per cluster
            base = clip_like(n, args.dim, seed=n, clusters=clusters)
            queries = clip_like(args.batch_queries, args.dim, seed=n + 1, clusters=clusters)
        results.append({"source": str(args.real) if args.real else "synthetic CLIP-like", **run_size(base, queries, args)})
    report = {"faiss": faiss.__version__, "faiss_threads": faiss.omp_get_max_threads(), "k": K, "results": results}
    try:
        plot(results, args.plot)
        print(f"drew {args.plot}")
    except ImportError:
        print("no plot: matplotlib is not installed")
    print("\n" + markdown_table(results))
    finish("compare_indexes", args, report, headline(results[-1]))


def headline(result: dict[str, Any]) -> dict[str, Figure]:
    """The largest size's figures: exact search's recall (must be 1), each approximate
    family's best recall@10, and single-query latency of flat and of the deepest HNSW."""
    figures = {}
    by_family: dict[str, list[dict[str, Any]]] = {}
    for row in result["rows"]:
        by_family.setdefault(row["family"].split()[0], []).append(row)
    for family, rows in by_family.items():
        best = max(rows, key=lambda r: r["recall_at_10"])
        tolerance = 0.0 if family == "flat" else 0.05
        figures[f"{family}_recall_at_10"] = Figure(best["recall_at_10"], "higher", tolerance)
        figures[f"{family}_p50_ms"] = Figure(best["p50_ms"], "lower", 2.0)
    return figures


if __name__ == "__main__":
    main()
