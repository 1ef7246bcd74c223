"""The default embedder: openai/CLIP models, with a fast streaming ingest.

Models load through the real openai/CLIP code (the ``clip-anytorch`` package), from a
named model in the usual download cache or from a local checkpoint file
(`clip_loading` finds, loads and checks the weights).
Everything after loading is the shared fast path of
`TowerEmbedder`: worker threads decode and
preprocess the next images (draft-decoding large JPEGs) while the encoder runs on the
current batch, and the image and text towers run on an engine (torch, or OpenVINO with
calibrated int8) in a precision that `engines` measures and
holds to a quality gate.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np

from multimodal_rag._hashing import sha256_file
from multimodal_rag._images import DEFAULT_MAX_PIXELS
from multimodal_rag._random_checkpoint import has_random_weights
from multimodal_rag._remote import manifest_endpoints
from multimodal_rag.embedders import clip_loading
from multimodal_rag.embedders.clip_loading import (
    check_manifest_config,
    download_root_or_default,
    is_torchscript,
    load_model,
    named_file,
    published_sha256s,
    torchscript_refused,
)
from multimodal_rag.embedders.clip_names import architecture_label
from multimodal_rag.embedders.clip_tokens import clip_tokens
from multimodal_rag.embedders.clip_towers import tower_modules
from multimodal_rag.embedders.precision import QualityGate
from multimodal_rag.embedders.preprocess import PREPROCESS_VERSION, ImagePreprocess
from multimodal_rag.embedders.towers import TowerEmbedder
from multimodal_rag.errors import ModelLoadError
from multimodal_rag.types import Engine, Precision

__all__ = ["CLIPEmbedder"]

#: The model of a CLIPEmbedder given neither a name nor a checkpoint.
_DEFAULT_MODEL = "ViT-B/32"

#: Bumped whenever the tower modules change what they compute or take: part of the key
#: of every converted model in the engine cache.
_TOWERS_VERSION = 2

#: What the engine cache records of a loaded model (see ``CLIPEmbedder._known_model``).
_SHAPES = frozenset({"label", "resolution", "context_length", "dim"})


def _shapes_key(sha256: str) -> dict[str, Any]:
    return {"weights_sha256": sha256, "towers": _TOWERS_VERSION}


class CLIPEmbedder(TowerEmbedder):
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
        engine: ``"auto"`` (default: OpenVINO on a CPU where ``pip install
            'multimodal-rag[openvino]'`` installed it, else torch; ``runtime`` says which
            and why), ``"torch"`` or ``"openvino"``: the towers converted once, int8
            available, cached under ``cache_dir``. On a machine that has not prepared
            the OpenVINO engine yet, ``precision="auto"`` runs the first ingest on torch
            and prepares it in the background (see docs/embedders.md, "The first run").
        precision: ``"auto"`` (on first use on a machine, time the precisions that pass
            the quality gate and keep the fastest; the decision is cached per CPU model),
            ``"fp32"``, ``"bf16"``, ``"fp16"`` (GPU only) or ``"int8"`` (OpenVINO only).
            A precision asked for that fails the quality gate, or cannot run here, raises
            [`PrecisionError`][multimodal_rag.errors.PrecisionError] unless
            ``allow_fallback``; ``"auto"`` chooses only among those that pass.
            [`runtime`][multimodal_rag.embedders.clip.CLIPEmbedder.runtime] says what runs.
        allow_fallback: Let a precision asked for that fails the gate fall back to the
            next one (int8, bf16, fp32) with a warning, instead of raising; ``runtime``
            then says which tower fell back, and why.
        batch_size: Images per encoder call (the facade's ``batch_size`` overrides it).
        num_workers: Threads that decode and preprocess images while the model runs;
            by default one per CPU core (at most 8).
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
        PrecisionError: The precision asked for fails the quality gate or cannot run
            here, and ``allow_fallback`` is not set (a subclass of ``ModelLoadError``).
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
        engine: Engine = "auto",
        precision: Precision = "auto",
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
        allow_fallback: bool = False,
    ) -> None:
        if manifest_endpoints() is not None:
            check_manifest_config(checkpoint, download_root, allow_torchscript)
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
        self.checkpoint = (
            Path(checkpoint).expanduser().resolve() if checkpoint is not None else None
        )
        # Read from the file's own record, not from its name: a copy renamed is still random.
        self.random_weights = self.checkpoint is not None and has_random_weights(self.checkpoint)
        self.download_root = (
            Path(download_root).expanduser().resolve() if download_root is not None else None
        )
        name = model if model is not None else _DEFAULT_MODEL
        # On OpenVINO, a model this machine has loaded before is known by its shapes alone:
        # the engine may then compile its cached towers without torch ever loading.
        sha256, shapes = (
            self._known_model(name, allow_torchscript)
            if self.engine == "openvino"
            else (None, None)
        )

        def load(sha256: str | None = None) -> tuple[Any, str]:
            return load_model(
                name,
                self.checkpoint,
                self.download_root,
                self.device,
                allow_torchscript=allow_torchscript,
                sha256=sha256,
            )

        towers: tuple[Any, Any] | None = None
        if sha256 is not None and shapes is not None:
            self._weights_sha256 = sha256
        else:
            loaded, self._weights_sha256 = load(sha256)  # the file was just hashed: not twice
            shapes = self._remember_model(name, loaded.eval())
            towers = tower_modules(loaded)
        # A checkpoint given without a name is labelled by its shapes, not as the default model.
        self.model_name = model if model is not None else str(shapes["label"])
        self.resolution: int = int(shapes["resolution"])
        self.preprocess = ImagePreprocess.clip(self.resolution)
        self.context_length: int = int(shapes["context_length"])
        self._dim = int(shapes["dim"])

        def load_towers() -> tuple[Any, Any]:
            # Called only if the engine needs torch (to convert, to check, to run); the engine
            # lets the modules go once done, so no copy of the weights outlives its use.
            if towers is not None:
                return towers
            # Hashed again on purpose: the file may have changed since it was first hashed.
            loaded, sha256 = load()
            if sha256 != self._weights_sha256:
                raise ModelLoadError(
                    f"the weights of CLIP model {name!r} changed while it loaded "
                    f"({self._weights_source()}); load it again"
                )
            return tower_modules(loaded.eval())

        self._init_engine(
            load_towers=load_towers,
            identity={
                "weights_sha256": self._weights_sha256,
                "preprocess": PREPROCESS_VERSION,
                "resolution": self.resolution,
                "towers": _TOWERS_VERSION,
            },
            openvino_device=openvino_device,
            quality_gate=quality_gate,
            calibration=calibration,
        )

    # -- what this machine knows of a model -----------------------------------------

    def _known_model(
        self, name: str, allow_torchscript: bool
    ) -> tuple[str | None, dict[str, Any] | None]:
        """The weights file's SHA-256 (for a checkpoint, or a named model whose file this
        machine recorded), and the model's shapes when this machine loaded the same weights
        before (recorded in the engine cache); None for what is not known.

        The file is hashed every time, so changed weights are never taken for known ones.
        """
        if self.checkpoint is not None:
            file = self.checkpoint
        else:
            named = self._engine_cache.read_json("clip-named", self._named_key(name))
            if named is None:
                return None, None
            file = download_root_or_default(self.download_root) / str(named.get("file"))
        if not file.is_file():
            return None, None
        sha256 = sha256_file(file)
        shapes = self._engine_cache.read_json("clip-models", _shapes_key(sha256))
        if shapes is None or not _SHAPES.issubset(shapes):
            return sha256, None
        # Whether the file is one of openai's is asked now, not read from the record (which
        # imports clip, and so torch: only for a TorchScript file not allowed otherwise).
        if (
            shapes.get("torchscript")
            and not allow_torchscript
            and sha256 not in clip_loading.published_sha256s()
        ):
            raise torchscript_refused(file)
        return sha256, shapes

    def _remember_model(self, name: str, loaded: Any) -> dict[str, Any]:
        """The loaded model's shapes, recorded for `_known_model`."""
        shapes: dict[str, Any] = {
            "label": architecture_label(loaded) if self.checkpoint is not None else name,
            "resolution": int(loaded.visual.input_resolution),
            "context_length": int(loaded.context_length),
            "dim": int(loaded.text_projection.shape[1]),
            "torchscript": self.checkpoint is not None and is_torchscript(self.checkpoint),
            "published": self._weights_sha256 in published_sha256s(),
        }
        if self.engine == "openvino":  # only that engine can do without the torch model
            self._engine_cache.write_json("clip-models", _shapes_key(self._weights_sha256), shapes)
            if self.checkpoint is None:
                self._engine_cache.write_json(
                    "clip-named",
                    self._named_key(name),
                    {"file": named_file(name), "sha256": self._weights_sha256},
                )
        return shapes

    def _named_key(self, name: str) -> dict[str, Any]:
        return {"model": name, "download_root": str(download_root_or_default(self.download_root))}

    # -- identity ----------------------------------------------------------------

    @property
    def fingerprint(self) -> str:
        # Engine, precision and draft decoding move embeddings by far less than any
        # difference between models (the quality gate holds them to it), so vectors
        # made any of these ways stay compatible: a knowledge base built in fp32 is
        # searched in int8 and the other way round.
        weights = self._weights_sha256[:16]
        return f"clip:{self.model_name}:sha256={weights}:preprocess=v{PREPROCESS_VERSION}"

    def config(self) -> dict[str, Any]:
        """Rebuilds this embedder on another machine: never the device, which is that machine's."""
        config: dict[str, Any] = {"model": self.model_name, "precision": self._precision_setting}
        if self.allow_fallback:
            config["allow_fallback"] = True
        if self._engine_choice.requested != "auto":
            config["engine"] = self._engine_choice.requested
        if self.checkpoint is not None:
            config["checkpoint"] = str(self.checkpoint)
        if self.download_root is not None:
            config["download_root"] = str(self.download_root)
        if not self.draft:
            config["draft"] = False
        return config

    def _weights_source(self) -> str:
        return str(self.checkpoint) if self.checkpoint is not None else "download cache"

    # -- texts -------------------------------------------------------------------

    def _tokens(self, texts: Sequence[str]) -> np.ndarray:
        array = clip_tokens(texts, self.context_length)
        # Only up to the longest text's end token (see the text tower).
        length = int(array.argmax(axis=1).max()) + 1 if len(array) else 1
        return np.ascontiguousarray(array[:, :length], dtype=np.int64)
