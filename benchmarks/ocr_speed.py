"""OCR speed per photo: `RapidOCRReader`'s settings against rapidocr's defaults, on ONNX Runtime and OpenVINO.

Four readers, each in its own process (so its peak memory is its own), read the same photos:

- ``reader``: ``RapidOCRReader(engine=...)`` with its defaults (detector input 480 px on the
  longer side, quarter-turn detection, the drop rule);
- ``rapidocr``: ``rapidocr.RapidOCR`` with its own defaults (detector input: the shorter side
  scaled up to 736 px; 0/180 classifier; no quarter turns), the same bundled models.

on four kinds of photo, generated deterministically (``benchmarks/common.py``):

- ``label``: catalogue photos, 1000x750, a product with a printed label, upright;
- ``query``: the same products photographed again (``benchmarks/ocr_catalogue.py``'s views:
  other crop and light, turned 0/90/180/270 degrees plus up to 20 degrees of tilt, blur,
  JPEG quality 60), about 900 px on the longer side;
- ``1080p product``: 1920x1080 product photos;
- ``1080p scene``: 1920x1080 photos tiled from ``examples/stamps`` (little or no text).

For each reader and kind: the median (p50) and p90 time of one ``read`` of one photo (the
photo already decoded), the median CPU time of the process during that read (all its
threads: less sensitive to other jobs on the machine than the wall time), and the share of label photos whose model number was read (text
with spaces removed contains it). Each process reads two photos first to load the models
and prepare the engine; its peak resident memory (``ru_maxrss``) covers everything. The
machine's load average is recorded before and after: on a shared machine timings move with
it, so compare figures from one run.

    python benchmarks/ocr_speed.py            # 24 photos of each kind, two rounds
    python benchmarks/ocr_speed.py --quick    # 4 of each, one round

Prints a table and writes ``benchmarks/results/ocr_speed.json``. Needs the ``ocr`` extra.
"""

from __future__ import annotations

import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
from common import (
    CACHE,
    ROOT,
    Figure,
    finish,
    labelled_products,
    make_parser,
    photos,
    product_scene,
    random_view,
    rephotograph,
    skipped,
)

ENGINES = ("onnxruntime", "openvino")
SETTINGS = ("reader", "rapidocr")
KINDS = ("label", "query", "1080p product", "1080p scene")


def inputs(count: int) -> dict[str, list[tuple[Path, str | None]]]:
    """Each kind's photos, and the model number printed in each (None: none printed); cached."""
    folder = CACHE / f"ocr-speed-{count}"
    index = folder / "index.json"
    if index.is_file():
        stored = json.loads(index.read_text())
        return {
            kind: [(folder / path, model) for path, model in rows] for kind, rows in stored.items()
        }
    folder.mkdir(parents=True, exist_ok=True)
    products = labelled_products((count + 3) // 4, seed=11)[:count]
    rng = np.random.default_rng(11)
    rows: dict[str, list[tuple[str, str | None]]] = {kind: [] for kind in KINDS}
    for i, product in enumerate(products):
        scene, label = product_scene(product)
        scene.save(folder / f"label-{i}.jpg", quality=90)
        rows["label"].append((f"label-{i}.jpg", product.model))
        rephotograph(scene, label, random_view(rng, quarter=i % 4), rng).save(
            folder / f"query-{i}.jpg", quality=60
        )
        rows["query"].append((f"query-{i}.jpg", product.model))
        big, _ = product_scene(product, size=(1920, 1080))
        big.save(folder / f"product-1080p-{i}.jpg", quality=90)
        rows["1080p product"].append((f"product-1080p-{i}.jpg", product.model))
    for i, path in enumerate(sorted(photos("1080p", count).glob("*.jpg"))):
        target = folder / f"scene-1080p-{i}.jpg"
        target.write_bytes(path.read_bytes())
        rows["1080p scene"].append((target.name, None))
    index.write_text(json.dumps(rows))
    return {
        kind: [(folder / path, model) for path, model in kind_rows]
        for kind, kind_rows in rows.items()
    }


# -- one reader, in its own process ----------------------------------------------------


def worker(engine: str, setting: str, photo_index: Path) -> dict[str, Any]:
    """Read every photo with one reader; per-photo seconds, what was read, peak memory."""
    from PIL import Image

    listing = json.loads(photo_index.read_text())
    folder = photo_index.parent
    if setting == "reader":
        from multimodal_rag.ocr import RapidOCRReader

        reader = RapidOCRReader(engine=engine)  # type: ignore[arg-type]

        def read(image: Any) -> str:
            return reader.read([image])[0].text
    else:
        import rapidocr

        models = Path(rapidocr.__file__).parent / "models"
        files = {
            "Det": "PP-OCRv6_det_small.onnx",
            "Rec": "PP-OCRv6_rec_small.onnx",
            "Cls": "ch_ppocr_mobile_v2.0_cls_mobile.onnx",
        }
        params: dict[str, Any] = {"Global.log_level": "error"}
        for stage, file in files.items():
            params[f"{stage}.model_path"] = str(models / file)
            params[f"{stage}.engine_type"] = rapidocr.EngineType(engine)
        ocr = rapidocr.RapidOCR(params=params)

        def read(image: Any) -> str:
            # RapidOCR takes a BGR array, as OpenCV decodes.
            result = ocr(np.ascontiguousarray(np.asarray(image)[:, :, ::-1]))
            return "\n".join(getattr(result, "txts", None) or ())

    decoded = {
        kind: [(Image.open(folder / path).convert("RGB"), model) for path, model in rows]
        for kind, rows in listing.items()
    }
    for image, _ in decoded["label"][:2]:
        read(image)  # load the models, prepare the engine
    out: dict[str, Any] = {}
    for kind, rows in decoded.items():
        seconds, cpu, hits = [], [], []
        for image, model in rows:
            start, start_cpu = time.perf_counter(), time.process_time()
            text = read(image)
            seconds.append(time.perf_counter() - start)
            cpu.append(time.process_time() - start_cpu)
            if model is not None:
                hits.append(model in "".join(text.split()))
        out[kind] = {"seconds": seconds, "cpu_seconds": cpu, "read": hits}
    out["peak_rss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return out


def run_worker(engine: str, setting: str, photo_index: Path) -> dict[str, Any]:
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(
            filter(None, [str(ROOT / "src"), os.environ.get("PYTHONPATH")])
        ),
    }
    done = subprocess.run(
        [sys.executable, __file__, "--worker", engine, setting, str(photo_index)],
        capture_output=True, text=True, env=env, check=False,
    )  # fmt: skip
    if done.returncode != 0:
        raise SystemExit(f"{engine}/{setting} failed:\n{done.stderr[-3000:]}")
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


# -- the run -------------------------------------------------------------------------------


def ms(values: list[float], q: float) -> float:
    return float(np.percentile(values, q)) * 1000


def main() -> None:
    if len(sys.argv) == 5 and sys.argv[1] == "--worker":
        print(json.dumps(worker(sys.argv[2], sys.argv[3], Path(sys.argv[4]))))
        return
    parser = make_parser(__doc__ or "")
    parser.add_argument(
        "--count", type=int, help="photos of each kind (default 24; 4 with --quick)"
    )
    parser.add_argument(
        "--rounds", type=int, help="times each reader runs, alternating (default 2; 1 with --quick)"
    )
    args = parser.parse_args()
    try:
        import rapidocr  # noqa: F401
    except ImportError:
        skipped("ocr_speed", args, "rapidocr is not installed: pip install 'multimodal-rag[ocr]'")
        return
    count = args.count or (4 if args.quick else 24)
    rounds = args.rounds or (1 if args.quick else 2)
    photo_sets = inputs(count)
    photo_index = CACHE / f"ocr-speed-{count}" / "index.json"
    load_before = os.getloadavg()
    combos = [(engine, setting) for engine in ENGINES for setting in SETTINGS]
    runs: dict[tuple[str, str], list[dict[str, Any]]] = {combo: [] for combo in combos}
    for r in range(rounds):
        for engine, setting in combos if r % 2 == 0 else combos[::-1]:
            print(f"round {r + 1}: {engine} / {setting}", flush=True)
            runs[engine, setting].append(run_worker(engine, setting, photo_index))
    load_after = os.getloadavg()
    rows = []
    for (engine, setting), results in runs.items():
        for kind in KINDS:
            seconds = [s for result in results for s in result[kind]["seconds"]]
            cpu = [s for result in results for s in result[kind]["cpu_seconds"]]
            hits = [h for result in results for h in result[kind]["read"]]
            rows.append({
                "engine": engine, "settings": setting, "kind": kind, "photos": len(photo_sets[kind]),
                "p50_ms": ms(seconds, 50), "p90_ms": ms(seconds, 90), "cpu_p50_ms": ms(cpu, 50),
                "read_rate": (sum(hits) / len(hits)) if hits else None,
                "peak_rss_mib": max(result["peak_rss_mib"] for result in results),
            })  # fmt: skip
    print(
        f"\nload average before {load_before[0]:.2f}, after {load_after[0]:.2f} ({os.cpu_count()} CPUs)"
    )
    print(
        f"{'engine':<12} {'settings':<9} {'photos':<14} {'p50 ms':>8} {'p90 ms':>8} {'model read':>10} {'peak RSS MiB':>13}"
    )
    for row in rows:
        rate = "-" if row["read_rate"] is None else f"{row['read_rate']:.0%}"
        print(f"{row['engine']:<12} {row['settings']:<9} {row['kind']:<14} {row['p50_ms']:>8.0f} {row['p90_ms']:>8.0f} {row['cpu_p50_ms']:>10.0f} "
              f"{rate:>10} {row['peak_rss_mib']:>13.0f}")  # fmt: skip
    by = {(row["engine"], row["settings"], row["kind"]): row for row in rows}
    for engine in ENGINES:
        for kind in KINDS:
            ratio = by[engine, "rapidocr", kind]["p50_ms"] / by[engine, "reader", kind]["p50_ms"]
            print(f"{engine} {kind}: rapidocr defaults / reader p50 = {ratio:.1f}x")
    figures = {
        "openvino_query_p50_ms": Figure(by["openvino", "reader", "query"]["p50_ms"], "lower", 1.5),
        "openvino_1080p_product_p50_ms": Figure(
            by["openvino", "reader", "1080p product"]["p50_ms"], "lower", 1.5
        ),
        "onnxruntime_query_p50_ms": Figure(
            by["onnxruntime", "reader", "query"]["p50_ms"], "lower", 1.5
        ),
        "openvino_query_read_rate": Figure(
            float(by["openvino", "reader", "query"]["read_rate"]), "higher", 0.15
        ),
        "openvino_label_read_rate": Figure(
            float(by["openvino", "reader", "label"]["read_rate"]), "higher", 0.15
        ),
    }
    report = {
        "count": count, "rounds": rounds, "load_average_before": load_before, "load_average_after": load_after,
        "rows": rows, "median_of_medians_s": statistics.median(r["p50_ms"] for r in rows) / 1000,
    }  # fmt: skip
    finish("ocr_speed", args, report, figures)


if __name__ == "__main__":
    main()
