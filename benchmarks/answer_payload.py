"""What an image costs on its way to a vision model: encode time and request size.

Makes a 12-megapixel photo-like JPEG and a large PNG drawing, then times
``image_data_url`` (decode, downscale, re-encode, base64) at several ``max_image_side``
values and reports the size of the data URL next to the original file. That function is
what ``OpenAIAnswerer`` and ``VisionLLMReranker`` run on every image they send; it has no
public name, so this benchmark imports it from its module.

    python benchmarks/answer_payload.py             # a few seconds
    python benchmarks/answer_payload.py --quick     # smaller images, one timing each

Prints a table and writes ``benchmarks/results/answer_payload.json``.
"""

from __future__ import annotations

import io
import statistics
import time

import numpy as np
from common import Figure, finish, make_parser
from PIL import Image, ImageDraw

from multimodal_rag.answerers.data_urls import image_data_url


def photo(width: int = 4000, height: int = 3000) -> bytes:
    """Smooth colour gradients plus sensor-like noise: compresses like a real photo."""
    rng = np.random.default_rng(0)
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    base = np.stack([x / width * 255, y / height * 255, (x + y) / (width + height) * 255], axis=-1)
    pixels = np.clip(base + rng.normal(0, 12, base.shape), 0, 255).astype(np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="JPEG", quality=92)
    return buffer.getvalue()


def drawing(width: int = 3000, height: int = 2000) -> bytes:
    image = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(image)
    for i in range(0, width, 40):
        draw.line([(i, 0), (width - i, height)], fill=(i % 255, 0, 128), width=3)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def main() -> None:
    parser = make_parser(__doc__)
    parser.add_argument("--repeat", type=int, help="timings per image and side (default 3; 1 with --quick)")
    args = parser.parse_args()
    args.repeat = args.repeat or (1 if args.quick else 3)

    scale = 4 if args.quick else 1
    inputs = {
        f"photo {4000 // scale}x{3000 // scale} JPEG": photo(4000 // scale, 3000 // scale),
        f"drawing {3000 // scale}x{2000 // scale} PNG": drawing(3000 // scale, 2000 // scale),
    }
    rows = []
    for name, data in inputs.items():
        for side in (512, 1024, 2048):
            times, url = [], ""
            for _ in range(args.repeat):
                started = time.perf_counter()
                url = image_data_url(data, max_side=side)
                times.append(time.perf_counter() - started)
            rows.append(
                {
                    "image": name,
                    "max_image_side": side,
                    "original_kb": round(len(data) / 1024, 1),
                    "data_url_kb": round(len(url) / 1024, 1),
                    "mime": url[5 : url.index(";")],
                    "encode_ms_median": round(statistics.median(times) * 1000, 1),
                }
            )

    header = f"{'image':<24}{'side':>6}{'original KB':>13}{'data URL KB':>13}{'mime':>12}{'encode ms':>11}"
    print(header)
    print("-" * len(header))
    for row in rows:
        print(
            f"{row['image']:<24}{row['max_image_side']:>6}{row['original_kb']:>13}{row['data_url_kb']:>13}"
            f"{row['mime']:>12}{row['encode_ms_median']:>11}"
        )
    photo_1024 = next(r for r in rows if r["image"].startswith("photo") and r["max_image_side"] == 1024)
    figures = {
        "photo_1024_encode_ms": Figure(photo_1024["encode_ms_median"], "lower", 2.0),
        "photo_1024_data_url_kb": Figure(photo_1024["data_url_kb"], "lower", 0.2),
    }
    finish("answer_payload", args, {"repeat": args.repeat, "rows": rows}, figures)


if __name__ == "__main__":
    main()
