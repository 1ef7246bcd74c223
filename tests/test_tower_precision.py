"""Each tower runs in the precision ``runtime`` reports, whatever precision the other one got.

The property, over embedder (CLIP ViT and ResNet, open_clip) x engine (torch, OpenVINO where
installed) x precision: the vectors stay within the quality gate of fp32, and ``runtime``
names what runs, observed directly: on torch, the dtype of every matrix product a tower
computes; on OpenVINO, the precision each compiled model's matrix products run in. Every
split of the towers between two precisions is forced (through ``auto``'s timing and through
the gate) and each tower's vectors are compared with a single-precision run.

Tiny random models (tests/tiny_clip.py, tests/tiny_open_clip.py) keep it fast.
"""

from __future__ import annotations

import inspect
import json
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import attrs
import numpy as np
import pytest

from helpers import varied_pictures
from multimodal_rag import CLIPEmbedder
from multimodal_rag.embedders import engines
from multimodal_rag.embedders.engine_cache import EngineCache
from multimodal_rag.embedders.precision import QualityGate
from multimodal_rag.embedders.towers import TowerEmbedder
from tiny_clip import make_tiny_clip_checkpoint

torch = pytest.importorskip("torch")

TEXTS = ["a photo of a castle", "moon", "two friends at the beach", "an old stamp"]
PICTURES = varied_pictures(5)
#: A gate every precision passes (a cosine is never below -1): the run is the precision asked.
ANY = QualityGate(min_cosine=-1.0, mean_cosine=-1.0)
TORCH_DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}
#: OpenVINO's runtime precisions of a matrix product, by the names ``runtime`` uses.
OPENVINO_PRECISIONS = {"f32": "fp32", "bf16": "bf16", "i8": "int8", "u8": "int8"}

ARCHITECTURES = ["vit"]
if "architecture" in inspect.signature(make_tiny_clip_checkpoint).parameters:
    ARCHITECTURES.append("resnet")


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Callable[..., TowerEmbedder]]:
    """Embedder makers by name: each takes the embedder's keyword arguments."""
    root = tmp_path_factory.mktemp("tower-precision")
    makers: dict[str, Callable[..., TowerEmbedder]] = {}
    for architecture in ARCHITECTURES:
        extra = {} if architecture == "vit" else {"architecture": "resnet", "image_resolution": 64}
        path = make_tiny_clip_checkpoint(root / f"clip-{architecture}.pt", **extra)
        makers[f"clip-{architecture}"] = maker_of(CLIPEmbedder, checkpoint=path)
    try:
        import open_clip  # noqa: F401
    except ImportError:
        return makers
    from multimodal_rag import OpenCLIPEmbedder
    from tiny_open_clip import make_tiny_checkpoint, make_tiny_tokenizer, register_tiny_models

    _, vocab_size = make_tiny_tokenizer(root / "tokenizer")
    register_tiny_models(root / "configs", vocab_size=vocab_size)
    checkpoint = make_tiny_checkpoint("tiny-ViT-B-32", root / "b32.pt")
    makers["open_clip"] = maker_of(
        OpenCLIPEmbedder, "tiny-ViT-B-32", "openai", checkpoint=checkpoint
    )
    return makers


def maker_of(
    maker: Callable[..., TowerEmbedder], *args: Any, **fixed: Any
) -> Callable[..., TowerEmbedder]:
    """``maker`` with its model arguments fixed, on the CPU, on torch unless an engine is named
    (the torch cases below are torch's whatever an embedder's default engine is)."""

    def make(**kwargs: Any) -> TowerEmbedder:
        kwargs.setdefault("engine", "torch")
        return maker(*args, **fixed, device="cpu", **kwargs)

    return make


def vectors(embedder: TowerEmbedder) -> dict[str, np.ndarray]:
    return {"image": embedder.embed_images(PICTURES), "text": embedder.embed_texts(TEXTS)}


def inputs(embedder: TowerEmbedder, tower: str) -> np.ndarray:
    if tower == "text":
        return embedder._tokens(TEXTS)
    return np.stack([embedder.pixels_of(picture) for picture in PICTURES])


def runs_in(embedder: TowerEmbedder, tower: str) -> set[str]:
    """The precisions the tower's matrix products actually run in, observed as they run."""
    runner = embedder._runner(tower)
    if runner.engine == "openvino":
        seen = set()
        for op in runner.compiled.get_runtime_model().get_ordered_ops():
            info = op.get_rt_info()
            if info["layerType"].astype(str) in ("FullyConnected", "Convolution", "MatMul"):
                seen.add(info["runtimePrecision"].astype(str))
        return {OPENVINO_PRECISIONS.get(precision, precision) for precision in seen}
    products = (torch.nn.functional.linear, torch.nn.functional.conv2d, torch.matmul)
    dtypes: set[Any] = set()

    class Watch(torch.overrides.TorchFunctionMode):
        def __torch_function__(self, func, types, args=(), kwargs=None):
            result = func(*args, **(kwargs or {}))
            if func in products or getattr(func, "__name__", "") == "__matmul__":
                dtypes.add(result.dtype)
            return result

    with Watch():
        runner(inputs(embedder, tower))
    names = {dtype: name for name, dtype in TORCH_DTYPES.items()}
    return {names.get(dtype, str(dtype)) for dtype in dtypes}


def assert_runtime_is_what_runs(embedder: TowerEmbedder) -> None:
    for tower, precision in embedder.runtime["towers"].items():
        observed = runs_in(embedder, tower)
        if precision == "int8":  # nncf keeps a few products accurate: int8 where it quantized
            assert "int8" in observed, (tower, observed)
        else:
            assert observed == {precision}, (tower, precision, observed)


def speeds(wanted: dict[str, str]) -> Callable[..., float]:
    """``auto``'s timing, replaced: the precision ``wanted`` for each tower is the fastest."""

    def items_per_second(self: Any, runner: Any, example: np.ndarray) -> float:
        tower = "image" if example.ndim == 4 else "text"
        return 200.0 if runner.precision == wanted[tower] else 100.0

    return items_per_second


def failing_for(tower: str) -> Callable[..., Any]:
    """The gate, with ``tower``'s result turned into a failure."""
    real = engines.EngineBuilder._gate

    def gate(self: Any, name: str, precision: str, runner: Any) -> Any:
        result, source = real(self, name, precision, runner)
        return (attrs.evolve(result, passed=False) if name == tower else result), source

    return gate


# -- every split, both embedders, torch ---------------------------------------------


@pytest.mark.parametrize(
    "image,text", [("bf16", "fp32"), ("fp32", "bf16"), ("bf16", "bf16"), ("fp32", "fp32")]
)
@pytest.mark.parametrize("model", ["clip-vit", "open_clip"])
def test_every_split_runs_each_tower_in_its_own_precision(
    models: dict[str, Callable[..., TowerEmbedder]],
    model: str,
    image: str,
    text: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    if model not in models:
        pytest.skip("open_clip is not installed")
    make = models[model]
    single = {
        precision: vectors(
            make(precision=precision, quality_gate=ANY, cache_dir=tmp_path / precision)
        )
        for precision in ("fp32", "bf16")
    }
    for tower in ("image", "text"):  # the check below can tell the two precisions apart
        assert np.abs(single["fp32"][tower] - single["bf16"][tower]).max() > 1e-4
    wanted = {"image": image, "text": text}

    # Through auto's timing.
    monkeypatch.setattr(engines.EngineBuilder, "_items_per_second", speeds(wanted))
    timed = make(quality_gate=ANY, cache_dir=tmp_path / "auto")
    # Through the gate: bf16 asked for, the tower meant for fp32 fails it.
    with monkeypatch.context() as patch:
        for tower, precision in wanted.items():
            if precision == "fp32":
                patch.setattr(engines.EngineBuilder, "_gate", failing_for(tower))
        gated = make(
            precision="bf16", quality_gate=ANY, cache_dir=tmp_path / "gated", allow_fallback=True
        )
        gated._runner("image")  # built while the gate is patched

    for embedder in (timed, gated):
        assert embedder.runtime["towers"] == wanted
        assert_runtime_is_what_runs(embedder)
        got = vectors(embedder)
        for tower, precision in wanted.items():
            np.testing.assert_allclose(got[tower], single[precision][tower], atol=1e-6)
    assert timed.runtime["decided"] == {"image": "auto, measured now", "text": "auto, measured now"}
    assert gated.runtime["decided"] == {
        tower: "asked for" if precision == "bf16" else "fell back from bf16"
        for tower, precision in wanted.items()
    }


def test_a_reduced_tower_keeps_its_own_weights_and_leaves_the_model_as_it_was(
    models: dict[str, Callable[..., TowerEmbedder]], tmp_path: Path
) -> None:
    from multimodal_rag.embedders.torch_engine import TorchRunner

    embedder = models["clip-vit"](precision="fp32", cache_dir=tmp_path)
    module = embedder._runner("image").module
    before = {name: t.dtype for name, t in module.state_dict().items()}
    runner = TorchRunner(module, "cpu", "bf16", example=inputs(embedder, "image"))
    runner.settle()
    assert {name: t.dtype for name, t in module.state_dict().items()} == before
    converted = {
        name for name, t in runner.module.state_dict().items() if t.dtype == torch.bfloat16
    }
    # Only the image tower's matrix weights: the text tower's stay as they were, shared.
    assert converted and all(name.startswith("clip.visual.") for name in converted)
    shared = runner.module.clip.transformer.resblocks[0].mlp.c_fc.weight
    assert shared is module.clip.transformer.resblocks[0].mlp.c_fc.weight


# -- the property: embedder x engine x precision ---------------------------------------


def engine_grid() -> list[tuple[str, str]]:
    grid = [("torch", p) for p in ("fp32", "bf16", "auto")]
    try:
        import nncf  # noqa: F401
        import openvino  # noqa: F401
    except ImportError:
        return grid
    return grid + [("openvino", p) for p in ("fp32", "bf16", "int8", "auto")]


@pytest.fixture(scope="module")
def shared_cache(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One cache for the grid: each model is converted and quantized once."""
    return tmp_path_factory.mktemp("grid-cache")


@pytest.fixture(scope="module")
def references(
    models: dict[str, Callable[..., TowerEmbedder]], shared_cache: Path
) -> dict[str, Any]:
    return {
        name: vectors(make(precision="fp32", cache_dir=shared_cache))
        for name, make in models.items()
    }


@pytest.mark.parametrize("engine,precision", engine_grid())
@pytest.mark.parametrize("model", ["clip-vit", "clip-resnet", "open_clip"])
def test_vectors_stay_within_the_gate_and_runtime_names_what_runs(
    models: dict[str, Callable[..., TowerEmbedder]],
    references: dict[str, Any],
    shared_cache: Path,
    model: str,
    engine: str,
    precision: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    if model not in models:
        pytest.skip(f"{model} is not available here")
    # The engine asked for is made in the load, whatever the grid's order left in the cache
    # (with nothing cached, a first run would otherwise embed on torch: see preparation).
    monkeypatch.setenv("MULTIMODAL_RAG_ENGINE_PREPARATION", "now")
    embedder = models[model](
        engine=engine, precision=precision, cache_dir=shared_cache, allow_fallback=True
    )
    got = vectors(embedder)
    gate = QualityGate()
    for tower in ("image", "text"):
        assert gate.check(references[model][tower], got[tower]).passed, tower
    runtime = embedder.runtime
    assert runtime["requested"] == precision and runtime["engine"] == engine
    assert set(runtime["decided"]) == {"image", "text"}
    assert_runtime_is_what_runs(embedder)
    json.dumps(runtime, allow_nan=False)  # the manifest keeps it: plain JSON


# -- a failed measurement is never a verdict ---------------------------------------


def test_a_nan_measurement_is_retried_and_never_cached(
    models: dict[str, Callable[..., TowerEmbedder]], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = {"text": 0}
    real = engines.EngineBuilder._runner

    class Poisoned:
        """A runner whose outputs are NaN, as a broken compilation gives."""

        engine, precision = "torch", "bf16"

        def __call__(self, batch: np.ndarray) -> np.ndarray:
            calls["text"] += 1
            return np.full((len(batch), 64), np.nan, dtype=np.float32)

        def settle(self) -> None:
            pass

    def nan_text_bf16(self: Any, name: str, precision: str, **kwargs: Any) -> Any:
        if name == "text" and precision == "bf16":
            return Poisoned()
        return real(self, name, precision, **kwargs)

    monkeypatch.setattr(engines.EngineBuilder, "_runner", nan_text_bf16)
    monkeypatch.setattr(
        engines.EngineBuilder, "_items_per_second", speeds({"image": "bf16", "text": "bf16"})
    )
    first = models["clip-vit"](cache_dir=tmp_path)
    runtime = first.runtime
    assert calls["text"] == 2  # measured, then measured again on a runner built afresh
    assert runtime["towers"] == {"image": "bf16", "text": "fp32"}
    assert runtime["quality_gate"]["text:bf16"]["source"] == "failed"
    assert any(
        "text tower: bf16 gave outputs that are not numbers" in n for n in runtime["fallbacks"]
    )
    json.dumps(runtime, allow_nan=False)
    cache = EngineCache(tmp_path)
    assert not list(
        (cache.root / "decisions").glob("*.json")
    )  # no decision on a failed measurement
    # The next load measures again, and with a sound measurement bf16 is a candidate.
    monkeypatch.setattr(engines.EngineBuilder, "_runner", real)
    second = models["clip-vit"](cache_dir=tmp_path)
    assert second.runtime["towers"] == {"image": "bf16", "text": "bf16"}
    assert second.runtime["quality_gate"]["text:bf16"]["source"] == "measured now"
    assert second.runtime["decided"]["text"] == "auto, measured now"
    third = models["clip-vit"](cache_dir=tmp_path)
    assert third.runtime["decided"] == {
        "image": "auto, cached decision",
        "text": "auto, cached decision",
    }
    assert third.runtime["fallbacks"] == second.runtime["fallbacks"]


def test_a_nan_cached_by_an_earlier_release_is_measured_again(
    models: dict[str, Callable[..., TowerEmbedder]], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    make = models["clip-vit"]
    monkeypatch.setattr(
        engines.EngineBuilder, "_items_per_second", speeds({"image": "bf16", "text": "bf16"})
    )
    make(cache_dir=tmp_path)
    # What an earlier release wrote: the gate's NaN as its verdict, and a decision made on it.
    for kind in ("gates", "decisions"):
        for path in (tmp_path / kind).glob("*.json"):
            entry = json.loads(path.read_text())
            value = entry["value"]
            for gate in [value, *(value.get("quality_gate") or {}).values()]:
                if "min_cosine" in gate:
                    gate["min_cosine"] = gate["mean_cosine"] = math.nan
            if kind == "decisions":
                value["towers"] = {"image": "fp32", "text": "fp32"}
            path.write_text(json.dumps(entry))
    again = make(cache_dir=tmp_path)
    assert again.runtime["towers"] == {"image": "bf16", "text": "bf16"}
    assert {g["source"] for g in again.runtime["quality_gate"].values()} == {"measured now"}


# -- OpenVINO: each precision hint compiles its own model ---------------------------


def test_a_bf16_compile_never_imports_the_blob_compiled_for_fp32(
    models: dict[str, Callable[..., TowerEmbedder]], tmp_path: Path
) -> None:
    openvino = pytest.importorskip("openvino")
    pytest.importorskip("nncf")
    if "BF16" not in openvino.Core().get_property("CPU", "OPTIMIZATION_CAPABILITIES"):
        pytest.skip("OpenVINO runs no bf16 on this CPU (no AVX-512 BF16 or AMX)")
    make = models["clip-vit"]
    make(engine="openvino", precision="fp32", cache_dir=tmp_path)._runner("image")
    bf16 = make(engine="openvino", precision="bf16", quality_gate=ANY, cache_dir=tmp_path)
    for tower in ("image", "text"):
        compiled = bf16._runner(tower).compiled
        assert not compiled.get_property("LOADED_FROM_CACHE"), tower
        assert runs_in(bf16, tower) == {"bf16"}
    # A second load of the same precision does import its own blob.
    again = make(engine="openvino", precision="bf16", quality_gate=ANY, cache_dir=tmp_path)
    assert again._runner("image").compiled.get_property("LOADED_FROM_CACHE")


def test_the_report_says_where_each_decision_came_from(
    models: dict[str, Callable[..., TowerEmbedder]], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from multimodal_rag.cli.output import _runtime_text

    monkeypatch.setattr(
        engines.EngineBuilder, "_items_per_second", speeds({"image": "bf16", "text": "fp32"})
    )
    embedder = models["clip-vit"](quality_gate=ANY, cache_dir=tmp_path)
    runtime = embedder.runtime
    assert runtime["quality_gate"]["image:bf16"]["source"] == "measured now"
    assert any(
        "text tower: bf16 passed the quality gate but ran at 100.0/s" in n
        for n in runtime["fallbacks"]
    )
    text = _runtime_text(runtime)
    assert "image bf16 (auto, measured now)" in text and "text fp32 (auto, measured now)" in text
    again = models["clip-vit"](quality_gate=ANY, cache_dir=tmp_path)
    assert "image bf16 (auto, cached decision)" in _runtime_text(again.runtime)
    asked = models["clip-vit"](precision="fp32", cache_dir=tmp_path)
    assert "image fp32 (asked for)" in _runtime_text(asked.runtime)
