"""Ingest speed and memory: the cookbook's approach against CLIPEmbedder, side by side.

Makes photo-sized JPEGs (1920x1080 and 4000x3000) by upscaling and tiling the images in
``examples/stamps/images`` (or those under ``--data``), and a CLIP model with ViT-B/32's
shape and random weights (it costs what the real one costs; ``--quick`` uses a tiny one).
Then, each in its own subprocess so that its peak RSS is its own:

- **cookbook**: ``preprocess(Image.open(p).convert("RGB"))`` for every image, one
  stacked tensor, one fp32 ``encode_image`` call, a FAISS ``IndexFlatIP``;
- **ours**: ``MultimodalRAG(CLIPEmbedder(..., engine="torch")).add_directory(folder)``
  (hashing, parallel draft decoding, bf16 where the CPU has it, the vector and description
  stores);
- **ours fp32**: the same pipeline with ``precision="fp32"``, to separate the gain of the
  pipeline from that of bf16;
- **query**: one 1080p JPEG, decode + preprocess + encode, p50 and p90 latency, and the
  cosine of its embedding to fp32 and to a full (non-draft) decode.

Also reports the encoder alone, its FLOPs per image and the fraction of the machine's
measured matmul peak that each approach reaches. The encoder alone, and ``--engines``'
split of a query's time, call the embedder's tower directly (``embed_pixels`` on
``pixels_of``'s arrays), without decoding an image first.

Without ``--engines`` the library runs on torch, as the cookbook does. The default,
``engine="auto"``, picks OpenVINO where it is installed, and until that engine is prepared a
run loads the torch model at its first image, inside the timed ingest, and by default leaves
a preparation process behind that competes with the next run. ``--engines`` measures
OpenVINO with its engine prepared first.

    python benchmarks/ingest.py            # 200 and 2,000 images, a few minutes on 2 cores
    python benchmarks/ingest.py --quick    # 8 and 24 small-model images, under a minute
    python benchmarks/ingest.py --engines  # torch and OpenVINO precisions against the cookbook

Prints a table and writes ``benchmarks/results/ingest.json`` (``--engines``:
``benchmarks/results/engines.json``).
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import common
import numpy as np
from common import RESULTS, ROOT, Figure, RSSSampler, finish, machine, make_parser

CACHE = common.CACHE
#: The engine of the runs without ``--engines`` (see the module's docstring).
ENGINE = "torch"


def run_cookbook(folder: Path, checkpoint: Path, **_: object) -> dict:
    """The cookbook's code: everything decoded, stacked and encoded at once, in fp32."""
    import faiss
    import torch
    from PIL import Image

    model, preprocess = common.import_clip().load(str(checkpoint), device="cpu")
    paths = sorted(folder.glob("*.jpg"))
    with RSSSampler() as rss:
        start = time.perf_counter()
        images = [preprocess(Image.open(path).convert("RGB")) for path in paths]
        image_input = torch.tensor(np.stack(images))
        with torch.no_grad():
            features = model.encode_image(image_input).float()
        index = faiss.IndexFlatIP(features.shape[1])
        index.add(features.numpy())
        seconds = time.perf_counter() - start
    return {"images": index.ntotal, "seconds": seconds, **rss.report()}


def run_ours(folder: Path, checkpoint: Path, precision: str = "auto", **_: object) -> dict:
    from multimodal_rag import CLIPEmbedder, MultimodalRAG

    embedder = CLIPEmbedder(checkpoint=checkpoint, engine=ENGINE, precision=precision)
    rag = MultimodalRAG(embedder)
    with RSSSampler() as rss:
        start = time.perf_counter()
        result = rag.add_directory(folder, progress=False)
        seconds = time.perf_counter() - start
    return {
        **rss.report(),
        "images": len(result.added),
        "skipped": len(result.skipped),
        "seconds": seconds,
        "precision": embedder.precision,
        "workers": embedder.num_workers,
    }


def run_query(folder: Path, checkpoint: Path, repeat: int = 30, **_: object) -> dict:
    """Latency of one query image, and how far bf16 and draft decoding move its vector."""
    from multimodal_rag import CLIPEmbedder, MultimodalRAG

    paths = sorted(folder.glob("*.jpg"))
    embedder = CLIPEmbedder(checkpoint=checkpoint, engine=ENGINE)
    rag = MultimodalRAG(embedder)
    rag.add(paths[:64], progress=False)
    embed_ms, search_ms = [], []
    for i in range(repeat + 3):
        path = paths[i % len(paths)]
        start = time.perf_counter()
        embedder.embed_images([path])
        middle = time.perf_counter()
        rag.search(image=path, k=5)
        end = time.perf_counter()
        if i >= 3:  # the first calls warm up the allocator and oneDNN's kernels
            embed_ms.append((middle - start) * 1000)
            search_ms.append((end - middle) * 1000)
    sample = paths[:32]
    fast = embedder.embed_images(sample)
    exact = CLIPEmbedder(
        checkpoint=checkpoint, engine=ENGINE, precision="fp32", draft=False
    ).embed_images(sample)
    fp32_draft = CLIPEmbedder(checkpoint=checkpoint, engine=ENGINE, precision="fp32").embed_images(
        sample
    )
    return {
        "precision": embedder.precision,
        "embed_ms_p50": statistics.median(embed_ms),
        "embed_ms_p90": float(np.percentile(embed_ms, 90)),
        "search_ms_p50": statistics.median(search_ms),
        "min_cosine_to_fp32_full_decode": float(np.min(np.sum(fast * exact, axis=1))),
        "min_cosine_bf16_to_fp32": float(np.min(np.sum(fast * fp32_draft, axis=1))),
        "min_cosine_draft_to_full_decode_fp32": float(np.min(np.sum(fp32_draft * exact, axis=1))),
    }


def run_encoder(checkpoint: Path, batch: int = 32, **_: object) -> dict:
    """The encoder alone, its FLOPs per image, and the machine's matmul peak."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from multimodal_rag import CLIPEmbedder

    embedder = CLIPEmbedder(checkpoint=checkpoint, engine=ENGINE)
    pixels = np.random.default_rng(0).standard_normal((batch, 3, 224, 224)).astype(np.float32)
    with FlopCounterMode(display=False) as counter:
        embedder.embed_pixels(pixels[:1])
    flops = counter.get_total_flops()
    out = {"flops_per_image": flops, "threads": torch.get_num_threads(), "batch": batch}
    for precision in ("fp32", embedder.precision):
        encoder = (
            embedder
            if precision == embedder.precision
            else CLIPEmbedder(checkpoint=checkpoint, engine=ENGINE, precision=precision)
        )
        encoder.embed_pixels(pixels)
        start = time.perf_counter()
        for _ in range(3):
            encoder.embed_pixels(pixels)
        out[f"encoder_images_per_s_{precision}"] = 3 * batch / (time.perf_counter() - start)
    dtypes = {"fp32": torch.float32}
    # bf16's peak only where the embedder runs bf16: a CPU without bf16 instructions gets
    # torch's reference GEMM, on one thread at well under 1 GFLOP/s (minutes for these
    # products), and no approach here runs in it to be compared with that peak.
    if "bf16" in embedder.precision:
        dtypes["bf16"] = torch.bfloat16
    for name, dtype in dtypes.items():
        a = torch.randn(2048, 2048, dtype=dtype)
        b = torch.randn(2048, 2048, dtype=dtype)
        for _ in range(2):
            a @ b
        start = time.perf_counter()
        for _ in range(5):
            a @ b
        out[f"matmul_peak_gflops_{name}"] = 5 * 2 * 2048**3 / (time.perf_counter() - start) / 1e9
    return out


def run_engine(
    folder: Path,
    checkpoint: Path,
    engine: str = "torch",
    precision: str = "auto",
    cache_dir: str = "",
    repeat: int = 30,
    **_: object,
) -> dict:
    """One engine and precision: ingest through the facade, then one query image and one text."""
    from multimodal_rag import CLIPEmbedder, MultimodalRAG

    paths = sorted(folder.glob("*.jpg"))
    load_start = time.perf_counter()
    embedder = CLIPEmbedder(
        checkpoint=checkpoint, engine=engine, precision=precision, cache_dir=cache_dir or None
    )
    load_seconds = time.perf_counter() - load_start
    rag = MultimodalRAG(embedder)
    with RSSSampler() as rss:
        start = time.perf_counter()
        result = rag.add_directory(folder, progress=False)
        seconds = time.perf_counter() - start
    image_ms, text_ms = [], []
    for i in range(repeat + 3):
        start = time.perf_counter()
        embedder.embed_images([paths[i % len(paths)]])
        middle = time.perf_counter()
        embedder.embed_texts([f"a red stamp with a bird, number {i}"])
        end = time.perf_counter()
        if i >= 3:  # the first calls warm up allocators and kernels
            image_ms.append((middle - start) * 1000)
            text_ms.append((end - middle) * 1000)
    # Where one query image's time goes: decoding and preprocessing, then the image tower
    # alone on one image; and the tower alone on a batch (the fraction of the matmul peak).
    pixels_ms, encode_ms = [], []
    for i in range(repeat):
        start = time.perf_counter()
        one = embedder.pixels_of(paths[i % len(paths)])[None]
        middle = time.perf_counter()
        embedder.embed_pixels(one)
        pixels_ms.append((middle - start) * 1000)
        encode_ms.append((time.perf_counter() - middle) * 1000)
    batch = np.stack([embedder.pixels_of(path) for path in paths[:32]])
    embedder.embed_pixels(batch)
    encoder_seconds = []
    for _ in range(3):
        start = time.perf_counter()
        embedder.embed_pixels(batch)
        encoder_seconds.append(time.perf_counter() - start)
    sample = embedder.embed_images(paths[:32])
    return {
        "query_pixels_ms_p50": statistics.median(pixels_ms),
        "query_encode_ms_p50": statistics.median(encode_ms),
        "encoder_images_per_s": len(batch) / statistics.median(encoder_seconds),
        **rss.report(),
        "images": len(result.added),
        "seconds": seconds,
        "load_seconds": load_seconds,
        "precision": embedder.precision,
        "runtime": embedder.runtime,
        "query_image_ms_p50": statistics.median(image_ms),
        "query_text_ms_p50": statistics.median(text_ms),
        "vectors": sample.tolist(),
    }


def run_peaks(checkpoint: Path, **_: object) -> dict:
    """The machine's matmul peaks per precision, as OpenVINO reaches them, and the towers' FLOPs.

    A peak is the best of a few shapes (a square 2048 product, and ViT-B/32's MLP on a batch
    of 32 images' tokens), each one matrix product compiled by OpenVINO in that precision on
    every core; int8 is the same product quantized by NNCF, as the towers are. Torch's fp32
    product is timed too. FLOPs per image and per short text come from torch's counter on
    the model itself (a multiply-add counts two).
    """
    import contextlib
    import io
    import warnings

    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from multimodal_rag.embedders import openvino_engine as ove
    from multimodal_rag.embedders.clip_towers import tower_modules

    warnings.simplefilter("ignore")
    ov, nncf = ove.import_openvino(), ove.import_nncf()
    core = ov.Core()

    def best_seconds(call: object, repeat: int = 7) -> float:
        for _ in range(2):
            call()  # type: ignore[operator]
        times = []
        for _ in range(repeat):
            start = time.perf_counter()
            call()  # type: ignore[operator]
            times.append(time.perf_counter() - start)
        return statistics.median(times)

    out: dict = {"threads": torch.get_num_threads()}
    peaks: dict[str, float] = {}
    for m, k, n in ((2048, 2048, 2048), (32 * 50, 768, 3072)):
        torch.manual_seed(0)
        linear = torch.nn.Linear(k, n, bias=False).eval()
        x = torch.randn(m, k)
        model = ov.convert_model(linear, example_input=x)
        with contextlib.redirect_stdout(io.StringIO()):
            quantized = nncf.quantize(model, nncf.Dataset([x[:64].numpy()]), subset_size=1)
        flops = 2 * m * k * n
        for label, graph, hint in (
            ("fp32", model, "f32"),
            ("bf16", model, "bf16"),
            ("int8", quantized, "f32"),
        ):
            compiled = core.compile_model(
                graph, "CPU", {"INFERENCE_PRECISION_HINT": hint, "PERFORMANCE_HINT": "LATENCY"}
            )
            request = compiled.create_infer_request()
            inputs = x.numpy()
            gflops = flops / best_seconds(functools.partial(request.infer, [inputs])) / 1e9
            peaks[label] = max(peaks.get(label, 0.0), gflops)
        b = torch.randn(k, n)
        with torch.no_grad():
            gflops = flops / best_seconds(functools.partial(torch.matmul, x, b)) / 1e9
        peaks["torch fp32"] = max(peaks.get("torch fp32", 0.0), gflops)
    out["matmul_peak_gflops"] = peaks

    def gflop(call: object, inputs: object) -> float:
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            call(inputs)  # type: ignore[operator]
        return counter.get_total_flops() / 1e9

    clip = common.import_clip()
    model, _ = clip.load(str(checkpoint), device="cpu", jit=False)
    model = model.float().eval()
    tokens = clip.tokenize(["a red stamp with a bird, number 7"])
    length = int(tokens.argmax(dim=1).max()) + 1
    pixels = torch.zeros(1, 3, 224, 224)
    out["image_gflop"] = gflop(model.encode_image, pixels)  # the cookbook's
    # As the library runs the towers: the last block only for the class token, and texts cut
    # after their end token.
    image_tower, text_tower = tower_modules(model)
    out["image_tower_gflop"] = gflop(image_tower, pixels)
    out["text_gflop"] = gflop(text_tower, tokens[:, :length])
    return out


#: The engines and precisions compared with the cookbook, interleaved round by round.
ENGINE_CONFIGS = [
    ("torch", "fp32"),
    ("torch", "auto"),
    ("openvino", "fp32"),
    ("openvino", "bf16"),
    ("openvino", "int8"),
    ("openvino", "auto"),
]


#: The contenders run again on the large set: the cookbook and the fastest engine settings.
LARGE_CONFIGS = [("openvino", "int8"), ("openvino", "auto")]

def compare_engines(rounds: int, quick: bool, large: int) -> None:
    """The machine's matmul peaks first; then the cookbook and every engine/precision on the
    same 1080p photos, interleaved in rounds; then the cookbook and the fastest settings on
    ``large`` photos; and what fraction of the peaks each engine reaches.

    The machine may be busy with other work: each round runs every contender once, back
    to back, and each ratio is taken within its round, so a slow moment hits all alike.
    """
    import importlib.util

    count = 24 if quick else 200
    large = 96 if quick else large
    checkpoint = common.vit_b_32_checkpoint()
    folder = common.photos("1080p", count)
    large_folder = common.photos("1080p", large)
    configs = [c for c in ENGINE_CONFIGS if c[0] == "torch" or importlib.util.find_spec("openvino")]
    cache_dir = CACHE / "engine-cache"

    def cookbook_on(photos: Path) -> dict:
        result = in_subprocess("cookbook", folder=photos, checkpoint=checkpoint)
        result["images_per_s"] = result["images"] / result["seconds"]
        return result

    def engine_on(
        photos: Path, engine: str, precision: str, cookbook: dict | None, repeat: int
    ) -> dict:
        """One engine's run, with its ratio to the cookbook's run next to it."""
        result = in_subprocess(
            "engine",
            folder=photos,
            checkpoint=checkpoint,
            engine=engine,
            precision=precision,
            cache_dir=str(cache_dir),
            repeat=repeat,
        )
        result["images_per_s"] = result["images"] / result["seconds"]
        if cookbook is not None:
            result["vs_cookbook"] = result["images_per_s"] / cookbook["images_per_s"]
        return result

    repeat = 10 if quick else 30
    print("the machine's matmul peaks", flush=True)
    peaks = in_subprocess("peaks", checkpoint=checkpoint) if importlib.util.find_spec("openvino") else None
    print("warming the engine cache (conversion, int8 calibration, auto timing)", flush=True)
    for engine, precision in configs:
        if engine != "torch" or precision == "auto":
            engine_on(folder, engine, precision, None, repeat=1)
    rows: dict[str, list[dict]] = {}
    for round_ in range(rounds):
        print(f"round {round_ + 1} of {rounds}", flush=True)
        cookbook = cookbook_on(folder)
        rows.setdefault("cookbook", []).append(cookbook)
        reference = None
        for engine, precision in configs:
            result = engine_on(folder, engine, precision, cookbook, repeat)
            vectors = np.asarray(result.pop("vectors"), dtype=np.float32)
            if reference is None:  # torch fp32 runs first
                reference = vectors
            cosines = np.sum(vectors * reference, axis=1)
            result["min_cosine_to_torch_fp32"] = float(cosines.min())
            rows.setdefault(f"{engine} {precision}", []).append(result)
    print(f"the cookbook and {', '.join(' '.join(c) for c in LARGE_CONFIGS)} on {large} photos", flush=True)
    large_rows: dict[str, dict] = {"cookbook": cookbook_on(large_folder)}
    for engine, precision in [c for c in LARGE_CONFIGS if c in configs]:
        result = engine_on(large_folder, engine, precision, large_rows["cookbook"], repeat)
        result.pop("vectors")
        large_rows[f"{engine} {precision}"] = result

    print()
    print(
        f"{'engine precision':<17} {'runs as':<16} {'img/s':>6} {'vs cookbook':>11} "
        f"{'image p50 ms':>12} {'text p50 ms':>11} {'peak RSS MB':>11} {'min cos':>8} "
        f"{'of peak':>7}  {'encoder':>7}"
    )
    summary = {}
    for label, results in rows.items():
        ips = statistics.median(r["images_per_s"] for r in results)
        ratio = statistics.median(r.get("vs_cookbook", 1.0) for r in results)
        image = statistics.median(r.get("query_image_ms_p50", float("nan")) for r in results)
        text = statistics.median(r.get("query_text_ms_p50", float("nan")) for r in results)
        rss = max(r["peak_rss_mb"] for r in results)
        cos = min(r.get("min_cosine_to_torch_fp32", 1.0) for r in results)
        runs_as = results[-1].get("precision", "fp32")
        fraction = _fraction_of_peak(ips, runs_as, label, peaks)
        encoder = statistics.median(r.get("encoder_images_per_s", float("nan")) for r in results)
        encoder_fraction = _fraction_of_peak(encoder, runs_as, label, peaks)
        shown = "  ".join(
            f"{f:>7.0%}" if f is not None and f == f else f"{'-':>7}"
            for f in (fraction, encoder_fraction)
        )
        print(
            f"{label:<17} {runs_as:<16} {ips:>6.1f} {ratio:>10.2f}x {image:>12.1f} "
            f"{text:>11.1f} {rss:>11.0f} {cos:>8.5f} {shown}"
        )
        summary[label] = {
            "images_per_s": ips,
            "vs_cookbook": ratio,
            "query_image_ms_p50": image,
            "query_text_ms_p50": text,
            "peak_rss_mb": rss,
            "min_cosine_to_torch_fp32": cos,
            "runs_as": runs_as,
            "fraction_of_matmul_peak": fraction,
            "encoder_images_per_s": encoder,
            "encoder_fraction_of_matmul_peak": encoder_fraction,
            "query_pixels_ms_p50": statistics.median(
                r.get("query_pixels_ms_p50", float("nan")) for r in results
            ),
            "query_encode_ms_p50": statistics.median(
                r.get("query_encode_ms_p50", float("nan")) for r in results
            ),
            "runs": results,
        }
    print(f"\non {large} photos (one run each):")
    print(
        f"{'engine precision':<17} {'img/s':>6} {'vs cookbook':>11} {'peak RSS MB':>11} "
        f"{f'vs {count} photos':>14}"
    )
    for label, result in large_rows.items():
        small_rss = max(r["peak_rss_mb"] for r in rows[label])
        result["peak_rss_vs_small"] = result["peak_rss_mb"] / small_rss
        print(
            f"{label:<17} {result['images_per_s']:>6.1f} {result.get('vs_cookbook', 1.0):>10.2f}x "
            f"{result['peak_rss_mb']:>11.0f} {result['peak_rss_vs_small']:>13.2f}x"
        )
    if peaks is not None:
        gflops = peaks["matmul_peak_gflops"]
        print(
            f"\nmatmul peak on {peaks['threads']} threads (GFLOP/s): "
            + ", ".join(f"{k} {v:.0f}" for k, v in gflops.items())
            + f"; ViT-B/32 image: encode_image {peaks['image_gflop']:.2f} GFLOP, the library's "
            + f"tower {peaks['image_tower_gflop']:.2f}; one short text "
            + f"{peaks['text_gflop']:.3f} GFLOP"
        )
    RESULTS.mkdir(parents=True, exist_ok=True)
    out = RESULTS / "engines.json"
    report = {
        "machine": machine(),
        "settings": {"rounds": rounds, "n": count, "large_n": large},
        "engines": summary,
        "large": large_rows,
        "peaks": peaks,
    }
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(f"\nwrote {out} (ratios are medians over rounds, each taken within its round)")


def _fraction_of_peak(
    images_per_s: float, runs_as: str, label: str, peaks: dict | None
) -> float | None:
    """The share of the machine's matmul peak, in the image tower's precision, an engine's
    ingest reaches (FLOPs per image times images per second); torch against torch's peak."""
    if peaks is None:
        return None
    precision = runs_as.split(",")[0].strip()
    key = "torch fp32" if label.startswith(("torch", "cookbook")) and precision == "fp32" else precision
    peak = peaks["matmul_peak_gflops"].get(key)
    # The cookbook runs CLIP's encode_image; the engines run the towers, which skip part of
    # the last block: each is credited with the arithmetic it does.
    gflop = peaks["image_gflop" if label == "cookbook" else "image_tower_gflop"]
    return images_per_s * gflop / peak if peak else None


APPROACHES = {
    "engine": run_engine,
    "cookbook": run_cookbook,
    "ours": run_ours,
    "query": run_query,
    "encoder": run_encoder,
    "peaks": run_peaks,
}


def in_subprocess(approach: str, **kwargs: object) -> dict:
    """Run one approach in a fresh interpreter; return its result and its own peak RSS."""
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")]),
    }
    spec = json.dumps(
        {
            "approach": approach,
            **{k: str(v) if isinstance(v, Path) else v for k, v in kwargs.items()},
        }
    )
    done = subprocess.run(
        [sys.executable, "-W", "ignore", __file__, "--child", spec],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"{approach} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def child(spec: str) -> None:
    args = json.loads(spec)
    approach = APPROACHES[args.pop("approach")]
    for key in ("folder", "checkpoint"):
        if key in args:
            args[key] = Path(args[key])
    result = approach(**args)
    # ru_maxrss is in kilobytes on Linux.
    result["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps(result))


# -- report --------------------------------------------------------------------------


def main() -> None:
    parser = make_parser(__doc__, data=True)
    parser.add_argument(
        "--cookbook-large",
        action="store_true",
        help="also run the cookbook on the large set (slow; holds every image in memory at once)",
    )
    parser.add_argument(
        "--large", type=int, default=2000, help="images in the large run (default 2000)"
    )
    parser.add_argument(
        "--engines",
        action="store_true",
        help="compare the engines and precisions with the cookbook, interleaved in rounds",
    )
    parser.add_argument("--rounds", type=int, default=2, help="rounds of --engines (default 2)")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child)
        return
    if args.engines:
        compare_engines(args.rounds, args.quick, args.large)
        return

    small, large, big_photos = (8, 24, 0) if args.quick else (200, args.large, 48)
    print("preparing inputs (cached in", CACHE, ")", flush=True)
    checkpoint = common.tiny_checkpoint() if args.quick else common.vit_b_32_checkpoint()
    folders = {n: common.photos("1080p", n, args.data) for n in (small, large)}

    runs: list[dict] = []

    def record(
        label: str, approach: str, folder: Path, count: int, photo: str, **kwargs: object
    ) -> None:
        print(f"running {label} on {count} {photo} JPEGs", flush=True)
        result = in_subprocess(approach, folder=folder, checkpoint=checkpoint, **kwargs)
        result.update(
            approach=label, photo=photo, n=count, images_per_s=result["images"] / result["seconds"]
        )
        runs.append(result)

    record("cookbook", "cookbook", folders[small], small, "1080p")
    record("ours", "ours", folders[small], small, "1080p")
    if not args.quick:
        record("ours fp32", "ours", folders[small], small, "1080p", precision="fp32")
    if args.cookbook_large:
        record("cookbook", "cookbook", folders[large], large, "1080p")
    record("ours", "ours", folders[large], large, "1080p")
    if big_photos:
        folder_12mp = common.photos("12MP", big_photos, args.data)
        record("cookbook", "cookbook", folder_12mp, big_photos, "12MP")
        record("ours", "ours", folder_12mp, big_photos, "12MP")
    print("timing the encoder and one query", flush=True)
    encoder = in_subprocess("encoder", checkpoint=checkpoint, batch=8 if args.quick else 32)
    query = in_subprocess(
        "query", folder=folders[small], checkpoint=checkpoint, repeat=5 if args.quick else 30
    )

    flops = encoder["flops_per_image"]
    peak = {
        name: encoder[f"matmul_peak_gflops_{name}"]
        for name in ("fp32", "bf16")
        if f"matmul_peak_gflops_{name}" in encoder
    }
    for run in runs:
        precision = run.get("precision", "fp32")
        run["matmul_peak_gflops"] = peak.get(precision, peak["fp32"])
        run["fraction_of_peak"] = run["images_per_s"] * flops / 1e9 / run["matmul_peak_gflops"]
        cookbook = next(
            (
                r
                for r in runs
                if r["approach"] == "cookbook" and r["photo"] == run["photo"] and r["n"] <= run["n"]
            ),
            None,
        )
        run["speedup_vs_cookbook"] = (
            run["images_per_s"] / cookbook["images_per_s"] if cookbook else None
        )

    print()
    print(
        f"{'approach':<10} {'photos':<6} {'n':>5} {'img/s':>6} {'vs cookbook':>11} "
        f"{'peak RSS MB':>11} {'ingest +MB':>10} {'precision':>9} {'of peak':>7}"
    )
    for run in runs:
        ratio = f"{run['speedup_vs_cookbook']:.2f}x" if run["speedup_vs_cookbook"] else "-"
        growth = run["ingest_peak_rss_mb"] - run["rss_before_ingest_mb"]
        print(
            f"{run['approach']:<10} {run['photo']:<6} {run['n']:>5} "
            f"{run['images_per_s']:>6.1f} {ratio:>11} {run['peak_rss_mb']:>11.0f} {growth:>10.0f} "
            f"{run.get('precision', 'fp32'):>9} "
            f"{run['fraction_of_peak']:>7.0%}"
        )
    ours = {r["n"]: r for r in runs if r["approach"] == "ours" and r["photo"] == "1080p"}
    rss_ratio = ours[large]["peak_rss_mb"] / ours[small]["peak_rss_mb"]
    print()
    print(
        f"peak RSS, ours, {large} vs {small} images: {rss_ratio:.2f}x "
        "(peak RSS includes loading the model; 'ingest +MB' is what the ingest itself added)"
    )
    print(
        f"encoder alone (batch {encoder['batch']}, {encoder['threads']} threads): "
        + ", ".join(
            f"{k.rsplit('_', 1)[1]} {v:.1f} img/s"
            for k, v in encoder.items()
            if k.startswith("encoder_")
        )
        + f"; {flops / 1e9:.2f} GFLOP/image; matmul peak "
        + ", ".join(f"{name} {gflops:.0f}" for name, gflops in peak.items())
        + " GFLOP/s"
    )
    print(
        f"one 1080p query image ({query['precision']}): embed p50 {query['embed_ms_p50']:.1f} ms, "
        f"p90 {query['embed_ms_p90']:.1f} ms; search on top p50 {query['search_ms_p50']:.1f} ms"
    )
    print(
        f"min cosine over 32 photos: bf16 vs fp32 {query['min_cosine_bf16_to_fp32']:.5f}; "
        f"draft vs full decode {query['min_cosine_draft_to_full_decode_fp32']:.5f}; "
        f"ours vs cookbook-exact {query['min_cosine_to_fp32_full_decode']:.5f}"
    )

    report = {
        "model": "tiny random CLIP" if args.quick else "random ViT-B/32",
        "runs": runs,
        "peak_rss_ratio_large_vs_small": rss_ratio,
        "encoder": encoder,
        "query": query,
    }
    cookbook, mine = runs[0], runs[1]
    figures = {
        "images": Figure(sum(r["images"] for r in runs), "equal", 0.0),
        "speedup_vs_cookbook": Figure(mine["speedup_vs_cookbook"], "higher", 0.5),
        "ours_images_per_s": Figure(mine["images_per_s"], "higher", 0.6),
        "cookbook_images_per_s": Figure(cookbook["images_per_s"], "higher", 0.6),
        "peak_rss_ratio_large_vs_small": Figure(rss_ratio, "lower", 0.2),
        "query_embed_ms_p50": Figure(query["embed_ms_p50"], "lower", 2.0),
        "min_cosine_to_fp32_full_decode": Figure(query["min_cosine_to_fp32_full_decode"], "higher", 0.01),
    }
    finish("ingest", args, report, figures)


if __name__ == "__main__":
    main()
