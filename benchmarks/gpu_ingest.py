"""Ingest on a CUDA GPU in fp16: JPEG decoding on the CPU or on the GPU, batch sizes swept.

Generated 1080p JPEGs and a CLIP model with ViT-B/32's shape and random weights (it costs
what the real one costs). For each batch size:

- **library, CPU decode**: ``CLIPEmbedder(device="cuda", engine="torch", precision="fp16")``
  and ``embed_images`` on the files: worker threads decode (draft JPEG decoding) and
  preprocess, the GPU encodes;
- **GPU decode**: the files' bytes decoded by ``torchvision.io.decode_jpeg(device="cuda")``
  in batches, resized, cropped and normalised on the GPU, encoded in fp16 by the same
  model (``clip``'s own ``encode_image``), with nothing copied back but the vectors;
- **torchvision, CPU decode**: the same code with ``decode_jpeg`` on the CPU, to separate
  the decoder from the rest.

Each configuration warms up on one batch, then embeds every photo; images/s is photos over
wall seconds. Without a CUDA GPU the same code runs on the CPU in fp32 and says so (the GPU
decode row is then left out): the path is tested everywhere, measured only where a GPU is.

    python benchmarks/gpu_ingest.py            # 2,000 photos, batch sizes 64 to 512
    python benchmarks/gpu_ingest.py --quick    # 8 photos, a tiny model, batch sizes 4 and 8

Prints a table and writes ``benchmarks/results/gpu_ingest.json``.
"""

from __future__ import annotations

import time
import warnings
from pathlib import Path
from typing import Any

import common
from common import Figure, finish, make_parser

#: CLIP's normalisation of its inputs.
MEAN = (0.48145466, 0.4578275, 0.40821073)
STD = (0.26862954, 0.26130258, 0.27577711)


def library(paths: list[Path], checkpoint: Path, device: str, batch: int) -> float:
    from multimodal_rag import CLIPEmbedder

    precision = "fp16" if device == "cuda" else "fp32"
    embedder = CLIPEmbedder(
        checkpoint=checkpoint, device=device, engine="torch", precision=precision, batch_size=batch
    )
    embedder.embed_images(paths[: min(batch, len(paths))])  # warm-up
    _sync(device)
    start = time.perf_counter()
    vectors = embedder.embed_images(paths)
    _sync(device)
    assert vectors.shape[0] == len(paths)
    return len(paths) / (time.perf_counter() - start)


def torchvision_path(paths: list[Path], model: Any, size: int, device: str, decode_on: str, batch: int) -> float:
    import torch
    from torchvision.io import decode_jpeg, read_file
    from torchvision.transforms.v2 import functional as F

    dtype = torch.float16 if device == "cuda" else torch.float32
    mean = torch.tensor(MEAN, device=device, dtype=dtype).view(1, 3, 1, 1)
    std = torch.tensor(STD, device=device, dtype=dtype).view(1, 3, 1, 1)

    def embed(chunk: list[Path]) -> torch.Tensor:
        data = [read_file(str(p)) for p in chunk]
        images = decode_jpeg(data, device=decode_on)
        resized = [
            F.center_crop(F.resize(image.to(device), [size], antialias=True), [size, size]) for image in images
        ]
        pixels = (torch.stack(resized).to(dtype) / 255 - mean) / std
        with torch.no_grad():
            features = model.encode_image(pixels)
        return torch.nn.functional.normalize(features.float(), dim=-1).cpu()

    embed(paths[: min(batch, len(paths))])  # warm-up
    _sync(device)
    start = time.perf_counter()
    count = sum(len(embed(paths[i : i + batch])) for i in range(0, len(paths), batch))
    _sync(device)
    assert count == len(paths)
    return len(paths) / (time.perf_counter() - start)


def _sync(device: str) -> None:
    if device == "cuda":
        import torch

        torch.cuda.synchronize()


def main() -> None:
    parser = make_parser(__doc__, data=True)
    parser.add_argument("--photos", type=int, default=2000, help="photos to embed (default 2000)")
    args = parser.parse_args()
    import torch

    cuda = torch.cuda.is_available()
    device = "cuda" if cuda else "cpu"
    count, batches = (8, [4, 8]) if args.quick else (args.photos, [64, 128, 256, 512])
    if not cuda:
        print("no CUDA GPU here: running the same code on the CPU in fp32 (not a GPU measurement)")
    checkpoint = common.tiny_checkpoint() if args.quick else common.vit_b_32_checkpoint()
    paths = sorted(common.photos("1080p", count, args.data).glob("*.jpg"))
    with warnings.catch_warnings():  # clip.load tries the file as TorchScript first
        warnings.simplefilter("ignore")
        model, _ = common.import_clip().load(str(checkpoint), device=device, jit=False)
    model = model.half().eval() if cuda else model.float().eval()
    size = int(model.visual.input_resolution)

    rows: list[dict[str, Any]] = []
    for batch in batches:
        row: dict[str, Any] = {"batch": batch}
        row["library_cpu_decode"] = library(paths, checkpoint, device, batch)
        row["torchvision_cpu_decode"] = torchvision_path(paths, model, size, device, "cpu", batch)
        if cuda:
            row["gpu_decode"] = torchvision_path(paths, model, size, device, "cuda", batch)
        rows.append(row)
        print(f"batch {batch}: " + ", ".join(f"{k} {v:.1f} img/s" for k, v in row.items() if k != "batch"), flush=True)

    columns = [k for k in rows[0] if k != "batch"]
    print()
    print(f"{'batch':>5} " + " ".join(f"{c:>22}" for c in columns) + "   (images/s)")
    for row in rows:
        print(f"{row['batch']:>5} " + " ".join(f"{row[c]:>22.1f}" for c in columns))
    best = {c: max(rows, key=lambda r, c=c: r[c]) for c in columns}
    for column, row in best.items():
        print(f"best {column}: {row[column]:.1f} img/s at batch {row['batch']}")

    report = {
        "device": torch.cuda.get_device_name(0) if cuda else "cpu (no CUDA GPU: not a GPU measurement)",
        "precision": "fp16" if cuda else "fp32",
        "model": "tiny random CLIP" if args.quick else "random ViT-B/32",
        "photos": count,
        "rows": rows,
        "best": {c: {"images_per_s": r[c], "batch": r["batch"]} for c, r in best.items()},
    }
    figures = {
        "photos": Figure(float(count), "equal", 0.0),
        "library_images_per_s": Figure(best["library_cpu_decode"]["library_cpu_decode"], "higher", 0.8),
    }
    finish("gpu_ingest", args, report, figures)


if __name__ == "__main__":
    main()
