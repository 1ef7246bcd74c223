"""Realistic edits that turn a knowledge-base image into a query whose right answer is its source.

A user rarely asks with the very file that was ingested: they crop a screenshot, send a
smaller or recompressed copy, photograph a screen at an angle, or show the picture among
other things. Each kind in `EDIT_KINDS` imitates one of these, with strengths drawn
from a ``numpy.random.Generator`` so that a run can be repeated exactly.

`edited_queries` gives each (source id, kind) its own generator, derived from the
seed and a stable hash of the id and kind, so a query does not change when other images
are added, removed or reordered.
"""

from __future__ import annotations

import hashlib
import io
import math
from collections.abc import Callable, Iterable, Iterator, Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageEnhance, ImageFilter, ImageStat

from multimodal_rag.errors import InvalidInputError

__all__ = ["EDIT_KINDS", "apply_edit", "edited_queries"]

#: The edits, in a fixed order (a kind's position feeds its generator's seed).
EDIT_KINDS = ("crop", "downscale", "jpeg", "rotate", "perspective", "jitter", "blur", "clutter")

# The side the embedder sees (CLIP's input); blur strengths are chosen at this scale.
_REFERENCE_SIDE = 224


def _mean_colour(image: Image.Image) -> tuple[int, int, int]:
    r, g, b = (round(c) for c in ImageStat.Stat(image).mean[:3])
    return r, g, b


def _crop(image: Image.Image, rng: np.random.Generator) -> Image.Image:
    """Keep 60–90 % of the area, aspect ratio within 3:4 to 4:3 of the original's, anywhere."""
    width, height = image.size
    area = rng.uniform(0.6, 0.9) * width * height
    aspect = math.exp(rng.uniform(math.log(3 / 4), math.log(4 / 3)))
    w = min(width, max(1, round(math.sqrt(area * aspect * width / height))))
    # Rounding w and h can step outside the range; h is clamped so the kept area stays in it.
    lo = math.ceil(0.6 * width * height / w)
    hi = math.floor(0.9 * width * height / w)
    h = min(height, max(1, lo, min(hi, round(area / w))))
    left = int(rng.integers(0, width - w + 1))
    top = int(rng.integers(0, height - h + 1))
    return image.crop((left, top, left + w, top + h))


def _downscale(image: Image.Image, rng: np.random.Generator) -> Image.Image:
    """Each side to 25–50 %, left small (the embedder resizes it)."""
    factor = rng.uniform(0.25, 0.5)
    size = (max(1, round(image.width * factor)), max(1, round(image.height * factor)))
    return image.resize(size, Image.Resampling.BICUBIC)


def _jpeg(image: Image.Image, rng: np.random.Generator) -> Image.Image:
    """Re-encoded as JPEG at quality 10–30."""
    buffer = io.BytesIO()
    image.save(buffer, format="JPEG", quality=int(rng.integers(10, 31)))
    buffer.seek(0)
    with Image.open(buffer) as decoded:
        return decoded.convert("RGB")


def _rotate(image: Image.Image, rng: np.random.Generator) -> Image.Image:
    """Turned 5–15° either way, same size, the corners filled with the image's mean colour."""
    angle = rng.uniform(5.0, 15.0) * (1 if rng.random() < 0.5 else -1)
    return image.rotate(
        angle, resample=Image.Resampling.BILINEAR, expand=False, fillcolor=_mean_colour(image)
    )


def _perspective_coefficients(
    output: Sequence[tuple[float, float]], source: Sequence[tuple[float, float]]
) -> tuple[float, ...]:
    """PIL's eight PERSPECTIVE coefficients, which map each output point to its source point:
    ``x_in = (a x + b y + c) / (g x + h y + 1)``, ``y_in = (d x + e y + f) / (g x + h y + 1)``."""
    rows: list[list[float]] = []
    rhs: list[float] = []
    for (x, y), (u, v) in zip(output, source):
        rows.append([x, y, 1, 0, 0, 0, -x * u, -y * u])
        rows.append([0, 0, 0, x, y, 1, -x * v, -y * v])
        rhs.extend((u, v))
    solution = np.linalg.solve(
        np.asarray(rows, dtype=np.float64), np.asarray(rhs, dtype=np.float64)
    )
    return tuple(float(c) for c in solution)


def _perspective(image: Image.Image, rng: np.random.Generator) -> Image.Image:
    """A quadrilateral warp, as of a picture photographed at an angle: each corner moves by up
    to 10–15 % of the side in each direction; uncovered areas take the mean colour."""
    width, height = image.size
    reach = rng.uniform(0.10, 0.15)
    corners = [(0.0, 0.0), (float(width), 0.0), (float(width), float(height)), (0.0, float(height))]
    moved = [
        (x + rng.uniform(-reach, reach) * width, y + rng.uniform(-reach, reach) * height)
        for x, y in corners
    ]
    return image.transform(
        image.size,
        Image.Transform.PERSPECTIVE,
        _perspective_coefficients(moved, corners),
        resample=Image.Resampling.BILINEAR,
        fillcolor=_mean_colour(image),
    )


def _jitter_factor(rng: np.random.Generator) -> float:
    # At least 10 % away from 1, so every jittered query is visibly changed.
    return 1.0 + rng.uniform(0.1, 0.4) * (1 if rng.random() < 0.5 else -1)


def _jitter(image: Image.Image, rng: np.random.Generator) -> Image.Image:
    """Brightness, contrast and saturation each scaled by 0.6–0.9 or 1.1–1.4; hue unchanged."""
    image = ImageEnhance.Brightness(image).enhance(_jitter_factor(rng))
    image = ImageEnhance.Contrast(image).enhance(_jitter_factor(rng))
    return ImageEnhance.Color(image).enhance(_jitter_factor(rng))


def _blur(image: Image.Image, rng: np.random.Generator) -> Image.Image:
    """Gaussian blur of 1.5–3 px at the embedder's input size: wider on larger images, never
    narrower on small ones (the embedder enlarges those, and the blur with them)."""
    scale = max(1.0, min(image.size) / _REFERENCE_SIDE)
    return image.filter(ImageFilter.GaussianBlur(rng.uniform(1.5, 3.0) * scale))


def _random_colour(rng: np.random.Generator) -> tuple[int, int, int]:
    r, g, b = (int(c) for c in rng.integers(0, 256, size=3))
    return r, g, b


def _clutter(image: Image.Image, rng: np.random.Generator) -> Image.Image:
    """The image at 40–70 % of each side, somewhere on a busy background of the original's size.

    Layout and background come from the generator alone, never from the image's content.
    """
    width, height = image.size
    background = Image.new("RGB", image.size, _random_colour(rng))
    draw = ImageDraw.Draw(background)
    for _ in range(int(rng.integers(8, 21))):
        xs = sorted(int(v) for v in rng.integers(0, width + 1, size=2))
        ys = sorted(int(v) for v in rng.integers(0, height + 1, size=2))
        box = (xs[0], ys[0], xs[1], ys[1])
        if rng.random() < 0.5:
            draw.rectangle(box, fill=_random_colour(rng))
        else:
            draw.ellipse(box, fill=_random_colour(rng))
    noise = rng.normal(0.0, 12.0, size=(height, width, 3))
    noisy = np.clip(np.asarray(background, dtype=np.float64) + noise, 0, 255).round()
    background = Image.fromarray(noisy.astype(np.uint8), "RGB")

    factor = rng.uniform(0.4, 0.7)
    size = (max(1, round(width * factor)), max(1, round(height * factor)))
    left = int(rng.integers(0, width - size[0] + 1))
    top = int(rng.integers(0, height - size[1] + 1))
    background.paste(image.resize(size, Image.Resampling.BICUBIC), (left, top))
    return background


_EDITS: dict[str, Callable[[Image.Image, np.random.Generator], Image.Image]] = {
    "crop": _crop,
    "downscale": _downscale,
    "jpeg": _jpeg,
    "rotate": _rotate,
    "perspective": _perspective,
    "jitter": _jitter,
    "blur": _blur,
    "clutter": _clutter,
}


def _check_kind(kind: object) -> str:
    if not isinstance(kind, str) or kind not in _EDITS:
        raise InvalidInputError(f"unknown edit {kind!r}; the edits are {', '.join(EDIT_KINDS)}")
    return kind


def apply_edit(kind: str, image: Image.Image, rng: np.random.Generator) -> Image.Image:
    """One edit of one image.

    Args:
        kind: One of `EDIT_KINDS`.
        image: The knowledge-base image (converted to RGB if it is not).
        rng: Where the edit's strength and placement come from; the same generator state
            gives the same output.

    Returns:
        A new RGB image. ``crop`` and ``downscale`` make it smaller; the others keep the size.

    Raises:
        InvalidInputError: ``kind`` is not a known edit, or the image is empty.
    """
    edit = _EDITS[_check_kind(kind)]
    if image.width < 1 or image.height < 1:
        raise InvalidInputError(f"cannot edit an empty image ({image.width}x{image.height})")
    rgb = image if image.mode == "RGB" else image.convert("RGB")
    out = edit(rgb, rng)
    return out if out.mode == "RGB" else out.convert("RGB")


def _stable_int(text: str) -> int:
    # Python's hash() of a str changes from one process to the next; blake2b does not.
    digest = hashlib.blake2b(text.encode("utf-8", "surrogatepass"), digest_size=8).digest()
    return int.from_bytes(digest, "big")


def _generator(seed: int, source_id: str, kind: str) -> np.random.Generator:
    return np.random.default_rng([seed, _stable_int(source_id), EDIT_KINDS.index(kind)])


def edited_queries(
    images: Iterable[tuple[str, Image.Image]],
    kinds: Sequence[str],
    *,
    seed: int,
) -> Iterator[tuple[str, str, Image.Image]]:
    """Each image under each edit, as ``(source id, kind, edited image)``.

    Images are read lazily, one at a time; for each, the kinds come in the order given.
    Every (id, kind) pair has its own generator, seeded from ``seed``, a stable hash of the
    id and the kind's position in `EDIT_KINDS`: the same id, kind and seed give the
    same edited image whatever the other images or their order.

    Args:
        images: ``(id, image)`` pairs.
        kinds: Edits to apply, each one of `EDIT_KINDS`, no repeats.
        seed: A non-negative integer.

    Raises:
        InvalidInputError: At the call, for an unknown or repeated kind or a negative or
            non-integer seed.
    """
    checked = tuple(_check_kind(kind) for kind in kinds)
    if len(set(checked)) != len(checked):
        raise InvalidInputError(f"edit kinds repeat: {', '.join(checked)}")
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise InvalidInputError(f"seed must be a non-negative integer, got {seed!r}")
    return _edited(images, checked, seed)


def _edited(
    images: Iterable[tuple[str, Image.Image]], kinds: tuple[str, ...], seed: int
) -> Iterator[tuple[str, str, Image.Image]]:
    for source_id, image in images:
        for kind in kinds:
            yield source_id, kind, apply_edit(kind, image, _generator(seed, source_id, kind))
