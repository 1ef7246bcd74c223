"""A small CLIP checkpoint with random weights, for trying the pipeline with no download.

The model has the real openai/CLIP architecture, only narrow and shallow, and is
saved as a ``state_dict`` that ``clip.load`` (and so [`CLIPEmbedder`][multimodal_rag.embedders.clip.CLIPEmbedder] with
``checkpoint=``) reads like any other local checkpoint. Its weights are random:
every step of indexing, searching and answering runs, but which images it finds
similar is meaningless. Use a real model (``CLIPEmbedder("ViT-B/32")``) for real
retrieval.
"""

from __future__ import annotations

import os
from pathlib import Path

from multimodal_rag.errors import InvalidInputError

__all__ = ["make_random_clip_checkpoint"]


def make_random_clip_checkpoint(
    path: str | os.PathLike[str],
    *,
    seed: int = 0,
    embed_dim: int = 64,
    width: int = 64,
    layers: int = 2,
    image_resolution: int = 224,
    patch_size: int = 32,
) -> Path:
    """Write a random-weight ViT CLIP checkpoint to ``path`` and return the path.

    The same arguments always give the same weights.

    Args:
        path: File to write (its folder is created).
        seed: Seed of the random weights.
        embed_dim: Length of the embeddings.
        width: Width of both transformers; a multiple of 64 (CLIP derives its
            attention heads as ``width // 64``).
        layers: Depth of both transformers.
        image_resolution: Input side in pixels; a multiple of ``patch_size``.
        patch_size: Side of the vision transformer's patches.

    Raises:
        InvalidInputError: Sizes CLIP cannot build.
    """
    if width < 64 or width % 64:
        raise InvalidInputError(f"width must be a positive multiple of 64, got {width}")
    if min(embed_dim, layers, patch_size) < 1 or image_resolution % patch_size:
        raise InvalidInputError(
            "embed_dim, layers and patch_size must be positive and image_resolution "
            f"({image_resolution}) a multiple of patch_size ({patch_size})"
        )
    import warnings

    import torch

    from multimodal_rag._pkg_resources import pkg_resources_for_clip

    # The clip package imports pkg_resources, gone from setuptools 81 on.
    with pkg_resources_for_clip(), warnings.catch_warnings():
        # Where the real pkg_resources exists, it warns about its own deprecation.
        warnings.simplefilter("ignore", UserWarning)
        warnings.simplefilter("ignore", DeprecationWarning)
        from clip.model import CLIP

    generator_state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    try:
        model = CLIP(
            embed_dim=embed_dim,
            image_resolution=image_resolution,
            vision_layers=layers,
            vision_width=width,
            vision_patch_size=patch_size,
            context_length=77,
            vocab_size=49408,  # CLIP's tokenizer vocabulary
            transformer_width=width,
            transformer_heads=width // 64,
            transformer_layers=layers,
        ).eval()
    finally:
        torch.random.set_rng_state(generator_state)  # leave the caller's random stream alone
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(model.state_dict(), path)
    return path
