"""The default embedder: openai/CLIP models, with a fast streaming ingest.

Models load through the real openai/CLIP code (the ``clip-anytorch`` package), from a
named model in the usual download cache or from a local checkpoint file
(:mod:`~multimodal_rag.embedders.clip_loading` finds, loads and checks the weights).
Image ingest is a pipeline: worker threads decode and preprocess the next images
(draft-decoding large JPEGs) while the encoder runs on the current batch, in bf16 on
CPUs that support it when that keeps the embeddings within cosine 0.99 of fp32.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar

import numpy as np

from multimodal_rag._remote import manifest_endpoints
from multimodal_rag.embedders.clip_loading import (
    check_manifest_config,
    import_clip,
    import_torch,
    load_model,
)
from multimodal_rag.embedders.pipeline import ordered_map
from multimodal_rag.embedders.preprocess import PREPROCESS_VERSION, load_clip_pixels
from multimodal_rag.errors import ImageError, InvalidInputError
from multimodal_rag.images import DEFAULT_MAX_PIXELS
from multimodal_rag.protocols import EmbeddedBatch, Embedder
from multimodal_rag.types import ImageInput
from multimodal_rag.validation import check_int

if TYPE_CHECKING:
    import torch
    from torch import device as TorchDevice

__all__ = ["CLIPEmbedder"]

PRECISIONS = ("auto", "fp32", "bf16", "fp16")

#: Embeddings in reduced precision must stay at least this close (cosine) to fp32.
MIN_REDUCED_PRECISION_COSINE = 0.99


class CLIPEmbedder(Embedder):
    """Embeds images and texts with an openai/CLIP model.

    Args:
        model: A name from ``clip.available_models()`` (``"ViT-B/32"``, ``"ViT-L/14"``,
            ...). Without ``checkpoint`` it is downloaded to ``download_root`` on
            first use; with one, it only labels the model in the fingerprint.
        checkpoint: A local weights file: a ``state_dict`` saved with ``torch.save``
            (read with ``weights_only=True``), or a TorchScript archive, which loads only
            with ``allow_torchscript`` or when it is one of openai's published files
            (checked by SHA-256). Loading it never touches the network.
        device: ``"cpu"``, ``"cuda"``, ``"cuda:1"``...; by default CUDA when present.
        precision: ``"auto"`` (fp16 on CUDA; bf16 on CPUs with native bf16 when it
            keeps embeddings within cosine 0.99 of fp32; fp32 otherwise), ``"fp32"``,
            ``"bf16"`` or ``"fp16"`` (CUDA only).
        batch_size: Images per encoder call (the facade's ``batch_size`` overrides it).
        num_workers: Threads that decode and preprocess images while the model runs;
            by default one fewer than the CPU cores (at least 1, at most 8).
        download_root: Where named models are cached (default ``~/.cache/clip``).
        draft: Let the JPEG decoder shrink large photos by up to 8x before the resize
            (several times faster; the embedding moves very slightly).
        max_pixels: Refuse images with more pixels than this.
        allow_torchscript: Load a ``checkpoint`` that is a TorchScript archive. Such an
            archive holds code, which runs as it loads: allow it only for a file you
            trust. A knowledge base's manifest can never set this; to open one with
            such weights, build the embedder yourself and pass it to
            ``MultimodalRAG.open(path, embedder=...)``.

    Raises:
        ModelLoadError: The weights cannot be found, downloaded or read (the message
            says where it looked and how to pass a local ``checkpoint``); the checkpoint
            is a TorchScript archive that was not allowed; or a manifest names a relative
            path or sets ``allow_torchscript``.
        InvalidInputError: An unknown precision, or a device that is not available.
    """

    kind: ClassVar[str] = "clip"

    def __init__(
        self,
        model: str = "ViT-B/32",
        *,
        checkpoint: str | os.PathLike[str] | None = None,
        device: str | None = None,
        precision: str = "auto",
        batch_size: int = 32,
        num_workers: int | None = None,
        download_root: str | os.PathLike[str] | None = None,
        draft: bool = True,
        max_pixels: int = DEFAULT_MAX_PIXELS,
        allow_torchscript: bool = False,
    ) -> None:
        if manifest_endpoints() is not None:
            check_manifest_config(checkpoint, download_root, allow_torchscript)
        if precision not in PRECISIONS:
            raise InvalidInputError(
                f"precision must be one of {', '.join(PRECISIONS)}; got {precision!r}"
            )
        batch_size = check_int("batch_size", batch_size)
        torch = import_torch()
        self.model_name = model
        self.checkpoint = (
            Path(checkpoint).expanduser().resolve() if checkpoint is not None else None
        )
        self.download_root = (
            Path(download_root).expanduser().resolve() if download_root is not None else None
        )
        self.device = _choose_device(torch, device)
        self.batch_size = batch_size
        self.num_workers = _default_workers() if num_workers is None else max(0, int(num_workers))
        self.draft = bool(draft)
        self.max_pixels = max_pixels
        self._precision_setting = precision
        self._model, self._weights_sha256 = load_model(
            model,
            self.checkpoint,
            self.download_root,
            self.device,
            allow_torchscript=allow_torchscript,
        )
        self._model.eval()
        self.resolution: int = int(self._model.visual.input_resolution)
        self.context_length: int = int(self._model.context_length)
        self._dim = int(self._model.text_projection.shape[1])
        self.precision = self._apply_precision(precision)

    # -- identity ----------------------------------------------------------------

    @property
    def dim(self) -> int:
        return self._dim

    @property
    def fingerprint(self) -> str:
        # Precision and draft decoding move embeddings by far less than any
        # difference between models, so vectors made either way stay compatible.
        weights = self._weights_sha256[:16]
        return f"clip:{self.model_name}:sha256={weights}:preprocess=v{PREPROCESS_VERSION}"

    def config(self) -> dict[str, Any]:
        """Rebuilds this embedder on another machine: never the device, which is that machine's."""
        config: dict[str, Any] = {"model": self.model_name, "precision": self._precision_setting}
        if self.checkpoint is not None:
            config["checkpoint"] = str(self.checkpoint)
        if self.download_root is not None:
            config["download_root"] = str(self.download_root)
        if not self.draft:
            config["draft"] = False
        return config

    def __repr__(self) -> str:
        source = str(self.checkpoint) if self.checkpoint is not None else "download cache"
        return (
            f"CLIPEmbedder({self.model_name!r}, weights={source}, device={self.device}, "
            f"precision={self.precision}, dim={self.dim})"
        )

    # -- images ------------------------------------------------------------------

    def embed_images(self, images: Sequence[ImageInput]) -> np.ndarray:
        if len(images) == 1:
            # One query image: decoding in the calling thread is faster than a pool.
            try:
                pixels = self._pixels(images[0])
            except ImageError as exc:
                exc.index = 0
                raise
            return self._encode_pixels(pixels[None])
        parts = [np.zeros((0, self.dim), dtype=np.float32)]
        for batch in self.iter_embed_images(images, batch_size=self.batch_size):
            if batch.failures:
                index, error = batch.failures[0]
                error.index = index
                raise error
            parts.append(batch.vectors)
        return np.concatenate(parts)

    def iter_embed_images(
        self, images: Iterable[ImageInput], *, batch_size: int | None = None
    ) -> Iterator[EmbeddedBatch]:
        """Embed a stream of images with decoding in parallel to the encoder.

        Memory holds at most about two batches of preprocessed images, whatever the
        stream's length. Unreadable images are reported in ``failures``.
        """
        size = self.batch_size if batch_size is None else check_int("batch_size", batch_size)
        prepared = ordered_map(self._try_pixels, images, workers=self.num_workers, window=2 * size)
        indices: list[int] = []
        arrays: list[np.ndarray] = []
        failures: list[tuple[int, ImageError]] = []
        for position, result in enumerate(prepared):
            if isinstance(result, ImageError):
                failures.append((position, result))
            else:
                indices.append(position)
                arrays.append(result)
            if len(indices) + len(failures) == size:
                yield self._batch(indices, arrays, failures)
                indices, arrays, failures = [], [], []
        if indices or failures:
            yield self._batch(indices, arrays, failures)

    def _batch(
        self, indices: list[int], arrays: list[np.ndarray], failures: list[tuple[int, ImageError]]
    ) -> EmbeddedBatch:
        if arrays:
            vectors = self._encode_pixels(np.stack(arrays))
        else:
            vectors = np.zeros((0, self.dim), dtype=np.float32)
        return EmbeddedBatch(indices, vectors, failures)

    def _pixels(self, image: ImageInput) -> np.ndarray:
        return load_clip_pixels(
            image, self.resolution, draft=self.draft, max_pixels=self.max_pixels
        )

    def _try_pixels(self, image: ImageInput) -> np.ndarray | ImageError:
        try:
            return self._pixels(image)
        except ImageError as exc:
            return exc

    def _encode_pixels(self, pixels: np.ndarray) -> np.ndarray:
        torch = import_torch()
        with torch.inference_mode(), self._autocast():
            batch = torch.from_numpy(pixels).to(self.device, non_blocking=True)
            features = self._model.encode_image(batch)
        return _normalised(features)

    # -- texts -------------------------------------------------------------------

    def embed_texts(self, texts: Sequence[str]) -> np.ndarray:
        """Embed texts; a text longer than CLIP's 77-token context is truncated, not refused."""
        if isinstance(texts, str):
            raise InvalidInputError("embed_texts takes a sequence of strings, not one string")
        for i, text in enumerate(texts):
            if not isinstance(text, str):
                raise InvalidInputError(f"text {i} is a {type(text).__name__}, not a string")
        parts = [np.zeros((0, self.dim), dtype=np.float32)]
        for start in range(0, len(texts), self.batch_size):
            parts.append(self._encode_texts(list(texts[start : start + self.batch_size])))
        return np.concatenate(parts)

    def _encode_texts(self, texts: list[str]) -> np.ndarray:
        clip = import_clip()
        torch = import_torch()
        tokens = clip.tokenize(texts, context_length=self.context_length, truncate=True)
        with torch.inference_mode(), self._autocast():
            features = self._model.encode_text(tokens.to(self.device))
        return _normalised(features)

    # -- precision ---------------------------------------------------------------

    def _autocast(self) -> Any:
        torch = import_torch()
        dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(self.precision)
        if dtype is None:
            return torch.autocast(self.device.type, enabled=False)
        return torch.autocast(self.device.type, dtype=dtype)

    def _apply_precision(self, requested: str) -> str:
        """Choose the precision, and store the matrix weights in it to skip per-call casts."""
        torch = import_torch()
        on_cuda = self.device.type == "cuda"
        if requested == "fp16" and not on_cuda:
            raise InvalidInputError(
                "precision 'fp16' needs a CUDA device; use 'bf16' or 'fp32' on a CPU"
            )
        if requested == "auto":
            if on_cuda:
                requested = "fp16"
            elif _cpu_has_native_bf16(torch) and self._bf16_is_faithful():
                requested = "bf16"
            else:
                requested = "fp32"
        if requested != "fp32":
            dtype = torch.bfloat16 if requested == "bf16" else torch.float16
            _convert_matrix_weights(self._model, dtype)
        return requested

    def _bf16_is_faithful(self) -> bool:
        """Whether bf16 keeps this model's embeddings within the cosine bound of fp32.

        Checked once, on fixed synthetic images and sentences, with autocast over the
        fp32 weights (the same rounding the stored bf16 weights get afterwards).
        """
        torch = import_torch()
        clip = import_clip()
        pixels = _probe_pixels(self.resolution)
        tokens = clip.tokenize(_PROBE_TEXTS, context_length=self.context_length, truncate=True)
        with torch.inference_mode():
            exact = [
                self._model.encode_image(torch.from_numpy(pixels)),
                self._model.encode_text(tokens),
            ]
            with torch.autocast("cpu", dtype=torch.bfloat16):
                reduced = [
                    self._model.encode_image(torch.from_numpy(pixels)),
                    self._model.encode_text(tokens),
                ]
            cosines: list[float] = [
                torch.nn.functional.cosine_similarity(a.float(), b.float(), dim=-1).min().item()
                for a, b in zip(exact, reduced, strict=True)
            ]
        return min(cosines) >= MIN_REDUCED_PRECISION_COSINE


# -- precision ---------------------------------------------------------------------


def _convert_matrix_weights(model: Any, dtype: torch.dtype) -> None:
    """Store the weights of matrix products in ``dtype``; keep norms and embeddings in fp32.

    The same split as ``clip.model.convert_weights`` (which only knows fp16).
    """
    torch = import_torch()
    nn = torch.nn
    for module in model.modules():
        if isinstance(module, (nn.Conv1d, nn.Conv2d, nn.Linear)):
            module.weight.data = module.weight.data.to(dtype)
            if module.bias is not None:
                module.bias.data = module.bias.data.to(dtype)
        if isinstance(module, nn.MultiheadAttention):
            for attr in (
                "in_proj_weight",
                "q_proj_weight",
                "k_proj_weight",
                "v_proj_weight",
                "in_proj_bias",
            ):
                tensor = getattr(module, attr)
                if tensor is not None:
                    tensor.data = tensor.data.to(dtype)
        for attr in ("text_projection", "proj"):
            tensor = getattr(module, attr, None)
            if isinstance(tensor, torch.Tensor):
                tensor.data = tensor.data.to(dtype)


# -- environment -------------------------------------------------------------------


def _choose_device(torch: Any, device: str | None) -> TorchDevice:
    if device is None:
        default: TorchDevice = torch.device("cuda" if torch.cuda.is_available() else "cpu")
        return default
    try:
        chosen: TorchDevice = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise InvalidInputError(f"unknown device {device!r}: {exc}") from exc
    if chosen.type == "cuda" and not torch.cuda.is_available():
        raise InvalidInputError(f"device {device!r} was asked for but CUDA is not available here")
    if chosen.type not in ("cpu", "cuda"):
        raise InvalidInputError(f"device {device!r} is not supported; use 'cpu' or 'cuda'")
    return chosen


def _cpu_has_native_bf16(torch: Any) -> bool:
    """AVX-512 BF16 or AMX: bf16 matrix products run in hardware, not emulated."""
    checks = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")
    return any(getattr(torch.cpu, check, lambda: False)() for check in checks)


def _default_workers() -> int:
    return max(1, min(8, (os.cpu_count() or 1) - 1))


def _normalised(features: torch.Tensor) -> np.ndarray:
    features = features.float()
    features = features / features.norm(dim=-1, keepdim=True).clamp_min(1e-12)
    return features.cpu().numpy()


_PROBE_TEXTS = [
    "a photo of a dog playing in the snow",
    "a red postage stamp with a portrait",
    "an aerial view of a city at night",
    "",
]


def _probe_pixels(resolution: int) -> np.ndarray:
    """Fixed, varied synthetic images (gradients, stripes, noise), already normalised."""
    from multimodal_rag.embedders.preprocess import CLIP_MEAN, CLIP_STD

    rng = np.random.default_rng(0)
    shape = (3, resolution, resolution)
    ramp = np.linspace(0.0, 1.0, resolution, dtype=np.float32)
    gradient = np.stack(
        [
            np.add.outer(ramp, ramp) / 2,
            np.add.outer(ramp, -ramp) / 2 + 0.5,
            ramp[None, :] * ramp[:, None],
        ]
    )
    stripes = np.broadcast_to(
        0.5 + 0.5 * np.sin(np.arange(resolution, dtype=np.float32) / 3.0), shape
    )
    images = [gradient, stripes, rng.random(shape), np.clip(rng.normal(0.5, 0.1, shape), 0.0, 1.0)]
    pixels = np.stack(images).astype(np.float32)
    return (pixels - CLIP_MEAN[:, None, None]) / CLIP_STD[:, None, None]
