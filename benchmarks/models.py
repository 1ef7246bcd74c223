"""Which open_clip model to choose: encoder speed per architecture, measured on this machine.

Each model is built from its open_clip config with random weights (it costs what the real
one costs; nothing is downloaded) and its two towers run exactly as ``OpenCLIPEmbedder``
runs them on the torch engine in fp32:

- **images/s**: the image tower on a batch of 32 preprocessed images (the ingest rate the
  encoder allows; decoding runs in parallel to it), median of a few calls after a warm-up;
- **text ms**: one text query through the text tower, median of several calls.

Also lists each model's vector size, input size, context length and parameter count, and
the published retrieval quality where there is one (see ``docs/embedders.md``).

    python benchmarks/models.py                        # the default models, a few minutes
    python benchmarks/models.py --models ViT-B-32      # others: any open_clip.list_models()
    python benchmarks/models.py --quick                # ViT-B-32 only, batch 2, one call

The towers are built and run as the embedder runs them (its loading and tower helpers),
without its tokenizer, whose files for some models would need a download: those helpers
have no public names. Without ``open_clip`` (``pip install 'multimodal-rag[open-clip]'``)
the benchmark says so and stops.

Prints a table and writes ``benchmarks/results/models.json``.
"""

from __future__ import annotations

import gc
import importlib.util
import statistics
import sys
import time
import warnings
from typing import Any

import numpy as np
from common import Figure, finish, make_parser, skipped

DEFAULT_MODELS = ["ViT-B-32", "MobileCLIP2-S0", "ViT-B-16-SigLIP2"]

#: Mean of R@1, R@5 and R@10 for text-to-image and image-to-text retrieval on
#: Crossmodal-3600 in English, from Immich's model comparison (docs/docs/features/searching.md).
PUBLISHED_QUALITY = {
    ("ViT-B-32", "openai"): 59.4,
    ("ViT-B-16-SigLIP2", "webli"): 75.2,
}
TAGS = {"ViT-B-32": "openai", "MobileCLIP2-S0": "dfndr2b", "ViT-B-16-SigLIP2": "webli"}


def measure(name: str, *, batch: int, calls: int) -> dict[str, Any]:
    import open_clip
    import torch

    from multimodal_rag.embedders.openclip import tower_modules
    from multimodal_rag.embedders.openclip_loading import for_inference, preprocess_of
    from multimodal_rag.embedders.torch_engine import TorchRunner
    from multimodal_rag.embedders.towers import probe_pixels

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = for_inference(open_clip.create_model(name, pretrained=None))
    tag = TAGS.get(name, "")
    size = open_clip.get_model_preprocess_cfg(model)["size"]
    preprocess = preprocess_of(open_clip.get_pretrained_cfg(name, tag) if tag else {}, size=size)
    image_tower, text_tower = tower_modules(model)
    device = torch.device("cpu")
    images = TorchRunner(image_tower, device, "fp32")
    texts = TorchRunner(text_tower, device, "fp32")
    tokenizer_name = open_clip.get_model_config(name)["text_cfg"].get("hf_tokenizer_name")
    context = int(open_clip.get_model_config(name)["text_cfg"].get("context_length", 77))
    # Token ids stand in for the tokenizer (whose files would need a download): the text
    # tower costs the same for any ids of the context's length.
    tokens = np.ones((1, context), dtype=np.int64)
    pixels = probe_pixels(preprocess, batch)
    images(pixels)  # warm-up: kernels chosen, buffers sized
    image_s = statistics.median(_timed(images, pixels) for _ in range(calls))
    texts(tokens)
    text_s = statistics.median(_timed(texts, tokens) for _ in range(max(calls, 5)))
    dim = int(texts(tokens).shape[1])
    row = {
        "model": name,
        "pretrained": tag,
        "dim": dim,
        "input": "x".join(str(s) for s in preprocess.size),
        "resize_mode": preprocess.resize_mode,
        "context_length": context,
        "tokenizer": tokenizer_name or "CLIP BPE (bundled)",
        "params_m": round(sum(p.numel() for p in model.parameters()) / 1e6, 1),
        "images_per_s": round(batch / image_s, 2),
        "text_query_ms": round(text_s * 1000, 1),
        "quality_xm3600_en": PUBLISHED_QUALITY.get((name, tag)),
    }
    del model, image_tower, text_tower, images, texts
    gc.collect()
    return row


def _timed(runner: Any, inputs: np.ndarray) -> float:
    start = time.perf_counter()
    runner(inputs)
    return time.perf_counter() - start


def main() -> None:
    parser = make_parser(__doc__)
    parser.add_argument("--models", nargs="+", help=f"open_clip names (default {' '.join(DEFAULT_MODELS)}; ViT-B-32 with --quick)")
    args = parser.parse_args()
    if importlib.util.find_spec("open_clip") is None:
        skipped("models", args, "open_clip is not installed (pip install 'multimodal-rag[open-clip]')")
        return
    args.models = args.models or (["ViT-B-32"] if args.quick else DEFAULT_MODELS)
    batch, calls = (2, 1) if args.quick else (32, 3)
    import torch

    rows = []
    for name in args.models:
        print(f"measuring {name} ...", file=sys.stderr, flush=True)
        rows.append(measure(name, batch=batch, calls=calls))
    header = f"{'model':<20} {'tag':<8} {'dim':>4} {'input':>7} {'params M':>9} {'img/s':>7} {'text ms':>8} {'XM3600':>7}"
    print(header)
    for row in rows:
        quality = row["quality_xm3600_en"]
        print(
            f"{row['model']:<20} {row['pretrained']:<8} {row['dim']:>4} {row['input']:>7} "
            f"{row['params_m']:>9} {row['images_per_s']:>7} {row['text_query_ms']:>8} "
            f"{quality if quality is not None else '-':>7}"
        )
    report = {
        "torch": torch.__version__,
        "torch_threads": torch.get_num_threads(),
        "settings": {"batch": batch, "timed_calls": calls, "engine": "torch", "precision": "fp32"},
        "models": rows,
    }
    figures = {}
    for row in rows:
        figures[f"{row['model']}_images_per_s"] = Figure(row["images_per_s"], "higher", 0.6)
        figures[f"{row['model']}_text_query_ms"] = Figure(row["text_query_ms"], "lower", 2.0)
        figures[f"{row['model']}_dim"] = Figure(row["dim"], "equal", 0.0)
    finish("models", args, report, figures)


if __name__ == "__main__":
    main()
