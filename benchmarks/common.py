"""What every benchmark shares: its command line, its inputs, its results file and the
comparison with a committed baseline.

A benchmark is a script (``python benchmarks/<name>.py``); Python puts its folder first on
``sys.path``, so ``import common`` finds this module. Nothing here reads data outside the
repository: the default inputs are generated (synthetic images and captions) or taken
from ``examples/stamps``; ``--data`` points a benchmark at a larger folder of the same
layout (``description.jsonl`` beside the images) when one is at hand.

Results go to ``benchmarks/results/<name>.json`` (ignored by git). A run's headline
figures are compared with ``benchmarks/baselines/<name>-<variant>.json`` when that file
exists: each figure's ratio to the baseline is printed and recorded, and ``--check`` turns
a figure worse than its tolerance into exit status 1. ``--save-baseline`` writes the file.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import io
import json
import os
import platform
import sys
import tempfile
import threading
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
BASELINES = ROOT / "benchmarks" / "baselines"
EXAMPLE_STAMPS = ROOT / "examples" / "stamps"
#: Where generated inputs and models are cached between runs (they are deterministic).
CACHE = Path(tempfile.gettempdir()) / "multimodal-rag-benchmarks"

# The benchmarks run from a checkout without installing it: the library is its src/.
if str(ROOT / "src") not in sys.path:
    sys.path.insert(1, str(ROOT / "src"))


# -- command line --------------------------------------------------------------------


def make_parser(doc: str, *, data: bool = False) -> argparse.ArgumentParser:
    """The options every benchmark takes; ``data`` adds ``--data`` for those that index images."""
    parser = argparse.ArgumentParser(
        description=doc.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--quick", action="store_true", help="a small run, seconds to a minute")
    parser.add_argument("--out", type=Path, help="results file (default benchmarks/results/<name>.json)")
    parser.add_argument(
        "--check",
        action="store_true",
        help="exit with status 1 when a figure is worse than its baseline by more than its tolerance",
    )
    parser.add_argument(
        "--save-baseline", action="store_true", help="write this run's figures as the baseline"
    )
    if data:
        parser.add_argument(
            "--data",
            type=Path,
            help="a folder of images with a description.jsonl (default: generated or examples/stamps)",
        )
    return parser


# -- figures and baselines -----------------------------------------------------------


@dataclasses.dataclass(frozen=True)
class Figure:
    """One headline figure of a run, and how to judge it against a baseline.

    ``better`` says which way is an improvement; ``tolerance`` is the relative change
    allowed the other way (timings vary between machines and moments: their tolerance
    is wide; deterministic figures such as recall get a narrow one, counts none).
    """

    value: float
    better: Literal["higher", "lower", "equal"] = "lower"
    tolerance: float = 1.0


def variant(args: argparse.Namespace) -> str:
    """Which baseline a run compares with: quick or full, on the default data or not."""
    name = "quick" if args.quick else "full"
    return f"{name}-data" if getattr(args, "data", None) is not None else name


def compare(figures: Mapping[str, Figure], baseline: Mapping[str, Any]) -> dict[str, Any]:
    """Each figure against the baseline's: the ratio now / then, and whether it is within
    the baseline's tolerance. Figures the baseline lacks are left out."""
    rows = {}
    for name, figure in figures.items():
        then = baseline.get("figures", {}).get(name)
        if then is None:
            continue
        value, better, tolerance = then["value"], then["better"], then["tolerance"]
        ratio = figure.value / value if value else (1.0 if figure.value == value else float("inf"))
        if better == "higher":
            within = figure.value >= value * (1 - tolerance)
        elif better == "lower":
            within = figure.value <= value * (1 + tolerance)
        else:
            within = abs(figure.value - value) <= abs(value) * tolerance
        rows[name] = {"now": figure.value, "baseline": value, "ratio": ratio, "better": better,
                      "tolerance": tolerance, "within": within}  # fmt: skip
    return rows


def finish(name: str, args: argparse.Namespace, report: dict[str, Any], figures: Mapping[str, Figure]) -> dict[str, Any]:
    """Write the results file, compare with the baseline, print the comparison; exit 1 under
    ``--check`` when a figure is out of tolerance. Returns the report as written."""
    which = variant(args)
    baseline_path = BASELINES / f"{name}-{which}.json"
    baseline = json.loads(baseline_path.read_text()) if baseline_path.is_file() else None
    comparison = compare(figures, baseline) if baseline is not None else {}
    full = {
        "benchmark": name,
        "variant": which,
        "command": " ".join(["python", f"benchmarks/{name}.py", *sys.argv[1:]]),
        "machine": machine(),
        "figures": {key: figure.value for key, figure in figures.items()},
        "baseline": {"file": str(baseline_path.relative_to(ROOT)), "figures": comparison} if baseline else None,
        **report,
    }
    out = args.out or RESULTS / f"{name}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(full, indent=1, default=_json_default) + "\n")
    if comparison:
        print(f"\nagainst {baseline_path.relative_to(ROOT)} (recorded on {baseline['machine'].get('cpu', '?')}):")
        for key, row in comparison.items():
            mark = "ok" if row["within"] else "WORSE than tolerance"
            print(f"  {key:<44} {row['now']:>12.4g}  baseline {row['baseline']:>10.4g}  ratio {row['ratio']:>6.2f}  {mark}")
    elif baseline is None:
        print(f"\nno baseline for this variant ({baseline_path.relative_to(ROOT)})")
    if args.save_baseline:
        BASELINES.mkdir(parents=True, exist_ok=True)
        saved = {
            "command": full["command"],
            "machine": full["machine"],
            "figures": {key: dataclasses.asdict(figure) for key, figure in figures.items()},
        }
        baseline_path.write_text(json.dumps(saved, indent=1) + "\n")
        print(f"wrote {baseline_path.relative_to(ROOT)}")
    print(f"wrote {out}")
    if args.check and any(not row["within"] for row in comparison.values()):
        raise SystemExit(1)
    return full


def _json_default(value: Any) -> Any:
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, np.generic):
        return value.item()
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def machine() -> dict[str, Any]:
    return {
        "cpu": cpu_model(),
        "cpus": os.cpu_count(),
        "platform": platform.platform(),
        "python": platform.python_version(),
    }


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


# -- memory --------------------------------------------------------------------------


def rss_mib(pid: int | str = "self") -> float:
    """Resident memory of a process (Linux), in MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS in /proc/{pid}/status")


class RSSSampler:
    """Highest resident memory seen while the block runs (sampled every few milliseconds):
    the process's peak covers model loading too, this isolates the work in the block."""

    def __enter__(self) -> RSSSampler:
        self.start_mb = rss_mib()
        self.peak_mb = self.start_mb
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def _sample(self) -> None:
        while not self._stop.wait(0.005):
            self.peak_mb = max(self.peak_mb, rss_mib())

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.peak_mb = max(self.peak_mb, rss_mib())

    def report(self) -> dict[str, float]:
        return {"rss_before_ingest_mb": self.start_mb, "ingest_peak_rss_mb": self.peak_mb}


# -- inputs --------------------------------------------------------------------------

COLOURS = {
    "red": (200, 40, 40), "green": (40, 160, 60), "blue": (40, 70, 200), "yellow": (230, 200, 40),
    "purple": (130, 50, 160), "orange": (240, 130, 30), "black": (20, 20, 20), "white": (245, 245, 245),
}  # fmt: skip
SHAPES = ("circle", "square", "triangle", "cross", "ring", "stripe")
CATEGORIES = ("toys", "tools", "signs", "badges", "tiles")


def catalogue(count: int, *, seed: int = 0) -> tuple[Path, Path]:
    """``count`` small PNGs (a coloured shape on a coloured ground, with noise) in
    ``<folder>/images`` and their captions in ``<folder>/description.jsonl``, as a user's
    catalogue is laid out; generated once and cached. Returns (folder, descriptions).

    Captions name the colours, the shape and a model number (``XR-0042``), so lexical
    search has words and codes to find; each caption is unique.
    """
    from PIL import Image, ImageDraw

    folder = CACHE / f"catalogue-{count}-{seed}"
    descriptions = folder / "description.jsonl"
    if descriptions.is_file():
        return folder, descriptions
    (folder / "images").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    names = list(COLOURS)
    lines = []
    for i in range(count):
        fg, bg = rng.choice(len(names), 2, replace=False)
        shape = SHAPES[int(rng.integers(len(SHAPES)))]
        image = Image.new("RGB", (64, 64), COLOURS[names[bg]])
        draw = ImageDraw.Draw(image)
        box = [int(v) for v in rng.integers(4, 20, 2)] + [int(v) for v in rng.integers(44, 60, 2)]
        colour = COLOURS[names[fg]]
        if shape == "circle":
            draw.ellipse(box, fill=colour)
        elif shape == "ring":
            draw.ellipse(box, outline=colour, width=6)
        elif shape == "triangle":
            draw.polygon([(box[0], box[3]), (box[2], box[3]), ((box[0] + box[2]) // 2, box[1])], fill=colour)
        elif shape == "cross":
            draw.line([box[0], box[1], box[2], box[3]], fill=colour, width=7)
            draw.line([box[0], box[3], box[2], box[1]], fill=colour, width=7)
        elif shape == "stripe":
            draw.rectangle([0, box[1], 63, box[1] + 12], fill=colour)
        else:
            draw.rectangle(box, fill=colour)
        pixels = np.asarray(image, dtype=np.float32) + rng.normal(0, 6, (64, 64, 3))
        path = f"images/{i:05d}.png"
        Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).save(folder / path)
        caption = f"A {names[fg]} {shape} on a {names[bg]} ground, model XR-{i:04d}."
        lines.append({"image_path": path, "description": caption, "category": CATEGORIES[i % len(CATEGORIES)]})
    descriptions.write_text("".join(json.dumps(line) + "\n" for line in lines))
    return folder, descriptions


PERSIAN_CATALOGUE = ROOT / "benchmarks" / "data" / "persian_catalogue.jsonl"


def persian_catalogue() -> tuple[Path, Path]:
    """``benchmarks/data/persian_catalogue.jsonl`` (48 products described in Persian) beside an
    image for each, drawn from the item's line number alone (a coloured shape on a coloured
    ground), so that every run and every machine gets the same pictures; generated once and
    cached. Returns (folder, descriptions), the layout ``add_directory`` reads."""
    from PIL import Image, ImageDraw

    text = PERSIAN_CATALOGUE.read_text(encoding="utf-8")
    folder = CACHE / f"persian-catalogue-{hashlib.sha256(text.encode()).hexdigest()[:12]}"
    descriptions = folder / "description.jsonl"
    if descriptions.is_file():
        return folder, descriptions
    (folder / "images").mkdir(parents=True, exist_ok=True)
    names = list(COLOURS)
    for i, line in enumerate(line for line in text.splitlines() if line.strip()):
        rng = np.random.default_rng(i)
        fg, bg = rng.choice(len(names), 2, replace=False)
        image = Image.new("RGB", (64, 64), COLOURS[names[bg]])
        box = [int(v) for v in rng.integers(4, 20, 2)] + [int(v) for v in rng.integers(44, 60, 2)]
        draw = ImageDraw.Draw(image)
        if i % 3 == 0:
            draw.ellipse(box, fill=COLOURS[names[fg]])
        elif i % 3 == 1:
            draw.rectangle(box, fill=COLOURS[names[fg]])
        else:
            draw.polygon([(box[0], box[3]), (box[2], box[3]), ((box[0] + box[2]) // 2, box[1])], fill=COLOURS[names[fg]])
        image.save(folder / json.loads(line)["image_path"])
    descriptions.write_text(text, encoding="utf-8")
    return folder, descriptions


def catalogue_queries(descriptions: Path, *, per_set: int = 20, seed: int = 0) -> Path:
    """Labelled queries for ``descriptions`` (``rag.evaluate(queries=...)``'s format): a
    **code** set (a model number: one right answer) and a **keyword** set (two words of a
    caption: every image whose caption has both is right). Written beside the captions."""
    out = descriptions.with_name("queries.jsonl")
    records = [json.loads(line) for line in descriptions.read_text().splitlines() if line.strip()]
    rng = np.random.default_rng(seed)
    picks = rng.choice(len(records), min(per_set, len(records)), replace=False)
    lines = []
    for i in picks:
        code = records[i]["description"].rsplit(" ", 1)[1].rstrip(".")
        lines.append({"query": code, "set": "code", "expected": [records[i]["image_path"]]})
    for i in picks:
        words = records[i]["description"].split()
        query = f"{words[1]} {words[2]}"  # colour and shape
        expected = [r["image_path"] for r in records if f" {query} " in r["description"]]
        lines.append({"query": query, "set": "keyword", "expected": expected})
    out.write_text("".join(json.dumps(line) + "\n" for line in lines))
    return out


def source_images(data: Path | None) -> list[Path]:
    """Images to tile photos from: those under ``data``, else ``examples/stamps/images``."""
    folder = data if data is not None else EXAMPLE_STAMPS / "images"
    images = sorted(p for p in folder.rglob("*") if p.suffix.lower() in (".png", ".jpg", ".jpeg"))
    if not images:
        raise SystemExit(f"no images under {folder}")
    return images


#: Photo sizes: width, height, and the grid of tiles they are made of.
PHOTO_SIZES = {"1080p": (1920, 1080, 3, 2), "12MP": (4000, 3000, 4, 3)}


def photos(kind: str, count: int, data: Path | None = None) -> Path:
    """``count`` distinct photo-sized JPEGs of size ``kind``, tiled from upscaled source
    images with a tint and sensor-like noise (so each compresses like a photo); cached."""
    tag = "examples" if data is None else f"data-{abs(hash(str(data.resolve()))) % 10**8}"
    folder = CACHE / f"photos-{kind}-{count}-{tag}"
    if folder.is_dir() and len(list(folder.glob("*.jpg"))) == count:
        return folder
    folder.mkdir(parents=True, exist_ok=True)
    sources = [str(p) for p in source_images(data)]
    from concurrent.futures import ProcessPoolExecutor

    jobs = [(kind, i, sources, str(folder)) for i in range(count)]
    with ProcessPoolExecutor(max_workers=min(4, os.cpu_count() or 1)) as pool:
        list(pool.map(_photo, jobs, chunksize=8))
    return folder


def _photo(job: tuple[str, int, list[str], str]) -> None:
    from PIL import Image

    kind, index, sources, folder = job
    width, height, columns, rows = PHOTO_SIZES[kind]
    rng = np.random.default_rng(index)
    canvas = Image.new("RGB", (width, height), "white")
    cell = (width // columns, height // rows)
    for r in range(rows):
        for c in range(columns):
            with Image.open(sources[int(rng.integers(len(sources)))]) as tile:
                canvas.paste(tile.convert("RGB").resize(cell, Image.BICUBIC), (c * cell[0], r * cell[1]))
    pixels = np.asarray(canvas, dtype=np.float32) * rng.uniform(0.85, 1.0, 3)
    pixels += rng.normal(0.0, 4.0, pixels.shape)
    Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).save(Path(folder) / f"{index:05d}.jpg", quality=90)


def png_bytes(seed: int, side: int = 8) -> bytes:
    """A small random PNG: distinct content for every seed."""
    from PIL import Image

    pixels = np.random.default_rng(seed).integers(0, 256, (side, side, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


# -- models --------------------------------------------------------------------------

#: ViT-B/32's shape, as openai's CLIP builds it.
VIT_B_32 = {
    "embed_dim": 512, "image_resolution": 224, "vision_layers": 12, "vision_width": 768,
    "vision_patch_size": 32, "context_length": 77, "vocab_size": 49408,
    "transformer_width": 512, "transformer_heads": 8, "transformer_layers": 12,
}  # fmt: skip


def tiny_checkpoint() -> Path:
    """A tiny random-weights CLIP (64-d): the pipeline's cost without a real model's."""
    from multimodal_rag.tools import make_random_clip_checkpoint

    return make_random_clip_checkpoint(CACHE / "tiny-clip.pt", embed_dim=64, width=64, layers=2)


def tiny_embedder(checkpoint: Path | None = None) -> Any:
    """A ``CLIPEmbedder`` of ``checkpoint`` (default the tiny random model) in fp32: choosing
    a precision by measuring (``auto``) takes seconds and varies with the machine's load."""
    from multimodal_rag import CLIPEmbedder

    return CLIPEmbedder(checkpoint=checkpoint or tiny_checkpoint(), precision="fp32")


def import_clip() -> Any:
    """openai's ``clip`` package, as a user of the cookbook imports it. Its ``clip.py`` does
    ``from pkg_resources import packaging``, which setuptools 81 no longer ships: where it
    is missing, a module holding only ``packaging`` stands in while ``clip`` imports."""
    import importlib
    import types

    try:
        return importlib.import_module("clip")
    except ModuleNotFoundError as exc:
        if exc.name != "pkg_resources":
            raise
    import packaging.version

    shim = types.ModuleType("pkg_resources")
    shim.packaging = packaging  # type: ignore[attr-defined]
    sys.modules["pkg_resources"] = shim
    try:
        return importlib.import_module("clip")
    finally:
        del sys.modules["pkg_resources"]


def vit_b_32_checkpoint() -> Path:
    """A random-weights CLIP of ViT-B/32's shape, in fp16 like openai's files: it costs what
    the real model costs, and nothing is downloaded."""
    path = CACHE / "vit-b-32-random.pt"
    if not path.is_file():
        import torch

        torch.manual_seed(0)
        model = import_clip().model.CLIP(**VIT_B_32).eval().half()  # type: ignore[arg-type]
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.save(model.state_dict(), path)
    return path


def skipped(name: str, args: argparse.Namespace, reason: str) -> None:
    """A benchmark whose optional dependency is missing: say so, and record it."""
    print(f"skipped: {reason}")
    out = args.out or RESULTS / f"{name}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"benchmark": name, "skipped": reason}, indent=1) + "\n")


# -- product photos with printed labels (OCR) ---------------------------------------------

#: Made-up brand syllables, product kinds, spec lines and case colours for labelled products.
_BRAND_SYLLABLES = ("VOL", "KES", "TAR", "MEN", "ZO", "RIX", "DA", "LUM", "PRO", "NOVA", "QUIN", "TEK", "ORA", "BEL")
_PRODUCT_KINDS = (
    "portable power station", "cordless drill", "air purifier", "espresso machine", "bench power supply",
    "solar charge controller", "inverter generator", "dehumidifier", "label printer", "floor heater",
)  # fmt: skip
_SPECS = (
    "{a}000 Wh LiFePO4", "{a}{b}0 W {c}V DC", "{a}{b}00 mAh Li-ion", "{a}{b} L {c}00 W", "{a}.{b} kW {c}0 dB",
    "IP6{c} {a}{b} A", "{a}{b}0 m3/h HEPA",
)  # fmt: skip
_CASE_COLOURS = {
    "grey": (120, 124, 130), "black": (40, 42, 46), "orange": (215, 120, 40), "blue": (45, 85, 160),
    "green": (60, 125, 80), "red": (170, 50, 50), "white": (225, 225, 220), "yellow": (220, 185, 50),
}  # fmt: skip
#: Characters an OCR engine or a typist confuses, both ways.
OCR_CONFUSIONS = {"O": "0", "0": "O", "I": "1", "1": "I", "S": "5", "5": "S", "B": "8", "8": "B"}


@dataclasses.dataclass(frozen=True)
class LabelledProduct:
    """One product of a group: everything but the model number is the group's."""

    group: int
    brand: str
    kind: str
    colour: str
    spec: str
    model: str  # "XG-2047"
    layout: int  # where the label sits and how it is set (shared by the group)
    background: str | None  # the source photo behind the product (shared by the group)
    seed: int  # the group's seed: backdrop, sizes and positions


def labelled_products(groups: int, *, per_group: int = 4, seed: int = 0, data: Path | None = None) -> list[LabelledProduct]:
    """``groups`` groups of ``per_group`` products that share a background, a brand, a layout
    and a spec line, and whose model numbers are the same digits in other orders
    (``XG-2047``, ``XG-2074``, ``XG-2407``...). Every model number is unique, and each has a
    character of `OCR_CONFUSIONS` (its digits include a 0, 1, 5 or 8)."""
    import itertools

    rng = np.random.default_rng(seed)
    try:
        sources = [str(p) for p in source_images(data)]
    except SystemExit:
        sources = []  # no photos: plain generated backdrops
    used: set[str] = set()
    products = []
    letters = "ABCDEFGHKLMNPRTVXZ"
    for g in range(groups):
        brand = "".join(rng.choice(_BRAND_SYLLABLES, 2, replace=False)).upper()
        prefix = "".join(rng.choice(list(letters), 2))
        while True:
            digits = [str(d) for d in rng.choice(10, 4, replace=False)]
            if set(digits) & set("0158") and digits[0] != "0":
                break
        orders = ["".join(p) for p in itertools.permutations(digits) if p[0] != "0"]
        rng.shuffle(orders)
        picked = [o for o in orders if f"{prefix}-{o}" not in used][:per_group]
        values = {k: int(rng.integers(1, 10)) for k in "abc"}
        spec = _SPECS[int(rng.integers(len(_SPECS)))].format(**values)
        kind = _PRODUCT_KINDS[int(rng.integers(len(_PRODUCT_KINDS)))]
        colour = list(_CASE_COLOURS)[int(rng.integers(len(_CASE_COLOURS)))]
        background = sources[int(rng.integers(len(sources)))] if sources else None
        layout = int(rng.integers(3))
        group_seed = int(rng.integers(2**31))
        for order in picked:
            model = f"{prefix}-{order}"
            used.add(model)
            products.append(LabelledProduct(group=g, brand=brand, kind=kind, colour=colour, spec=spec, model=model,
                                            layout=layout, background=background, seed=group_seed))  # fmt: skip
    return products


def product_description(product: LabelledProduct, *, with_model: bool) -> str:
    """A catalogue description: brand, kind, colour and spec; the model number when asked."""
    text = f"{product.brand} {product.kind}, {product.colour} case, {product.spec}."
    return f"{text} Model {product.model}." if with_model else text


def product_scene(product: LabelledProduct, size: tuple[int, int] = (1000, 750)) -> tuple[Any, tuple[int, int, int, int]]:
    """The product photographed upright: its backdrop, its case and its printed label.
    Returns the image and the label's box (left, top, right, bottom). Products of one group
    differ only in the model number's digits."""
    from PIL import Image, ImageDraw, ImageFilter, ImageFont

    width, height = size
    rng = np.random.default_rng(product.seed)
    tint = np.array(_CASE_COLOURS[product.colour], np.float32)
    if product.background is not None:
        with Image.open(product.background) as source:
            ground = source.convert("RGBA")
        backdrop = Image.new("RGBA", ground.size, (200, 196, 188, 255))
        backdrop.alpha_composite(ground)
        backdrop = backdrop.convert("RGB").resize(size, Image.BICUBIC).filter(ImageFilter.GaussianBlur(2))
        pixels = np.asarray(backdrop, np.float32) * 0.75 + rng.uniform(20, 60, 3)
    else:
        ramp = np.linspace(0.7, 1.1, height, dtype=np.float32)[:, None, None]
        pixels = np.broadcast_to(rng.uniform(90, 200, 3).astype(np.float32) * ramp, (height, width, 3)).copy()
    canvas = Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(canvas)
    # The case: a rounded block in the group's colour; the label sits on it.
    case = (int(width * 0.12), int(height * 0.14), int(width * 0.88), int(height * 0.9))
    draw.rounded_rectangle(case, radius=int(width * 0.03), fill=tuple(int(v) for v in tint), outline=(20, 20, 20), width=3)
    scale = width / 1000 * float(rng.uniform(0.9, 1.1))
    fonts = [ImageFont.load_default(size=round(s * scale)) for s in (64, 46, 36)]
    lines = [product.brand, product.model, product.spec]
    sizes = [draw.textbbox((0, 0), text, font=font) for text, font in zip(lines, fonts, strict=True)]
    text_w = max(b[2] - b[0] for b in sizes)
    gap = round(18 * scale)
    text_h = sum(b[3] - b[1] for b in sizes) + gap * (len(lines) - 1)
    pad = round(30 * scale)
    label_w, label_h = text_w + 2 * pad, text_h + 2 * pad
    slots = {0: 0.5, 1: 0.3, 2: 0.7}  # centred, left, right
    cx = int(width * slots[product.layout])
    cx = min(max(cx, case[0] + label_w // 2 + 10), case[2] - label_w // 2 - 10)
    top = int(height * float(rng.uniform(0.3, 0.4)))
    label = (cx - label_w // 2, top, cx + label_w // 2, top + label_h)
    paper = (244, 241, 232) if product.colour not in ("white", "yellow") else (30, 32, 36)
    ink = (20, 20, 24) if paper[0] > 128 else (240, 240, 235)
    draw.rounded_rectangle(label, radius=round(10 * scale), fill=paper)
    y = top + pad
    for text, font, box in zip(lines, fonts, sizes, strict=True):
        x = label[0] + pad if product.layout == 1 else cx - (box[2] - box[0]) // 2
        draw.text((x - box[0], y - box[1]), text, font=font, fill=ink)
        y += box[3] - box[1] + gap
    return canvas, label


@dataclasses.dataclass(frozen=True)
class View:
    """How a query photo re-photographs a product."""

    quarter: int  # quarter turns counterclockwise: 0, 1, 2, 3
    tilt: float  # degrees, -20 to 20
    zoom: float  # the crop's share of the scene's width
    light: float  # brightness factor
    blur: float  # Gaussian blur radius, pixels

    @property
    def angle(self) -> float:
        return 90.0 * self.quarter + self.tilt


def random_view(rng: np.random.Generator, *, quarter: int | None = None) -> View:
    return View(
        quarter=int(rng.integers(4)) if quarter is None else quarter,
        tilt=round(float(rng.uniform(-20, 20)), 1),
        zoom=round(float(rng.uniform(0.7, 0.95)), 3),
        light=round(float(rng.uniform(0.65, 1.25)), 3),
        blur=round(float(rng.uniform(0.3, 1.4)), 2),
    )


def rephotograph(scene: Any, label: tuple[int, int, int, int], view: View, rng: np.random.Generator, *, side: int = 900) -> Any:
    """``scene`` photographed again: another crop that still holds the label, another light,
    turned by ``view.angle``, blurred, longer side ``side``. (JPEG quality is the caller's.)"""
    from PIL import Image, ImageEnhance, ImageFilter

    width, height = scene.size
    crop_w, crop_h = int(width * view.zoom), int(height * view.zoom)
    low_x, high_x = max(0, label[2] - crop_w), min(label[0], width - crop_w)
    low_y, high_y = max(0, label[3] - crop_h), min(label[1], height - crop_h)
    x = int(rng.integers(low_x, high_x + 1)) if high_x >= low_x else max(0, (width - crop_w) // 2)
    y = int(rng.integers(low_y, high_y + 1)) if high_y >= low_y else max(0, (height - crop_h) // 2)
    photo = scene.crop((x, y, x + crop_w, y + crop_h))
    edge = tuple(int(v) for v in np.asarray(photo, np.float32)[0].mean(axis=0))
    photo = photo.rotate(view.angle, resample=Image.BICUBIC, expand=True, fillcolor=edge)
    photo = ImageEnhance.Brightness(photo).enhance(view.light)
    photo = ImageEnhance.Color(photo).enhance(float(rng.uniform(0.7, 1.2)))
    photo = photo.filter(ImageFilter.GaussianBlur(view.blur))
    scale = side / max(photo.size)
    photo = photo.resize((round(photo.width * scale), round(photo.height * scale)), Image.BICUBIC)
    pixels = np.asarray(photo, np.float32) + rng.normal(0, 3.0, (photo.height, photo.width, 3))
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))


def confused(model: str, rng: np.random.Generator) -> str:
    """``model`` with one character swapped for the one OCR confuses it with (O/0, I/1, S/5, B/8)."""
    places = [i for i, c in enumerate(model) if c in OCR_CONFUSIONS]
    i = places[int(rng.integers(len(places)))]
    return model[:i] + OCR_CONFUSIONS[model[i]] + model[i + 1 :]
