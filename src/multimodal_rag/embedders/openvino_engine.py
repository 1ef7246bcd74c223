"""Running a model tower in OpenVINO: converted from torch once, int8 by calibrated quantization.

A tower is converted with ``openvino.convert_model`` (batch dimension dynamic), saved as
IR in the engine cache, and compiled for the CPU (or an Intel GPU when present) with the
precision as an inference hint: fp32 is pinned (OpenVINO would otherwise pick bf16 by
itself on CPUs that have it), bf16 and fp16 ask for them. int8 is the fp32 model passed
through ``nncf.quantize`` (transformer mode: SmoothQuant, attention kept accurate) on a
calibration sample, and is cached as its own IR, so a machine quantizes each model once.

``openvino`` and ``nncf`` come with ``pip install 'multimodal-rag[openvino]'`` and are
imported only when this engine is used.
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import io
import logging
import threading
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from multimodal_rag._extras import check_installed, require
from multimodal_rag._hashing import sha256_file
from multimodal_rag.embedders.engine_cache import EngineCache, cpu_model

__all__ = [
    "OpenVINORunner",
    "check_engine_installed",
    "compile_model",
    "convert_module",
    "engine_versions",
    "import_nncf",
    "import_openvino",
    "model_file",
    "openvino_device",
    "quantize",
    "read_model",
    "runs_in",
    "save_model",
]

_USER = "engine='openvino'"
_HINTS = {"fp32": "f32", "bf16": "bf16", "fp16": "f16", "int8": "f32"}


def import_openvino() -> Any:
    return require("openvino", user=_USER, extra="openvino")


def import_nncf() -> Any:
    with warnings.catch_warnings():
        # nncf looks for optional frameworks as it imports, and warns about their versions.
        warnings.simplefilter("ignore")
        nncf = require("nncf", user=_USER, extra="openvino")
    # Its progress bars and notes would land on the user's terminal for every quantization.
    logging.getLogger("nncf").setLevel(logging.WARNING)
    _import_cpp_extension_quietly()
    return nncf


def _import_cpp_extension_quietly() -> None:
    """Import ``torch.utils.cpp_extension`` once with its logger silenced.

    nncf imports it to tell a torch model from others, and on import it warns "No CUDA runtime
    is found, using CUDA_HOME=..." wherever a CUDA toolkit is installed without a GPU: noise
    for a CPU engine. Imported here first, it warns nowhere; the logger is then restored.
    """
    import sys

    if "torch" not in sys.modules or "torch.utils.cpp_extension" in sys.modules:
        return  # nncf imports it only for torch models; once imported, it has spoken
    logger = logging.getLogger("torch.utils.cpp_extension")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        import torch.utils.cpp_extension  # noqa: F401
    finally:
        logger.setLevel(level)


def check_engine_installed() -> None:
    """Report a missing extra before any model loads, without importing nncf (which only
    quantizes, once per model and machine, and costs memory and time to import)."""
    import_openvino()
    check_installed("nncf", user=_USER, extra="openvino")


def engine_versions() -> dict[str, str]:
    """The versions a converted or quantized model depends on (part of every cache key)."""
    ov = import_openvino()
    return {"openvino": str(ov.get_version()), "nncf": importlib.metadata.version("nncf")}


def openvino_device(device: str | None) -> str:
    """The OpenVINO device for a torch-style name: ``None`` means a GPU when present, else CPU."""
    if device is not None:
        return "GPU" if device.lower().startswith(("gpu", "cuda")) else "CPU"
    available = import_openvino().Core().available_devices
    return "GPU" if any(name.startswith("GPU") for name in available) else "CPU"


def convert_module(module: Any, example: np.ndarray) -> Any:
    """Convert a torch module (one batch input) into an OpenVINO model, batch size free."""
    ov = import_openvino()
    torch = require("torch", user=_USER)
    # Tokens: batch and length free (texts are cut after their end token); images: batch.
    integer = example.dtype == np.int64
    shape = [-1, -1] if integer else [-1, *example.shape[1:]]
    element = ov.Type.i64 if integer else ov.Type.f32
    with warnings.catch_warnings(), torch.inference_mode(False), torch.no_grad():
        # convert_model traces through TorchScript, which warns that it is deprecated and
        # about the Python values the trace freezes (CLIP's shapes are fixed anyway).
        warnings.simplefilter("ignore")
        return ov.convert_model(
            module, example_input=torch.from_numpy(example), input=[(shape, element)]
        )


def quantize(model: Any, calibration: Sequence[np.ndarray], *, subset_size: int) -> Any:
    """int8 weights and activations, with ranges measured on the ``calibration`` batches."""
    nncf = import_nncf()
    # nncf draws progress bars on stdout with no switch to turn them off; a library must
    # not write there, and quantizing happens once per model and machine.
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        return nncf.quantize(
            model,
            nncf.Dataset(list(calibration)),
            model_type=nncf.ModelType.TRANSFORMER,
            subset_size=subset_size,
        )


def model_file(folder: Path) -> Path:
    """The model file of a saved model (its weights are beside it, in ``model.bin``)."""
    return folder / "model.xml"


def save_model(model: Any, folder: Path) -> None:
    # Keep fp32 weights as they are: OpenVINO would halve them to fp16 by default.
    import_openvino().save_model(model, str(model_file(folder)), compress_to_fp16=False)


def read_model(folder: Path) -> Any:
    ov = import_openvino()
    return ov.Core().read_model(str(model_file(folder)), str(folder / "model.bin"))


def compile_model(model: Path, device: str, precision: str, *, cache_dir: Path | None) -> Any:
    """Compile the model file ``model`` for ``device`` with ``precision`` as the hint.

    ``cache_dir`` keeps OpenVINO's compiled blobs, which makes a second load of the same
    model on the same device a read instead of a compilation. OpenVINO itself knows a model
    file by its path, size and time, so a blob would outlive a change to ``model.bin``: here
    each blob lives in a folder named by the SHA-256 of the model's files (recorded when
    they were cached) and the compilation's settings, and every blob is checked against its
    own SHA-256 before OpenVINO may import it (one that fails is removed and compiled again).
    """
    ov = import_openvino()
    core = ov.Core()
    config = {
        "INFERENCE_PRECISION_HINT": _HINTS[precision],
        # Ingest sends batches one after another: latency mode uses every core on each.
        "PERFORMANCE_HINT": "LATENCY",
    }
    if cache_dir is None:
        return core.compile_model(str(model), device, config)
    cache = EngineCache(cache_dir)
    key = {
        "model": cache.recorded(model.parent) or {p.name: sha256_file(p) for p in _ir_files(model)},
        "device": device,
        "config": config,
        "openvino": str(ov.get_version()),
        "cpu": cpu_model(),
    }
    blobs = cache.entry("blobs", key)
    # One process at a time: OpenVINO writes its blob in place, and another process checking
    # the folder meanwhile would find no record of it and remove it under the writer. One
    # that finds the folder busy compiles without the blob cache, and leaves it alone.
    with cache.exclusive(blobs) as held:
        if not held:
            return core.compile_model(str(model), device, config)
        cache.verified_files(blobs)  # a folder that fails its check is gone after this
        blobs.mkdir(parents=True, exist_ok=True)
        core.set_property({"CACHE_DIR": str(blobs)})
        compiled = core.compile_model(str(model), device, config)
        cache.record_files(blobs)
    return compiled


def error_reason(exc: BaseException) -> str:
    """What an OpenVINO error says, without the location line it starts with
    ("Exception from src/inference/src/cpp/core.cpp:132:"), which names no cause."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    said = [line for line in lines if not line.startswith("Exception from ")]
    return (said or lines or [type(exc).__name__])[0][:300]


def _ir_files(model: Path) -> list[Path]:
    return [model, model.with_suffix(".bin")]


def runs_in(compiled: Any, precision: str) -> bool:
    """Whether ``compiled`` computes in ``precision``: a device that cannot (a CPU without
    bf16, say) accepts the hint and reports the precision it chose instead."""
    hint = compiled.get_property("INFERENCE_PRECISION_HINT")
    return bool(hint.get_type_name() == _HINTS[precision])


class OpenVINORunner:
    """Runs a compiled model on a numpy batch; returns float32 numpy.

    One inference request per thread: the facade lets several threads search at once.
    """

    engine = "openvino"

    def __init__(self, compiled: Any, precision: str) -> None:
        self.compiled = compiled
        self.precision = precision
        self._local = threading.local()

    def __call__(self, inputs: np.ndarray) -> np.ndarray:
        request = getattr(self._local, "request", None)
        if request is None:
            request = self._local.request = self.compiled.create_infer_request()
        result = request.infer([np.ascontiguousarray(inputs)])
        output: np.ndarray = np.array(result[0], dtype=np.float32)
        return output

    def settle(self) -> None:
        """Nothing to do: the compiled model is already in its precision."""
