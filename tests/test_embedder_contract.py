"""One contract, every embedder: what the facade and the vector stores rely on.

Runs against the built-in embedders on tiny random models (the open_clip ones skip where
the ``open-clip`` extra is not installed) and against the test suite's colour embedder.
Add your own embedder to ``EMBEDDERS`` to hold it to the same contract.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from helpers import ColorEmbedder, encoded, solid, varied_pictures
from multimodal_rag.errors import ImageError
from multimodal_rag.protocols import Embedder


def _clip(root: Path) -> Embedder:
    from multimodal_rag import CLIPEmbedder
    from tiny_clip import make_tiny_clip_checkpoint

    return CLIPEmbedder(checkpoint=make_tiny_clip_checkpoint(root / "clip.pt"), precision="fp32")


def _open_clip(root: Path, family: str) -> Embedder:
    pytest.importorskip("open_clip")
    pytest.importorskip("transformers")
    from multimodal_rag import OpenCLIPEmbedder
    from tiny_open_clip import make_tiny_checkpoint, make_tiny_tokenizer, register_tiny_models

    tokenizer, vocab_size = make_tiny_tokenizer(root / "tokenizer")
    register_tiny_models(root / "configs", vocab_size=vocab_size)
    if family == "siglip2":
        return OpenCLIPEmbedder(
            "tiny-ViT-B-16-SigLIP2",
            "webli",
            checkpoint=make_tiny_checkpoint("tiny-ViT-B-16-SigLIP2", root / "siglip2.pt"),
            tokenizer=tokenizer,
            precision="fp32",
        )
    return OpenCLIPEmbedder(
        "tiny-ViT-B-32",
        "openai",
        checkpoint=make_tiny_checkpoint("tiny-ViT-B-32", root / "b32.pt"),
        precision="fp32",
    )


#: Name -> a function that builds the embedder in a scratch folder.
EMBEDDERS: dict[str, Callable[[Path], Embedder]] = {
    "clip": _clip,
    "open-clip-vit-b-32": lambda root: _open_clip(root, "b32"),
    "open-clip-siglip2": lambda root: _open_clip(root, "siglip2"),
    "color": lambda root: ColorEmbedder(),
}


@pytest.fixture(scope="module", params=sorted(EMBEDDERS))
def embedder(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Embedder:
    return EMBEDDERS[request.param](tmp_path_factory.mktemp(request.param))


TEXTS = ["a red square", "two friends at the beach", "تمبر قرمز با پرنده", "红色邮票", "🐱", ""]


def test_vectors_are_unit_float32_of_the_embedders_dim(embedder: Embedder) -> None:
    images, texts = embedder.embed_images(varied_pictures(11)), embedder.embed_texts(TEXTS)
    assert images.shape == (5, embedder.dim) and texts.shape == (len(TEXTS), embedder.dim)
    assert images.dtype == np.float32 and texts.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(images, axis=1), 1.0, atol=1e-5)
    np.testing.assert_allclose(np.linalg.norm(texts, axis=1), 1.0, atol=1e-5)
    # Images and texts share one space: their inner products are cosines.
    assert np.all(np.abs(images @ texts.T) <= 1.0 + 1e-5)


def test_nothing_in_gives_an_empty_matrix(embedder: Embedder) -> None:
    assert embedder.embed_images([]).shape == (0, embedder.dim)
    assert embedder.embed_texts([]).shape == (0, embedder.dim)


def test_embeddings_are_deterministic(embedder: Embedder) -> None:
    np.testing.assert_array_equal(embedder.embed_images(varied_pictures(11)), embedder.embed_images(varied_pictures(11)))
    np.testing.assert_array_equal(embedder.embed_texts(TEXTS), embedder.embed_texts(TEXTS))


def test_a_batch_gives_the_vectors_of_one_by_one(embedder: Embedder) -> None:
    images = varied_pictures(11)
    batch = embedder.embed_images(images)
    single = np.concatenate([embedder.embed_images([image]) for image in images])
    np.testing.assert_allclose(batch, single, atol=1e-5)
    texts = embedder.embed_texts(TEXTS)
    np.testing.assert_allclose(
        texts, np.concatenate([embedder.embed_texts([t]) for t in TEXTS]), atol=1e-5
    )


def test_the_streaming_batches_give_the_same_vectors(embedder: Embedder) -> None:
    images = varied_pictures(11)
    batches = list(embedder.iter_embed_images(iter(images), batch_size=2))
    assert [i for batch in batches for i in batch.indices] == list(range(len(images)))
    np.testing.assert_allclose(
        np.concatenate([batch.vectors for batch in batches]),
        embedder.embed_images(images),
        atol=1e-5,
    )


def test_a_bad_image_raises_image_error_naming_its_index(embedder: Embedder) -> None:
    truncated = encoded(solid("red", (64, 64)), "JPEG")[:80]
    with pytest.raises(ImageError) as info:
        embedder.embed_images([*varied_pictures(11)[:2], truncated, solid("blue")])
    assert info.value.index == 2
    with pytest.raises(ImageError) as single:
        embedder.embed_images([b"not an image"])
    assert single.value.index == 0


def test_identity_is_stable(embedder: Embedder) -> None:
    assert embedder.fingerprint == embedder.fingerprint and embedder.fingerprint
    assert isinstance(embedder.config(), dict)
