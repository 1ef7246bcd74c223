"""A small CLIP checkpoint with random weights, for trying the pipeline with no download.

The model has the real openai/CLIP architecture (a vision transformer, or the
ResNet of ``RN50`` and its kin), only narrow and shallow, and is saved as a
``state_dict`` that ``clip.load`` (and so
[`CLIPEmbedder`][multimodal_rag.embedders.clip.CLIPEmbedder] with
``checkpoint=``) reads like any other local checkpoint. Its weights are random:
every step of indexing, searching and answering runs, but which images it finds
similar is meaningless. Use a real model (``CLIPEmbedder("ViT-B/32")``) for real
retrieval.

The file says so itself: besides torch's own records, its zip archive holds
``<archive>/multimodal_rag.json`` with ``"random_weights": true``. ``torch.load`` and
``clip.load`` read only the records they know, so the file loads as any checkpoint does;
`has_random_weights` finds the record, and the embedders, ``info``, every command and the
server's page then say that the weights are random.
"""

from __future__ import annotations

import json
import os
import zipfile
from pathlib import Path
from typing import Any

from multimodal_rag.errors import InvalidInputError

__all__ = ["MARKER_RECORD", "has_random_weights", "make_random_clip_checkpoint"]

_ARCHITECTURES = ("vit", "resnet")

#: The record, inside torch.save's archive folder, that says the weights are random.
MARKER_RECORD = "multimodal_rag.json"


def make_random_clip_checkpoint(
    path: str | os.PathLike[str],
    *,
    seed: int = 0,
    embed_dim: int = 64,
    width: int = 64,
    layers: int = 2,
    image_resolution: int = 224,
    patch_size: int = 32,
    architecture: str = "vit",
    resnet_width: int = 8,
) -> Path:
    """Write a random-weight CLIP checkpoint to ``path`` and return the path.

    The same arguments always give the same weights.

    Args:
        path: File to write (its folder is created).
        seed: Seed of the random weights.
        embed_dim: Length of the embeddings.
        width: Width of the text transformer, and of the vision transformer; a multiple
            of 64 (CLIP derives its attention heads as ``width // 64``).
        layers: Depth of the transformers; for a ResNet, the blocks of each of its four
            stages.
        image_resolution: Input side in pixels; a multiple of ``patch_size`` (of 32 for a
            ResNet, which reduces its input 32 times).
        patch_size: Side of the vision transformer's patches.
        architecture: ``"vit"`` (the ``ViT-*`` models) or ``"resnet"`` (``RN50``,
            ``RN101``, ``RN50x4``...: openai/CLIP's modified ResNet).
        resnet_width: A ResNet's stem width (64 in ``RN50``), even; its features are 32
            times wider.

    Raises:
        InvalidInputError: Sizes or an architecture CLIP cannot build.
    """
    if architecture not in _ARCHITECTURES:
        raise InvalidInputError(
            f"unknown architecture {architecture!r}; use one of {', '.join(_ARCHITECTURES)}"
        )
    resnet = architecture == "resnet"
    stride = 32 if resnet else patch_size
    if width < 64 or width % 64:
        raise InvalidInputError(f"width must be a positive multiple of 64, got {width}")
    if (
        min(embed_dim, layers, patch_size) < 1
        or image_resolution < stride
        or image_resolution % stride
    ):
        raise InvalidInputError(
            "embed_dim, layers and patch_size must be positive and image_resolution "
            f"({image_resolution}) a multiple of {'32 for a ResNet' if resnet else 'patch_size'} "
            f"({stride})"
        )
    if resnet and (resnet_width < 2 or resnet_width % 2):
        # Its attention pool has resnet_width * 32 // 64 heads, and its stem halves the width.
        raise InvalidInputError(f"resnet_width must be a positive even number, got {resnet_width}")
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
            # A tuple of four stages is how openai/CLIP asks for its ResNet.
            vision_layers=(layers,) * 4 if resnet else layers,
            vision_width=resnet_width if resnet else width,
            vision_patch_size=patch_size,
            context_length=77,
            vocab_size=49408,  # CLIP's tokenizer vocabulary
            transformer_width=width,
            transformer_heads=width // 64,
            transformer_layers=layers,
        ).eval()
        if resnet:
            _vary_batch_norms(model)
    finally:
        torch.random.set_rng_state(generator_state)  # leave the caller's random stream alone
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(model.state_dict(), path)
    _mark_random(path, seed=seed)
    return path


def _mark_random(path: Path, *, seed: int) -> None:
    """Add `MARKER_RECORD` to the archive torch.save wrote, in its folder beside data.pkl.

    Appended after torch's records, so their offsets (and the alignment that memory-mapping
    needs) stay as torch wrote them; torch's reader skips records it does not ask for.
    """
    with zipfile.ZipFile(path, "a") as archive:
        folder = archive.namelist()[0].split("/")[0]
        note = {"random_weights": True, "seed": seed, "made_by": "multimodal-rag random-checkpoint"}
        # A fixed date, not the clock's: the same arguments still give the same file (and so
        # the same fingerprint).
        record = zipfile.ZipInfo(f"{folder}/{MARKER_RECORD}", date_time=(1980, 1, 1, 0, 0, 0))
        archive.writestr(record, json.dumps(note))


def has_random_weights(path: str | os.PathLike[str]) -> bool:
    """Whether ``path`` is a checkpoint `make_random_clip_checkpoint` wrote (its weights random).

    Reads the zip archive's directory and one small record, never the weights; a file that
    is not a zip archive, or cannot be read, has no such record.
    """
    try:
        with zipfile.ZipFile(path) as archive:
            records = [
                name
                for name in archive.namelist()
                if name.count("/") == 1 and name.endswith("/" + MARKER_RECORD)
            ]
            if not records:
                return False
            with archive.open(records[0]) as record:
                note = json.loads(record.read(4096))
    except (OSError, zipfile.BadZipFile, ValueError, RuntimeError):
        return False
    return isinstance(note, dict) and note.get("random_weights") is True


def _vary_batch_norms(model: Any) -> None:
    """Give every batch norm statistics and scales like a trained one's.

    openai/CLIP starts each residual branch's last scale at zero and every norm at the
    identity, so a fresh random ResNet would skip its residual branches: a checkpoint that
    exercises them needs norms that do something.
    """
    import torch

    for module in model.visual.modules():
        if isinstance(module, torch.nn.BatchNorm2d):
            channels = module.num_features
            module.weight.data = torch.rand(channels) + 0.5
            module.bias.data = torch.randn(channels) * 0.1
            module.running_mean = torch.randn(channels) * 0.1
            module.running_var = torch.rand(channels) + 0.5
