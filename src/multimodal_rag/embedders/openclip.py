"""Any open_clip model: SigLIP 2, MobileCLIP, multilingual and LAION CLIPs, openai's own.

Models load through the real ``open_clip`` code (the ``open-clip-torch`` package, ``pip
install 'multimodal-rag[open-clip]'``), from a pretrained tag in the usual download cache or
from local files (`openclip_loading`). Everything after
loading is the shared fast path of `TowerEmbedder`:
parallel, draft-decoding ingest, the engines and the measured precision.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from multimodal_rag._images import DEFAULT_MAX_PIXELS
from multimodal_rag._random_checkpoint import has_random_weights
from multimodal_rag._remote import manifest_endpoints
from multimodal_rag.embedders.model_folder import ModelFolder, read_model_folder
from multimodal_rag.embedders.openclip_loading import (
    check_manifest_paths,
    load_open_clip,
)
from multimodal_rag.embedders.openclip_towers import tower_modules
from multimodal_rag.embedders.precision import QualityGate
from multimodal_rag.embedders.preprocess import PREPROCESS_VERSION
from multimodal_rag.embedders.towers import TowerEmbedder
from multimodal_rag.errors import ModelLoadError
from multimodal_rag.types import Engine, Precision

__all__ = ["OpenCLIPEmbedder", "tower_modules"]

#: Bumped whenever the tower modules change what they compute or take: part of the key
#: of every converted model in the engine cache.
_TOWERS_VERSION = 2


class OpenCLIPEmbedder(TowerEmbedder):
    """Embeds images and texts with an ``open_clip`` model.

    Args:
        model: An ``open_clip`` architecture (``open_clip.list_models()``): by default
            ``"ViT-B-16-SigLIP2"``; ``"ViT-B-32"``, ``"MobileCLIP2-S0"``,
            ``"xlm-roberta-base-ViT-B-32"``...
        pretrained: The weights' tag (``open_clip.list_pretrained_tags_by_model(model)``):
            by default ``"webli"``. Without ``checkpoint`` they are downloaded to
            ``open_clip``'s cache on first use; with one, the tag still chooses the
            preprocessing (mean, std, resize mode) and labels the weights.
        checkpoint: A local weights file as ``open_clip`` loads it (``.safetensors``, a
            ``state_dict`` ``.bin``/``.pt``, read with ``weights_only=True``), or a model
            folder made by [`fetch_model`][multimodal_rag.embedders.model_folder.fetch_model]
            (``multimodal-rag fetch-model``), which brings the tokenizer and the text tower's
            transformer configuration too; its model and tag must be ``model`` and
            ``pretrained``. Loading either never touches the network.
        tokenizer: A local folder with the model's Hugging Face tokenizer
            (``tokenizer.json``, ``tokenizer_config.json``) for models whose tokenizer comes
            from the hub (SigLIP 2's Gemma tokenizer, xlm-roberta); read offline. Models
            with CLIP's own tokenizer need none.
        download_root: Where named weights and tokenizers are cached (default:
            ``open_clip``'s, the Hugging Face hub cache or ``~/.cache/clip``).

    The other arguments are [`CLIPEmbedder`][multimodal_rag.embedders.clip.CLIPEmbedder]'s.

    Raises:
        ModelLoadError: Unknown model or tag; weights or tokenizer that cannot be found,
            downloaded or read (the message says where it looked and how to pass local
            files); a model folder that is incomplete (the message names the missing file)
            or holds another model; or a manifest that names a relative path.
        MissingDependencyError: ``open-clip-torch`` (or ``transformers`` for a Hugging Face
            tokenizer) is not installed: ``pip install 'multimodal-rag[open-clip]'``.
        InvalidInputError: An unknown engine or precision, a precision the engine or
            device cannot run, or a device that is not available.
        PrecisionError: The precision asked for fails the quality gate or cannot run
            here, and ``allow_fallback`` is not set.
    """

    kind: ClassVar[str] = "open-clip"

    def __init__(
        self,
        model: str = "ViT-B-16-SigLIP2",
        pretrained: str | None = "webli",
        *,
        checkpoint: str | os.PathLike[str] | None = None,
        tokenizer: str | os.PathLike[str] | None = None,
        device: str | None = None,
        engine: Engine = "torch",
        precision: Precision = "auto",
        batch_size: int = 32,
        num_workers: int | None = None,
        download_root: str | os.PathLike[str] | None = None,
        cache_dir: str | os.PathLike[str] | None = None,
        draft: bool = True,
        max_pixels: int = DEFAULT_MAX_PIXELS,
        calibration: str | os.PathLike[str] | None = None,
        calibration_size: int = 300,
        quality_gate: QualityGate | None = None,
        allow_fallback: bool = False,
    ) -> None:
        if manifest_endpoints() is not None:
            check_manifest_paths(
                checkpoint=checkpoint, tokenizer=tokenizer, download_root=download_root
            )
        openvino_device = self._init_runtime(
            device=device,
            engine=engine,
            precision=precision,
            batch_size=batch_size,
            num_workers=num_workers,
            draft=draft,
            max_pixels=max_pixels,
            calibration_size=calibration_size,
            cache_dir=cache_dir,
            allow_fallback=allow_fallback,
        )
        self.model_name = model
        self.pretrained = pretrained
        self.checkpoint = _absolute(checkpoint)
        self.tokenizer = _absolute(tokenizer)
        self.download_root = _absolute(download_root)
        weights, tokenizer_folder, text_config = self.checkpoint, self.tokenizer, None
        folder = self._model_folder()
        if folder is not None:
            weights = folder.path / folder.weights.path
            tokenizer_folder, text_config = folder.tokenizer, folder.text_config
        self.random_weights = weights is not None and has_random_weights(weights)
        loaded = load_open_clip(
            model,
            pretrained,
            checkpoint=weights,
            tokenizer=tokenizer_folder,
            download_root=self.download_root,
            device=self.device,
            text_config=text_config,
        )
        if folder is not None and loaded.weights_sha256 != folder.weights.sha256:
            raise ModelLoadError(
                f"model folder {str(folder.path)!r}: {folder.weights.path} (weights) does not "
                "match the SHA-256 in its manifest; copy the whole folder again"
            )
        self._weights_sha256 = loaded.weights_sha256
        self._tokenizer = loaded.tokenizer
        self.preprocess = loaded.preprocess
        self.context_length = loaded.context_length
        image_tower, text_tower = tower_modules(loaded.model)
        with _no_grad():
            probe = self._tokens(["a"])
            self._dim = int(text_tower(_tensor(probe, self.device)).shape[1])
        self._init_engine(
            load_towers=lambda: (image_tower, text_tower),
            identity={
                "weights_sha256": self._weights_sha256,
                "model": model,
                "quick_gelu": loaded.quick_gelu,
                "preprocess": PREPROCESS_VERSION,
                "pixels": self.preprocess.describe(),
                "context_length": self.context_length,
                "towers": f"open_clip-{_TOWERS_VERSION}",
            },
            openvino_device=openvino_device,
            quality_gate=quality_gate,
            calibration=calibration,
        )

    def _model_folder(self) -> ModelFolder | None:
        """The folder made by `fetch_model` that ``checkpoint`` names, if it names one."""
        if self.checkpoint is None or not self.checkpoint.is_dir():
            return None
        folder = read_model_folder(self.checkpoint)
        if (folder.model, folder.pretrained) != (self.model_name, self.pretrained):
            raise ModelLoadError(
                f"model folder {str(folder.path)!r} holds open_clip model {folder.model!r} with "
                f"pretrained {folder.pretrained!r}, not {self.model_name!r} with "
                f"{self.pretrained!r}: load it as that model and tag"
            )
        if self.tokenizer is not None:
            raise ModelLoadError(
                f"model folder {str(folder.path)!r} brings its own tokenizer: give the folder "
                "alone, with no tokenizer folder besides"
            )
        return folder

    # -- identity ----------------------------------------------------------------

    @property
    def fingerprint(self) -> str:
        # As for CLIPEmbedder: engine, precision and draft decoding are not part of it.
        weights = self._weights_sha256[:16]
        return (
            f"open_clip:{self.model_name}:{self.pretrained or 'none'}:sha256={weights}"
            f":preprocess=v{PREPROCESS_VERSION}"
        )

    def config(self) -> dict[str, Any]:
        """Rebuilds this embedder on another machine: never the device, which is that machine's."""
        config: dict[str, Any] = {"model": self.model_name, "pretrained": self.pretrained}
        config.update(self._runtime_config())
        for name in ("checkpoint", "tokenizer", "download_root"):
            value = getattr(self, name)
            if value is not None:
                config[name] = str(value)
        return config

    def _repr_model(self) -> str:
        return f"{self.model_name!r}, pretrained={self.pretrained!r}"

    def _weights_source(self) -> str:
        return str(self.checkpoint) if self.checkpoint is not None else "download cache"

    # -- texts -------------------------------------------------------------------

    def _tokens(self, texts: Sequence[str]) -> np.ndarray:
        # open_clip's tokenizers pad to the context and truncate what is longer (keeping
        # the end token), which is what the text towers expect.
        tokens = self._tokenizer(list(texts), context_length=self.context_length)
        return np.ascontiguousarray(tokens.numpy(), dtype=np.int64)


def _absolute(path: str | os.PathLike[str] | None) -> Path | None:
    return Path(path).expanduser().resolve() if path is not None else None


def _no_grad() -> Any:
    import torch

    return torch.inference_mode()


def _tensor(array: np.ndarray, device: Any) -> Any:
    import torch

    return torch.from_numpy(array).to(device)
