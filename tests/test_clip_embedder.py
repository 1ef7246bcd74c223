"""CLIPEmbedder on tiny random CLIP checkpoints loaded through the real clip.load."""

from __future__ import annotations

import struct
import subprocess
import sys
import urllib.error
import urllib.request
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from helpers import encoded, solid, two_tone, varied_pictures
from multimodal_rag import CLIPEmbedder, MultimodalRAG
from multimodal_rag._images import open_image
from multimodal_rag.embedders.preprocess import clip_pixels
from multimodal_rag.errors import (
    EmbedderMismatchError,
    ImageError,
    InvalidInputError,
    ModelLoadError,
)
from tiny_clip import make_tiny_clip_checkpoint

SRC = Path(__file__).resolve().parents[1] / "src"


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("clip-checkpoints")
    return {
        "a": make_tiny_clip_checkpoint(root / "a.pt", seed=0),
        "b": make_tiny_clip_checkpoint(root / "b.pt", seed=1),
        "a-jit": make_tiny_clip_checkpoint(root / "a-jit.pt", seed=0, jit=True),
    }


@pytest.fixture(scope="module")
def clip_fp32(checkpoints: dict[str, Path]) -> CLIPEmbedder:
    return CLIPEmbedder(checkpoint=checkpoints["a"], precision="fp32")


# -- vectors -------------------------------------------------------------------


def test_images_and_texts_are_normalised_float32_of_the_model_dim(clip_fp32: CLIPEmbedder) -> None:
    images = clip_fp32.embed_images(varied_pictures(7))
    texts = clip_fp32.embed_texts(["a red square", "a blue rectangle", ""])
    assert clip_fp32.dim == 64
    assert images.shape == (5, 64) and texts.shape == (3, 64)
    assert images.dtype == np.float32 and texts.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(images, axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(texts, axis=1), 1.0, atol=1e-5)
    # Distinct pictures get distinct vectors.
    similarity = images @ images.T
    assert (similarity[~np.eye(5, dtype=bool)] < 0.9999).all()
    assert clip_fp32.embed_images([]).shape == (0, 64) and clip_fp32.embed_texts([]).shape == (
        0,
        64,
    )


def test_embeddings_are_deterministic_across_loads(
    checkpoints: dict[str, Path], clip_fp32: CLIPEmbedder
) -> None:
    images = varied_pictures(7)
    first = clip_fp32.embed_images(images)
    np.testing.assert_array_equal(first, clip_fp32.embed_images(images))
    again = CLIPEmbedder(checkpoint=checkpoints["a"], precision="fp32", num_workers=0)
    np.testing.assert_allclose(again.embed_images(images), first, atol=1e-6)
    np.testing.assert_allclose(
        again.embed_texts(["stamp"]), clip_fp32.embed_texts(["stamp"]), atol=1e-6
    )
    assert again.fingerprint == clip_fp32.fingerprint


def test_one_image_and_a_batch_give_the_same_vector(clip_fp32: CLIPEmbedder) -> None:
    images = varied_pictures(7)
    batch = clip_fp32.embed_images(images)
    for i, image in enumerate(images):
        np.testing.assert_allclose(clip_fp32.embed_images([image])[0], batch[i], atol=1e-5)


def test_paths_bytes_and_pil_images_embed_alike(clip_fp32: CLIPEmbedder, tmp_path: Path) -> None:
    picture = two_tone("red", "cyan", (40, 40))
    file = tmp_path / "picture.png"
    picture.save(file)
    vectors = clip_fp32.embed_images([picture, encoded(picture), file, str(file)])
    np.testing.assert_allclose(vectors, np.repeat(vectors[:1], 4, axis=0), atol=1e-6)


def test_long_texts_are_truncated_to_the_context(clip_fp32: CLIPEmbedder) -> None:
    long = "stamp " * 200
    vectors = clip_fp32.embed_texts([long, long + "with a very different ending"])
    np.testing.assert_allclose(vectors[0], vectors[1], atol=1e-6)
    assert not np.allclose(vectors[0], clip_fp32.embed_texts(["stamp"])[0], atol=1e-3)


def test_texts_must_be_strings(clip_fp32: CLIPEmbedder) -> None:
    with pytest.raises(InvalidInputError, match="text 1"):
        clip_fp32.embed_texts(["fine", 3])  # type: ignore[list-item]
    with pytest.raises(InvalidInputError, match="not one string"):
        clip_fp32.embed_texts("a single string")


def test_torchscript_checkpoint_gives_the_same_model(
    checkpoints: dict[str, Path], clip_fp32: CLIPEmbedder
) -> None:
    scripted = CLIPEmbedder(
        checkpoint=checkpoints["a-jit"], precision="fp32", allow_torchscript=True
    )
    images = varied_pictures(7)
    np.testing.assert_allclose(
        scripted.embed_images(images), clip_fp32.embed_images(images), atol=1e-5
    )
    np.testing.assert_allclose(
        scripted.embed_texts(["a cat"]), clip_fp32.embed_texts(["a cat"]), atol=1e-5
    )


def test_a_torchscript_checkpoint_loads_only_when_allowed(
    checkpoints: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    # Its code would run as it loads: the caller must say the file is trusted.
    with pytest.raises(ModelLoadError, match="TorchScript.*allow_torchscript=True"):
        CLIPEmbedder(checkpoint=checkpoints["a-jit"], precision="fp32")
    # openai's published archives are vouched for by their SHA-256.
    from multimodal_rag._hashing import sha256_file
    from multimodal_rag.embedders import clip_loading

    published = sha256_file(checkpoints["a-jit"])
    monkeypatch.setattr(clip_loading, "published_sha256s", lambda: {published})
    assert CLIPEmbedder(checkpoint=checkpoints["a-jit"], precision="fp32").dim == 64


class _RunsCode:
    """Unpickling this calls os.mkdir: what a hostile checkpoint's pickle could do."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[object, tuple[str]]:
        import os

        return os.mkdir, (str(self.marker),)


def test_a_checkpoint_is_unpickled_as_tensors_only(
    checkpoints: dict[str, Path], tmp_path: Path
) -> None:
    import torch

    state = torch.load(checkpoints["a"], weights_only=True)
    state["visual.proj"] = _RunsCode(tmp_path / "code-ran")
    hostile = tmp_path / "hostile.pt"
    torch.save(state, hostile)
    with pytest.raises(ModelLoadError, match="hostile.pt"):
        CLIPEmbedder(checkpoint=hostile, precision="fp32")
    assert not (tmp_path / "code-ran").exists()


# -- identity ------------------------------------------------------------------


def test_fingerprint_names_model_and_weights(
    checkpoints: dict[str, Path], clip_fp32: CLIPEmbedder
) -> None:
    other = CLIPEmbedder(checkpoint=checkpoints["b"], precision="fp32")
    # A checkpoint without a name is labelled by its shapes (width 64, 1 layer, 16-pixel
    # patches), never as the default ViT-B/32.
    assert clip_fp32.model_name == "ViT-64-1/16"
    assert clip_fp32.fingerprint.startswith("clip:ViT-64-1/16:sha256=")
    assert other.fingerprint != clip_fp32.fingerprint
    relabelled = CLIPEmbedder("my-finetune", checkpoint=checkpoints["a"], precision="fp32")
    assert "my-finetune" in relabelled.fingerprint


def test_config_rebuilds_without_a_device(
    checkpoints: dict[str, Path], clip_fp32: CLIPEmbedder
) -> None:
    config = clip_fp32.config()
    assert config == {
        "model": "ViT-64-1/16",
        "precision": "fp32",
        "checkpoint": str(checkpoints["a"].resolve()),
    }
    assert Path(config["checkpoint"]).is_absolute() and "device" not in config
    assert CLIPEmbedder(**config).fingerprint == clip_fp32.fingerprint


# -- knowledge bases -----------------------------------------------------------


def test_knowledge_base_reopens_with_the_embedder_from_its_manifest(
    checkpoints: dict[str, Path], tmp_path: Path
) -> None:
    images = varied_pictures(7)
    kb = tmp_path / "kb"
    with MultimodalRAG.create(kb, embedder=CLIPEmbedder(checkpoint=checkpoints["a"])) as rag:
        ids = rag.add(images, descriptions=[f"picture {i}" for i in range(5)], progress=False).ids
    reopened = MultimodalRAG.open(kb, read_only=True)  # a built-in kind: no allow_modules needed
    try:
        assert isinstance(reopened.embedder, CLIPEmbedder)
        assert reopened.embedder.checkpoint == checkpoints["a"].resolve()
        # Image -> image search: every picture finds itself first.
        for picture, id_ in zip(images, ids, strict=True):
            best = reopened.search(image=picture, k=2)[0]
            assert best.id == id_ and best.score == pytest.approx(1.0, abs=1e-2)
        # Texts land in the same space: text and combined queries rank the same ids.
        by_text = reopened.search(text="a red square", k=5)
        assert sorted(h.id for h in by_text) == sorted(ids)
        both = reopened.search(image=images[2], text="a red square", k=1, text_weight=0.2)
        assert both[0].id == ids[2]
    finally:
        reopened.close()


def test_reopening_with_other_weights_fails_clearly(
    checkpoints: dict[str, Path], tmp_path: Path
) -> None:
    kb = tmp_path / "kb"
    with MultimodalRAG.create(
        kb, embedder=CLIPEmbedder(checkpoint=checkpoints["a"], precision="fp32")
    ) as rag:
        rag.add(varied_pictures(7)[:2], progress=False)
    other = CLIPEmbedder(checkpoint=checkpoints["b"], precision="fp32")
    with pytest.raises(EmbedderMismatchError, match="sha256="):
        MultimodalRAG.open(kb, embedder=other)


def test_a_weights_file_changed_in_place_is_named_as_changed(checkpoints: dict[str, Path], tmp_path: Path) -> None:
    import shutil

    weights = tmp_path / "weights.pt"
    shutil.copy(checkpoints["a"], weights)
    kb = tmp_path / "kb"
    with MultimodalRAG.create(kb, embedder=CLIPEmbedder(checkpoint=weights, precision="fp32")) as rag:
        rag.add(varied_pictures(7)[:2], progress=False)
    shutil.copy(checkpoints["b"], weights)  # same path, other weights
    with pytest.raises(EmbedderMismatchError, match=r"the weights file .*weights\.pt.* has changed since"):
        MultimodalRAG.open(kb, embedder=CLIPEmbedder(checkpoint=weights, precision="fp32"))


# -- loading errors ------------------------------------------------------------


@pytest.fixture
def no_network(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Make every download fail as it would offline, and record the attempts."""
    attempts: list[str] = []

    def refuse(url, *args, **kwargs):
        attempts.append(str(getattr(url, "full_url", url)))
        raise urllib.error.URLError("network is unreachable")

    monkeypatch.setattr(urllib.request, "urlopen", refuse)
    return attempts


def test_missing_checkpoint_says_where_and_how(tmp_path: Path, no_network: list[str]) -> None:
    missing = tmp_path / "nowhere" / "ViT-B-32.pt"
    with pytest.raises(ModelLoadError) as info:
        CLIPEmbedder(checkpoint=missing)
    message = str(info.value)
    assert "ViT-B/32" in message and str(missing) in message and "checkpoint=" in message
    assert no_network == []  # a local file is never looked for online


def test_unreadable_checkpoint_is_a_model_load_error(tmp_path: Path, no_network: list[str]) -> None:
    bogus = tmp_path / "weights.pt"
    bogus.write_text("these are not weights")
    with pytest.raises(ModelLoadError, match="weights.pt"):
        CLIPEmbedder(checkpoint=bogus)
    assert no_network == []


def test_named_model_offline_says_where_it_looked(tmp_path: Path, no_network: list[str]) -> None:
    with pytest.raises(ModelLoadError) as info:
        CLIPEmbedder("ViT-B/32", download_root=tmp_path / "cache")
    message = str(info.value)
    assert "'ViT-B/32'" in message
    assert str(tmp_path / "cache" / "ViT-B-32.pt") in message
    assert "checkpoint=" in message and "network is unreachable" in message
    assert len(no_network) == 1 and no_network[0].endswith("ViT-B-32.pt")


def test_unknown_model_name_lists_the_known_ones(no_network: list[str]) -> None:
    with pytest.raises(
        ModelLoadError, match="unknown CLIP model 'ViT-Z/99'.*ViT-L/14.*checkpoint="
    ):
        CLIPEmbedder("ViT-Z/99")
    assert no_network == []


def test_bad_settings_are_refused(checkpoints: dict[str, Path]) -> None:
    with pytest.raises(InvalidInputError, match="precision"):
        CLIPEmbedder(checkpoint=checkpoints["a"], precision="int4")
    with pytest.raises(InvalidInputError, match="fp16.*CUDA"):
        CLIPEmbedder(checkpoint=checkpoints["a"], device="cpu", precision="fp16")
    with pytest.raises(InvalidInputError, match="device"):
        CLIPEmbedder(checkpoint=checkpoints["a"], device="tpu")


# -- preprocessing and precision -----------------------------------------------


@pytest.mark.parametrize("resolution", [32, 224])
@pytest.mark.parametrize(
    "size", [(640, 480), (480, 640), (225, 224), (300, 301), (50, 20), (224, 224), (1001, 333)]
)
def test_preprocessing_matches_clips_own(size: tuple[int, int], resolution: int) -> None:
    from multimodal_rag._pkg_resources import pkg_resources_for_clip

    with pkg_resources_for_clip():  # clip-anytorch imports pkg_resources, gone from setuptools >= 81
        from clip.clip import _transform

    rng = np.random.default_rng(size[0] * size[1])
    picture = Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8))
    picture = picture.resize((size[0] // 2 or 1, size[1] // 2 or 1)).resize(
        size
    )  # some smooth areas too
    decoded = open_image(encoded(picture, "JPEG", quality=90))
    ours = clip_pixels(decoded, resolution)
    theirs = _transform(resolution)(decoded).numpy()
    assert ours.shape == theirs.shape == (3, resolution, resolution) and ours.dtype == np.float32
    assert np.abs(ours - theirs).max() < 1e-5


def test_bf16_stays_within_cosine_099_of_fp32(
    checkpoints: dict[str, Path], clip_fp32: CLIPEmbedder
) -> None:
    reduced = CLIPEmbedder(checkpoint=checkpoints["a"], precision="bf16", allow_fallback=True)
    # bf16 passed the quality gate, or fell back to fp32 and said why.
    for tower, precision in reduced.runtime["towers"].items():
        assert precision == "bf16" or any(tower in f for f in reduced.runtime["fallbacks"])
    images, texts = varied_pictures(7), ["a red square", "stamps " * 100, "two tone"]
    image_cosines = np.sum(reduced.embed_images(images) * clip_fp32.embed_images(images), axis=1)
    text_cosines = np.sum(reduced.embed_texts(texts) * clip_fp32.embed_texts(texts), axis=1)
    assert image_cosines.min() >= 0.99 and text_cosines.min() >= 0.99
    assert reduced.fingerprint == clip_fp32.fingerprint  # vectors stay compatible across precisions


# -- bad images and streaming --------------------------------------------------


def png_claiming_size(width: int, height: int) -> bytes:
    """A tiny PNG whose header claims a huge size, as a decompression bomb does."""
    data = bytearray(encoded(Image.new("1", (1, 1)), "PNG"))
    # Bytes 16-24 are the IHDR width and height, followed by the chunk's CRC over type and data.
    data[16:24] = struct.pack(">II", width, height)
    data[29:33] = struct.pack(">I", zlib.crc32(bytes(data[12:29])))
    return bytes(data)


def bad_images(folder: Path) -> dict[str, Path]:
    folder.mkdir(parents=True, exist_ok=True)
    payloads = {
        "empty.jpg": b"",
        "truncated.jpg": encoded(solid("red", (64, 64)), "JPEG")[:80],
        "notes.jpg": b"this is a text file, not a photo\n",
        "bomb.png": png_claiming_size(30000, 30000),
    }
    paths = {}
    for name, data in payloads.items():
        paths[name] = folder / name
        paths[name].write_bytes(data)
    return paths


def test_bad_images_are_reported_and_the_rest_is_indexed(
    checkpoints: dict[str, Path], tmp_path: Path
) -> None:
    folder = tmp_path / "photos"
    bad = bad_images(folder)
    for i, picture in enumerate(varied_pictures(7)):
        picture.save(folder / f"good{i}.png")
    with MultimodalRAG.create(
        tmp_path / "kb", embedder=CLIPEmbedder(checkpoint=checkpoints["a"])
    ) as rag:
        result = rag.add_directory(folder, batch_size=3, progress=False)
        assert len(result.added) == 5 and len(rag) == 5
        reasons = {Path(s.source).name: s.reason for s in result.skipped}
        assert set(reasons) == set(bad)
        assert (
            "empty" in reasons["empty.jpg"] and "not a known image format" in reasons["notes.jpg"]
        )
        assert "truncated.jpg" in reasons["truncated.jpg"] and "pixels" in reasons["bomb.png"]


def test_embed_images_names_the_bad_image_and_its_index(
    clip_fp32: CLIPEmbedder, tmp_path: Path
) -> None:
    bad = bad_images(tmp_path / "bad")
    images = [*varied_pictures(7)[:3], bad["truncated.jpg"], solid("red")]
    with pytest.raises(ImageError, match="truncated.jpg") as info:
        clip_fp32.embed_images(images)
    assert info.value.index == 3 and info.value.source == str(bad["truncated.jpg"])
    with pytest.raises(ImageError) as single:
        clip_fp32.embed_images([bad["bomb.png"]])
    assert single.value.index == 0


def test_iter_embed_images_streams_in_order_with_bounded_lookahead(clip_fp32: CLIPEmbedder) -> None:
    pictures = [solid((i * 9 % 256, i * 37 % 256, i * 91 % 256), (40, 30)) for i in range(23)]
    pulled: list[int] = []

    def stream():
        for i, picture in enumerate(pictures):
            pulled.append(i)
            yield picture if i != 7 else b"junk"

    batches = clip_fp32.iter_embed_images(stream(), batch_size=4)
    first = next(batches)
    assert first.indices == [0, 1, 2, 3] and first.failures == []
    assert len(pulled) <= 4 + 2 * 4 + 1  # the batch, the look-ahead window, one refill
    rest = list(batches)
    assert [index for index, _ in rest[0].failures] == [7]
    indices = first.indices + [i for batch in rest for i in batch.indices]
    assert indices == [i for i in range(23) if i != 7]
    vectors = np.concatenate([first.vectors] + [batch.vectors for batch in rest])
    expected = clip_fp32.embed_images([p for i, p in enumerate(pictures) if i != 7])
    np.testing.assert_allclose(vectors, expected, atol=1e-6)


def test_naming_the_embedder_does_not_import_torch() -> None:
    code = (
        "import sys, multimodal_rag; multimodal_rag.CLIPEmbedder; "
        "print(' '.join(m for m in ('torch', 'clip', 'torchvision') if m in sys.modules))"
    )
    env = {"PYTHONPATH": str(SRC), "PATH": "/usr/bin:/bin"}
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env
    )
    assert out.stdout.strip() == ""


def test_tokens_without_torch_are_clips_own() -> None:
    """The torch-free tokenizer gives clip.tokenize's rows, truncation included."""
    from multimodal_rag.embedders.clip_loading import import_clip
    from multimodal_rag.embedders.clip_tokens import clip_tokens

    texts = [
        "a red battery generator",
        "",
        "Ünïcödé, ﬁ ligatures &amp; entities, 漢字, emoji 🙂",
        "word " * 100,  # past the context: the end token is kept in the last position
        "  spaces\tand\nnewlines  ",
    ]
    for context in (77, 8):
        expected = import_clip().tokenize(texts, context_length=context, truncate=True).numpy()
        np.testing.assert_array_equal(clip_tokens(texts, context), expected)
