"""Ingest speed with OCR: CLIP alone against CLIP + OCR, side by side in one run.

The same 1080p JPEGs (half product photos with a printed label, drawn as
``benchmarks/ocr_catalogue.py`` draws them but at 1920x1080; half photos tiled from
``examples/stamps``, with little or no text) go through ``rag.add_directory(folder, ocr=...)``
with each of these configurations, each in a fresh subprocess (so its peak memory is its own):

- CLIP on ``engine="openvino"``, ``precision="int8"``, or on ``engine="torch"`` (its default
  precision, ``"auto"``), a model with ViT-B/32's shape and random weights (it costs what the
  real one costs; ``--quick`` uses a tiny one);
- no OCR, ``RapidOCRReader(engine="openvino")`` or ``RapidOCRReader(engine="onnxruntime")``
  (the reader's defaults).

Before anything is timed, one process per CLIP engine prepares the engine cache (OpenVINO's
conversion and int8 calibration, the ``auto`` precision's measurement), as the first use on a
machine does; the timed processes then load from it (each reports whether torch was imported).
In each, loading the models and one warm-up call are outside the timed ingest. The
configurations run in rounds, in turn (the order reversed every other round); for each the
median images/s over the rounds, the median over rounds of its ratio to the same round's
CLIP-only ingest on the same CLIP engine, the median CPU time of the process per image
during the ingest (all its threads: what the work costs, less moved by other jobs than the wall
time), and the largest peak RSS (``ru_maxrss`` of the process: loading included). A process with a reader then reads query photos (the products
photographed again: turned, tilted, blurred, JPEG quality 60; decoded before timing) one at a
time: the p50 and p90 of one query photo's OCR.

The machine's load average is recorded before and after: on a shared machine the absolute
figures move with it, the ratios less.

    python benchmarks/ocr_ingest.py            # 48 photos, 3 rounds, ViT-B/32 shape
    python benchmarks/ocr_ingest.py --quick    # 8 photos, 1 round, a tiny CLIP

Prints a table and writes ``benchmarks/results/ocr_ingest.json``. Needs the ``ocr`` extra (and
``openvino`` for the OpenVINO CLIP rows; without it only torch runs).
"""

from __future__ import annotations

import importlib.util
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import common
import numpy as np
from common import (
    CACHE,
    ROOT,
    Figure,
    RSSSampler,
    finish,
    labelled_products,
    make_parser,
    photos,
    product_scene,
    random_view,
    rephotograph,
    skipped,
)

#: CLIP engine and precision of each row.
CLIP_ENGINES = {"openvino": "int8", "torch": "auto"}
#: The reader's engine of each row; None: CLIP alone.
OCR_ENGINES = (None, "openvino", "onnxruntime")
#: The targets on a 2-core machine.
TARGET_IMAGES_PER_S = 10.0
TARGET_PEAK_RSS_MB = 1536.0
TARGET_QUERY_MS = 150.0


def inputs(count: int, queries: int) -> tuple[Path, Path]:
    """A folder of ``count`` 1080p photos (half with a printed label) and one of ``queries``
    query photos; generated deterministically and cached."""
    folder = CACHE / f"ocr-ingest-{count}-{queries}"
    photo_folder, query_folder = folder / "photos", folder / "queries"
    done = folder / "done"
    if done.is_file():
        return photo_folder, query_folder
    photo_folder.mkdir(parents=True, exist_ok=True)
    query_folder.mkdir(parents=True, exist_ok=True)
    labelled = count // 2
    products = labelled_products((max(labelled, queries) + 3) // 4, seed=29)
    rng = np.random.default_rng(29)
    for i, product in enumerate(products[: max(labelled, queries)]):
        scene, label = product_scene(product, size=(1920, 1080))
        if i < labelled:
            scene.save(photo_folder / f"product-{i:03d}.jpg", quality=90)
        if i < queries:
            small, small_label = product_scene(product)
            view = random_view(rng, quarter=i % 4)
            rephotograph(small, small_label, view, rng).save(
                query_folder / f"query-{i:03d}.jpg", quality=60
            )
    tiled = sorted(photos("1080p", count - labelled).glob("*.jpg"))
    for i, path in enumerate(tiled):
        (photo_folder / f"tiled-{i:03d}.jpg").write_bytes(path.read_bytes())
    done.write_text("")
    return photo_folder, query_folder


# -- one configuration, in its own process ------------------------------------------------


def embedder_for(checkpoint: Path, engine: str, cache_dir: Path, calibration: Path) -> Any:
    from multimodal_rag import CLIPEmbedder

    return CLIPEmbedder(
        checkpoint=checkpoint,
        engine=engine,  # type: ignore[arg-type]
        precision=CLIP_ENGINES[engine],  # type: ignore[arg-type]
        cache_dir=cache_dir,
        calibration=calibration if engine == "openvino" else None,
        allow_fallback=True,  # a tower that fails int8's gate runs in bf16 (runtime says so)
    )


def prepare(checkpoint: Path, engine: str, cache_dir: Path, folder: Path) -> dict[str, Any]:
    """Fill the engine cache as a first use on a machine does: convert, calibrate, measure."""
    start = time.perf_counter()
    embedder = embedder_for(checkpoint, engine, cache_dir, folder)
    embedder.embed_images(sorted(folder.glob("*.jpg"))[:2])
    return {"seconds": time.perf_counter() - start, "runtime": str(embedder.runtime)}


def ingest(
    checkpoint: Path, engine: str, ocr: str | None, cache_dir: Path, folder: Path, queries: Path
) -> dict[str, Any]:
    """One timed ``add_directory``; then, with a reader, one query photo's OCR at a time."""
    from PIL import Image

    from multimodal_rag import MultimodalRAG

    paths = sorted(folder.glob("*.jpg"))
    start = time.perf_counter()
    embedder = embedder_for(checkpoint, engine, cache_dir, folder)
    embedder.embed_images(paths[:2])  # load and compile, outside the timed ingest
    reader = None
    if ocr is not None:
        from multimodal_rag.ocr import RapidOCRReader

        reader = RapidOCRReader(engine=ocr)  # type: ignore[arg-type]
        with Image.open(paths[0]) as first:
            reader.read([first.convert("RGB")])  # load the models
    load_seconds = time.perf_counter() - start
    torch_loaded = "torch" in sys.modules
    rag = MultimodalRAG(embedder)
    with RSSSampler() as rss:
        start, start_cpu = time.perf_counter(), time.process_time()
        result = rag.add_directory(
            folder, progress=False, ocr=reader if reader is not None else False
        )
        seconds = time.perf_counter() - start
        cpu_seconds = time.process_time() - start_cpu
    if len(result.added) != len(paths) or result.skipped:
        raise SystemExit(f"ingest stored {len(result.added)} of {len(paths)}: {result.skipped}")
    records = [rag.get(id_) for id_ in result.added]
    with_text = {
        kind: sum(1 for r in records if r.ocr is not None and r.ocr.lines and kind in Path(r.image_path or "").name)
        for kind in ("product", "tiled")
    }  # fmt: skip
    out: dict[str, Any] = {
        "images": len(result.added),
        "seconds": seconds,
        "cpu_ms_per_image": cpu_seconds / len(result.added) * 1000,
        "images_per_s": len(result.added) / seconds,
        "load_seconds": load_seconds,
        "torch_loaded": torch_loaded,
        "runtime": str(embedder.runtime),
        "unread": len(result.unread),
        "with_text": with_text,
        **rss.report(),
    }
    if reader is not None:
        decoded = [Image.open(path).convert("RGB") for path in sorted(queries.glob("*.jpg"))]
        times = []
        for image in decoded:
            begin = time.perf_counter()
            reader.read([image])
            times.append(time.perf_counter() - begin)
        out["query_ms_p50"] = float(np.percentile(times, 50)) * 1000
        out["query_ms_p90"] = float(np.percentile(times, 90)) * 1000
    # ru_maxrss is in kilobytes on Linux.
    out["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return out


def in_subprocess(task: str, **kwargs: Any) -> dict[str, Any]:
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(
            filter(None, [str(ROOT / "src"), os.environ.get("PYTHONPATH")])
        ),
    }
    spec = json.dumps(
        {"task": task, **{k: str(v) if isinstance(v, Path) else v for k, v in kwargs.items()}}
    )
    done = subprocess.run(
        [sys.executable, "-W", "ignore", __file__, "--child", spec],
        capture_output=True, text=True, env=env, check=False,
    )  # fmt: skip
    if done.returncode != 0:
        raise SystemExit(f"{task} {kwargs} failed:\n{done.stderr[-3000:]}")
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def child(spec: str) -> None:
    args = json.loads(spec)
    task = args.pop("task")
    for key in ("checkpoint", "cache_dir", "folder", "queries"):
        if key in args:
            args[key] = Path(args[key])
    print(json.dumps(prepare(**args) if task == "prepare" else ingest(**args)))


# -- the run ------------------------------------------------------------------------------


def label(engine: str, ocr: str | None) -> str:
    clip = f"{engine} {CLIP_ENGINES[engine]}"
    return f"CLIP {clip}" + (f" + OCR {ocr}" if ocr else "")


def main() -> None:
    if len(sys.argv) == 3 and sys.argv[1] == "--child":
        child(sys.argv[2])
        return
    parser = make_parser(__doc__ or "")
    parser.add_argument("--count", type=int, help="photos ingested (default 48; 8 with --quick)")
    parser.add_argument(
        "--queries", type=int, help="query photos read (default 24; 4 with --quick)"
    )
    parser.add_argument(
        "--rounds", type=int, help="rounds of every configuration (default 3; 1 with --quick)"
    )
    args = parser.parse_args()
    if importlib.util.find_spec("rapidocr") is None:
        skipped("ocr_ingest", args, "rapidocr is not installed: pip install 'multimodal-rag[ocr]'")
        return
    count = args.count or (8 if args.quick else 48)
    query_count = args.queries or (4 if args.quick else 24)
    rounds = args.rounds or (1 if args.quick else 3)
    folder, queries = inputs(count, query_count)
    checkpoint = common.tiny_checkpoint() if args.quick else common.vit_b_32_checkpoint()
    cache_dir = CACHE / (
        "ocr-ingest-engine-cache-quick" if args.quick else "ocr-ingest-engine-cache"
    )
    engines = [e for e in CLIP_ENGINES if e != "openvino" or importlib.util.find_spec("openvino")]
    prepared = {}
    for engine in engines:
        print(f"preparing the engine cache: {engine} {CLIP_ENGINES[engine]}", flush=True)
        prepared[engine] = in_subprocess(
            "prepare", checkpoint=checkpoint, engine=engine, cache_dir=cache_dir, folder=folder
        )
    combos = [(engine, ocr) for engine in engines for ocr in OCR_ENGINES]
    load_before = os.getloadavg()
    runs: dict[tuple[str, str | None], list[dict[str, Any]]] = {combo: [] for combo in combos}
    for r in range(rounds):
        for engine, ocr in combos if r % 2 == 0 else combos[::-1]:
            print(f"round {r + 1}: {label(engine, ocr)}", flush=True)
            runs[engine, ocr].append(
                in_subprocess(
                    "ingest",
                    checkpoint=checkpoint,
                    engine=engine,
                    ocr=ocr,
                    cache_dir=cache_dir,
                    folder=folder,
                    queries=queries,
                )  # fmt: skip
            )
    load_after = os.getloadavg()
    rows = []
    for (engine, ocr), results in runs.items():
        alone = runs[engine, None]
        ratios = [
            result["images_per_s"] / base["images_per_s"]
            for result, base in zip(results, alone, strict=True)
        ]
        row: dict[str, Any] = {
            "clip": f"{engine} {CLIP_ENGINES[engine]}", "ocr": ocr, "images": count,
            "images_per_s": statistics.median(result["images_per_s"] for result in results),
            "images_per_s_rounds": [result["images_per_s"] for result in results],
            "cpu_ms_per_image": statistics.median(result["cpu_ms_per_image"] for result in results),
            "ratio_to_clip_only": statistics.median(ratios),
            "peak_rss_mb": max(result["peak_rss_mb"] for result in results),
            "ingest_peak_rss_mb": max(result["ingest_peak_rss_mb"] for result in results),
            "torch_loaded": any(result["torch_loaded"] for result in results),
            "runtime": results[0]["runtime"], "with_text": results[0]["with_text"],
            "unread": max(result["unread"] for result in results),
        }  # fmt: skip
        if ocr is not None:
            row["query_ms_p50"] = statistics.median(result["query_ms_p50"] for result in results)
            row["query_ms_p90"] = statistics.median(result["query_ms_p90"] for result in results)
        rows.append(row)
    print(f"\n{count} photos of 1920x1080 ({count // 2} with a label), {rounds} round(s); "
          f"load average before {load_before[0]:.2f}, after {load_after[0]:.2f} ({os.cpu_count()} CPUs)")  # fmt: skip
    print(
        f"{'configuration':<42} {'img/s':>6} {'vs CLIP only':>12} {'CPU ms/img':>10} {'peak RSS MB':>11} {'query OCR p50 ms':>16}"
    )
    for row in rows:
        query = f"{row['query_ms_p50']:.0f}" if "query_ms_p50" in row else "-"
        print(f"{label(row['clip'].split()[0], row['ocr']):<42} {row['images_per_s']:>6.1f} "
              f"{row['ratio_to_clip_only']:>11.2f}x {row['cpu_ms_per_image']:>10.0f} {row['peak_rss_mb']:>11.0f} {query:>16}")  # fmt: skip
    by = {(row["clip"].split()[0], row["ocr"]): row for row in rows}
    figures = {
        f"{engine}_clip_{ocr or 'alone'}_images_per_s": Figure(
            by[engine, ocr]["images_per_s"], "higher", 0.6
        )
        for engine, ocr in combos
    }
    figures |= {
        f"{engine}_clip_ocr_{ocr}_ratio": Figure(
            by[engine, ocr]["ratio_to_clip_only"], "higher", 0.5
        )
        for engine, ocr in combos
        if ocr is not None
    }
    figures["openvino_query_ms_p50"] = Figure(
        by[engines[0], "openvino"]["query_ms_p50"], "lower", 1.5
    )
    if "openvino" in engines:
        main_row = by["openvino", "openvino"]
        targets = {
            "ingest with OCR, images/s (OpenVINO int8 CLIP, OpenVINO OCR)": (main_row["images_per_s"], TARGET_IMAGES_PER_S, "higher"),
            "peak RSS with OCR, MB (same)": (main_row["peak_rss_mb"], TARGET_PEAK_RSS_MB, "lower"),
            "query-photo OCR p50, ms (OpenVINO)": (main_row["query_ms_p50"], TARGET_QUERY_MS, "lower"),
        }  # fmt: skip
        print()
        for name, (value, target, better) in targets.items():
            met = value >= target if better == "higher" else value <= target
            print(f"{name:<62} {value:>8.1f}  target {target:g}: {'met' if met else 'NOT met'}")
    report = {
        "count": count, "queries": query_count, "rounds": rounds,
        "load_average_before": load_before, "load_average_after": load_after,
        "prepared": prepared, "rows": rows,
    }  # fmt: skip
    finish("ocr_ingest", args, report, figures)


if __name__ == "__main__":
    main()
