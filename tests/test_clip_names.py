"""A checkpoint given without a model name is labelled from its weights' shapes."""

from __future__ import annotations

import pytest

from multimodal_rag.embedders.clip_loading import import_clip, import_torch
from multimodal_rag.embedders.clip_names import architecture_label


def build(*args: object):
    torch = import_torch()
    model_module = import_clip().model
    with torch.device("meta"):  # shapes only: no memory for the weights
        return model_module.CLIP(*args)


@pytest.mark.parametrize(
    ("shape", "label"),
    [
        ((512, 224, 12, 768, 32, 77, 49408, 512, 8, 12), "ViT-B/32"),
        ((768, 336, 24, 1024, 14, 77, 49408, 768, 12, 12), "ViT-L/14@336px"),
        ((1024, 224, (3, 4, 6, 3), 64, None, 77, 49408, 512, 8, 12), "RN50"),
        # The random demo checkpoint, and a ViT-B/32 vision tower with a smaller text tower.
        ((64, 224, 2, 64, 32, 77, 49408, 64, 1, 2), "ViT-64-2/32"),
        ((512, 224, 12, 768, 32, 77, 49408, 256, 4, 6), "ViT-768-12/32"),
        ((64, 64, (1, 1, 1, 1), 64, None, 77, 49408, 64, 1, 1), "RN-64-1.1.1.1"),
    ],
)
def test_published_shapes_get_their_names_and_others_a_description(shape, label) -> None:
    assert architecture_label(build(*shape)) == label
