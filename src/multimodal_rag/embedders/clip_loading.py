"""How [`CLIPEmbedder`][multimodal_rag.embedders.clip.CLIPEmbedder] finds, loads and checks weights.

A named model comes from the usual download cache (checked against its published SHA-256).
A local checkpoint is a ``state_dict``, read with ``torch.load(weights_only=True)`` so that
it holds tensors and no code, or a TorchScript archive, whose code runs as it loads: only
when the caller allows it or openai's published checksum vouches for it. A knowledge base's
manifest can neither allow TorchScript nor name a relative path.
"""

from __future__ import annotations

import os
import warnings
import zipfile
from pathlib import Path
from typing import TYPE_CHECKING, Any

from multimodal_rag._extras import require
from multimodal_rag._hashing import sha256_file
from multimodal_rag.errors import ModelLoadError

if TYPE_CHECKING:
    import torch

__all__ = [
    "check_manifest_config",
    "download_root_or_default",
    "import_clip",
    "import_torch",
    "is_torchscript",
    "load_model",
    "named_file",
    "published_sha256s",
    "torchscript_refused",
]

_DEFAULT_DOWNLOAD_ROOT = "~/.cache/clip"


def check_manifest_config(
    checkpoint: str | os.PathLike[str] | None,
    download_root: str | os.PathLike[str] | None,
    allow_torchscript: bool,
) -> None:
    """Refuse what only the caller may decide, when a knowledge base's manifest configures CLIP.

    A manifest may come from someone else: it must not opt into running code, and a relative
    path in it would name a file in whatever directory the process happens to run in.
    """
    if allow_torchscript:
        raise ModelLoadError(
            "the knowledge base's manifest sets allow_torchscript for its CLIP embedder; only "
            "the caller may allow a TorchScript checkpoint: build CLIPEmbedder(..., "
            "allow_torchscript=True) for a file you trust and pass it as "
            "MultimodalRAG.open(path, embedder=...)"
        )
    for what, path in (("checkpoint", checkpoint), ("download_root", download_root)):
        if path is not None and not Path(path).expanduser().is_absolute():
            raise ModelLoadError(
                f"the knowledge base's manifest names the CLIP {what} {str(path)!r}, a relative "
                "path that would be looked up in the current directory; build CLIPEmbedder("
                f"{what}='/absolute/path', ...) and pass it as "
                "MultimodalRAG.open(path, embedder=...)"
            )


def load_model(
    name: str,
    checkpoint: Path | None,
    download_root: Path | None,
    device: torch.device,
    *,
    allow_torchscript: bool = False,
    sha256: str | None = None,
) -> tuple[Any, str]:
    """Load a CLIP model; return it and the SHA-256 of its weights file.

    ``sha256`` is the checkpoint's, when the caller has just computed it (a named model's
    comes from its URL, and ``clip.load`` checks it).
    """
    clip = import_clip()
    if checkpoint is not None:
        if not checkpoint.is_file():
            raise ModelLoadError(
                f"CLIP checkpoint for model {name!r} not found: {str(checkpoint)!r} is not a file; "
                "pass checkpoint= the path of a CLIP weights file (a state_dict .pt)"
            )
        sha256 = sha256 or sha256_file(checkpoint)
        scripted = is_torchscript(checkpoint)
        # openai's own archives are TorchScript; the published checksum vouches for their code.
        if scripted and not allow_torchscript and sha256 not in published_sha256s():
            raise torchscript_refused(checkpoint)
        try:
            if scripted:
                model = _quiet_load(clip, str(checkpoint), device)
            else:
                model = _load_state_dict(clip, checkpoint, device)
        except Exception as exc:
            # Not named after the model: with a checkpoint, the weights decide the architecture.
            raise ModelLoadError(
                f"cannot load CLIP checkpoint {str(checkpoint)!r}: {_not_clip_weights(checkpoint, exc)}; "
                "expected a CLIP model's state_dict saved with torch.save (or a TorchScript "
                "archive such as openai/CLIP publishes)"
            ) from exc
        return model, sha256

    available = clip.available_models()
    root = download_root_or_default(download_root)
    if name not in available:
        raise ModelLoadError(
            f"unknown CLIP model {name!r}; named models are {', '.join(available)}. "
            f"For other weights pass checkpoint='/path/to/weights.pt' (with model= naming them)"
        )
    url = clip.clip._MODELS[name]
    cached = root / os.path.basename(url)
    try:
        model = _quiet_load(clip, name, device, download_root=str(root))
    except Exception as exc:
        raise ModelLoadError(
            f"cannot load CLIP model {name!r}: it is not in the cache at {str(cached)!r} and "
            f"could not be downloaded from {url} ({exc}). Without internet, copy {cached.name} "
            f"there from a machine that has it, or pass "
            f"CLIPEmbedder(model={name!r}, checkpoint='/path/to/{cached.name}')"
        ) from exc
    # The file's name in openai's URL is its SHA-256, and clip.load checked it.
    return model, url.split("/")[-2]


def is_torchscript(path: Path) -> bool:
    """Whether ``path`` is a TorchScript archive: a zip holding ``constants.pkl`` and code."""
    try:
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
    except (zipfile.BadZipFile, OSError):
        return False  # a legacy pickle or not weights at all: torch.load says which
    inner = {name.partition("/")[2] for name in names}
    return "constants.pkl" in inner or any(name.startswith("code/") for name in inner)


def _not_clip_weights(path: Path, exc: Exception) -> str:
    """What a checkpoint that failed to load is, in a user's terms rather than torch's."""
    if isinstance(exc, ModelLoadError):  # what _load_state_dict found inside
        return str(exc)
    if isinstance(exc, KeyError):  # build_model looked for a tensor every CLIP has
        return f"it holds tensors, but not a CLIP model's (it has no {exc.args[0]!r})"
    try:
        with open(path, "rb") as file:
            head = file.read(16)
        names = zipfile.ZipFile(path).namelist() if zipfile.is_zipfile(path) else None
    except (OSError, zipfile.BadZipFile):
        return f"it cannot be read ({exc})"
    if names is not None:
        if not any(name.endswith("/data.pkl") for name in names):
            return "it is a zip archive, but not one torch.save writes (it has no data.pkl)"
        return f"torch cannot read it ({exc})"
    if head[:1] == b"\x80":  # a pickle: torch.save's format before PyTorch 1.6
        return (
            "it is in torch.save's legacy format, which cannot be memory-mapped: load it and "
            "save it again with a current PyTorch"
        )
    if head[8:9] == b"{":  # 8 bytes of header length, then the header's JSON
        return "it is a .safetensors file, which only the open-clip embedder reads"
    return f"it is not a file torch.save writes (it begins {head[:12]!r})"


def published_sha256s() -> set[str]:
    """The SHA-256 of each of openai's published files (the folder name in its URL)."""
    return {url.split("/")[-2] for url in import_clip().clip._MODELS.values()}


def torchscript_refused(checkpoint: Path) -> ModelLoadError:
    return ModelLoadError(
        f"CLIP checkpoint {str(checkpoint)!r} is a TorchScript archive, which holds code "
        "that runs as it loads; pass allow_torchscript=True if you trust the file, or "
        "convert it once into a state_dict: torch.save(torch.jit.load(path).state_dict(), "
        "'weights.pt'). A knowledge base opened from its manifest never loads one: pass "
        "MultimodalRAG.open(path, embedder=CLIPEmbedder(..., allow_torchscript=True))"
    )


def download_root_or_default(download_root: Path | None) -> Path:
    return download_root if download_root is not None else Path(_DEFAULT_DOWNLOAD_ROOT).expanduser()


def named_file(name: str) -> str:
    """The file name of a named model in the download cache (the last part of its URL)."""
    return str(os.path.basename(import_clip().clip._MODELS[name]))


def _load_state_dict(clip: Any, checkpoint: Path, device: torch.device) -> Any:
    """Build CLIP from a ``state_dict`` file; ``weights_only`` unpickles tensors, nothing else.

    The file is memory-mapped and its tensors become the model's parameters as they are
    (``assign=True``), so loading holds one copy of the weights, not two: the model is
    laid out on the meta device (no memory) from the tensors' shapes first.
    """
    torch = import_torch()
    state = torch.load(str(checkpoint), map_location="cpu", weights_only=True, mmap=True)
    if not isinstance(state, dict):
        raise ModelLoadError(f"it holds a {type(state).__name__}, not a state_dict")
    shapes = {key: value.to("meta") for key, value in state.items()}
    with torch.device("meta"):
        model = clip.model.build_model(shapes)
    for key in ("input_resolution", "context_length", "vocab_size"):
        state.pop(key, None)  # build_model drops these bookkeeping entries too
    model.load_state_dict(state, assign=True)
    # The causal mask of the text transformer is a plain attribute, not in the state.
    mask = model.build_attention_mask()
    for block in model.transformer.resblocks:
        block.attn_mask = mask
    # build_model rounds the matrix weights through fp16 (openai's own files are fp16):
    # the same rounding keeps vectors identical to a TorchScript load of the same weights.
    clip.model.convert_weights(model)
    return model.to(device).float()


def _quiet_load(clip: Any, name: str, device: torch.device, **kwargs: Any) -> Any:
    with warnings.catch_warnings():
        # torch.load warns about pickles of old formats; that is the checkpoint's business.
        warnings.simplefilter("ignore", FutureWarning)
        warnings.simplefilter("ignore", UserWarning)
        model, _ = clip.load(name, device=device, jit=False, **kwargs)
    return model.float()


def import_torch() -> Any:
    return require("torch", user="CLIPEmbedder")


def import_clip() -> Any:
    from multimodal_rag._pkg_resources import pkg_resources_for_clip

    # clip-anytorch imports pkg_resources, gone from setuptools 81 on: a shim stands in.
    with pkg_resources_for_clip(), warnings.catch_warnings():
        # Where the real pkg_resources exists, it warns about its own deprecation.
        warnings.simplefilter("ignore", UserWarning)
        warnings.simplefilter("ignore", DeprecationWarning)
        return require("clip", user="CLIPEmbedder", package="clip-anytorch")
