"""What the network hop costs: Milvus (Lite, over gRPC) against the in-process HNSW store.

Inserts the same normalised vectors into ``MilvusVectorStore`` and ``HNSWLibStore``
(both HNSW, M=16, efConstruction=100, ef=64, inner product), counting Milvus's flush
(sealing and indexing on the server) in the insert time; then times one query per
call, as an application answering users does, and measures recall@k against an exact
search.

    python benchmarks/milvus_vs_local.py            # 100,000 vectors of 512-d
    python benchmarks/milvus_vs_local.py --quick    # 3,000 vectors of 64-d
    python benchmarks/milvus_vs_local.py --n 1000000 --uri http://milvus:19530

Without ``--uri`` (or ``$MILVUS_URI``) a Milvus Lite server is started on a free
loopback port for the run; without ``pymilvus`` and ``milvus-lite`` (``pip install
'multimodal-rag[milvus]'``) the benchmark says so and stops. Prints a table and writes
``benchmarks/results/milvus_vs_local.json``.
"""

from __future__ import annotations

import importlib.util
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import Any

import numpy as np
from common import Figure, finish, make_parser, skipped

from multimodal_rag import HNSWLibStore
from multimodal_rag.errors import BackendError
from multimodal_rag.vectors import MilvusVectorStore

BATCH = 10_000


def embeddings(rng: np.random.Generator, n: int, dim: int, latent: int = 64) -> np.ndarray:
    """Normalised vectors near a 64-d subspace, so that nearest neighbours are well defined,
    as they are for real image embeddings (uniform random 512-d vectors are all nearly
    equidistant, which no index handles and no collection looks like)."""
    basis = np.random.default_rng(12345).standard_normal((latent, dim)).astype(np.float32)
    rows = rng.standard_normal((n, latent)).astype(np.float32) @ basis
    rows += 0.1 * np.sqrt(latent) * rng.standard_normal((n, dim)).astype(np.float32)
    return rows / np.linalg.norm(rows, axis=1, keepdims=True)


@contextmanager
def milvus_lite_server() -> Iterator[str]:
    """A Milvus Lite server on a free loopback port, stopped afterwards."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with tempfile.TemporaryDirectory() as data:
        log = Path(data) / "server.log"
        env = {**os.environ, "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}
        executable = str(Path(sys.executable).with_name("milvus-lite"))
        command = [executable, "server", "--data-dir", f"{data}/db"]
        command += ["--host", "127.0.0.1", "--port", str(port)]
        with open(log, "wb") as out:
            server = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=env)
        try:
            deadline = time.monotonic() + 60
            while b"listening on" not in log.read_bytes():
                if server.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"Milvus Lite did not start:\n{log.read_text()}")
                time.sleep(0.1)
            yield f"http://127.0.0.1:{port}"
        finally:
            server.terminate()
            server.wait(timeout=30)


def measure(
    name: str,
    store: Any,
    ids: list[str],
    vectors: np.ndarray,
    queries: np.ndarray,
    exact: np.ndarray,
    k: int,
) -> dict[str, Any]:
    start = time.perf_counter()
    for lo in range(0, len(ids), BATCH):
        store.add(ids[lo : lo + BATCH], vectors[lo : lo + BATCH])
    add_s = time.perf_counter() - start
    if hasattr(store, "flush"):  # seal and index on the server, as save() does
        store.flush()
    insert_s = time.perf_counter() - start
    start = time.perf_counter()
    store.search(queries[:1], k)  # the first search waits for the index where it is built lazily
    first_search_s = time.perf_counter() - start
    for query in queries[:10]:  # warm-up
        store.search(query[None, :], k)
    latencies, found = [], []
    for query in queries:
        start = time.perf_counter()
        result = store.search(query[None, :], k)[0]
        latencies.append(time.perf_counter() - start)
        found.append([int(n.id) for n in result])
    recall = float(
        np.mean([len(set(f) & set(e)) / k for f, e in zip(found, exact.tolist(), strict=True)])
    )
    latencies_ms = sorted(1000 * t for t in latencies)
    return {
        "store": name,
        "add_s": add_s,
        "insert_s": insert_s,
        "insert_per_s": len(ids) / insert_s,
        "first_search_s": first_search_s,
        "p50_ms": statistics.median(latencies_ms),
        "p95_ms": latencies_ms[int(0.95 * (len(latencies_ms) - 1))],
        "mean_ms": statistics.fmean(latencies_ms),
        "recall_at_k": recall,
    }


def main() -> None:
    parser = make_parser(__doc__)
    parser.add_argument("--n", type=int, help="vectors (default 100000; 3000 with --quick)")
    parser.add_argument("--dim", type=int, help="their length (default 512; 64 with --quick)")
    parser.add_argument("--queries", type=int, help="single-vector queries timed (default 100; 50 with --quick)")
    parser.add_argument("--k", type=int, default=10)
    parser.add_argument("--uri", default=os.environ.get("MILVUS_URI"))
    args = parser.parse_args()
    for name, full, quick in (("n", 100_000, 3_000), ("dim", 512, 64), ("queries", 100, 50)):
        if getattr(args, name) is None:
            setattr(args, name, quick if args.quick else full)
    missing = [m for m in ("pymilvus", "milvus_lite") if importlib.util.find_spec(m) is None]
    if missing and not (args.uri and "pymilvus" not in missing):
        skipped("milvus_vs_local", args, f"{' and '.join(missing)} not installed (pip install 'multimodal-rag[milvus]')")
        return

    rng = np.random.default_rng(0)
    vectors = embeddings(rng, args.n, args.dim)
    queries = embeddings(np.random.default_rng(1), args.queries, args.dim)
    ids = [str(i) for i in range(args.n)]
    exact = np.argsort(-(queries @ vectors.T), axis=1)[:, : args.k]

    def local() -> HNSWLibStore:
        return HNSWLibStore(args.dim, M=16, ef_construction=100, ef_search=64)

    def milvus(uri: str) -> Callable[[], MilvusVectorStore]:
        return lambda: MilvusVectorStore(
            args.dim,
            uri=uri,
            index_params={"M": 16, "efConstruction": 100},
            search_params={"ef": 64},
        )

    rows = [measure("hnswlib (in process)", local(), ids, vectors, queries, exact, args.k)]
    print(rows[-1], flush=True)
    with nullcontext(args.uri) if args.uri else milvus_lite_server() as uri:
        store = milvus(uri)()
        try:
            rows.append(
                measure(
                    "milvus lite (gRPC, same machine)", store, ids, vectors, queries, exact, args.k
                )
            )
            print(rows[-1], flush=True)
        finally:
            try:
                store.drop()
            except BackendError as exc:  # a busy server; the data dir is temporary anyway
                print(f"warning: {exc}", file=sys.stderr)
            store.close()

    print(
        f"{args.n} vectors of dimension {args.dim}, "
        f"{args.queries} single-vector queries, k={args.k}"
    )
    header = (
        f"{'store':<36} {'insert/s':>10} {'insert s':>9} {'1st search s':>12} "
        f"{'p50 ms':>8} {'p95 ms':>8} {'recall':>7}"
    )
    print(header)
    print("-" * len(header))
    for r in rows:
        print(
            f"{r['store']:<36} {r['insert_per_s']:>10.0f} {r['insert_s']:>9.1f} "
            f"{r['first_search_s']:>12.2f} {r['p50_ms']:>8.2f} {r['p95_ms']:>8.2f} "
            f"{r['recall_at_k']:>7.3f}"
        )
    local, remote = rows
    figures = {
        "hnswlib_recall_at_k": Figure(local["recall_at_k"], "higher", 0.05),
        "milvus_recall_at_k": Figure(remote["recall_at_k"], "higher", 0.05),
        "milvus_over_hnswlib_p50": Figure(remote["p50_ms"] / local["p50_ms"], "lower", 1.0),
    }
    settings = {"n": args.n, "dim": args.dim, "queries": args.queries, "k": args.k}
    finish("milvus_vs_local", args, {"settings": settings, "results": rows}, figures)


if __name__ == "__main__":
    main()
