"""How `OpenCLIPEmbedder` finds and loads a model.

Any ``open_clip`` architecture (``open_clip.list_models()``) with weights from a pretrained
tag (downloaded to ``open_clip``'s usual cache: the Hugging Face hub cache, or
``~/.cache/clip`` for openai's files) or from a local file. A local weights file and, for
a model whose tokenizer comes from the Hugging Face hub, a local tokenizer folder load
with no network access at all. The preprocessing is the tag's (mean, std, interpolation,
resize mode) over the model's own (input size), as ``open_clip.create_model_and_transforms``
builds it.
"""

from __future__ import annotations

import contextlib
import os
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from attrs import frozen

from multimodal_rag._extras import require
from multimodal_rag._hashing import sha256_file
from multimodal_rag.embedders.preprocess import ImagePreprocess
from multimodal_rag.errors import ModelLoadError

if TYPE_CHECKING:
    import torch

__all__ = [
    "LoadedModel",
    "check_manifest_paths",
    "for_inference",
    "hub_weights_files",
    "import_open_clip",
    "load_open_clip",
    "offline_reason",
    "preprocess_of",
]

_USER = "OpenCLIPEmbedder"


def import_open_clip() -> Any:
    with warnings.catch_warnings():
        # open_clip imports timm and torchvision, which may warn about their own futures.
        warnings.simplefilter("ignore")
        return require("open_clip", user=_USER, extra="open-clip", package="open-clip-torch")


@frozen(kw_only=True)
class LoadedModel:
    """A loaded model and what the embedder needs to know about it.

    Attributes:
        model: The ``open_clip`` model, in eval mode, fp32.
        weights_sha256: SHA-256 of the weights file.
        weights_path: The file the weights came from.
        preprocess: The image preprocessing of the weights.
        tokenizer: Callable: a list of texts -> a ``(n, context_length)`` tensor of ids.
        context_length: Tokens per text; longer texts are truncated.
        quick_gelu: Whether the model runs QuickGELU (openai's weights need it).
    """

    model: Any
    weights_sha256: str
    weights_path: Path
    preprocess: ImagePreprocess
    tokenizer: Any
    context_length: int
    quick_gelu: bool


def check_manifest_paths(**paths: str | os.PathLike[str] | None) -> None:
    """Refuse relative paths when a knowledge base's manifest configures the embedder.

    A manifest may come from someone else, and a relative path in it would name a file in
    whatever directory the process happens to run in.
    """
    for what, path in paths.items():
        if path is not None and not Path(path).expanduser().is_absolute():
            raise ModelLoadError(
                f"the knowledge base's manifest names the open_clip {what} {str(path)!r}, a "
                "relative path that would be looked up in the current directory; build "
                f"OpenCLIPEmbedder({what}='/absolute/path', ...) and pass it as "
                "MultimodalRAG.open(path, embedder=...)"
            )


def load_open_clip(
    name: str,
    pretrained: str | None,
    *,
    checkpoint: Path | None,
    tokenizer: Path | None,
    download_root: Path | None,
    device: torch.device,
    text_config: Path | None = None,
) -> LoadedModel:
    """Load model ``name`` with the weights of tag ``pretrained`` or of ``checkpoint``.

    ``text_config`` is a local folder with the ``config.json`` of the model's Hugging Face
    text tower (a model folder's): the tower is then built from it instead of from the
    hub, and nothing of the load may use the network.

    Raises:
        ModelLoadError: Unknown model or tag; weights or tokenizer that cannot be found,
            downloaded or read (the message says where it looked and which local files to
            pass instead).
    """
    open_clip = import_open_clip()
    config = open_clip.get_model_config(name)
    if config is None:
        raise ModelLoadError(
            f"unknown open_clip model {name!r}; open_clip.list_models() lists the "
            "architectures (for example ViT-B-32, ViT-B-16-SigLIP2, MobileCLIP2-S0)"
        )
    tag = dict(open_clip.get_pretrained_cfg(name, pretrained)) if pretrained else {}
    if pretrained and not tag and checkpoint is None:
        tags = ", ".join(open_clip.list_pretrained_tags_by_model(name)) or "none"
        raise ModelLoadError(
            f"unknown pretrained tag {pretrained!r} for open_clip model {name!r}; its tags: "
            f"{tags}. For other weights pass checkpoint='/path/to/weights' (pretrained= then "
            "only labels them)"
        )
    if checkpoint is not None:
        if not checkpoint.is_file():
            raise ModelLoadError(
                f"open_clip checkpoint for model {name!r} not found: {str(checkpoint)!r} is "
                "not a file; pass checkpoint= the path of the weights (open_clip_model."
                "safetensors, open_clip_pytorch_model.bin or a state_dict .pt)"
            )
        weights = checkpoint
    else:
        weights = _download(open_clip, name, pretrained, tag, download_root)
    # The tag says how its weights were trained: openai's need QuickGELU, which the plain
    # architecture configs (ViT-B-32, ...) leave off.
    quick_gelu = bool(config.get("quick_gelu", False) or tag.get("quick_gelu", False))
    overrides: dict[str, Any] = {}
    if text_config is not None:
        # open_clip builds the transformer from AutoConfig.from_pretrained(hf_model_name): a
        # local folder there is read as it is; the weights come from the checkpoint.
        overrides["text_cfg"] = {
            **config.get("text_cfg", {}),
            "hf_model_name": str(text_config),
            "hf_model_pretrained": False,
        }
    try:
        with warnings.catch_warnings(), _offline(text_config is not None):
            warnings.simplefilter("ignore")
            model = open_clip.create_model(
                name,
                pretrained=str(weights),
                device=device,
                force_quick_gelu=quick_gelu,
                pretrained_image=False,
                pretrained_text=False,
                weights_only=True,
                **overrides,
            )
    except Exception as exc:
        text_model = config.get("text_cfg", {}).get("hf_model_name")
        hint = (
            f"; its text tower is built from {str(text_config / 'config.json')!r}"
            if text_config is not None
            else f"; its text tower is built from the configuration of https://huggingface.co/"
            f"{text_model}, which must be in the Hugging Face cache (load it once online, then "
            "HF_HUB_OFFLINE=1 works offline, or use a folder made by `multimodal-rag "
            "fetch-model`)"
            if text_model
            else ""
        )
        raise ModelLoadError(
            f"cannot load open_clip weights {str(weights)!r} into model {name!r}: {exc}; they "
            "must be that architecture's (a state_dict .pt/.bin or .safetensors, as open_clip "
            f"saves them){hint}"
        ) from exc
    model = for_inference(model)
    text_cfg = config.get("text_cfg", {})
    context_length = int(text_cfg.get("context_length", 77))
    return LoadedModel(
        model=model,
        weights_sha256=sha256_file(weights),
        weights_path=weights,
        preprocess=_preprocess(open_clip, model, tag),
        tokenizer=_tokenizer(
            open_clip, name, text_cfg, context_length, tokenizer, download_root
        ),
        context_length=context_length,
        quick_gelu=quick_gelu,
    )


@contextlib.contextmanager
def _offline(offline: bool) -> Iterator[None]:
    """Tell the Hugging Face libraries to stay offline while a model folder loads.

    Every file is given by its local path already; this keeps anything they would look up
    besides (a newer revision, a missing optional file) from trying the network.
    """
    if not offline:
        yield
        return
    names = ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")
    saved = {name: os.environ.get(name) for name in names}
    os.environ.update(dict.fromkeys(names, "1"))
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def for_inference(model: Any) -> Any:
    """The model in fp32 and eval mode, its re-parameterizable blocks fused.

    MobileCLIP's (and other FastViT-style) blocks train as several parallel branches that
    fold into one convolution for inference: the same function, about twice as fast.
    """
    model = model.float().eval()
    if any(hasattr(m, "reparameterize") or hasattr(m, "switch_to_deploy") for m in model.modules()):
        from timm.utils.model import reparameterize_model

        reparameterize_model(model, inplace=True)
    return model


def _download(
    open_clip: Any, name: str, pretrained: str | None, tag: dict[str, Any], root: Path | None
) -> Path:
    if not pretrained:
        raise ModelLoadError(
            f"open_clip model {name!r} needs weights: pass pretrained= one of its tags "
            f"({', '.join(open_clip.list_pretrained_tags_by_model(name)) or 'none'}) or "
            "checkpoint='/path/to/weights'"
        )
    where, files = _source(tag, root)

    def unavailable(why: str) -> ModelLoadError:
        return ModelLoadError(
            f"cannot load open_clip model {name!r} with pretrained {pretrained!r}: its weights "
            f"are not in the cache at {where} and {why}. Without internet (or with "
            f"HF_HUB_OFFLINE=1), copy {files} from "
            f"a machine that has it and pass OpenCLIPEmbedder({name!r}, {pretrained!r}, "
            "checkpoint='/path/to/weights', tokenizer='/path/to/tokenizer-folder') (tokenizer= "
            "for models whose tokenizer comes from the Hugging Face hub)"
        )

    cached = _cached_weights(tag, root)
    if cached is not None:
        return cached  # no network at all: the hub client would ask it for the latest version
    offline = offline_reason(tag)
    if offline is not None:
        raise unavailable(offline)
    try:
        path = open_clip.download_pretrained(tag, cache_dir=str(root) if root else None)
    except Exception as exc:
        raise unavailable(f"could not be downloaded ({exc})") from exc
    if not path:
        raise ModelLoadError(f"open_clip has no download for {name!r} {pretrained!r}")
    return Path(path)


def hub_weights_files(hub: str) -> tuple[str, list[str]]:
    """A Hugging Face tag's repository and the weights files open_clip would fetch from it, in
    its order: ``"org/name/"`` means its default file, and a ``.safetensors`` copy comes first."""
    from open_clip.pretrained import HF_SAFE_WEIGHTS_NAME, HF_WEIGHTS_NAME

    repo, filename = os.path.split(hub)
    filename = filename or HF_WEIGHTS_NAME
    candidates = [filename]
    if filename == HF_WEIGHTS_NAME:
        candidates.insert(0, HF_SAFE_WEIGHTS_NAME)
    elif filename.endswith((".bin", ".pth")):
        candidates.insert(0, filename[:-4] + ".safetensors")
    return repo, candidates


def _cached_weights(tag: dict[str, Any], root: Path | None) -> Path | None:
    """The tag's weights file where open_clip caches it, or ``None`` when it is not there yet.

    For a Hugging Face tag, the files open_clip would fetch, in its order (a ``.safetensors``
    first); for a URL tag, the file named after the URL (open_clip checks its SHA-256 on load).
    """
    hub = str(tag.get("hf_hub", ""))
    if hub:
        from huggingface_hub import try_to_load_from_cache

        repo, candidates = hub_weights_files(hub)
        for candidate in candidates:
            found = try_to_load_from_cache(repo, candidate, cache_dir=str(root) if root else None)
            if isinstance(found, str):  # else None, or a marker that the hub lacks the file
                return Path(found)
        return None
    url = str(tag.get("url", ""))
    if "file" in tag or not url:
        return None  # open_clip's own handling: a local file, or nothing to download
    file = Path(root or os.path.expanduser("~/.cache/clip")) / os.path.basename(url)
    return file if file.is_file() else None


#: Seconds to wait for the weights' server to answer a first connection.
_CONNECT_TIMEOUT = 3.0


def offline_reason(tag: dict[str, Any]) -> str | None:
    """Why a download cannot work now, found in seconds; ``None`` when it may.

    Without this, the hub client retries for about a minute before it gives up.
    """
    import socket
    from urllib.parse import urlsplit

    hub = str(tag.get("hf_hub", ""))
    if hub:
        from huggingface_hub import constants

        if constants.is_offline_mode():
            return "HF_HUB_OFFLINE=1 is set, so nothing is downloaded"
        url = constants.ENDPOINT
    else:
        url = str(tag.get("url", ""))
    parts = urlsplit(url)
    if not parts.hostname:
        return None
    port = parts.port or (80 if parts.scheme == "http" else 443)
    try:
        socket.create_connection((parts.hostname, port), timeout=_CONNECT_TIMEOUT).close()
    except OSError as exc:
        return f"{parts.hostname} cannot be reached to download them ({exc.strerror or exc})"
    return None


def _source(tag: dict[str, Any], root: Path | None) -> tuple[str, str]:
    """Where open_clip caches this tag's weights, and which file to copy there."""
    hub = str(tag.get("hf_hub", ""))
    if hub:
        from huggingface_hub import constants

        repo, filename = os.path.split(hub)  # "org/name/" or "org/name/file", as open_clip reads it
        cache = str(root) if root else constants.HF_HUB_CACHE
        wanted = filename or "open_clip_model.safetensors (or open_clip_pytorch_model.bin)"
        return repr(cache), f"{wanted} of https://huggingface.co/{repo}"
    url = str(tag.get("url", ""))
    cache = str(root) if root else os.path.expanduser("~/.cache/clip")
    return repr(os.path.join(cache, os.path.basename(url))), f"{url}"


def _preprocess(open_clip: Any, model: Any, tag: dict[str, Any]) -> ImagePreprocess:
    """The tag's preprocessing at the model's input size."""
    return preprocess_of(tag, size=open_clip.get_model_preprocess_cfg(model)["size"])


def preprocess_of(tag: dict[str, Any], *, size: int | tuple[int, int]) -> ImagePreprocess:
    """A pretrained tag's preprocessing (mean, std, interpolation, resize mode) at ``size``,
    over open_clip's defaults: what ``open_clip.create_model_and_transforms`` builds."""
    from open_clip.transform import PreprocessCfg, merge_preprocess_dict

    merged = merge_preprocess_dict(PreprocessCfg(), tag)
    return ImagePreprocess(
        size=size,
        mean=merged["mean"],
        std=merged["std"],
        # open_clip resizes bicubic for anything but "bilinear" ("random" is for training).
        interpolation="bilinear" if merged["interpolation"] == "bilinear" else "bicubic",
        resize_mode=merged["resize_mode"],
        fill_color=int(merged["fill_color"]),
    )


def _tokenizer(
    open_clip: Any,
    name: str,
    text_config: dict[str, Any],
    context_length: int,
    folder: Path | None,
    root: Path | None,
) -> Any:
    hub_name = text_config.get("hf_tokenizer_name", "")
    if folder is not None:
        if not folder.is_dir():
            raise ModelLoadError(
                f"tokenizer folder {str(folder)!r} for open_clip model {name!r} is not a "
                "directory; pass tokenizer= a folder holding tokenizer.json and "
                "tokenizer_config.json"
                + (f" (those of https://huggingface.co/{hub_name})" if hub_name else "")
            )
        require("transformers", user=f"{_USER}(tokenizer=...)", extra="open-clip")
        from open_clip.tokenizer import HFTokenizer

        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                # local_files_only: a local folder is read as it is, never looked up online.
                return HFTokenizer(
                    str(folder),
                    context_length=context_length,
                    tokenizer_mode=text_config.get("tokenizer_mode"),
                    local_files_only=True,
                    **text_config.get("tokenizer_kwargs", {}),
                )
        except Exception as exc:
            raise ModelLoadError(
                f"cannot load the tokenizer in {str(folder)!r} for open_clip model {name!r}: "
                f"{exc}; the folder must hold a Hugging Face tokenizer (tokenizer.json and "
                "tokenizer_config.json)"
            ) from exc
    if hub_name:
        require("transformers", user=_USER, extra="open-clip")
        from huggingface_hub import try_to_load_from_cache

        cache = str(root) if root else None
        if not isinstance(try_to_load_from_cache(hub_name, "tokenizer_config.json", cache_dir=cache), str):
            offline = offline_reason({"hf_hub": f"{hub_name}/"})
            if offline is not None:
                raise ModelLoadError(
                    f"cannot load the tokenizer of open_clip model {name!r}: it is not in the "
                    f"Hugging Face cache and {offline.replace('them', 'it')}. Without internet "
                    "(or with HF_HUB_OFFLINE=1), copy the files of https://huggingface.co/"
                    f"{hub_name} (tokenizer.json, tokenizer_config.json, ...) into a folder and "
                    "pass tokenizer='/path/to/folder'"
                )
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            return open_clip.get_tokenizer(
                name, context_length=context_length, cache_dir=str(root) if root else None
            )
    except Exception as exc:
        raise ModelLoadError(
            f"cannot load the tokenizer of open_clip model {name!r}"
            + (f" from https://huggingface.co/{hub_name}" if hub_name else "")
            + f" ({exc}). Without internet, copy its files (tokenizer.json, "
            "tokenizer_config.json, ...) into a folder and pass tokenizer='/path/to/folder'"
        ) from exc
