"""The default embedder: openai/CLIP models, with a fast streaming ingest.

Models load through the real openai/CLIP code (the ``clip-anytorch`` package), from a
named model in the usual download cache or from a local checkpoint file
(:mod:`~multimodal_rag.embedders.clip_loading` finds, loads and checks the weights).
Image ingest is a pipeline: worker threads decode and preprocess the next images
(draft-decoding large JPEGs) while the encoder runs on the current batch. The image and
text towers run on an engine (torch, or OpenVINO with calibrated int8) in a precision
that :mod:`~multimodal_rag.embedders.engines` measures and holds to a quality gate.
"""

from __future__ import annotations

import logging
import os
import random
import threading
from collections.abc import Iterable, Iterator, Sequence
from itertools import islice
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
from multimodal_rag.embedders.clip_names import architecture_label
from multimodal_rag.embedders.engine_cache import EngineCache
from multimodal_rag.embedders.engines import HELD_OUT, BuiltEngine, EngineBuilder, Runner, Tower
from multimodal_rag.embedders.pipeline import ordered_map
from multimodal_rag.embedders.precision import QualityGate, check_engine_and_precision
from multimodal_rag.embedders.preprocess import PREPROCESS_VERSION, load_clip_pixels
from multimodal_rag.errors import ImageError, InvalidInputError
from multimodal_rag.images import DEFAULT_MAX_PIXELS
from multimodal_rag.protocols import EmbeddedBatch, Embedder
from multimodal_rag.types import ImageInput
from multimodal_rag.validation import check_int

if TYPE_CHECKING:
    from torch import device as TorchDevice

__all__ = ["CLIPEmbedder"]

#: The model of a CLIPEmbedder given neither a name nor a checkpoint.
_DEFAULT_MODEL = "ViT-B/32"

logger = logging.getLogger(__name__)

#: Bumped whenever the tower modules change what they compute or take: part of the key
#: of every converted model in the engine cache.
_TOWERS_VERSION = 1

#: Image files a calibration folder is sampled from.
_CALIBRATION_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff", ".gif")


class CLIPEmbedder(Embedder):
    """Embeds images and texts with an openai/CLIP model.

    Args:
        model: A name from ``clip.available_models()`` (``"ViT-B/32"``, ``"ViT-L/14"``,
            ...). Without ``checkpoint`` it is downloaded to ``download_root`` on
            first use; with one, it only labels the model in the fingerprint. By default
            ``"ViT-B/32"``, or for a ``checkpoint`` its architecture read from the weights
            (``"ViT-B/32"`` only when the shapes are that model's, else e.g. ``"ViT-64-2/32"``).
        checkpoint: A local weights file: a ``state_dict`` saved with ``torch.save``
            (read with ``weights_only=True``), or a TorchScript archive, which loads only
            with ``allow_torchscript`` or when it is one of openai's published files
            (checked by SHA-256). Loading it never touches the network.
        device: ``"cpu"``, ``"cuda"``, ``"cuda:1"``...; by default CUDA when present.
            With ``engine="openvino"``: ``"cpu"`` or ``"gpu"``, by default an Intel GPU
            when OpenVINO sees one.
        engine: ``"torch"`` (default) or ``"openvino"`` (``pip install
            'multimodal-rag[openvino]'``): the towers converted once, int8 available,
            cached under ``cache_dir``.
        precision: ``"auto"`` (on first use on a machine, time the precisions that pass
            the quality gate and keep the fastest; the decision is cached per CPU model),
            ``"fp32"``, ``"bf16"``, ``"fp16"`` (GPU only) or ``"int8"`` (OpenVINO only).
            A reduced precision that fails the gate falls back to the next one
            (int8, bf16, fp32) with a warning; :attr:`runtime` says what ran.
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
        calibration: A folder of images like those to be indexed, sampled for int8
            calibration. Without it, the first images ingested are the sample (fixed
            synthetic images when the first use is a single query).
        calibration_size: Images int8 calibration uses (default 300); up to 32 more are
            held out for the quality gate.
        cache_dir: Where converted and quantized models, gate results and ``auto``
            decisions are kept (default ``$MULTIMODAL_RAG_CACHE_DIR`` or
            ``~/.cache/multimodal_rag``).
        quality_gate: The cosine bounds against fp32 a reduced precision must keep on
            held-out inputs (default min 0.99, mean 0.998).

    Raises:
        ModelLoadError: The weights cannot be found, downloaded or read (the message
            says where it looked and how to pass a local ``checkpoint``); the checkpoint
            is a TorchScript archive that was not allowed; or a manifest names a relative
            path or sets ``allow_torchscript``.
        MissingDependencyError: ``engine="openvino"`` without ``openvino`` and ``nncf``.
        InvalidInputError: An unknown engine or precision, a precision the engine or
            device cannot run, or a device that is not available.
    """

    kind: ClassVar[str] = "clip"

    def __init__(
        self,
        model: str | None = None,
        *,
        checkpoint: str | os.PathLike[str] | None = None,
        device: str | None = None,
        engine: str = "torch",
        precision: str = "auto",
        batch_size: int = 32,
        num_workers: int | None = None,
        download_root: str | os.PathLike[str] | None = None,
        draft: bool = True,
        max_pixels: int = DEFAULT_MAX_PIXELS,
        allow_torchscript: bool = False,
        calibration: str | os.PathLike[str] | None = None,
        calibration_size: int = 300,
        cache_dir: str | os.PathLike[str] | None = None,
        quality_gate: QualityGate | None = None,
    ) -> None:
        if manifest_endpoints() is not None:
            check_manifest_config(checkpoint, download_root, allow_torchscript)
        check_engine_and_precision(engine, precision, on_gpu=None)
        batch_size = check_int("batch_size", batch_size)
        calibration_size = check_int("calibration_size", calibration_size)
        torch = import_torch()
        openvino_device = "CPU"
        if engine == "openvino":
            from multimodal_rag.embedders.openvino_engine import import_nncf
            from multimodal_rag.embedders.openvino_engine import openvino_device as ov_device

            import_nncf()  # a missing extra is reported before the model loads
            openvino_device = ov_device(device)
            device = "cpu"  # torch only converts and checks: on the CPU
        self.checkpoint = (
            Path(checkpoint).expanduser().resolve() if checkpoint is not None else None
        )
        self.download_root = (
            Path(download_root).expanduser().resolve() if download_root is not None else None
        )
        self.device = _choose_device(torch, device)
        on_gpu = openvino_device == "GPU" if engine == "openvino" else self.device.type == "cuda"
        check_engine_and_precision(engine, precision, on_gpu=on_gpu)
        self.engine = engine
        self.batch_size = batch_size
        self.num_workers = _default_workers() if num_workers is None else max(0, int(num_workers))
        self.draft = bool(draft)
        self.max_pixels = max_pixels
        self.calibration_size = calibration_size
        self._precision_setting = precision
        self._model, self._weights_sha256 = load_model(
            model if model is not None else _DEFAULT_MODEL,
            self.checkpoint,
            self.download_root,
            self.device,
            allow_torchscript=allow_torchscript,
        )
        self._model.eval()
        # A checkpoint given without a name is labelled by its shapes, not as the default model.
        self.model_name = (
            model
            if model is not None
            else (
                architecture_label(self._model) if self.checkpoint is not None else _DEFAULT_MODEL
            )
        )
        self.resolution: int = int(self._model.visual.input_resolution)
        self.context_length: int = int(self._model.context_length)
        self._dim = int(self._model.text_projection.shape[1])
        self._engine: BuiltEngine | None = None
        self._engine_lock = threading.Lock()
        image_tower, text_tower = _tower_modules(self._model)
        # From here the towers hold the model: the torch engine runs them, and the OpenVINO
        # engine lets them go once converted, so no copy of the weights outlives its use.
        self._model = None
        self._builder: EngineBuilder | None = EngineBuilder(
            [
                Tower(
                    name="image",
                    module=image_tower,
                    example=_probe_pixels(self.resolution, 8),
                    probe=_probe_pixels(self.resolution, 16),
                ),
                Tower(
                    name="text",
                    module=text_tower,
                    example=self._tokens(_CAPTIONS[:8]),
                    probe=self._tokens(_CAPTIONS),
                ),
            ],
            engine=engine,
            precision=precision,
            device=self.device,
            openvino_device=openvino_device,
            identity={
                "weights_sha256": self._weights_sha256,
                "preprocess": PREPROCESS_VERSION,
                "resolution": self.resolution,
                "towers": _TOWERS_VERSION,
            },
            cache=EngineCache(
                cache_dir if cache_dir is not None else os.environ.get("MULTIMODAL_RAG_CACHE_DIR")
            ),
            gate=quality_gate or QualityGate(),
            calibration_size=calibration_size,
        )
        if "image" not in self._builder.to_calibrate():
            self._build_engine(None)
        elif calibration is not None:
            self._build_engine(self._calibration_folder_sample(Path(calibration)))
        # Otherwise the first images ingested calibrate int8 (see iter_embed_images).

    # -- identity ----------------------------------------------------------------

    @property
    def dim(self) -> int:
        return self._dim

    @property
    def fingerprint(self) -> str:
        # Engine, precision and draft decoding move embeddings by far less than any
        # difference between models (the quality gate holds them to it), so vectors
        # made any of these ways stay compatible: a knowledge base built in fp32 is
        # searched in int8 and the other way round.
        weights = self._weights_sha256[:16]
        return f"clip:{self.model_name}:sha256={weights}:preprocess=v{PREPROCESS_VERSION}"

    @property
    def precision(self) -> str:
        """The precision the towers run in (``"pending"`` until int8 is calibrated)."""
        return self._engine.report.precision if self._engine is not None else "pending"

    @property
    def runtime(self) -> dict[str, Any]:
        """What runs: engine, precision asked for and used, fallbacks and their reasons,
        the quality gate's cosines and, for ``"auto"``, the measured speeds."""
        if self._engine is None:
            return {
                "engine": self.engine,
                "precision": "pending",
                "requested": self._precision_setting,
            }
        return self._engine.report.to_dict()

    def config(self) -> dict[str, Any]:
        """Rebuilds this embedder on another machine: never the device, which is that machine's."""
        config: dict[str, Any] = {"model": self.model_name, "precision": self._precision_setting}
        if self.engine != "torch":
            config["engine"] = self.engine
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
            f"CLIPEmbedder({self.model_name!r}, weights={source}, engine={self.engine}, "
            f"device={self._runtime_device()}, precision={self.precision}, dim={self.dim})"
        )

    def _runtime_device(self) -> str:
        return str(self._engine.report.device) if self._engine is not None else str(self.device)

    # -- the engine --------------------------------------------------------------

    def _build_engine(self, images: np.ndarray | None) -> BuiltEngine:
        """Build the towers (calibrating int8 on ``images`` when it quantizes), then let the
        torch model go when the engine no longer needs it."""
        with self._engine_lock:  # two threads' first queries build it once
            if self._engine is not None:
                return self._engine
            return self._build_engine_once(images)

    def _build_engine_once(self, images: np.ndarray | None) -> BuiltEngine:
        assert self._builder is not None
        if images is None and "image" in self._builder.to_calibrate():
            logger.warning(
                "int8 calibration has no images to sample: using fixed synthetic images. "
                "Pass CLIPEmbedder(calibration='folder/of/typical/images') or ingest before "
                "the first query for a calibration that fits your collection"
            )
        self._engine = self._builder.build({"image": images})
        self._builder = None
        return self._engine

    def _runner(self, tower: str) -> Runner:
        engine = self._engine if self._engine is not None else self._build_engine(None)
        return engine.runners[tower]

    def _calibration_folder_sample(self, folder: Path) -> np.ndarray | None:
        if not folder.is_dir():
            raise InvalidInputError(f"calibration folder {str(folder)!r} is not a directory")
        files = sorted(
            p
            for p in folder.rglob("*")
            if p.suffix.lower() in _CALIBRATION_SUFFIXES and p.is_file()
        )
        wanted = self.calibration_size + HELD_OUT
        # A fixed seed: the same folder always gives the same sample, so the same int8 model.
        chosen = random.Random(0).sample(files, min(wanted, len(files)))
        pixels = [
            p
            for p in ordered_map(self._try_pixels, chosen, workers=self.num_workers, window=64)
            if isinstance(p, np.ndarray)
        ]
        return np.stack(pixels) if pixels else None

    def _calibrating(
        self, prepared: Iterator[np.ndarray | ImageError]
    ) -> Iterator[np.ndarray | ImageError]:
        """Pass ``prepared`` through, first building the engine on the head of the stream.

        Only the first ingest on a machine without a cached int8 model does this; it holds
        the calibration sample (300 images by default, about 180 MB at 224 pixels) once.
        """
        head = list(islice(prepared, self.calibration_size + HELD_OUT))
        pixels = [item for item in head if isinstance(item, np.ndarray)]
        self._build_engine(np.stack(pixels) if pixels else None)
        yield from head
        yield from prepared

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
        stream's length (plus, once, the int8 calibration sample; see ``calibration``).
        Unreadable images are reported in ``failures``.
        """
        size = self.batch_size if batch_size is None else check_int("batch_size", batch_size)
        prepared: Iterator[np.ndarray | ImageError] = ordered_map(
            self._try_pixels, images, workers=self.num_workers, window=2 * size
        )
        if self._engine is None:
            prepared = self._calibrating(prepared)
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
        return _normalised(self._runner("image")(pixels))

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
            tokens = self._tokens(list(texts[start : start + self.batch_size]))
            parts.append(_normalised(self._runner("text")(tokens)))
        return np.concatenate(parts)

    def _tokens(self, texts: Sequence[str]) -> np.ndarray:
        clip = import_clip()
        tokens = clip.tokenize(list(texts), context_length=self.context_length, truncate=True)
        array = tokens.numpy()
        # Only up to the longest text's end token (see the text tower).
        length = int(array.argmax(axis=1).max()) + 1 if len(array) else 1
        return np.ascontiguousarray(array[:, :length], dtype=np.int64)


# -- towers ------------------------------------------------------------------------


def _tower_modules(model: Any) -> tuple[Any, Any]:
    """CLIP's image and text towers as modules with one input, as engines convert them."""
    torch = import_torch()
    module: Any = torch.nn.Module

    class ImageTower(module):  # type: ignore[misc]
        def __init__(self, clip_model: Any) -> None:
            super().__init__()
            self.clip = clip_model

        def forward(self, pixels: Any) -> Any:
            return self.clip.encode_image(pixels)

    class TextTower(module):  # type: ignore[misc]
        def __init__(self, clip_model: Any) -> None:
            super().__init__()
            self.clip = clip_model

        def forward(self, tokens: Any) -> Any:
            # clip's encode_text, for token rows cut after the longest text's end token:
            # the causal mask keeps every position from seeing later ones, so the padding
            # after the end token never changes its features, and a short query costs a
            # few positions instead of 77.
            clip = self.clip
            x = clip.token_embedding(tokens).type(clip.dtype)
            x = x + clip.positional_embedding[: tokens.shape[1]].type(clip.dtype)
            x = clip.transformer(x.permute(1, 0, 2)).permute(1, 0, 2)
            x = clip.ln_final(x).type(clip.dtype)
            ends = tokens.argmax(dim=-1)  # the end token has the highest id
            return x[torch.arange(x.shape[0]), ends] @ clip.text_projection

    # The model is passed in, not closed over: classes sit in reference cycles, and a
    # closure would keep the torch weights alive until the cyclic collector runs.
    return ImageTower(model).eval(), TextTower(model).eval()


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


def _default_workers() -> int:
    return max(1, min(8, (os.cpu_count() or 1) - 1))


def _normalised(features: np.ndarray) -> np.ndarray:
    features = np.asarray(features, dtype=np.float32)
    norms = np.maximum(np.linalg.norm(features, axis=1, keepdims=True), np.float32(1e-12))
    return np.ascontiguousarray(features / norms, dtype=np.float32)


# -- fixed inputs: the gate's stand-ins and the text tower's calibration --------------

#: Captions of the kinds people search photo collections with: the text tower's
#: calibration and held-out sample (a query's wording varies far less than photos do).
_CAPTIONS = [
    f"{subject} {setting}"
    for subject, setting in zip(
        [
            "a photo of a dog",
            "a red postage stamp",
            "an aerial view of a city",
            "a bowl of soup",
            "two children",
            "a vintage car",
            "a mountain lake",
            "a portrait of an old man",
            "a bird on a branch",
            "a crowded market",
            "a plate of sushi",
            "a sailing boat",
            "a black and white cat",
            "a stamp with a queen's portrait",
            "a bicycle",
            "a snowy forest",
            "a wedding cake",
            "a train station",
            "a field of sunflowers",
            "a lighthouse",
            "a close-up of a flower",
            "a handwritten letter",
            "a football match",
            "a desert road",
            "a kitchen table",
            "a group of friends",
            "fireworks",
            "a tiger",
            "an old map",
            "a skyscraper",
            "a horse",
            "a stamp with a ship",
        ],
        [
            "playing in the snow",
            "on an envelope",
            "at night",
            "on a wooden table",
            "at the beach",
            "parked on a street",
            "at sunrise",
            "smiling",
            "in spring",
            "in the rain",
            "from above",
            "on a calm sea",
            "sleeping on a sofa",
            "from 1953",
            "leaning on a wall",
            "in winter",
            "with candles",
            "full of people",
            "under a blue sky",
            "in a storm",
            "with dew drops",
            "in old ink",
            "in a stadium",
            "stretching to the horizon",
            "with breakfast",
            "laughing together",
            "over a river",
            "in the jungle",
            "with faded colours",
            "in fog",
            "in a meadow",
            "",
        ],
    )
]


def _probe_pixels(resolution: int, count: int) -> np.ndarray:
    """Fixed, varied synthetic images (gradients, stripes, blobs, noise), already normalised."""
    from multimodal_rag.embedders.preprocess import CLIP_MEAN, CLIP_STD

    rng = np.random.default_rng(0)
    shape = (3, resolution, resolution)
    ramp = np.linspace(0.0, 1.0, resolution, dtype=np.float32)
    grid = np.add.outer(ramp, ramp)
    images = []
    for i in range(count):
        kind = i % 4
        if kind == 0:
            tint = rng.random(3)[:, None, None]
            image = np.clip(tint * grid / 2 + (1 - tint) * ramp[None, :, None], 0, 1)
        elif kind == 1:
            period = rng.uniform(2.0, 12.0)
            image = (
                np.broadcast_to(0.5 + 0.5 * np.sin(np.arange(resolution) / period), shape)
                * rng.random(3)[:, None, None]
            )
        elif kind == 2:
            image = rng.random(shape)
        else:
            image = np.clip(rng.normal(rng.random(), 0.15, shape), 0.0, 1.0)
        images.append(np.broadcast_to(image, shape))
    pixels = np.stack(images).astype(np.float32)
    return np.ascontiguousarray(
        (pixels - CLIP_MEAN[:, None, None]) / CLIP_STD[:, None, None], dtype=np.float32
    )
