"""Load on ``multimodal-rag serve``: concurrent clients searching and asking over loopback.

A knowledge base of the eight ``examples/stamps`` (or of ``--data``, a folder with a
``description.jsonl``) with a tiny random-weights CLIP (or ``--checkpoint``) is served by a real
``multimodal-rag serve`` process with the offline answerer, on a free loopback port. Async httpx
clients then send a mix of ``POST /v1/search`` (a photo upload) and ``POST /v1/ask`` (a photo
and a question; every other one streamed as server-sent events, read to the end), each client
one request at a time, for a warm-up and then the measured duration.

Reported: requests per second, p50/p95/p99 latency per kind and overall, errors (any status
other than 200, or a stream without its ``done`` event; must be 0), and the server's resident
memory after the warm-up and at the end (growth must stay under 5 %).

    python benchmarks/serve_load.py                 # 60 s at 8 clients
    python benchmarks/serve_load.py --quick         # 10 s at 4 clients
    python benchmarks/serve_load.py --clients 16 --duration 120

    python benchmarks/serve_load.py --vit-b-32      # a random model of ViT-B/32's shape

With ``--vit-b-32`` (or ``--checkpoint``) the embedder's own single-image throughput is also
measured, in this process, on the same uploads (decode and embed, one image at a time): every
request embeds one image, so the server's requests/s should come within 20 % of it.

Prints a table and writes ``benchmarks/results/serve_load.json``. Every request goes to
127.0.0.1; the run stops by itself after the duration.
"""

from __future__ import annotations

import asyncio
import io
import os
import random
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

import common
from common import EXAMPLE_STAMPS, ROOT, Figure, finish, make_parser, rss_mib

QUESTIONS = ("What is this?", "What bird is this?", "Which item is it, and what is it used for?")


def build_kb(work: Path, checkpoint: Path | None, data: Path | None) -> tuple[Path, int]:
    from multimodal_rag import CLIPEmbedder, MultimodalRAG

    folder = data if data is not None else EXAMPLE_STAMPS
    checkpoint = checkpoint or common.tiny_checkpoint()
    with MultimodalRAG.create(work / "kb", embedder=CLIPEmbedder(checkpoint=checkpoint)) as rag:
        rag.add_directory(folder / "images", descriptions=folder / "description.jsonl", progress=False)
        return work / "kb", len(rag)


def query_photos(count: int = 16) -> list[bytes]:
    """JPEG photos to upload: the example queries and images, re-encoded at photo-like sizes."""
    from PIL import Image

    files = sorted((EXAMPLE_STAMPS / "queries").glob("*")) + sorted((EXAMPLE_STAMPS / "images").glob("*"))
    photos = []
    for n, file in enumerate(files[:count]):
        with Image.open(file) as image:
            picture = image.convert("RGB").resize((480 + 16 * n, 360 + 8 * n))
        buffer = io.BytesIO()
        picture.save(buffer, format="JPEG", quality=88)
        photos.append(buffer.getvalue())
    return photos


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_server(kb: Path, port: int, log: Path) -> subprocess.Popen[bytes]:
    env = {**os.environ, "PYTHONPATH": str(ROOT / "src")}
    env.pop("MULTIMODAL_RAG_TOKEN", None)
    with log.open("w") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "multimodal_rag", "serve", str(kb), "--port", str(port),
             "--answerer", "extractive", "--log-level", "warning", "--reload-interval", "2"],
            stdout=out, stderr=subprocess.STDOUT, env=env,
        )  # fmt: skip
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"serve exited:\n{log.read_text()}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2) as response:
                if response.status == 200:
                    return process
        except OSError:
            time.sleep(0.1)
    process.kill()
    raise RuntimeError(f"serve did not start:\n{log.read_text()}")


class Tally:
    def __init__(self) -> None:
        self.latencies: dict[str, list[float]] = {"search": [], "ask": [], "ask-stream": []}
        self.errors: list[str] = []


async def one_request(client: Any, kind: str, photo: bytes, rng: random.Random) -> None:
    files = {"image": ("photo.jpg", photo, "image/jpeg")}
    if kind == "search":
        response = await client.post("/v1/search", files=files, data={"k": "5"})
        if response.status_code != 200 or "hits" not in response.json():
            raise RuntimeError(f"search: {response.status_code} {response.text[:200]}")
        return
    data = {"question": rng.choice(QUESTIONS), "k": "3"}
    if kind == "ask":
        response = await client.post("/v1/ask", files=files, data=data)
        if response.status_code != 200 or "answer" not in response.json():
            raise RuntimeError(f"ask: {response.status_code} {response.text[:200]}")
        return
    async with client.stream("POST", "/v1/ask", files=files, data={**data, "stream": "true"}) as response:
        body = (await response.aread()).decode()
    if response.status_code != 200 or not body.endswith("event: done\ndata: {}\n\n"):
        raise RuntimeError(f"ask-stream: {response.status_code} {body[-200:]}")


async def run_clients(base_url: str, clients: int, seconds: float, ask_share: float, photos: list[bytes], tally: Tally | None) -> float:
    import httpx

    deadline = time.perf_counter() + seconds

    async def client_loop(n: int, client: httpx.AsyncClient) -> None:
        rng = random.Random(n)
        asks = 0
        while time.perf_counter() < deadline:
            if rng.random() < ask_share:
                asks += 1
                kind = "ask-stream" if asks % 2 == 0 else "ask"
            else:
                kind = "search"
            started = time.perf_counter()
            try:
                await one_request(client, kind, rng.choice(photos), rng)
            except Exception as exc:
                if tally is not None:
                    tally.errors.append(f"{kind}: {type(exc).__name__}: {exc}"[:300])
                continue
            if tally is not None:
                tally.latencies[kind].append(time.perf_counter() - started)

    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(base_url=base_url, timeout=30.0, limits=limits) as client:
        started = time.perf_counter()
        await asyncio.gather(*(client_loop(n, client) for n in range(clients)))
        return time.perf_counter() - started


def embedder_images_per_s(checkpoint: Path, photos: list[bytes], seconds: float) -> float:
    """Images per second the embedder itself manages on the uploads, one at a time, as a server
    request does: decode, preprocess and embed."""
    from multimodal_rag import CLIPEmbedder

    embedder = CLIPEmbedder(checkpoint=checkpoint)
    embedder.embed_images([photos[0]])  # warm up (and settle the precision choice)
    done, started = 0, time.perf_counter()
    while time.perf_counter() - started < seconds:
        embedder.embed_images([photos[done % len(photos)]])
        done += 1
    return done / (time.perf_counter() - started)


def percentiles(values: list[float]) -> dict[str, float]:
    if not values:
        return {"count": 0}
    ordered = sorted(values)

    def at(share: float) -> float:
        return ordered[min(len(ordered) - 1, round(share * (len(ordered) - 1)))] * 1000

    return {"count": len(values), "p50_ms": at(0.50), "p95_ms": at(0.95), "p99_ms": at(0.99), "mean_ms": statistics.fmean(values) * 1000}


def main() -> None:
    parser = make_parser(__doc__, data=True)
    parser.add_argument("--duration", type=float, help="measured seconds (default 60; 10 with --quick)")
    parser.add_argument("--warmup", type=float, default=None, help="seconds of load before measuring (default 5; 3 with --quick)")
    parser.add_argument("--clients", type=int, help="concurrent clients (default 8; 4 with --quick)")
    parser.add_argument("--ask-share", type=float, default=0.3, help="share of requests that ask (default 0.3)")
    parser.add_argument("--checkpoint", type=Path, default=None, help="CLIP weights (default: a tiny random model)")
    parser.add_argument("--vit-b-32", action="store_true", help="a random-weights CLIP of ViT-B/32's shape")
    args = parser.parse_args()
    duration = args.duration or (10.0 if args.quick else 60.0)
    args.clients = args.clients or (4 if args.quick else 8)
    warmup = args.warmup if args.warmup is not None else (3.0 if args.quick else 5.0)

    if args.vit_b_32:
        args.checkpoint = common.vit_b_32_checkpoint()
    work = Path(tempfile.mkdtemp(prefix="multimodal-rag-serve-load-"))
    try:
        kb, images = build_kb(work, args.checkpoint, args.data)
        photos = query_photos()
        port = free_port()
        process = start_server(kb, port, work / "serve.log")
        base_url = f"http://127.0.0.1:{port}"
        try:
            asyncio.run(run_clients(base_url, args.clients, warmup, args.ask_share, photos, None))
            rss_start = rss_mib(process.pid)
            tally = Tally()
            elapsed = asyncio.run(run_clients(base_url, args.clients, duration, args.ask_share, photos, tally))
            rss_end = rss_mib(process.pid)
        finally:
            process.terminate()
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                process.kill()
    finally:
        shutil.rmtree(work, ignore_errors=True)

    baseline = embedder_images_per_s(args.checkpoint, photos, max(10.0, duration / 4)) if args.checkpoint else None
    everything = [value for values in tally.latencies.values() for value in values]
    overall = percentiles(everything)
    growth = (rss_end - rss_start) / rss_start
    report: dict[str, Any] = {
        "knowledge_base": {"images": images, "model": str(args.checkpoint) if args.checkpoint else "tiny random CLIP"},
        "clients": args.clients,
        "ask_share": args.ask_share,
        "warmup_s": warmup,
        "duration_s": elapsed,
        "requests": len(everything),
        "requests_per_s": len(everything) / elapsed,
        "errors": len(tally.errors),
        "error_samples": tally.errors[:5],
        "latency": {"all": overall, **{kind: percentiles(values) for kind, values in tally.latencies.items()}},
        "p99_over_p50": overall["p99_ms"] / overall["p50_ms"] if everything else None,
        "rss_start_mib": rss_start,
        "rss_end_mib": rss_end,
        "rss_growth": growth,
        "embedder_images_per_s": baseline,
        "server_over_embedder": len(everything) / elapsed / baseline if baseline else None,
    }
    print(f"multimodal-rag serve: {images} images, {args.clients} clients, {elapsed:.1f} s measured after {warmup:.0f} s warm-up")
    print(f"{'kind':<12}{'requests':>10}{'req/s':>9}{'p50 ms':>9}{'p95 ms':>9}{'p99 ms':>9}")
    for kind, stats in (("all", overall), *((k, percentiles(v)) for k, v in tally.latencies.items())):
        if stats["count"]:
            print(
                f"{kind:<12}{stats['count']:>10}{stats['count'] / elapsed:>9.1f}{stats['p50_ms']:>9.1f}"
                f"{stats['p95_ms']:>9.1f}{stats['p99_ms']:>9.1f}"
            )
    print(f"errors: {len(tally.errors)}   p99/p50: {report['p99_over_p50']:.2f}")
    print(f"server RSS: {report['rss_start_mib']:.1f} MiB after warm-up, {report['rss_end_mib']:.1f} MiB at the end ({growth:+.1%})")
    if baseline:
        print(
            f"the embedder alone: {baseline:.1f} images/s, one at a time; the server: "
            f"{report['server_over_embedder']:.0%} of it (target at least 80 %)"
        )
    figures = {
        "errors": Figure(len(tally.errors), "equal", 0.0),
        "requests_per_s": Figure(report["requests_per_s"], "higher", 0.6),
        "p50_ms": Figure(overall.get("p50_ms", 0.0), "lower", 2.0),
    }
    finish("serve_load", args, report, figures)
    if tally.errors or growth >= 0.05:
        sys.exit(1)


if __name__ == "__main__":
    main()
