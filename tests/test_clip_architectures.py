"""Every architecture openai/CLIP builds loads, and both engines compute its encode_image and
encode_text.

Each family is a tiny random checkpoint with the shapes of its published models scaled down
(a ResNet's stages and widths, a ViT's patch and grid), written as a state_dict and read back
through the loading code the embedder uses (``clip.model.build_model``).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from multimodal_rag import CLIPEmbedder
from multimodal_rag.embedders.clip_loading import load_model
from multimodal_rag.embedders.clip_names import architecture_label
from multimodal_rag.embedders.clip_tokens import clip_tokens
from multimodal_rag.embedders.clip_towers import tower_modules
from multimodal_rag.embedders.towers import probe_pixels
from multimodal_rag.errors import ModelLoadError
from tiny_clip import make_tiny_clip_checkpoint

#: Family -> the tiny checkpoint that stands for it (the published models' shapes, scaled down).
FAMILIES: dict[str, dict[str, Any]] = {
    # RN50 and RN101: four stages of bottlenecks, a 7x7 map into the attention pool.
    "RN50": {"architecture": "resnet", "image_resolution": 64, "layers": 1},
    "RN101": {"architecture": "resnet", "image_resolution": 64, "layers": 2},
    # RN50x4, x16, x64: wider stems, larger inputs (288, 384, 448: a 9x9 to 14x14 map).
    "RN50x4": {"architecture": "resnet", "image_resolution": 96, "resnet_width": 10},
    "RN50x16": {"architecture": "resnet", "image_resolution": 128, "resnet_width": 12, "layers": 2},
    "RN50x64": {"architecture": "resnet", "image_resolution": 160, "resnet_width": 14, "layers": 3},
    "ViT-B/32": {"patch_size": 32, "image_resolution": 64, "layers": 2},
    "ViT-B/16": {"patch_size": 16, "image_resolution": 48, "layers": 2},
    "ViT-L/14": {"patch_size": 14, "image_resolution": 28, "layers": 2, "width": 128},
    # 336 pixels: a 24x24 grid of patches instead of 16x16.
    "ViT-L/14@336px": {"patch_size": 14, "image_resolution": 42, "layers": 2, "width": 128},
}

TEXTS = ["a", "a red battery generator with two sockets", "a stamp " * 40, ""]

#: fp32 features must be encode_image's and encode_text's to this (absolute).
TOLERANCE = 1e-5


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("clip-architectures")
    return {
        family: make_tiny_clip_checkpoint(root / f"{i}.pt", seed=i, **shape)
        for i, (family, shape) in enumerate(FAMILIES.items())
    }


def _clip(checkpoint: Path) -> Any:
    model, _ = load_model("tiny", checkpoint, None, torch.device("cpu"))
    return model.eval()


def _expected(model: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Pixels and tokens, and openai/CLIP's own features for them."""
    resolution = model.visual.input_resolution
    pixels = torch.randn(5, 3, resolution, resolution, generator=torch.Generator().manual_seed(7))
    tokens = torch.from_numpy(clip_tokens(TEXTS, 77).astype(np.int64))
    with torch.inference_mode():
        images, texts = model.encode_image(pixels), model.encode_text(tokens)
    return pixels.numpy(), tokens.numpy(), images.numpy(), texts.numpy()


def _max_difference(got: np.ndarray, expected: np.ndarray) -> float:
    assert got.shape == expected.shape
    return float(np.abs(got - expected).max())


@pytest.mark.parametrize("family", FAMILIES)
def test_the_towers_of_every_family_are_encode_image_and_encode_text(
    checkpoints: dict[str, Path], family: str
) -> None:
    model = _clip(checkpoints[family])
    expected_encoder = "ModifiedResNet" if family.startswith("RN") else "VisionTransformer"
    assert type(model.visual).__name__ == expected_encoder
    pixels, tokens, images, texts = _expected(model)
    image_tower, text_tower = tower_modules(model)
    with torch.inference_mode():
        got_images = image_tower(torch.from_numpy(pixels)).numpy()
        got_texts = text_tower(torch.from_numpy(tokens)).numpy()
    assert _max_difference(got_images, images) < TOLERANCE
    assert _max_difference(got_texts, texts) < TOLERANCE
    # A random ResNet's residual branches must count, or the test would not hold them to it.
    assert float(np.abs(images).max()) > 0.01


@pytest.mark.parametrize("engine", ["torch", "openvino"])
@pytest.mark.parametrize("family", FAMILIES)
def test_every_family_runs_on_both_engines_in_fp32(
    checkpoints: dict[str, Path], family: str, engine: str, tmp_path: Path
) -> None:
    if engine == "openvino":
        pytest.importorskip("openvino")
        pytest.importorskip("nncf")
    model = _clip(checkpoints[family])
    pixels, tokens, images, texts = _expected(model)
    embedder = CLIPEmbedder(
        checkpoint=checkpoints[family], engine=engine, precision="fp32", cache_dir=tmp_path
    )
    assert embedder.runtime["towers"] == {"image": "fp32", "text": "fp32"}
    assert embedder.resolution == model.visual.input_resolution
    # The embedder's own inputs, through its engine's runners, against openai/CLIP's.
    got_images = embedder._runner("image")(pixels)
    assert _max_difference(got_images, images) < TOLERANCE
    for row, text in enumerate(TEXTS):
        cut = embedder._tokens([text])  # cut after its end token, as the embedder sends it
        assert _max_difference(embedder._runner("text")(cut), texts[row : row + 1]) < TOLERANCE
    # And the whole path: preprocessed synthetic images, normalised vectors.
    probes = probe_pixels(embedder.preprocess, 4)
    with torch.inference_mode():
        reference = model.encode_image(torch.from_numpy(probes)).numpy()
    reference /= np.linalg.norm(reference, axis=1, keepdims=True)
    assert _max_difference(embedder.embed_pixels(probes), reference) < TOLERANCE


@pytest.mark.parametrize("family", FAMILIES)
def test_a_published_shape_is_labelled_by_its_family(
    checkpoints: dict[str, Path], family: str
) -> None:
    label = architecture_label(_clip(checkpoints[family]))
    assert label.startswith("RN-" if family.startswith("RN") else "ViT-"), label
    if family.startswith("ViT"):
        assert label.endswith(f"/{FAMILIES[family]['patch_size']}")


def test_an_image_encoder_openai_clip_does_not_build_is_refused_by_name(
    checkpoints: dict[str, Path],
) -> None:
    model = _clip(checkpoints["ViT-B/32"])

    class ConvNeXt(torch.nn.Module):
        conv1 = model.visual.conv1

    model.visual = ConvNeXt()
    with pytest.raises(ModelLoadError, match=r"ConvNeXt is not supported.*ModifiedResNet"):
        tower_modules(model)


def test_the_models_the_docs_list_are_families_the_tests_load() -> None:
    """docs/embedders.md's table of models names only architectures loaded above."""
    docs = Path(__file__).parents[1] / "docs" / "embedders.md"
    table = docs.read_text(encoding="utf-8").split("## Choosing a model")[1].split("\n## ")[0]
    listed = re.findall(r"^\| `([^`]+)`", table, flags=re.MULTILINE)
    listed += re.findall(r"`(RN[^`]+)`", table)
    assert listed
    for name in listed:
        assert name in FAMILIES, name
