"""Tiny random CLIP checkpoints, made on the spot: no registry ships real CLIP weights.

The library's own :func:`make_random_clip_checkpoint` builds the real openai/CLIP
architecture with small widths; the tests load it back through the real
``clip.load`` code path, as a state_dict or, traced, as a TorchScript archive.
"""

from __future__ import annotations

import warnings
from pathlib import Path

from multimodal_rag._random_checkpoint import make_random_clip_checkpoint


def make_tiny_clip_checkpoint(
    path: Path,
    *,
    seed: int = 0,
    embed_dim: int = 64,
    image_resolution: int = 32,
    patch_size: int = 16,
    width: int = 64,
    layers: int = 1,
    architecture: str = "vit",
    resnet_width: int = 8,
    jit: bool = False,
) -> Path:
    """Write a random CLIP (a ViT unless ``architecture="resnet"``) as a state_dict (or
    TorchScript archive) and return its path."""
    path = make_random_clip_checkpoint(
        path,
        seed=seed,
        embed_dim=embed_dim,
        width=width,
        layers=layers,
        image_resolution=image_resolution,
        patch_size=patch_size,
        architecture=architecture,
        resnet_width=resnet_width,
    )
    if jit:
        import torch

        from multimodal_rag._pkg_resources import pkg_resources_for_clip

        with pkg_resources_for_clip():  # clip-anytorch imports pkg_resources
            from clip.model import build_model

        model = build_model(torch.load(path)).float().eval()
        # openai's own TorchScript archives were traced: CLIP's LayerNorm calls
        # super().forward, which torch.jit.script cannot compile.
        image = torch.zeros(1, 3, image_resolution, image_resolution)
        text = torch.zeros(1, 77, dtype=torch.long)
        with warnings.catch_warnings():
            # TorchScript is deprecated and tracing warns about Python values it freezes.
            warnings.simplefilter("ignore")
            torch.jit.save(torch.jit.trace(model, (image, text), check_trace=False), str(path))
    return path
