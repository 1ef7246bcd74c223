"""Which open_clip model to choose, and what the fast towers and OpenVINO int8 gain on each.

Each model is built from its open_clip config with random weights (it costs what the real
one costs; nothing is downloaded). Side by side, in one process, interleaved call by call
(so a busy moment of a shared machine hits every contender alike):

- **open_clip**: open_clip's own ``encode_image`` / ``encode_text``, torch fp32;
- **fast**: the towers ``OpenCLIPEmbedder`` runs (``openclip_towers``), torch fp32;
- **int8** (the models of ``--int8``; by default SigLIP 2 ViT-B-16): the fast towers through
  the engine path the embedder uses with ``engine="openvino", precision="int8"``:
  converted, quantized by NNCF on preprocessed 1080p photos, and held to the quality gate
  against torch fp32 on held-out photos (the gate's cosines are printed). Its engine cache
  is a fresh folder, so the conversion and calibration are timed too.

Figures, medians of the timed calls:

- **img/s**: the image tower on a batch of 32 preprocessed images (the ingest rate the
  encoder allows; decoding runs in parallel to it), and each ratio taken call by call;
- **query ms**: one query photo, a 1080p JPEG decoded and preprocessed as the embedder
  does, through the image tower (p50 over several photos);
- **text ms**: one text query through the text tower.

Also lists each model's vector size, input size, parameters, which path each image tower
takes, and the published retrieval quality where there is one (see ``docs/embedders.md``).

    python benchmarks/models.py                        # the default models, several minutes
    python benchmarks/models.py --models ViT-B-32      # others: any open_clip.list_models()
    python benchmarks/models.py --int8 ViT-B-32 ViT-B-16-SigLIP2   # int8 for those too
    python benchmarks/models.py --quick                # ViT-B-32 only, batch 2, no int8

The towers are built and run as the embedder runs them (its loading, tower and engine
helpers), without its tokenizer, whose files for some models would need a download:
those helpers have no public names. Without ``open_clip`` (``pip install
'multimodal-rag[open-clip]'``) the benchmark says so and stops; without OpenVINO, the
int8 columns are left empty.

Prints a table and writes ``benchmarks/results/models.json``.
"""

from __future__ import annotations

import gc
import importlib.util
import os
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any

import numpy as np
from common import Figure, finish, make_parser, photos, skipped

DEFAULT_MODELS = ["ViT-B-32", "MobileCLIP2-S0", "ViT-B-16-SigLIP2", "ViT-B-16-SigLIP2-256"]
DEFAULT_INT8 = ["ViT-B-16-SigLIP2"]

#: Mean of R@1, R@5 and R@10 for text-to-image and image-to-text retrieval on
#: Crossmodal-3600 in English, from Immich's model comparison (docs/docs/features/searching.md).
PUBLISHED_QUALITY = {
    ("ViT-B-32", "openai"): 59.4,
    ("ViT-B-16-SigLIP2", "webli"): 75.2,
}
TAGS = {
    "ViT-B-32": "openai",
    "MobileCLIP2-S0": "dfndr2b",
    "ViT-B-16-SigLIP2": "webli",
    "ViT-B-16-SigLIP2-256": "webli",
}


class Model:
    """One architecture with random weights, its towers both ways, and its inputs."""

    def __init__(self, name: str, *, batch: int) -> None:
        import open_clip
        import torch

        from multimodal_rag.embedders.openclip_loading import for_inference, preprocess_of
        from multimodal_rag.embedders.openclip_towers import tower_modules
        from multimodal_rag.embedders.torch_engine import TorchRunner
        from multimodal_rag.embedders.towers import probe_pixels

        torch.manual_seed(0)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            self.model = for_inference(open_clip.create_model(name, pretrained=None))
        self.name = name
        self.tag = TAGS.get(name, "")
        size = open_clip.get_model_preprocess_cfg(self.model)["size"]
        tag_cfg = open_clip.get_pretrained_cfg(name, self.tag) if self.tag else {}
        self.preprocess = preprocess_of(tag_cfg, size=size)
        text_cfg = open_clip.get_model_config(name)["text_cfg"]
        self.context = int(text_cfg.get("context_length", 77))
        self.tokenizer = text_cfg.get("hf_tokenizer_name") or "CLIP BPE (bundled)"
        self.image_tower, self.text_tower = tower_modules(self.model)
        cpu = torch.device("cpu")
        self.runners = {
            ("image", "open_clip"): TorchRunner(_Own(self.model, "image"), cpu, "fp32"),
            ("text", "open_clip"): TorchRunner(_Own(self.model, "text"), cpu, "fp32"),
            ("image", "fast"): TorchRunner(self.image_tower, cpu, "fp32"),
            ("text", "fast"): TorchRunner(self.text_tower, cpu, "fp32"),
        }
        # Token ids stand in for the tokenizer (whose files would need a download): the text
        # tower costs the same for any ids of the context's length.
        self.tokens = np.ones((1, self.context), dtype=np.int64)
        self.pixels = probe_pixels(self.preprocess, batch)

    def build_int8(self, sample: np.ndarray, calibration_size: int) -> dict[str, Any]:
        """Both towers through the embedder's OpenVINO int8 path, in a fresh engine cache."""
        from multimodal_rag.embedders.engine_cache import EngineCache
        from multimodal_rag.embedders.engines import EngineBuilder, Tower
        from multimodal_rag.embedders.precision import QualityGate
        from multimodal_rag.embedders.towers import probe_pixels

        rng = np.random.default_rng(0)
        words = rng.integers(1, 1000, size=(40, self.context), dtype=np.int64)
        with tempfile.TemporaryDirectory() as cache:
            start = time.perf_counter()
            builder = EngineBuilder(
                [
                    Tower(name="image", example=probe_pixels(self.preprocess, 8), probe=sample),
                    Tower(name="text", example=words[:8], probe=words),
                ],
                load=lambda: {"image": self.image_tower, "text": self.text_tower},
                engine="openvino",
                precision="int8",
                device="cpu",
                identity={"model": self.name, "benchmark": "random weights"},
                cache=EngineCache(cache),
                gate=QualityGate(),
                calibration_size=calibration_size,
                allow_fallback=True,  # a tower failing the gate is reported, not fatal
            )
            built = builder.build({"image": sample, "text": words})
            seconds = time.perf_counter() - start
        for tower in ("image", "text"):
            self.runners[(tower, "int8")] = built.runners[tower]
        report = built.report.to_dict()
        return {
            "towers": report["towers"],
            "quality_gate": report.get("quality_gate", {}),
            "fallbacks": report.get("fallbacks", []),
            "build_s": round(seconds, 1),
            "calibration_images": min(calibration_size, len(sample)),
        }


class _Own:
    """open_clip's own method on one batch tensor, as a module-like callable."""

    def __init__(self, model: Any, tower: str) -> None:
        self.call = model.encode_image if tower == "image" else model.encode_text

    def __call__(self, batch: Any) -> Any:
        return self.call(batch)


def _timed(runner: Any, inputs: np.ndarray) -> float:
    start = time.perf_counter()
    runner(inputs)
    return time.perf_counter() - start


def measure(
    name: str,
    *,
    batch: int,
    calls: int,
    int8: bool,
    queries: list[np.ndarray] | None,
    sample: np.ndarray | None,
    calibration_size: int,
) -> dict[str, Any]:
    model = Model(name, batch=batch)
    paths = ["open_clip", "fast"]
    row: dict[str, Any] = {
        "model": name,
        "pretrained": model.tag,
        "input": "x".join(str(s) for s in model.preprocess.size),
        "context_length": model.context,
        "tokenizer": model.tokenizer,
        "params_m": round(sum(p.numel() for p in model.model.parameters()) / 1e6, 1),
        "image_tower": model.image_tower.path,
        "text_tower": model.text_tower.path,
        "quality_xm3600_en": PUBLISHED_QUALITY.get((name, model.tag)),
    }
    if int8 and sample is not None:
        print(f"  {name}: OpenVINO int8 (convert, calibrate, gate) ...", file=sys.stderr, flush=True)
        row["int8"] = model.build_int8(sample, calibration_size)
        paths.append("int8")
    runners = model.runners
    for path in paths:  # warm-up: kernels chosen, buffers sized
        runners[("image", path)](model.pixels)
        runners[("text", path)](model.tokens)
    image_s: dict[str, list[float]] = {path: [] for path in paths}
    for _ in range(calls):  # interleaved: each call of each path, round by round
        for path in paths:
            image_s[path].append(_timed(runners[("image", path)], model.pixels))
    text_s = {
        path: statistics.median(_timed(runners[("text", path)], model.tokens) for _ in range(max(calls, 5)))
        for path in paths
    }
    row["dim"] = int(runners[("text", "fast")](model.tokens).shape[1])
    for path in paths:
        row[f"{path}_images_per_s"] = round(batch / statistics.median(image_s[path]), 2)
        row[f"{path}_text_ms"] = round(text_s[path] * 1000, 1)
    row["fast_vs_open_clip"] = _ratio(image_s["open_clip"], image_s["fast"])
    if "int8" in paths:
        row["int8_vs_fast"] = _ratio(image_s["fast"], image_s["int8"])
        row["int8_vs_open_clip"] = _ratio(image_s["open_clip"], image_s["int8"])
    if queries:
        for path in paths:
            row[f"{path}_query_ms"] = round(1000 * _query_p50(model, runners[("image", path)], queries), 1)
    del model, runners
    gc.collect()
    return row


def _ratio(slower: list[float], faster: list[float]) -> float:
    """The median of the call-by-call speed ratios."""
    return round(statistics.median(s / f for s, f in zip(slower, faster, strict=True)), 2)


def _query_p50(model: Model, runner: Any, queries: list[Any]) -> float:
    """One query photo end to end: decode and preprocess (as the embedder), then the tower."""
    from multimodal_rag.embedders.preprocess import load_pixels

    runner(load_pixels(queries[0], model.preprocess)[None])
    seconds = []
    for photo in queries:
        start = time.perf_counter()
        runner(load_pixels(photo, model.preprocess)[None])
        seconds.append(time.perf_counter() - start)
    return statistics.median(seconds)


def _calibration_sample(model_name: str, folder: Path, count: int) -> np.ndarray:
    """Preprocessed photos for one model's input size: the calibration and gate sample."""
    import open_clip

    from multimodal_rag.embedders.openclip_loading import preprocess_of
    from multimodal_rag.embedders.preprocess import load_pixels

    config = open_clip.get_model_config(model_name)["vision_cfg"]
    size = int(config.get("image_size", 224))
    tag = TAGS.get(model_name, "")
    preprocess = preprocess_of(open_clip.get_pretrained_cfg(model_name, tag) if tag else {}, size=size)
    files = sorted(folder.glob("*.jpg"))[:count]
    return np.stack([load_pixels(p, preprocess) for p in files])


def main() -> None:
    parser = make_parser(__doc__)
    parser.add_argument("--models", nargs="+", help=f"open_clip names (default {' '.join(DEFAULT_MODELS)}; ViT-B-32 with --quick)")
    parser.add_argument("--int8", nargs="*", help=f"models also run as OpenVINO int8 (default {' '.join(DEFAULT_INT8)}; none with --quick)")
    args = parser.parse_args()
    if importlib.util.find_spec("open_clip") is None:
        skipped("models", args, "open_clip is not installed (pip install 'multimodal-rag[open-clip]')")
        return
    args.models = args.models or (["ViT-B-32"] if args.quick else DEFAULT_MODELS)
    # --quick leaves int8 out unless asked: converting and calibrating take minutes.
    wanted_int8 = args.int8 if args.int8 is not None else ([] if args.quick else DEFAULT_INT8)
    has_openvino = all(importlib.util.find_spec(m) is not None for m in ("openvino", "nncf"))
    int8_models = [m for m in args.models if m in wanted_int8 and has_openvino]
    batch, calls = (2, 1) if args.quick else (32, 5)
    # Calibration on this many photos plus the gate's held-out ones (the embedder's default
    # is 300; fewer keep the run short on two cores, the gate still judges the result).
    calibration_size, held_out = (8, 8) if args.quick else (96, 32)
    query_count = 3 if args.quick else 15
    import torch

    folder = photos("1080p", max(query_count, calibration_size + held_out))
    queries = sorted(folder.glob("*.jpg"))[-query_count:]
    load = os.getloadavg()
    rows = []
    for name in args.models:
        print(f"measuring {name} ...", file=sys.stderr, flush=True)
        sample = _calibration_sample(name, folder, calibration_size + held_out) if name in int8_models else None
        rows.append(
            measure(
                name,
                batch=batch,
                calls=calls,
                int8=name in int8_models,
                queries=queries,
                sample=sample,
                calibration_size=calibration_size,
            )
        )
    load_after = os.getloadavg()
    header = (
        f"{'model':<21} {'dim':>4} {'input':>7} {'params M':>8} {'XM3600':>6} | {'img/s open_clip':>15} "
        f"{'fast':>6} {'int8':>6} {'fast/oc':>7} {'int8/fast':>9} | {'query ms fast':>13} {'int8':>5} "
        f"| {'text ms oc':>10} {'fast':>5} {'int8':>5}"
    )
    print(header)
    for row in rows:
        quality = row["quality_xm3600_en"]

        def cell(key: str, width: int, r: dict[str, Any] = row) -> str:
            value = r.get(key)
            return f"{value if value is not None else '-':>{width}}"

        print(
            f"{row['model']:<21} {row['dim']:>4} {row['input']:>7} {row['params_m']:>8} "
            f"{quality if quality is not None else '-':>6} | {cell('open_clip_images_per_s', 15)} "
            f"{cell('fast_images_per_s', 6)} {cell('int8_images_per_s', 6)} {cell('fast_vs_open_clip', 7)} "
            f"{cell('int8_vs_fast', 9)} | {cell('fast_query_ms', 13)} {cell('int8_query_ms', 5)} | "
            f"{cell('open_clip_text_ms', 10)} {cell('fast_text_ms', 5)} {cell('int8_text_ms', 5)}"
        )
    print("\nimage towers:")
    for row in rows:
        print(f"  {row['model']:<21} image: {row['image_tower']}; text: {row['text_tower']}")
        if "int8" in row:
            built = row["int8"]
            gates = "; ".join(
                f"{k} min {v['min_cosine']:.4f} mean {v['mean_cosine']:.4f} ({'passed' if v['passed'] else 'FAILED'})"
                for k, v in built["quality_gate"].items()
            )
            print(
                f"  {'':<21} int8 towers {built['towers']}, built in {built['build_s']} s on "
                f"{built['calibration_images']} calibration photos; gate: {gates}"
            )
    print(f"\nload average (1, 5, 15 min): before {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}, after {load_after[0]:.2f} {load_after[1]:.2f} {load_after[2]:.2f}")
    report = {
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "cpus": os.cpu_count(),
        "load_average_before": [round(x, 2) for x in load],
        "load_average_after": [round(x, 2) for x in load_after],
        "settings": {
            "batch": batch,
            "timed_calls": calls,
            "calibration_size": calibration_size,
            "held_out": held_out,
            "query_photos": query_count,
        },
        "models": rows,
    }
    figures = {}
    for row in rows:
        figures[f"{row['model']}_fast_images_per_s"] = Figure(row["fast_images_per_s"], "higher", 0.6)
        figures[f"{row['model']}_fast_text_ms"] = Figure(row["fast_text_ms"], "lower", 2.0)
        figures[f"{row['model']}_dim"] = Figure(row["dim"], "equal", 0.0)
        if "int8_images_per_s" in row:
            figures[f"{row['model']}_int8_images_per_s"] = Figure(row["int8_images_per_s"], "higher", 0.6)
    finish("models", args, report, figures)


if __name__ == "__main__":
    main()
