"""What every CLIP-family embedder shares: the fast path from images and texts to vectors.

A `TowerEmbedder` holds a model as two towers (image and text ``torch`` modules, or
their OpenVINO conversions) and runs them on an engine in a measured precision
(`EngineBuilder`). Image ingest is a pipeline:
worker threads decode and preprocess the next images (draft-decoding large JPEGs,
`preprocess`) while the encoder runs on the current batch;
int8 calibrates on the first images ingested or on a folder's sample. A subclass loads its
model and provides the towers, the preprocessing, the tokens and its identity
(fingerprint, config); [`CLIPEmbedder`][multimodal_rag.embedders.clip.CLIPEmbedder] and
`OpenCLIPEmbedder` are the two built in.
"""

from __future__ import annotations

import logging
import os
import random
import threading
from abc import abstractmethod
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from itertools import islice
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from multimodal_rag._extras import require
from multimodal_rag._validation import check_int
from multimodal_rag.embedders.engine_cache import EngineCache
from multimodal_rag.embedders.engine_choice import EngineChoice, choose_engine
from multimodal_rag.embedders.engines import HELD_OUT, BuiltEngine, EngineBuilder, Runner, Tower
from multimodal_rag.embedders.pipeline import ordered_map
from multimodal_rag.embedders.precision import QualityGate, check_engine_and_precision
from multimodal_rag.embedders.preparation import (
    FIRST_RUN_CALIBRATION,
    BackgroundPreparation,
    Reservoir,
    preparation_mode,
)
from multimodal_rag.embedders.preprocess import ImagePreprocess, load_pixels
from multimodal_rag.errors import ImageError, InvalidInputError
from multimodal_rag.protocols import EmbeddedBatch, Embedder
from multimodal_rag.types import Engine, ImageInput, Precision, Vectors

if TYPE_CHECKING:
    from torch import device as TorchDevice

__all__ = ["CAPTIONS", "TowerEmbedder", "choose_device", "normalised", "probe_pixels"]

logger = logging.getLogger(__name__)

#: Image files a calibration folder is sampled from.
_CALIBRATION_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff", ".gif")


class TowerEmbedder(Embedder):
    """The shared pipeline of embedders whose model is an image tower and a text tower.

    A subclass's ``__init__`` calls `_init_runtime` before it loads its model (so a
    bad setting is refused before any weights are read), sets `preprocess`,
    `model_name` and the dimension, then calls `_init_engine` with a function
    that returns its towers' modules (called only when they are needed: see
    `engines`). It implements `_tokens`,
    `fingerprint`, `config` and `_weights_source`.

    Attributes:
        random_weights: Whether the weights file says its weights are random (one that
            `make_random_clip_checkpoint` wrote):
            everything runs, but which images are similar is meaningless. Recorded in the
            knowledge base's manifest, and shown by every command and the server's page.
        allow_fallback: Whether a precision asked for may fall back when it fails the
            quality gate (else a `PrecisionError`).
    """

    random_weights: bool = False
    model_name: str
    preprocess: ImagePreprocess
    _dim: int
    engine: Engine
    batch_size: int
    num_workers: int
    draft: bool
    max_pixels: int
    calibration_size: int

    # -- set-up, in two steps around the subclass's loading ----------------------------

    def _init_runtime(
        self,
        *,
        device: str | None,
        engine: Engine,
        precision: Precision,
        batch_size: int,
        num_workers: int | None,
        draft: bool,
        max_pixels: int,
        calibration_size: int,
        cache_dir: str | os.PathLike[str] | None,
        allow_fallback: bool = False,
    ) -> str:
        """Check and keep the runtime settings; return the OpenVINO device (``"CPU"`` when unused).

        Raises:
            InvalidInputError: An unknown engine or precision, one the device cannot run,
                or a device that is not available.
            MissingDependencyError: ``engine="openvino"`` without its extra.
        """
        check_engine_and_precision(engine, precision, on_gpu=None)
        self._engine_choice: EngineChoice = choose_engine(engine, device)
        engine = self._engine_choice.engine
        batch_size = check_int("batch_size", batch_size)
        calibration_size = check_int("calibration_size", calibration_size)
        openvino_device = "CPU"
        self._device: TorchDevice | None = None
        if engine == "openvino":
            from multimodal_rag.embedders.openvino_engine import check_engine_installed
            from multimodal_rag.embedders.openvino_engine import openvino_device as ov_device

            check_engine_installed()  # a missing extra is reported before the model loads
            openvino_device = ov_device(device)
            on_gpu = openvino_device == "GPU"
            # torch only converts and checks, on the CPU; it is not even imported when the
            # engine cache already holds everything (see `device`).
        else:
            self._device = choose_device(require("torch", user=type(self).__name__), device)
            on_gpu = self._device.type == "cuda"
        check_engine_and_precision(engine, precision, on_gpu=on_gpu)
        self._engine_cache = EngineCache(
            cache_dir if cache_dir is not None else os.environ.get("MULTIMODAL_RAG_CACHE_DIR")
        )
        self.engine = engine
        self.batch_size = batch_size
        self.num_workers = default_workers() if num_workers is None else max(0, int(num_workers))
        self.draft = bool(draft)
        self.max_pixels = max_pixels
        self.calibration_size = calibration_size
        self._precision_setting = precision
        self.allow_fallback = bool(allow_fallback)
        self._engine: BuiltEngine | None = None
        self._engine_lock = threading.Lock()
        self._builder: EngineBuilder | None = None
        self._preparation: BackgroundPreparation | None = None
        self._preparation_failed: str | None = None  # why an earlier one failed, and its log
        self._load_modules: Callable[[], dict[str, Any]] | None = None
        return openvino_device

    @property
    def device(self) -> TorchDevice:
        """The torch device the model loads on: the CPU when OpenVINO runs the towers."""
        if self._device is None:
            self._device = choose_device(require("torch", user=type(self).__name__), "cpu")
        return self._device

    def _init_engine(
        self,
        *,
        load_towers: Callable[[], tuple[Any, Any]],
        identity: Mapping[str, Any],
        openvino_device: str,
        quality_gate: QualityGate | None,
        calibration: str | os.PathLike[str] | None,
    ) -> None:
        """Hand the towers to the engine builder; build now unless int8 waits for real images.

        ``load_towers`` returns the image and the text tower's torch modules; the builder
        calls it only if it needs them. ``identity`` names the weights and preprocessing in
        every engine cache key.
        """

        def modules() -> dict[str, Any]:
            image_tower, text_tower = load_towers()
            return {"image": image_tower, "text": text_tower}

        self._identity = dict(identity)
        self._quality_gate = quality_gate or QualityGate()
        self._load_modules = modules
        self._builder = EngineBuilder(
            [
                Tower(
                    name="image",
                    example=probe_pixels(self.preprocess, 8),
                    probe=probe_pixels(self.preprocess, 16),
                ),
                Tower(
                    name="text",
                    example=self._tokens(CAPTIONS[:8]),
                    probe=self._tokens(CAPTIONS),
                ),
            ],
            load=modules,
            engine=self.engine,
            precision=self._precision_setting,
            device=self._device if self._device is not None else "cpu",
            openvino_device=openvino_device,
            identity=identity,
            cache=self._engine_cache,
            gate=self._quality_gate,
            calibration_size=self.calibration_size,
            allow_fallback=self.allow_fallback,
        )
        if "image" not in self._builder.to_calibrate():
            self._build_engine(None)
            self._load_modules = None
        elif calibration is not None:
            self._build_engine(self._calibration_folder_sample(Path(calibration)))
            self._load_modules = None
        # Otherwise the first images ingested calibrate int8 (see iter_embed_images), or,
        # on a first run with precision "auto", a ready engine runs while the OpenVINO one
        # is prepared in the background (see `preparation`).

    # -- identity ----------------------------------------------------------------

    @property
    def dim(self) -> int:
        return self._dim

    @property
    def precision(self) -> str:
        """The precision the towers run in (``"pending"`` until int8 is calibrated)."""
        return self._engine.report.precision if self._engine is not None else "pending"

    @property
    def runtime(self) -> dict[str, Any]:
        """What runs: engine, precision asked for and used, fallbacks and their reasons,
        the quality gate's cosines and, for ``"auto"``, the measured speeds."""
        report: dict[str, Any] = (
            self._engine.report.to_dict()
            if self._engine is not None
            else {
                "engine": self.engine,
                "precision": "pending",
                "requested": self._precision_setting,
            }
        )
        # What the caller asked for (a first run's ready engine is built in another precision).
        report["requested"] = self._precision_setting
        choice: dict[str, str] = {
            "requested": self._engine_choice.requested,
            "chose": self._engine_choice.engine,
            "reason": self._engine_choice.reason,
        }
        report["engine_choice"] = choice
        if self._preparation is not None:
            choice["first_run"] = (
                f"{report['engine']} runs while the {self.engine} engine is prepared in the "
                f"background (log: {self._preparation.log}); later loads use it"
            )
        elif self._preparation_failed is not None:
            choice["first_run"] = (
                f"{report['engine']} runs: preparing the {self.engine} engine in the background "
                f"failed earlier ({self._preparation_failed}), so it is not tried again there; "
                "MULTIMODAL_RAG_ENGINE_PREPARATION=now makes it in the command"
            )
        return report

    def _runtime_config(self) -> dict[str, Any]:
        """The runtime settings `config` records: what was asked for, never the device."""
        config: dict[str, Any] = {"precision": self._precision_setting}
        if self.allow_fallback:
            config["allow_fallback"] = True
        if self._engine_choice.requested != "torch":  # OpenCLIPEmbedder's default
            config["engine"] = self._engine_choice.requested
        if not self.draft:
            config["draft"] = False
        return config

    @abstractmethod
    def _weights_source(self) -> str:
        """Where the weights came from, for ``repr``."""

    def _repr_model(self) -> str:
        return repr(self.model_name)

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}({self._repr_model()}, weights={self._weights_source()}, "
            f"engine={self.engine}, device={self._runtime_device()}, "
            f"precision={self.precision}, dim={self.dim})"
        )

    def _runtime_device(self) -> str:
        if self._engine is not None:
            return str(self._engine.report.device)
        return str(self._device) if self._device is not None else "cpu"

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
                f"Pass {type(self).__name__}(calibration='folder/of/typical/images') or ingest "
                "before the first query for a calibration that fits your collection"
            )
        self._engine = self._builder.build({"image": images})
        self._builder = None
        self._load_modules = None
        return self._engine

    def _runner(self, tower: str) -> Runner:
        if self._preparation is not None and self._preparation.finished() is not None:
            self._switch_to_prepared()
        if self._engine is not None:
            return self._engine.runners[tower]
        if self._prepares_in_background():
            return self._ready_engine().runners[tower]
        return self._build_engine(None).runners[tower]

    # -- the first run: a ready engine while the OpenVINO one is prepared ---------------

    def _prepares_in_background(self) -> bool:
        """Whether this embedder's first run goes on a ready engine (see `preparation`):
        OpenVINO with ``auto`` precision, nothing of it cached yet, no folder to calibrate on."""
        return (
            self._builder is not None
            and self.engine == "openvino"
            and self._precision_setting == "auto"
            and preparation_mode() != "now"
        )

    def _ready_engine(self) -> BuiltEngine:
        """The towers on torch, built at once from the modules already loaded: the fastest
        engine a first run has.

        fp32, except where the CPU has bf16 matrix instructions (AMX or AVX-512 BF16): there
        torch's ``auto`` times bf16 against fp32 on a few batches and keeps the faster that
        passes the quality gate, a decision cached for this CPU model. The flags only say
        where bf16 may pay; whether it does is measured, and where it cannot (bf16 emulated
        in software) the first run spends nothing on timing it.
        """
        with self._engine_lock:
            if self._engine is not None:
                return self._engine
            assert self._builder is not None and self._load_modules is not None
            ready = EngineBuilder(
                list(self._builder.towers.values()),
                load=self._load_modules,
                engine="torch",
                precision="auto" if native_bf16() else "fp32",
                device=self.device,
                identity=self._identity,
                cache=self._engine_cache,
                gate=self._quality_gate,
                allow_fallback=True,
            )
            self._engine = ready.build()
            return self._engine

    def _start_preparation(self, sample: np.ndarray | None) -> None:
        if preparation_mode() == "off" or self._preparation is not None or self._preparation_failed:
            return
        from multimodal_rag._registry import kind_of

        preparation = BackgroundPreparation(self._engine_cache, self._identity)
        failure = preparation.failure()
        if failure is not None:
            self._preparation_failed = f"{failure}; log: {preparation.log}"
            logger.warning(
                "the %s engine is not prepared: an earlier preparation failed (%s)",
                self.engine,
                self._preparation_failed,
            )
            return
        if preparation.start(kind_of(self), self.config(), sample):
            self._preparation = preparation

    def _switch_to_prepared(self) -> None:
        """Run on the engine the background preparation cached, once it has finished."""
        with self._engine_lock:
            preparation, self._preparation = self._preparation, None
            if preparation is None or self._load_modules is None or self._builder is None:
                return
            builder, self._builder = self._builder, None
            if not preparation.finished() or builder.to_calibrate():
                logger.warning(
                    "the OpenVINO engine could not be prepared (see %s): %s keeps running",
                    preparation.log,
                    self._engine.report.engine if self._engine is not None else "torch",
                )
                return
            self._engine = builder.build()
            self._load_modules = None

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

    def _sampling(
        self, prepared: Iterator[np.ndarray | ImageError]
    ) -> Iterator[np.ndarray | ImageError]:
        """Pass ``prepared`` through, keeping a sample spread over it; once it is all
        through (the ingest is done), start preparing the engine on that sample."""
        reservoir = Reservoir(min(self.calibration_size, FIRST_RUN_CALIBRATION) + HELD_OUT)
        for item in prepared:
            if isinstance(item, np.ndarray):
                reservoir.offer(item)
            yield item
        self._start_preparation(reservoir.sample())

    # -- images ------------------------------------------------------------------

    def embed_images(self, images: Sequence[ImageInput]) -> Vectors:
        if len(images) == 1:
            # One query image: decoding in the calling thread is faster than a pool.
            try:
                pixels = self.pixels_of(images[0])
            except ImageError as exc:
                exc.index = 0
                raise
            return self.embed_pixels(pixels[None])
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
        if self._prepares_in_background():
            self._ready_engine()
            idle = self._preparation is None and self._preparation_failed is None
            if idle and preparation_mode() == "background":
                prepared = self._sampling(prepared)
        elif self._engine is None:
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
            vectors = self.embed_pixels(np.stack(arrays))
        else:
            vectors = np.zeros((0, self.dim), dtype=np.float32)
        return EmbeddedBatch(indices, vectors, failures)

    def pixels_of(self, image: ImageInput) -> np.ndarray:
        """The model's input for ``image``: decoded, resized, cropped and normalised pixels,
        shape ``(3, size, size)``, float32 (what `embed_pixels` takes, stacked).

        Raises:
            ImageError: The image cannot be read.
        """
        return load_pixels(image, self.preprocess, draft=self.draft, max_pixels=self.max_pixels)

    def _try_pixels(self, image: ImageInput) -> np.ndarray | ImageError:
        try:
            return self.pixels_of(image)
        except ImageError as exc:
            return exc

    def embed_pixels(self, pixels: np.ndarray) -> Vectors:
        """Embed a batch of `pixels_of` results, shape ``(n, 3, size, size)``: the image tower
        alone, without decoding (for measuring it, or feeding pixels prepared elsewhere)."""
        return normalised(self._runner("image")(pixels))

    # -- texts -------------------------------------------------------------------

    def embed_texts(self, texts: Sequence[str]) -> Vectors:
        """Embed texts; a text longer than the model's context is truncated, not refused."""
        if isinstance(texts, str):
            raise InvalidInputError("embed_texts takes a sequence of strings, not one string")
        for i, text in enumerate(texts):
            if not isinstance(text, str):
                raise InvalidInputError(f"text {i} is a {type(text).__name__}, not a string")
        parts = [np.zeros((0, self.dim), dtype=np.float32)]
        for start in range(0, len(texts), self.batch_size):
            tokens = self._tokens(list(texts[start : start + self.batch_size]))
            parts.append(normalised(self._runner("text")(tokens)))
        return np.concatenate(parts)

    @abstractmethod
    def _tokens(self, texts: Sequence[str]) -> np.ndarray:
        """The text tower's input for ``texts``: int64 token rows, truncated to the context."""


# -- environment -------------------------------------------------------------------


def choose_device(torch: Any, device: str | None) -> TorchDevice:
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


def native_bf16() -> bool:
    """Whether the CPU has bf16 matrix instructions (``/proc/cpuinfo``'s flags; False
    where there is no such file)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("flags"):
                    flags = set(line.partition(":")[2].split())
                    return bool(flags & {"amx_bf16", "avx512_bf16"})
    except OSError:
        pass
    return False


def default_workers() -> int:
    # One per core, not one fewer: the engine's own threads (OpenVINO's in particular) keep
    # every core busy, and decoders must win their share of it or the encoder waits on them.
    # On 2 cores, OpenVINO int8 ingest measured 57 images/s with 2 decoders, 47 with 1.
    return max(1, min(8, os.cpu_count() or 1))


def normalised(features: np.ndarray) -> Vectors:
    features = np.asarray(features, dtype=np.float32)
    norms = np.maximum(np.linalg.norm(features, axis=1, keepdims=True), np.float32(1e-12))
    return np.ascontiguousarray(features / norms, dtype=np.float32)


# -- fixed inputs: the gate's stand-ins and the text tower's calibration --------------

#: Captions of the kinds people search photo collections with: the text tower's
#: calibration and held-out sample (a query's wording varies far less than photos do).
CAPTIONS = [
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


def probe_pixels(preprocess: ImagePreprocess, count: int) -> np.ndarray:
    """Fixed, varied synthetic images (gradients, stripes, blobs, noise), already normalised."""
    rng = np.random.default_rng(0)
    height, width = preprocess.size
    shape = (3, height, width)
    ramp_h = np.linspace(0.0, 1.0, height, dtype=np.float32)
    ramp_w = np.linspace(0.0, 1.0, width, dtype=np.float32)
    grid = np.add.outer(ramp_h, ramp_w)
    images = []
    for i in range(count):
        kind = i % 4
        if kind == 0:
            tint = rng.random(3)[:, None, None]
            image = np.clip(tint * grid / 2 + (1 - tint) * ramp_h[None, :, None], 0, 1)
        elif kind == 1:
            period = rng.uniform(2.0, 12.0)
            image = (
                np.broadcast_to(0.5 + 0.5 * np.sin(np.arange(width) / period), shape)
                * rng.random(3)[:, None, None]
            )
        elif kind == 2:
            image = rng.random(shape)
        else:
            image = np.clip(rng.normal(rng.random(), 0.15, shape), 0.0, 1.0)
        images.append(np.broadcast_to(image, shape))
    pixels = np.stack(images).astype(np.float32)
    return np.ascontiguousarray(
        (pixels - preprocess.mean[:, None, None]) / preprocess.std[:, None, None],
        dtype=np.float32,
    )
