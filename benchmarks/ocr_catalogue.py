"""A product catalogue for OCR retrieval: look-alike products told apart by their printed model number.

Writes a folder a knowledge base indexes as a user's catalogue, and the labelled queries
``multimodal-rag eval --queries`` (``rag.evaluate(queries=...)``) reads:

- ``images/<model>.jpg``: product photos (1000x750, JPEG quality 90), each a case with a
  printed label (brand, model number, spec line such as ``3000 Wh LiFePO4``) in front of a
  blurred backdrop made from a real photo (``examples/stamps`` by default, ``--data`` for
  another folder; a plain generated backdrop when there is none). Products come in groups
  of four that share the backdrop, brand, case colour, spec line and layout, and whose model
  numbers are the same four digits in other orders (``XG-2047``, ``XG-2074``, ``XG-2407``,
  ``XG-4027``): only the label's digits tell them apart.
- ``description.jsonl``: one line per photo, ``{"image_path", "description", "group",
  "brand"}`` (the cookbook's format; ``multimodal-rag index --descriptions``). Half the
  descriptions (alternate products of each group) omit the model number, so for those the
  printed label is the only place it appears.
- ``queries/*.jpg``: each product photographed again: another crop and light, turned by
  0, 90, 180 or 270 degrees (one of each per group, in turn) plus a tilt of up to 20
  degrees, blurred, saved at JPEG quality 60.
- ``queries.jsonl``: labelled queries, one set each: ``photo`` (the upright query photos),
  ``photo-turned`` (those at 90, 180 and 270 degrees), ``model`` (the full model number),
  ``digits`` (its four digits alone) and ``confusion`` (the model number with one character
  swapped for the one OCR confuses it with: O/0, I/1, S/5, B/8). Each expects its product's
  photo. Image lines also carry ``view``: how the photo was taken.

Everything follows from ``--seed``: two runs write the same files.

    python benchmarks/ocr_catalogue.py --out /tmp/ocr-catalogue          # 24 groups, 96 products
    python benchmarks/ocr_catalogue.py --quick                           # 4 groups, 16 products

Prints the counts and writes ``benchmarks/results/ocr_catalogue.json``; the catalogue goes
to ``--folder`` (default ``<cache>/ocr-catalogue-<groups>-<seed>``).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import numpy as np
from common import (
    CACHE,
    Figure,
    confused,
    finish,
    labelled_products,
    make_parser,
    product_description,
    product_scene,
    random_view,
    rephotograph,
)


def write_catalogue(
    folder: Path, *, groups: int, seed: int = 0, data: Path | None = None
) -> dict[str, Any]:
    """Write the catalogue and its queries under ``folder``; returns what was written."""
    products = labelled_products(groups, seed=seed, data=data)
    (folder / "images").mkdir(parents=True, exist_ok=True)
    (folder / "queries").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed + 1)
    descriptions, queries = [], []
    for index, product in enumerate(products):
        scene, label = product_scene(product)
        image_path = f"images/{product.model.lower()}.jpg"
        scene.save(folder / image_path, quality=90)
        with_model = index % 2 == 0  # alternate products of each group: half omit the number
        descriptions.append({"image_path": image_path, "description": product_description(product, with_model=with_model),
                             "group": product.group, "brand": product.brand})  # fmt: skip
        view = random_view(rng, quarter=index % 4)
        photo = rephotograph(scene, label, view, rng)
        query_path = f"queries/{product.model.lower()}-q.jpg"
        photo.save(folder / query_path, quality=60)
        expected = [image_path]
        queries.append({"image": query_path, "set": "photo" if view.quarter == 0 else "photo-turned",
                        "expected": expected, "view": {"angle": view.angle, "zoom": view.zoom,
                                                        "light": view.light, "blur": view.blur}})  # fmt: skip
        queries.append({"query": product.model, "set": "model", "expected": expected})
        queries.append(
            {"query": product.model.split("-", 1)[1], "set": "digits", "expected": expected}
        )
        queries.append(
            {"query": confused(product.model, rng), "set": "confusion", "expected": expected}
        )
    (folder / "description.jsonl").write_text("".join(json.dumps(d) + "\n" for d in descriptions))
    (folder / "queries.jsonl").write_text("".join(json.dumps(q) + "\n" for q in queries))
    digest = hashlib.sha256()
    for path in sorted(folder.rglob("*")):
        if path.is_file():
            digest.update(path.relative_to(folder).as_posix().encode() + b"\0" + path.read_bytes())
    sets: dict[str, int] = {}
    for query in queries:
        sets[query["set"]] = sets.get(query["set"], 0) + 1
    return {
        "folder": folder,
        "products": len(products),
        "groups": groups,
        "descriptions_with_model": sum(product_description_has_model(d) for d in descriptions),
        "queries": sets,
        "sha256": digest.hexdigest(),
    }


def product_description_has_model(line: dict[str, Any]) -> bool:
    return " Model " in line["description"]


def main() -> None:
    parser = make_parser(__doc__ or "", data=True)
    parser.add_argument(
        "--groups", type=int, help="groups of four products (default 24; 4 with --quick)"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--folder", type=Path, help="where to write the catalogue")
    args = parser.parse_args()
    groups = args.groups or (4 if args.quick else 24)
    folder = args.folder or CACHE / f"ocr-catalogue-{groups}-{args.seed}"
    written = write_catalogue(folder, groups=groups, seed=args.seed, data=args.data)
    print(f"{written['products']} products in {groups} groups -> {folder}")
    print(f"descriptions naming the model number: {written['descriptions_with_model']}")
    print(f"{'query set':<14} {'queries':>7}")
    for name, count in written["queries"].items():
        print(f"{name:<14} {count:>7}")
    figures = {
        "products": Figure(written["products"], better="equal", tolerance=0.0),
        "descriptions_with_model": Figure(
            written["descriptions_with_model"], better="equal", tolerance=0.0
        ),
    }
    finish("ocr_catalogue", args, written, figures)


if __name__ == "__main__":
    main()
