"""The edits that turn knowledge-base images into queries: repeatable, and each doing what it says."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator

import numpy as np
import numpy.typing as npt
import pytest
from PIL import Image, ImageDraw

from multimodal_rag.errors import InvalidInputError
from multimodal_rag.evaluation.edits import EDIT_KINDS, apply_edit, edited_queries

SEEDS = range(12)


def synthetic(size: tuple[int, int] = (96, 72)) -> Image.Image:
    """A red/green gradient (every pixel distinct) with a few hard-edged shapes on it."""
    width, height = size
    array = np.zeros((height, width, 3), np.uint8)
    array[..., 0] = np.linspace(0, 255, width).round()[None, :]
    array[..., 1] = np.linspace(0, 255, height).round()[:, None]
    array[..., 2] = 128
    image = Image.fromarray(array, "RGB")
    draw = ImageDraw.Draw(image)
    w, h = width / 96, height / 72
    draw.rectangle((10 * w, 8 * h, 40 * w, 30 * h), fill=(255, 255, 0))
    draw.ellipse((50 * w, 30 * h, 85 * w, 65 * h), fill=(20, 20, 200))
    draw.line((0, height - 2, width - 1, 0), fill=(0, 0, 0), width=2)
    return image


def pixels(image: Image.Image) -> npt.NDArray[np.float64]:
    return np.asarray(image, dtype=np.float64)


def luminance(image: Image.Image) -> npt.NDArray[np.float64]:
    return np.asarray(image.convert("L"), dtype=np.float64)


def edit(kind: str, seed: int, image: Image.Image | None = None) -> Image.Image:
    return apply_edit(kind, synthetic() if image is None else image, np.random.default_rng(seed))


# --- repeatability -----------------------------------------------------------------------


@pytest.mark.parametrize("kind", EDIT_KINDS)
def test_same_generator_state_same_bytes(kind: str) -> None:
    first, second = edit(kind, 5), edit(kind, 5)
    assert first.mode == second.mode == "RGB"
    assert first.size == second.size and first.tobytes() == second.tobytes()
    # Other seeds give other edits (two seeds may share a JPEG quality, so look at several).
    assert len({edit(kind, seed).tobytes() for seed in range(4)}) > 1


def test_edited_queries_repeat_and_depend_on_the_seed() -> None:
    images = [("a", synthetic()), ("b", synthetic((80, 80)))]
    first = [(i, k, im.tobytes()) for i, k, im in edited_queries(images, EDIT_KINDS, seed=1)]
    again = [(i, k, im.tobytes()) for i, k, im in edited_queries(images, EDIT_KINDS, seed=1)]
    other = [(i, k, im.tobytes()) for i, k, im in edited_queries(images, EDIT_KINDS, seed=2)]
    assert [(i, k) for i, k, _ in first] == [(i, k) for i in "ab" for k in EDIT_KINDS]
    assert first == again
    assert first != other


def test_edited_queries_do_not_depend_on_order_or_company() -> None:
    image = synthetic()
    alone = {
        (i, k): im.tobytes() for i, k, im in edited_queries([("a", image)], EDIT_KINDS, seed=9)
    }
    crowd = [("z", synthetic((64, 64))), ("a", image), ("m", synthetic((50, 40)))]
    shuffled = {
        (i, k): im.tobytes()
        for i, k, im in edited_queries(crowd, tuple(reversed(EDIT_KINDS)), seed=9)
    }
    for kind in EDIT_KINDS:
        assert shuffled[("a", kind)] == alone[("a", kind)]
    # Each id has its own edits.
    assert shuffled[("z", "crop")] != shuffled[("m", "crop")]


def test_edited_queries_are_stable_across_processes() -> None:
    # Python's str hash changes with PYTHONHASHSEED; the edits must not.
    script = (
        "import hashlib; from PIL import Image;"
        "from multimodal_rag.evaluation.edits import edited_queries;"
        "img = Image.linear_gradient('L').convert('RGB').resize((64, 48));"
        "print(hashlib.sha256(b''.join(im.tobytes() for _, _, im in"
        " edited_queries([('photo-1', img)], ['crop', 'clutter'], seed=4))).hexdigest())"
    )
    digests = {
        subprocess.run(
            [sys.executable, "-c", script],
            env={**os.environ, "PYTHONHASHSEED": hash_seed},
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        for hash_seed in ("1", "2")
    }
    assert len(digests) == 1


def test_edited_queries_read_images_lazily() -> None:
    def images() -> Iterator[tuple[str, Image.Image]]:
        yield "a", synthetic()
        raise AssertionError("read past the first image")

    queries = edited_queries(images(), ["crop"], seed=0)
    source, kind, _ = next(queries)
    assert (source, kind) == ("a", "crop")


# --- bad arguments -----------------------------------------------------------------------


def test_unknown_kind_names_the_kinds() -> None:
    with pytest.raises(InvalidInputError, match="sharpen.*crop, downscale"):
        apply_edit("sharpen", synthetic(), np.random.default_rng(0))


@pytest.mark.parametrize(
    ("kinds", "seed", "message"),
    [
        (["crop", "sharpen"], 0, "unknown edit"),
        (["crop", "crop"], 0, "repeat"),
        (["crop"], -1, "seed"),
        (["crop"], 1.5, "seed"),
    ],
)
def test_edited_queries_check_arguments_at_the_call(
    kinds: list[str], seed: int, message: str
) -> None:
    with pytest.raises(InvalidInputError, match=message):
        edited_queries([], kinds, seed=seed)


def test_other_modes_are_edited_as_rgb() -> None:
    grey = synthetic().convert("L")
    for kind in EDIT_KINDS:
        assert edit(kind, 0, grey).mode == "RGB"


# --- what each edit does -----------------------------------------------------------------


def test_crop_keeps_60_to_90_percent_of_a_region_of_the_original() -> None:
    image = synthetic()
    original = pixels(image)
    for seed in SEEDS:
        out = edit("crop", seed, image)
        ratio = out.width * out.height / (image.width * image.height)
        assert 0.6 <= ratio <= 0.9
        assert (
            3 / 4 - 0.05 <= (out.width / out.height) / (image.width / image.height) <= 4 / 3 + 0.05
        )
        # Every gradient pixel is distinct, so the crop's place in the original is unique.
        crop = pixels(out)
        matches = [
            (left, top)
            for top in range(image.height - out.height + 1)
            for left in range(image.width - out.width + 1)
            if np.array_equal(original[top : top + out.height, left : left + out.width], crop)
        ]
        assert len(matches) == 1
    positions = {edit("crop", seed, image).size for seed in SEEDS}
    assert len(positions) > 1


def test_downscale_to_a_quarter_to_a_half_of_each_side() -> None:
    image = synthetic()
    for seed in SEEDS:
        out = edit("downscale", seed, image)
        for side, original in zip(out.size, image.size):
            assert 0.25 * original - 1 <= side <= 0.5 * original + 1
        assert out.width / out.height == pytest.approx(image.width / image.height, rel=0.1)


def test_jpeg_loses_detail_within_a_plausible_range() -> None:
    image = synthetic()
    for seed in SEEDS:
        out = edit("jpeg", seed, image)
        assert out.size == image.size and out.tobytes() != image.tobytes()
        mse = np.mean((pixels(out) - pixels(image)) ** 2)
        psnr = 10 * np.log10(255**2 / mse)
        assert 15 < psnr < 40


def test_rotate_keeps_the_size_and_fills_corners_with_the_mean_colour() -> None:
    image = synthetic()
    mean = pixels(image).reshape(-1, 3).mean(axis=0)
    for seed in SEEDS:
        out = edit("rotate", seed, image)
        assert out.size == image.size and out.tobytes() != image.tobytes()
        # 5-15 degrees always turns the corners out of the frame.
        corner = pixels(out)[0, 0]
        assert np.abs(corner - mean).max() <= 1


def test_perspective_keeps_the_size_and_moves_the_corners() -> None:
    image = synthetic()
    original = pixels(image)
    corners = [(slice(0, 8), slice(0, 8)), (slice(0, 8), slice(-8, None)),
               (slice(-8, None), slice(0, 8)), (slice(-8, None), slice(-8, None))]  # fmt: skip
    for seed in SEEDS:
        out = pixels(edit("perspective", seed, image))
        assert out.shape == original.shape
        assert max(np.abs(out[c] - original[c]).mean() for c in corners) > 10


def test_perspective_is_a_mild_warp() -> None:
    # On a plain gradient, red and green tell where each output pixel was taken from.
    width, height = 128, 96
    array = np.zeros((height, width, 3), np.uint8)
    array[..., 0] = np.linspace(0, 255, width).round()[None, :]
    array[..., 1] = np.linspace(0, 255, height).round()[:, None]
    for seed in SEEDS:
        out = pixels(edit("perspective", seed, Image.fromarray(array, "RGB")))
        source_x = out[..., 0] / 255 * (width - 1)
        source_y = out[..., 1] / 255 * (height - 1)
        x, y = np.meshgrid(np.arange(width), np.arange(height))
        centre = (slice(height // 2 - 8, height // 2 + 8), slice(width // 2 - 8, width // 2 + 8))
        # Corners move by at most 15 % of the side, and the middle less.
        assert np.abs(source_x - x)[centre].max() <= 0.15 * width
        assert np.abs(source_y - y)[centre].max() <= 0.15 * height
        assert np.hypot(source_x - x, source_y - y)[centre].mean() > 2


def test_jitter_scales_brightness_and_contrast_within_bounds() -> None:
    image = synthetic()
    grey = luminance(image)
    for seed in SEEDS:
        out = edit("jitter", seed, image)
        assert out.size == image.size and out.tobytes() != image.tobytes()
        jittered = luminance(out)
        assert 0.55 <= jittered.mean() / grey.mean() <= 1.45
        assert 0.3 <= jittered.std() / grey.std() <= 2.0


def _laplacian_energy(image: Image.Image) -> float:
    g = luminance(image)
    lap = 4 * g[1:-1, 1:-1] - g[:-2, 1:-1] - g[2:, 1:-1] - g[1:-1, :-2] - g[1:-1, 2:]
    return float(np.abs(lap).mean())


@pytest.mark.parametrize("size", [(96, 72), (640, 480)])
def test_blur_removes_high_frequencies_at_any_size(size: tuple[int, int]) -> None:
    image = synthetic(size)
    before = _laplacian_energy(image)
    for seed in range(4):
        out = edit("blur", seed, image)
        assert out.size == image.size
        assert _laplacian_energy(out) < 0.3 * before


def test_clutter_pastes_the_shrunken_image_on_a_busy_background() -> None:
    magenta = Image.new("RGB", (96, 72), (255, 0, 255))
    image = synthetic()
    for seed in SEEDS:
        # The layout comes from the generator alone: find it with a plain magenta image.
        marked = pixels(edit("clutter", seed, magenta))
        assert marked.shape == (72, 96, 3)
        is_magenta = np.abs(marked - (255, 0, 255)).max(axis=2) <= 2
        rows, cols = np.nonzero(is_magenta)
        top, bottom, left, right = rows.min(), rows.max() + 1, cols.min(), cols.max() + 1
        assert is_magenta[top:bottom, left:right].mean() > 0.99
        height, width = bottom - top, right - left
        assert 0.4 * 72 - 1 <= height <= 0.7 * 72 + 1
        assert 0.4 * 96 - 1 <= width <= 0.7 * 96 + 1

        out = edit("clutter", seed, image)
        assert out.size == image.size
        placed = pixels(out)[top:bottom, left:right]
        shrunk = pixels(image.resize((int(width), int(height)), Image.Resampling.BICUBIC))
        assert np.abs(placed - shrunk).mean() < 2
        # Around it: a background that is neither the original nor flat.
        outside = ~np.zeros((72, 96), bool)
        outside[top:bottom, left:right] = False
        background = pixels(out)[outside]
        assert np.abs(background - pixels(image)[outside]).mean() > 20
        assert background.std(axis=0).min() > 10
