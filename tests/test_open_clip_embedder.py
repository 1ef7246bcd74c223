"""OpenCLIPEmbedder on tiny random open_clip models loaded through the real loading path.

The models shrink real architecture configs (an openai-style ViT-B-32, a SigLIP 2) and are
saved as files; the SigLIP 2 one reads a tiny Hugging Face tokenizer folder made here.
Skipped where the ``open-clip`` extra is not installed.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

open_clip = pytest.importorskip("open_clip")
pytest.importorskip("transformers")
pytest.importorskip("tokenizers")

from helpers import encoded, varied_pictures  # noqa: E402
from multimodal_rag import CLIPEmbedder, MultimodalRAG, OpenCLIPEmbedder  # noqa: E402
from multimodal_rag._images import open_image  # noqa: E402
from multimodal_rag.embedders.openclip_loading import preprocess_of  # noqa: E402
from multimodal_rag.embedders.preprocess import ImagePreprocess  # noqa: E402
from multimodal_rag.errors import EmbedderMismatchError, ModelLoadError  # noqa: E402
from tiny_open_clip import (  # noqa: E402
    make_tiny_checkpoint,
    make_tiny_tokenizer,
    register_tiny_models,
)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("open-clip")
    tokenizer, vocab_size = make_tiny_tokenizer(root / "tokenizer")
    register_tiny_models(root / "configs", vocab_size=vocab_size)
    return {
        "tokenizer": tokenizer,
        "b32": make_tiny_checkpoint("tiny-ViT-B-32", root / "b32.pt"),
        "b32-other": make_tiny_checkpoint("tiny-ViT-B-32", root / "b32-other.pt", seed=1),
        "siglip2": make_tiny_checkpoint(
            "tiny-ViT-B-16-SigLIP2", root / "siglip2.safetensors", safetensors=True
        ),
    }


@pytest.fixture(scope="module")
def siglip2(tiny: dict[str, Path]) -> OpenCLIPEmbedder:
    return OpenCLIPEmbedder(
        "tiny-ViT-B-16-SigLIP2",
        "webli",
        checkpoint=tiny["siglip2"],
        tokenizer=tiny["tokenizer"],
        precision="fp32",
    )


@pytest.fixture
def no_network(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[object]]:
    """Every connection fails as it would offline; the attempts are recorded."""
    attempts: list[object] = []

    def refuse(*args: object, **kwargs: object) -> None:
        attempts.append(args[1] if len(args) > 1 else args[0])
        raise OSError("network is unreachable")

    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket.socket, "connect_ex", refuse)
    yield attempts


# -- loading -------------------------------------------------------------------


def test_local_weights_and_tokenizer_load_with_no_network(
    tiny: dict[str, Path], no_network: list[object]
) -> None:
    embedder = OpenCLIPEmbedder(
        "tiny-ViT-B-16-SigLIP2",
        "webli",
        checkpoint=tiny["siglip2"],
        tokenizer=tiny["tokenizer"],
        precision="fp32",
    )
    vectors = embedder.embed_texts(["a red stamp", "تمبر قرمز"])
    assert vectors.shape == (2, 32) and embedder.embed_images(varied_pictures(5, gradient=False)[:2]).shape == (2, 32)
    assert no_network == []


def test_the_tag_chooses_the_preprocessing(
    tiny: dict[str, Path], siglip2: OpenCLIPEmbedder
) -> None:
    # SigLIP 2 squashes to the input size and normalises to [-1, 1].
    assert siglip2.preprocess.resize_mode == "squash" and siglip2.preprocess.size == (32, 32)
    np.testing.assert_array_equal(siglip2.preprocess.mean, [0.5, 0.5, 0.5])
    # openai's weights: CLIP's crop and statistics, and QuickGELU.
    b32 = OpenCLIPEmbedder("tiny-ViT-B-32", "openai", checkpoint=tiny["b32"], precision="fp32")
    assert b32.preprocess.resize_mode == "shortest"
    np.testing.assert_allclose(b32.preprocess.mean, [0.48145466, 0.4578275, 0.40821073])
    # Without a tag the model's defaults apply (and the fingerprint says so).
    untagged = OpenCLIPEmbedder("tiny-ViT-B-32", None, checkpoint=tiny["b32"], precision="fp32")
    assert untagged.preprocess.resize_mode == "shortest"
    assert untagged.fingerprint.startswith("open_clip:tiny-ViT-B-32:none:sha256=")


def test_named_weights_offline_say_where_and_how(
    tmp_path: Path, no_network: list[object], monkeypatch: pytest.MonkeyPatch
) -> None:
    from huggingface_hub import constants

    # As HF_HUB_OFFLINE=1 does: no retries against an unreachable hub.
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(ModelLoadError) as info:
        OpenCLIPEmbedder("ViT-B-16-SigLIP2", "webli", download_root=tmp_path / "cache")
    message = str(info.value)
    assert "'ViT-B-16-SigLIP2'" in message and "'webli'" in message
    assert str(tmp_path / "cache") in message and "huggingface.co/timm/ViT-B-16-SigLIP2" in message
    assert "checkpoint=" in message and "tokenizer=" in message


def test_missing_files_and_unknown_names_are_model_load_errors(
    tiny: dict[str, Path], tmp_path: Path, no_network: list[object]
) -> None:
    with pytest.raises(ModelLoadError, match="nowhere.safetensors.*checkpoint="):
        OpenCLIPEmbedder("ViT-B-32", "openai", checkpoint=tmp_path / "nowhere.safetensors")
    with pytest.raises(ModelLoadError, match="unknown open_clip model 'ViT-Z-99'.*list_models"):
        OpenCLIPEmbedder("ViT-Z-99", "openai")
    with pytest.raises(ModelLoadError, match="unknown pretrained tag 'nope'.*openai"):
        OpenCLIPEmbedder("ViT-B-32", "nope")
    bogus = tmp_path / "weights.bin"
    bogus.write_text("these are not weights")
    with pytest.raises(ModelLoadError, match="weights.bin"):
        OpenCLIPEmbedder("tiny-ViT-B-32", "openai", checkpoint=bogus)
    with pytest.raises(ModelLoadError, match="into model 'tiny-ViT-B-16-SigLIP2'"):
        OpenCLIPEmbedder(  # another architecture's weights
            "tiny-ViT-B-16-SigLIP2", "webli", checkpoint=tiny["b32"], tokenizer=tiny["tokenizer"]
        )
    with pytest.raises(ModelLoadError, match="tokenizer folder.*not a directory"):
        OpenCLIPEmbedder(
            "tiny-ViT-B-16-SigLIP2",
            "webli",
            checkpoint=tiny["siglip2"],
            tokenizer=tmp_path / "no-tokenizer",
        )
    assert no_network == []


# -- preprocessing -------------------------------------------------------------

SIZES = [(640, 480), (480, 640), (225, 224), (50, 20), (224, 224), (1001, 333)]


def decoded_photo(size: tuple[int, int]) -> Image.Image:
    rng = np.random.default_rng(size[0] * size[1])
    picture = Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8))
    picture = picture.resize((size[0] // 2 or 1, size[1] // 2 or 1)).resize(size)
    return open_image(encoded(picture, "JPEG", quality=90))


@pytest.mark.parametrize(
    ("model", "tag"),
    [
        ("ViT-B-32", "openai"),  # shortest side, bicubic, CLIP's statistics
        ("ViT-B-16-SigLIP2", "webli"),  # squash, bicubic, [-1, 1]
        ("MobileCLIP2-S0", "dfndr2b"),  # shortest side, bilinear, 256 pixels, [0, 1]
        ("ViT-B-16-SigLIP-256", "webli"),  # squash, bicubic, 256 pixels
    ],
)
@pytest.mark.parametrize("size", SIZES)
def test_preprocessing_matches_open_clips_own(model: str, tag: str, size: tuple[int, int]) -> None:
    from open_clip.transform import PreprocessCfg, image_transform_v2, merge_preprocess_dict

    cfg = open_clip.get_pretrained_cfg(model, tag)
    image_size = open_clip.get_model_config(model)["vision_cfg"]["image_size"]
    theirs_cfg = PreprocessCfg(**merge_preprocess_dict(PreprocessCfg(size=image_size), cfg))
    picture = decoded_photo(size)
    theirs = image_transform_v2(theirs_cfg, is_train=False)(picture).numpy()
    ours = preprocess_of(cfg, size=image_size).pixels(picture)
    assert ours.shape == theirs.shape and ours.dtype == np.float32
    assert np.abs(ours - theirs).max() < 1e-5


@pytest.mark.parametrize("resize_mode", ["shortest", "squash", "longest"])
@pytest.mark.parametrize("interpolation", ["bicubic", "bilinear"])
@pytest.mark.parametrize("image_size", [(64, 96), (96, 64), 48])
def test_every_resize_mode_matches_open_clip(
    resize_mode: str, interpolation: str, image_size: int | tuple[int, int]
) -> None:
    # No published tag uses "longest" (pad to the input's shape) yet: tested here directly,
    # with non-square inputs too.
    from open_clip.transform import image_transform

    mean, std = (0.5, 0.4, 0.3), (0.2, 0.3, 0.25)
    theirs_transform = image_transform(
        image_size,
        is_train=False,
        mean=mean,
        std=std,
        resize_mode=resize_mode,
        interpolation=interpolation,
        fill_color=128,
    )
    ours_preprocess = ImagePreprocess(
        size=image_size,
        mean=mean,
        std=std,
        interpolation=interpolation,
        resize_mode=resize_mode,
        fill_color=128,
    )
    for size in SIZES:
        picture = decoded_photo(size)
        theirs, ours = theirs_transform(picture).numpy(), ours_preprocess.pixels(picture)
        assert ours.shape == theirs.shape
        assert np.abs(ours - theirs).max() < 1e-5, size


# -- texts ---------------------------------------------------------------------


def test_texts_in_any_script_go_through_and_long_ones_are_truncated(
    siglip2: OpenCLIPEmbedder,
) -> None:
    texts = ["تمبر قرمز با پرنده", "طابع أحمر مع طائر", "红色邮票上有一只鸟", "🐱🐶", ""]
    vectors = siglip2.embed_texts(texts)
    assert vectors.shape == (5, 32)
    np.testing.assert_allclose(np.linalg.norm(vectors, axis=1), 1.0, atol=1e-5)
    assert siglip2.context_length == 64
    long = "عکس یک سگ در برف " * 100
    cut = siglip2.embed_texts([long, long + " a red stamp with a bird"])
    np.testing.assert_allclose(cut[0], cut[1], atol=1e-6)


# -- knowledge bases -----------------------------------------------------------


def test_a_persian_query_finds_images_end_to_end(tiny: dict[str, Path], tmp_path: Path) -> None:
    embedder = OpenCLIPEmbedder(
        "tiny-ViT-B-16-SigLIP2",
        "webli",
        checkpoint=tiny["siglip2"],
        tokenizer=tiny["tokenizer"],
    )
    kb = tmp_path / "kb"
    with MultimodalRAG.create(kb, embedder=embedder) as rag:
        ids = rag.add(varied_pictures(5, gradient=False), descriptions=["red", "blue", "two tone", "noise"], progress=False).ids
    reopened = MultimodalRAG.open(kb, read_only=True)  # a built-in kind, rebuilt from the manifest
    try:
        assert isinstance(reopened.embedder, OpenCLIPEmbedder)
        assert reopened.embedder.fingerprint == embedder.fingerprint
        hits = reopened.search(text="تمبر قرمز با پرنده", k=3)
        assert len(hits) == 3 and {hit.id for hit in hits} <= set(ids)
        assert reopened.search(image=varied_pictures(5, gradient=False)[2], k=1)[0].id == ids[2]
    finally:
        reopened.close()


def test_reopening_with_another_model_fails_clearly(
    tiny: dict[str, Path], siglip2: OpenCLIPEmbedder, tmp_path: Path
) -> None:
    from tiny_clip import make_tiny_clip_checkpoint

    kb = tmp_path / "kb"
    b32 = OpenCLIPEmbedder("tiny-ViT-B-32", "openai", checkpoint=tiny["b32"], precision="fp32")
    with MultimodalRAG.create(kb, embedder=b32) as rag:
        rag.add(varied_pictures(5, gradient=False)[:2], progress=False)
    other_weights = OpenCLIPEmbedder(
        "tiny-ViT-B-32", "openai", checkpoint=tiny["b32-other"], precision="fp32"
    )
    clip = CLIPEmbedder(
        checkpoint=make_tiny_clip_checkpoint(tmp_path / "clip.pt", embed_dim=32), precision="fp32"
    )
    for other in (siglip2, other_weights, clip):
        with pytest.raises(EmbedderMismatchError, match="open_clip:tiny-ViT-B-32:openai:sha256="):
            MultimodalRAG.open(kb, embedder=other)


def test_a_manifest_cannot_name_a_relative_tokenizer_or_checkpoint(
    tiny: dict[str, Path], siglip2: OpenCLIPEmbedder, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import json

    kb = tmp_path / "kb"
    with MultimodalRAG.create(kb, embedder=siglip2) as rag:
        rag.add(varied_pictures(5, gradient=False)[:1], progress=False)
    manifest = json.loads((kb / "manifest.json").read_text())
    monkeypatch.chdir(tiny["tokenizer"].parent)  # where the relative names would be found
    for name, relative in (("tokenizer", "tokenizer"), ("checkpoint", "siglip2.safetensors")):
        changed = json.loads(json.dumps(manifest))
        changed["embedder"]["config"][name] = relative
        (kb / "manifest.json").write_text(json.dumps(changed))
        with pytest.raises(ModelLoadError, match=f"{name} '{relative}', a relative path"):
            MultimodalRAG.open(kb, read_only=True)


def test_config_rebuilds_the_same_embedder(siglip2: OpenCLIPEmbedder, tiny: dict[str, Path]) -> None:
    config = siglip2.config()
    assert config == {
        "model": "tiny-ViT-B-16-SigLIP2",
        "pretrained": "webli",
        "precision": "fp32",
        "checkpoint": str(tiny["siglip2"].resolve()),
        "tokenizer": str(tiny["tokenizer"].resolve()),
    }
    rebuilt = OpenCLIPEmbedder(**config)
    assert rebuilt.fingerprint == siglip2.fingerprint
    assert siglip2.fingerprint.startswith("open_clip:tiny-ViT-B-16-SigLIP2:webli:sha256=")
    assert siglip2.fingerprint.endswith(":preprocess=v1")
    assert "OpenCLIPEmbedder('tiny-ViT-B-16-SigLIP2', pretrained='webli'" in repr(siglip2)


def test_the_command_line_builds_an_open_clip_knowledge_base(
    tiny: dict[str, Path], tmp_path: Path
) -> None:
    # In-process: the tiny models are registered with open_clip in this process only.
    from click.testing import CliRunner

    from multimodal_rag.cli import cli

    folder = tmp_path / "photos"
    folder.mkdir()
    for i, picture in enumerate(varied_pictures(5, gradient=False)):
        picture.save(folder / f"{i}.png")
    kb = tmp_path / "kb"
    runner = CliRunner()
    result = runner.invoke(
        cli,
        [
            "index",
            str(folder),
            "--kb",
            str(kb),
            "--embedder",
            "open-clip",
            "--model",
            "tiny-ViT-B-16-SigLIP2",
            "--pretrained",
            "webli",
            "--checkpoint",
            str(tiny["siglip2"]),
            "--tokenizer",
            str(tiny["tokenizer"]),
            "--precision",
            "fp32",
            "--no-progress",
        ],
    )
    assert result.exit_code == 0, result.output
    info = runner.invoke(cli, ["info", str(kb)])
    assert info.exit_code == 0, info.output
    assert "open-clip" in info.output and "open_clip:tiny-ViT-B-16-SigLIP2:webli" in info.output
    wrong = runner.invoke(
        cli, ["index", str(folder), "--kb", str(tmp_path / "kb2"), "--tokenizer", str(tiny["tokenizer"])]
    )
    assert wrong.exit_code == 2 and "--tokenizer" in wrong.output


def test_naming_the_embedder_does_not_import_open_clip() -> None:
    import subprocess
    import sys

    code = (
        "import sys, multimodal_rag; multimodal_rag.OpenCLIPEmbedder; "
        "print(' '.join(m for m in ('torch', 'open_clip', 'transformers') if m in sys.modules))"
    )
    src = str(Path(__file__).resolve().parents[1] / "src")
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        env={"PYTHONPATH": src, "PATH": "/usr/bin:/bin"},
    )
    assert out.stdout.strip() == ""



def test_the_openvino_engine_runs_open_clip_towers(
    tiny: dict[str, Path], siglip2: OpenCLIPEmbedder
) -> None:
    pytest.importorskip("openvino")
    pytest.importorskip("nncf")
    converted = OpenCLIPEmbedder(
        "tiny-ViT-B-16-SigLIP2",
        "webli",
        checkpoint=tiny["siglip2"],
        tokenizer=tiny["tokenizer"],
        engine="openvino",
        precision="fp32",
    )
    assert converted.runtime["engine"] == "openvino"
    assert converted.fingerprint == siglip2.fingerprint
    texts = ["تمبر قرمز با پرنده", "a dog"]
    image_cosines = np.sum(converted.embed_images(varied_pictures(5, gradient=False)) * siglip2.embed_images(varied_pictures(5, gradient=False)), 1)
    text_cosines = np.sum(converted.embed_texts(texts) * siglip2.embed_texts(texts), 1)
    assert image_cosines.min() > 0.9999 and text_cosines.min() > 0.9999


def test_the_model_benchmark_runs(tmp_path: Path) -> None:
    import json
    import os
    import subprocess
    import sys

    repo = Path(__file__).resolve().parents[1]
    out = tmp_path / "models.json"
    done = subprocess.run(
        [sys.executable, str(repo / "benchmarks" / "models.py"), "--quick"]
        + ["--models", "ViT-B-32", "--out", str(out)],
        env={**os.environ, "PYTHONPATH": str(repo / "src")},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    (row,) = json.loads(out.read_text())["models"]
    assert row["model"] == "ViT-B-32" and row["dim"] == 512
    assert row["open_clip_images_per_s"] > 0 and row["fast_images_per_s"] > 0
    assert row["image_tower"] == "fast: open_clip ViT" and "int8" not in row
    assert row["quality_xm3600_en"] == 59.4 and "img/s" in done.stdout
