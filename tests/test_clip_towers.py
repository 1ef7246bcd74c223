"""The towers the engines run compute what openai/CLIP's own encode_image and encode_text do."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from multimodal_rag.embedders.clip_loading import import_clip
from multimodal_rag.embedders.clip_tokens import clip_tokens
from multimodal_rag.embedders.clip_towers import tower_modules
from tiny_clip import make_tiny_clip_checkpoint

TEXTS = [
    "a",
    "a red battery generator with two sockets",
    "a stamp " * 40,  # longer than the context: cut, its end token at the last position
    "",
]


def _model(tmp_path: Path, layers: int, width: int = 128) -> Any:
    build_model = import_clip().model.build_model
    path = make_tiny_clip_checkpoint(
        tmp_path / f"clip-{layers}.pt", seed=layers, layers=layers, width=width
    )
    return build_model(torch.load(path, weights_only=True)).float().eval()


def _pixels(count: int, resolution: int) -> Any:
    generator = torch.Generator().manual_seed(7)
    return torch.randn(count, 3, resolution, resolution, generator=generator)


@pytest.mark.parametrize("layers", [1, 3])
def test_the_image_tower_is_encode_image(tmp_path: Path, layers: int) -> None:
    model = _model(tmp_path, layers)
    image_tower, _ = tower_modules(model)
    pixels = _pixels(5, model.visual.input_resolution)
    with torch.inference_mode():
        expected = model.encode_image(pixels)
        got = image_tower(pixels)
    assert got.shape == expected.shape
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("layers", [1, 3])
def test_the_text_tower_is_encode_text_on_full_and_cut_rows(tmp_path: Path, layers: int) -> None:
    model = _model(tmp_path, layers)
    _, text_tower = tower_modules(model)
    full = torch.from_numpy(clip_tokens(TEXTS, 77).astype(np.int64))
    with torch.inference_mode():
        expected = model.encode_text(full)
        assert_close = torch.testing.assert_close
        assert_close(text_tower(full), expected, rtol=1e-4, atol=1e-5)
        # The rows cut after the longest end token, as the embedder sends them.
        short = full[[0, 1, 3]]
        length = int(short.argmax(dim=-1).max()) + 1
        assert length < 77
        assert_close(text_tower(short[:, :length]), expected[[0, 1, 3]], rtol=1e-4, atol=1e-5)


def test_the_towers_keep_their_bf16_results_close(tmp_path: Path) -> None:
    model = _model(tmp_path, 2)
    image_tower, text_tower = tower_modules(model)
    pixels = _pixels(4, model.visual.input_resolution)
    tokens = torch.from_numpy(clip_tokens(TEXTS, 77).astype(np.int64))
    with torch.inference_mode():
        expected = (model.encode_image(pixels), model.encode_text(tokens))
        with torch.autocast("cpu", dtype=torch.bfloat16):
            got = (image_tower(pixels), text_tower(tokens))
    for ours, theirs in zip(got, expected, strict=True):
        cosine = torch.nn.functional.cosine_similarity(ours.float(), theirs, dim=-1)
        assert float(cosine.min()) > 0.99
