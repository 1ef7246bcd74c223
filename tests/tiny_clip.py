"""Tiny random CLIP checkpoints, made on the spot: no registry ships real CLIP weights.

The model has the real openai/CLIP architecture (``clip.model.CLIP``) with small
widths (multiples of 64, since CLIP derives its head counts as width // 64) and is
loaded back through the real ``clip.load`` code path.
"""

from __future__ import annotations

import warnings
from pathlib import Path


def make_tiny_clip_checkpoint(
    path: Path,
    *,
    seed: int = 0,
    embed_dim: int = 64,
    image_resolution: int = 32,
    patch_size: int = 16,
    width: int = 64,
    layers: int = 1,
    jit: bool = False,
) -> Path:
    """Write a random ViT CLIP as a state_dict (or TorchScript archive) and return its path."""
    import torch
    from clip.model import CLIP

    torch.manual_seed(seed)
    model = CLIP(
        embed_dim=embed_dim,
        image_resolution=image_resolution,
        vision_layers=layers,
        vision_width=width,
        vision_patch_size=patch_size,
        context_length=77,
        vocab_size=49408,
        transformer_width=width,
        transformer_heads=width // 64,
        transformer_layers=layers,
    ).eval()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if jit:
        # openai's own TorchScript archives were traced: CLIP's LayerNorm calls
        # super().forward, which torch.jit.script cannot compile.
        image = torch.zeros(1, 3, image_resolution, image_resolution)
        text = torch.zeros(1, 77, dtype=torch.long)
        with warnings.catch_warnings():
            # TorchScript is deprecated and tracing warns about Python values it freezes.
            warnings.simplefilter("ignore")
            torch.jit.save(torch.jit.trace(model, (image, text), check_trace=False), str(path))
    else:
        torch.save(model.state_dict(), path)
    return path
