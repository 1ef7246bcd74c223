"""One contract, every embedder: what the facade and the vector stores rely on.

Runs against the built-in embedders on tiny random models (the open_clip ones skip where
the ``open-clip`` extra is not installed) and against the test suite's colour embedder.
The tests are `multimodal_rag.testing.EmbedderContract`, which a user's own tests subclass.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from helpers import ColorEmbedder
from multimodal_rag.protocols import Embedder
from multimodal_rag.testing import EmbedderContract


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


class TestEmbedders(EmbedderContract):
    """The library's contract suite over every embedder above."""

    @pytest.fixture(scope="class", params=sorted(EMBEDDERS))
    @classmethod
    def embedder(cls, request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Embedder:
        return EMBEDDERS[request.param](tmp_path_factory.mktemp(request.param))
