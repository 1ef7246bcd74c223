"""A name for a CLIP checkpoint given without one, read from its weights' shapes.

openai/CLIP's ``build_model`` infers the architecture from a ``state_dict``; the same shapes
tell which published model a file is (its name then labels the knowledge base), or describe
one that is none of them, so that a random or custom model is never labelled ``ViT-B/32``.
"""

from __future__ import annotations

from typing import Any

__all__ = ["architecture_label"]

#: openai/CLIP's published models by shape: (vision layers, vision width, patch size or None
#: for a ResNet, input resolution, embedding dimension, text width, text layers).
_PUBLISHED: dict[tuple[Any, ...], str] = {
    ((3, 4, 6, 3), 64, None, 224, 1024, 512, 12): "RN50",
    ((3, 4, 23, 3), 64, None, 224, 512, 512, 12): "RN101",
    ((4, 6, 10, 6), 80, None, 288, 640, 640, 12): "RN50x4",
    ((6, 8, 18, 8), 96, None, 384, 768, 768, 12): "RN50x16",
    ((3, 15, 36, 10), 128, None, 448, 1024, 1024, 12): "RN50x64",
    (12, 768, 32, 224, 512, 512, 12): "ViT-B/32",
    (12, 768, 16, 224, 512, 512, 12): "ViT-B/16",
    (24, 1024, 14, 224, 768, 768, 12): "ViT-L/14",
    (24, 1024, 14, 336, 768, 768, 12): "ViT-L/14@336px",
}


def architecture_label(model: Any) -> str:
    """The published model's name when ``model`` has its shapes, else a description of them.

    ``ViT-<width>-<layers>/<patch>`` for another vision transformer (the random demo
    checkpoint is ``ViT-64-2/32``), ``RN-<width>-<blocks per stage>`` for another ResNet.
    """
    state = model.state_dict()
    embed_dim = int(state["text_projection"].shape[1])
    text_width = int(state["ln_final.weight"].shape[0])
    text_layers = len({key.split(".")[2] for key in state if key.startswith("transformer.resblocks.")})
    resolution = int(model.visual.input_resolution)
    if "visual.proj" in state:
        conv = state["visual.conv1.weight"]
        width, patch = int(conv.shape[0]), int(conv.shape[-1])
        layers: Any = sum(
            1 for key in state if key.startswith("visual.") and key.endswith(".attn.in_proj_weight")
        )
        fallback = f"ViT-{width}-{layers}/{patch}"
    else:
        width, patch = int(state["visual.layer1.0.conv1.weight"].shape[0]), None
        layers = tuple(
            len({key.split(".")[2] for key in state if key.startswith(f"visual.layer{stage}.")})
            for stage in (1, 2, 3, 4)
        )
        fallback = f"RN-{width}-{'.'.join(map(str, layers))}"
    shape = (layers, width, patch, resolution, embed_dim, text_width, text_layers)
    return _PUBLISHED.get(shape, fallback)
