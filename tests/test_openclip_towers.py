"""The towers the engines run compute what open_clip's own encode_image and encode_text do.

Each architecture is built by open_clip's own factory with random weights (small configs of
the real kinds of layer here; the full-size models in the slow test), and its towers are
compared with open_clip's methods on the same weights.
"""

from __future__ import annotations

import json
import warnings
from typing import Any

import pytest

pytest.importorskip("open_clip")
pytest.importorskip("timm")

import open_clip  # noqa: E402
import torch  # noqa: E402

from multimodal_rag.embedders.openclip_loading import for_inference  # noqa: E402
from multimodal_rag.embedders.openclip_towers import tower_modules  # noqa: E402
from tiny_open_clip import (  # noqa: E402
    TIMM_FAMILIES,
    register_tiny_models,
    register_tiny_timm_models,
    tiny_config,
)

#: Tiny model -> the path each of its towers must take.
TINY = {
    "tiny-ViT-B-32": ("fast: open_clip ViT", "fast: open_clip text transformer"),
    "tiny-ViT-avg-layer-scale": ("fast: open_clip ViT", "fast: open_clip text transformer"),
    "tiny-timm-ViT-B-16-SigLIP2": ("fast: timm ViT", "fast: open_clip text transformer"),
    "tiny-timm-MobileCLIP2-L-14": ("fast: timm ViT", "fast: open_clip text transformer"),
    "tiny-timm-MobileCLIP2-S0": ("open_clip: timm FastVit", "fast: open_clip text transformer"),
}


@pytest.fixture(scope="module", autouse=True)
def registered(tmp_path_factory: pytest.TempPathFactory) -> None:
    folder = tmp_path_factory.mktemp("open-clip-configs")
    register_tiny_models(folder / "tiny", vocab_size=300)
    register_tiny_timm_models(folder / "timm")
    # open_clip's own ViT pooling the mean of the patches, normed after pooling, with
    # layer scale in every block: the other branches of its ViT and its blocks.
    config = tiny_config("ViT-B-32", vocab_size=300)
    config["vision_cfg"].update(pool_type="avg", final_ln_after_pool=True, ls_init_value=0.5)
    config["text_cfg"].update(ls_init_value=0.5)
    (folder / "avg").mkdir()
    (folder / "avg" / "tiny-ViT-avg-layer-scale.json").write_text(json.dumps(config))
    open_clip.add_model_config(folder / "avg")


def _model(name: str, seed: int = 0) -> Any:
    torch.manual_seed(seed)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "no pretrained weights loaded": random on purpose
        model = for_inference(open_clip.create_model(name, pretrained=None))
    # Layer scales start equal in every channel: make them differ, as trained ones do.
    with torch.no_grad():
        for module_name, parameter in model.named_parameters():
            if module_name.endswith(("ls_1.gamma", "ls_2.gamma")):
                parameter.uniform_(0.1, 1.0)
    return model


def _inputs(model: Any, name: str) -> tuple[Any, Any]:
    size = open_clip.get_model_preprocess_cfg(model)["size"]
    height, width = size if isinstance(size, tuple) else (size, size)
    generator = torch.Generator().manual_seed(7)
    pixels = torch.randn(4, 3, height, width, generator=generator)
    text_cfg = open_clip.get_model_config(name)["text_cfg"]
    context = int(text_cfg.get("context_length", 77))
    vocab = int(text_cfg.get("vocab_size", 300))
    tokens = torch.randint(1, vocab - 1, (4, context), generator=generator)
    # Texts as tokenizers make them: an end token (the highest id here) then padding, at
    # different places; one filling the whole context.
    for row, end in enumerate((1, 5, context // 2)):
        tokens[row, end] = vocab - 1
        tokens[row, end + 1 :] = 0
    tokens[3, -1] = vocab - 1
    return pixels, tokens


@pytest.mark.parametrize("name", sorted(TINY))
def test_the_towers_are_encode_image_and_encode_text(name: str) -> None:
    model = _model(name)
    image_tower, text_tower = tower_modules(model)
    assert (image_tower.path, text_tower.path) == TINY[name]
    pixels, tokens = _inputs(model, name)
    with torch.inference_mode():
        expected_images, expected_texts = model.encode_image(pixels), model.encode_text(tokens)
        images, texts = image_tower(pixels), text_tower(tokens)
    assert images.shape == expected_images.shape and texts.shape == expected_texts.shape
    torch.testing.assert_close(images, expected_images, rtol=1e-4, atol=1e-5)
    torch.testing.assert_close(texts, expected_texts, rtol=1e-4, atol=1e-5)
    # The rows differ from each other: the comparison is not between constants.
    for rows in (texts, images):
        assert float((rows[0] - rows[1]).abs().max()) > 1e-3 * float(rows.abs().max())


def test_the_timm_families_keep_their_real_pooling() -> None:
    # The shrunk trunks stand in for the real ones only if they pool the same way.
    pools = {}
    for name, (family, _, _) in TIMM_FAMILIES.items():
        trunk = _model(name).visual.trunk
        real = open_clip.get_model_config(family)["vision_cfg"]
        pools[name] = (trunk.global_pool, real["timm_pool"])
    assert pools == {
        "tiny-timm-ViT-B-16-SigLIP2": ("map", "map"),
        "tiny-timm-MobileCLIP2-L-14": ("token", "token"),
        "tiny-timm-MobileCLIP2-S0": ("avg", "avg"),
    }


def test_models_the_towers_do_not_know_run_open_clips_own_code() -> None:
    model = _model("tiny-ViT-B-32")
    # An attentional pooler (CoCa's) is not a read-out row, and a text tower that appends a
    # class token (CoCa's) pools it another way: open_clip's own code runs both.
    model.visual.attn_pool = torch.nn.Identity()
    model.cls_emb = torch.nn.Parameter(torch.zeros(64))
    image_tower, text_tower = tower_modules(model)
    assert (image_tower.path, text_tower.path) == ("open_clip", "open_clip")


@pytest.mark.slow
@pytest.mark.parametrize(
    "name",
    ["ViT-B-32", "ViT-B-16-SigLIP2", "ViT-B-16-SigLIP2-256", "MobileCLIP2-S0", "MobileCLIP2-B"],
)
def test_the_full_size_towers_are_encode_image_and_encode_text(name: str) -> None:
    model = _model(name)
    image_tower, text_tower = tower_modules(model)
    assert image_tower.path.startswith("fast") or name.startswith("MobileCLIP2-S")
    assert text_tower.path.startswith("fast")
    pixels, tokens = _inputs(model, name)
    with torch.inference_mode():
        expected = (model.encode_image(pixels[:2]), model.encode_text(tokens))
        got = (image_tower(pixels[:2]), text_tower(tokens))
    for ours, theirs in zip(got, expected, strict=True):
        torch.testing.assert_close(ours, theirs, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("name", ["tiny-timm-ViT-B-16-SigLIP2", "tiny-timm-MobileCLIP2-L-14"])
def test_openvino_converts_the_timm_towers(name: str) -> None:
    pytest.importorskip("openvino")
    from multimodal_rag.embedders.openvino_engine import convert_module, import_openvino

    model = _model(name)
    pixels, tokens = _inputs(model, name)
    core = import_openvino().Core()
    image_tower, text_tower = tower_modules(model)
    # Batches of other sizes than the example's, and token rows of another length (SigLIP's
    # text tower reads out the last row, wherever that is): the conversion leaves both free.
    for tower, example, batches in (
        (image_tower, pixels[:2], [pixels]),
        (text_tower, tokens[:2], [tokens, tokens[:3, : tokens.shape[1] - 3]]),
    ):
        compiled = core.compile_model(
            convert_module(tower, example.numpy()), "CPU", {"INFERENCE_PRECISION_HINT": "f32"}
        )
        for batch in batches:
            with torch.inference_mode():
                expected = tower(batch)
            got = torch.from_numpy(compiled(batch.numpy())[0])
            torch.testing.assert_close(got, expected, rtol=1e-3, atol=1e-4)
