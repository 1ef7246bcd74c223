"""CLIPEmbedder's engines and precisions: OpenVINO, calibrated int8, the quality gate, the cache.

Tiny random CLIP checkpoints, loaded through the real loading path. The OpenVINO tests
skip where the ``openvino`` extra is not installed; the ones that simulate its absence
run everywhere.
"""

from __future__ import annotations

import functools
import importlib
import json
import logging
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from multimodal_rag import CLIPEmbedder, MultimodalRAG
from multimodal_rag._kb.manifest import read_manifest
from multimodal_rag.cli.output import print_info
from multimodal_rag.embedders import clip as clip_module
from multimodal_rag.embedders import engines
from multimodal_rag.embedders.engine_cache import EngineCache
from multimodal_rag.embedders.engines import split_sample
from multimodal_rag.embedders.precision import QualityGate
from multimodal_rag.errors import InvalidInputError, MissingDependencyError, ModelLoadError
from tiny_clip import make_tiny_clip_checkpoint


@pytest.fixture(autouse=True)
def _prepare_in_the_command(monkeypatch: pytest.MonkeyPatch) -> None:
    """These tests measure how the OpenVINO engine is made: in the command, as it happens
    (the background preparation of a first run has its own tests, test_engine_choice.py)."""
    monkeypatch.setenv("MULTIMODAL_RAG_ENGINE_PREPARATION", "now")


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("clip-engines")
    return {
        "a": make_tiny_clip_checkpoint(root / "a.pt", seed=0),
        "b": make_tiny_clip_checkpoint(root / "b.pt", seed=1),
    }


@pytest.fixture(scope="module")
def photos(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder of varied small pictures: smooth gradients, blocks and noise."""
    folder = tmp_path_factory.mktemp("photos")
    rng = np.random.default_rng(3)
    for i in range(40):
        base = rng.integers(0, 256, (4, 4, 3), dtype=np.uint8)
        picture = Image.fromarray(base).resize((48 + i, 40), Image.Resampling.BICUBIC)
        noise = rng.normal(0, 6 * (i % 3), (40, 48 + i, 3))
        pixels = np.clip(np.asarray(picture, dtype=np.float32) + noise, 0, 255).astype(np.uint8)
        Image.fromarray(pixels).save(folder / f"{i:02d}.png")
    return folder


def images_in(folder: Path) -> list[Path]:
    return sorted(folder.glob("*.png"))


TEXTS = ["a red square", "two friends at the beach", "an old stamp", ""]


def cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.sum(a * b, axis=1)


@pytest.fixture
def quantize_calls(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Count nncf.quantize calls (and the calibration size of each)."""
    nncf = pytest.importorskip("nncf")
    pytest.importorskip("openvino")
    calls: list[int] = []
    real = nncf.quantize

    def counting(model, dataset, **kwargs):
        calls.append(kwargs.get("subset_size", -1))
        return real(model, dataset, **kwargs)

    monkeypatch.setattr(nncf, "quantize", counting)
    return calls


# -- OpenVINO ------------------------------------------------------------------


def test_openvino_fp32_matches_torch_fp32(
    checkpoints: dict[str, Path], photos: Path, tmp_path: Path
) -> None:
    pytest.importorskip("openvino")
    pytest.importorskip("nncf")
    exact = CLIPEmbedder(checkpoint=checkpoints["a"], precision="fp32")
    converted = CLIPEmbedder(
        checkpoint=checkpoints["a"], engine="openvino", precision="fp32", cache_dir=tmp_path
    )
    images = images_in(photos)[:8]
    assert cosines(converted.embed_images(images), exact.embed_images(images)).min() >= 0.9999
    assert cosines(converted.embed_texts(TEXTS), exact.embed_texts(TEXTS)).min() >= 0.9999
    assert converted.runtime["towers"] == {"image": "fp32", "text": "fp32"}
    # The compiled towers hold their own weights: the torch model is let go.
    assert all(type(r).__name__ == "OpenVINORunner" for r in converted._engine.runners.values())
    assert converted._builder is None
    assert converted.config()["engine"] == "openvino"
    assert "engine" not in exact.config()  # torch, the default, keeps configs as they were


def test_int8_passes_the_gate_or_falls_back_with_a_reason(
    checkpoints: dict[str, Path], photos: Path, tmp_path: Path, quantize_calls: list[int]
) -> None:
    embedder = CLIPEmbedder(
        checkpoint=checkpoints["a"],
        engine="openvino",
        precision="int8",
        calibration=photos,
        cache_dir=tmp_path,
        allow_fallback=True,
    )
    runtime = embedder.runtime
    assert runtime["requested"] == "int8" and runtime["engine"] == "openvino"
    # Calibrated on the folder: 40 pictures, 20 of them held out for the gate.
    assert quantize_calls[0] == 20
    for tower, precision in runtime["towers"].items():
        gate = runtime["quality_gate"][f"{tower}:int8"]
        if precision == "int8":
            assert gate["passed"] and gate["min_cosine"] >= 0.99 and gate["mean_cosine"] >= 0.998
        else:
            assert not gate["passed"]
            assert any(f"{tower} tower: int8 failed" in note for note in runtime["fallbacks"])
    exact = CLIPEmbedder(checkpoint=checkpoints["a"], precision="fp32")
    images = images_in(photos)
    assert cosines(embedder.embed_images(images), exact.embed_images(images)).min() >= 0.99


def test_a_precision_that_fails_the_gate_falls_back_and_says_so(
    checkpoints: dict[str, Path],
    photos: Path,
    tmp_path: Path,
    quantize_calls: list[int],
    caplog: pytest.LogCaptureFixture,
) -> None:
    # No reduced precision keeps every cosine within 1e-9 of fp32.
    strict = QualityGate(min_cosine=1 - 1e-9, mean_cosine=1 - 1e-9)
    load = functools.partial(
        CLIPEmbedder,
        checkpoint=checkpoints["a"],
        engine="openvino",
        precision="int8",
        cache_dir=tmp_path,
        quality_gate=strict,
        allow_fallback=True,
    )
    with caplog.at_level(logging.WARNING, logger="multimodal_rag"):
        embedder = load(calibration=photos)
    assert embedder.precision == "fp32"
    fallbacks = embedder.runtime["fallbacks"]
    assert any(
        "image tower: int8 failed the quality gate" in f and "using bf16" in f for f in fallbacks
    )
    # bf16 is next in the chain: it fails the gate too where the CPU runs it, and is passed
    # over where it does not (OpenVINO runs bf16 only with AVX-512 BF16 or AMX).
    assert any(
        ("image tower: bf16 failed the quality gate" in f and "using fp32" in f)
        or f.startswith("image bf16 is not available here")
        for f in fallbacks
    )
    assert "int8 failed the quality gate" in caplog.text
    assert "precision=fp32" in repr(embedder)
    # The next load reads the gate's results from the cache: the same fallbacks, reported in
    # runtime, without warning again at every load.
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="multimodal_rag"):
        again = load()
    assert again.precision == "fp32" and again.runtime["fallbacks"] == fallbacks
    gate_records = [r for r in caplog.records if "failed the quality gate" in r.getMessage()]
    assert gate_records and all(r.levelno == logging.INFO for r in gate_records)


def test_a_second_load_reuses_the_quantized_model(
    checkpoints: dict[str, Path], photos: Path, tmp_path: Path, quantize_calls: list[int]
) -> None:
    def load(checkpoint: Path) -> CLIPEmbedder:
        return CLIPEmbedder(
            checkpoint=checkpoint,
            engine="openvino",
            precision="int8",
            calibration=photos,
            cache_dir=tmp_path,
            allow_fallback=True,
        )

    first = load(checkpoints["a"])
    assert len(quantize_calls) == 2  # the image and the text tower
    second = load(checkpoints["a"])
    assert len(quantize_calls) == 2  # read from the cache, gate results too
    assert second.runtime["towers"] == first.runtime["towers"]
    images = images_in(photos)[:6]
    np.testing.assert_allclose(second.embed_images(images), first.embed_images(images), atol=1e-5)
    load(checkpoints["b"])  # other weights: quantized afresh
    assert len(quantize_calls) == 4


def test_a_warm_cache_runs_openvino_without_torch(
    checkpoints: dict[str, Path], photos: Path, tmp_path: Path
) -> None:
    """Once a machine has converted, quantized and measured a model, a new process builds its
    towers from the cache alone: torch, clip and nncf are never imported, same vectors."""
    pytest.importorskip("openvino")
    # The tiny random model's text tower fails int8's gate: the fallback it takes is cached too.
    settings = {"engine": "openvino", "precision": "int8", "cache_dir": str(tmp_path), "allow_fallback": True}
    first = CLIPEmbedder(checkpoint=checkpoints["a"], calibration=photos, **settings)
    images = [str(p) for p in images_in(photos)[:6]]
    expected = np.concatenate([first.embed_images(images), first.embed_texts(TEXTS)])
    script = f"""
import json, sys
import numpy as np
from multimodal_rag import CLIPEmbedder
embedder = CLIPEmbedder(checkpoint={str(checkpoints["a"])!r}, **{settings!r})
vectors = np.concatenate([embedder.embed_images({images!r}), embedder.embed_texts({TEXTS!r})])
np.save(sys.argv[1], vectors)
loaded = {{name: name in sys.modules for name in ("torch", "clip", "nncf")}}
print(json.dumps({{"loaded": loaded, "model": embedder.model_name, "dim": embedder.dim,
                  "towers": embedder.runtime["towers"]}}))
"""
    out = tmp_path / "vectors.npy"
    done = subprocess.run(
        [sys.executable, "-c", script, str(out)], capture_output=True, text=True, check=True
    )
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report["loaded"] == {"torch": False, "clip": False, "nncf": False}
    assert (report["model"], report["dim"]) == (first.model_name, first.dim)
    assert report["towers"] == first.runtime["towers"]
    np.testing.assert_allclose(np.load(out), expected, atol=1e-5)


def test_the_torch_model_loads_only_when_the_cache_lacks_something(
    checkpoints: dict[str, Path], photos: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytest.importorskip("openvino")
    from multimodal_rag.embedders import clip as clip_module

    loads: list[Path | None] = []
    real = clip_module.load_model

    def counting(name, checkpoint, *args, **kwargs):
        loads.append(checkpoint)
        return real(name, checkpoint, *args, **kwargs)

    monkeypatch.setattr(clip_module, "load_model", counting)
    weights = tmp_path / "weights.pt"
    shutil.copyfile(checkpoints["a"], weights)
    settings = {"engine": "openvino", "precision": "int8", "cache_dir": tmp_path / "cache", "allow_fallback": True}
    first = CLIPEmbedder(checkpoint=weights, calibration=photos, **settings)
    assert len(loads) == 1
    texts = first.embed_texts(TEXTS)
    assert np.allclose(CLIPEmbedder(checkpoint=weights, **settings).embed_texts(TEXTS), texts, atol=1e-5)
    assert len(loads) == 1  # everything came from the cache
    # A gate result missing: its fp32 reference needs the torch model, which loads then.
    shutil.rmtree(tmp_path / "cache" / "gates")
    again = CLIPEmbedder(checkpoint=weights, **settings)
    assert len(loads) == 2
    assert np.allclose(again.embed_texts(TEXTS), texts, atol=1e-5)
    # Other weights written over the same file are never taken for the known ones.
    shutil.copyfile(checkpoints["b"], weights)
    other = CLIPEmbedder(checkpoint=weights, calibration=photos, **settings)
    assert len(loads) == 3
    assert other.fingerprint != first.fingerprint
    assert not np.allclose(other.embed_texts(TEXTS), texts, atol=1e-3)


def test_a_known_torchscript_file_is_still_refused_without_consent(
    checkpoints: dict[str, Path], tmp_path: Path
) -> None:
    """What the engine cache records of a file keeps the loader's rule: a TorchScript archive
    that was loaded once with allow_torchscript=True is not loaded later without it."""
    pytest.importorskip("openvino")
    from multimodal_rag.embedders.clip_loading import is_torchscript

    scripted = make_tiny_clip_checkpoint(tmp_path / "scripted.pt", seed=0, jit=True)
    assert is_torchscript(scripted)
    settings = {"engine": "openvino", "precision": "fp32", "cache_dir": tmp_path / "cache"}
    trusted = CLIPEmbedder(checkpoint=scripted, allow_torchscript=True, **settings)
    assert trusted.embed_texts(["ok"]).shape == (1, 64)
    with pytest.raises(ModelLoadError, match="TorchScript.*allow_torchscript=True"):
        CLIPEmbedder(checkpoint=scripted, **settings)


def test_int8_calibrates_on_the_first_images_ingested(
    checkpoints: dict[str, Path], photos: Path, tmp_path: Path, quantize_calls: list[int]
) -> None:
    embedder = CLIPEmbedder(
        checkpoint=checkpoints["a"],
        engine="openvino",
        precision="int8",
        cache_dir=tmp_path,
        allow_fallback=True,
    )
    assert embedder.precision == "pending" and quantize_calls == []
    with MultimodalRAG(embedder) as rag:
        result = rag.add(images_in(photos), progress=False)
        assert len(result.added) == 40
        assert embedder.precision != "pending"
        # The image tower's sample is the 40 ingested pictures less the 20 held out.
        assert quantize_calls[0] == 20
        best = rag.search(image=images_in(photos)[5], k=1)[0]
        assert best.id == result.ids[5]


# -- auto ----------------------------------------------------------------------


def fixed_speed(runner, example) -> float:
    """Speeds that stand in for timing: the choice is tested, not this machine's mood (timings
    of a tiny model on a shared machine can come out in any order). Image and text towers
    prefer different precisions, so each tower's choice is its own."""
    image = example.ndim == 4
    return {"fp32": 100.0, "bf16": 300.0, "int8": 200.0}[runner.precision] if image else {
        "fp32": 300.0, "bf16": 100.0, "int8": 50.0}[runner.precision]


def test_auto_measures_once_per_machine_and_reuses_the_decision(
    checkpoints: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    timed: list[str] = []

    def counting(self, runner, example):
        timed.append(runner.precision)
        return fixed_speed(runner, example)

    monkeypatch.setattr(engines.EngineBuilder, "_items_per_second", counting)
    first = CLIPEmbedder(checkpoint=checkpoints["a"], engine="torch", cache_dir=tmp_path)
    assert sorted(set(timed)) == ["bf16", "fp32"]  # torch on a CPU: both timed, never guessed
    measured = first.runtime["items_per_s"]
    assert set(measured) == {"image:fp32", "image:bf16", "text:fp32", "text:bf16"}
    chosen = first.runtime["towers"]
    assert chosen["image"] == max(("fp32", "bf16"), key=lambda p: measured[f"image:{p}"])
    timed.clear()
    second = CLIPEmbedder(checkpoint=checkpoints["a"], engine="torch", cache_dir=tmp_path)
    assert timed == [] and second.runtime["towers"] == chosen
    assert second.runtime["items_per_s"] == measured  # the earlier measurement, reported
    # New tower code (a release that changes what the towers run) measures again.
    monkeypatch.setattr(clip_module, "_TOWERS_VERSION", clip_module._TOWERS_VERSION + 1)
    CLIPEmbedder(checkpoint=checkpoints["a"], engine="torch", cache_dir=tmp_path)
    assert timed
    timed.clear()
    # Another cache (another machine, say) measures for itself.
    CLIPEmbedder(checkpoint=checkpoints["a"], engine="torch", cache_dir=tmp_path / "elsewhere")
    assert timed


def test_openvino_auto_picks_among_passing_candidates(
    checkpoints: dict[str, Path], photos: Path, tmp_path: Path, quantize_calls: list[int],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(engines.EngineBuilder, "_items_per_second", lambda self, runner, example: fixed_speed(runner, example))
    first = CLIPEmbedder(
        checkpoint=checkpoints["a"],
        engine="openvino",
        calibration=photos,
        cache_dir=tmp_path,
    )
    runtime = first.runtime
    assert runtime["requested"] == "auto"
    for tower, precision in runtime["towers"].items():
        candidates = {
            k.split(":")[1]: v for k, v in runtime["items_per_s"].items() if k.startswith(tower)
        }
        assert precision == max(candidates, key=candidates.__getitem__)
        assert "fp32" in candidates
    again = CLIPEmbedder(checkpoint=checkpoints["a"], engine="openvino", cache_dir=tmp_path)
    assert again.runtime["towers"] == runtime["towers"] and len(quantize_calls) == 2


# -- identity ------------------------------------------------------------------


def test_fingerprint_is_the_same_in_every_precision(
    checkpoints: dict[str, Path],
    photos: Path,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    fp32 = CLIPEmbedder(checkpoint=checkpoints["a"], precision="fp32")
    bf16 = CLIPEmbedder(checkpoint=checkpoints["a"], precision="bf16", allow_fallback=True)
    assert bf16.fingerprint == fp32.fingerprint
    kb = tmp_path / "kb"
    with MultimodalRAG.create(kb, embedder=fp32) as rag:
        ids = rag.add(images_in(photos)[:10], progress=False).ids
    # The manifest records what ran, apart from the config that rebuilds the embedder.
    entry = read_manifest(kb).embedder
    assert entry.runtime["engine"] == fp32.runtime["engine"] and entry.runtime["precision"] == "fp32"
    assert entry.runtime["engine_choice"]["requested"] == "auto"  # the default, and its choice
    assert "engine" not in entry.config
    print_info(kb, read_manifest(kb), size_bytes=0)
    assert "runs as" in capsys.readouterr().out
    try:
        import nncf  # noqa: F401
        import openvino  # noqa: F401
    except ImportError:
        return  # without the extra, the torch precisions alone
    int8 = CLIPEmbedder(
        checkpoint=checkpoints["a"],
        engine="openvino",
        precision="int8",
        calibration=photos,
        cache_dir=tmp_path / "cache",
        allow_fallback=True,
    )
    assert int8.fingerprint == fp32.fingerprint
    # A knowledge base built in fp32 is searched in int8.
    reopened = MultimodalRAG.open(kb, embedder=int8, read_only=True)
    try:
        assert reopened.search(image=images_in(photos)[3], k=1)[0].id == ids[3]
    finally:
        reopened.close()


# -- without the extra ---------------------------------------------------------


def test_without_openvino_the_error_names_the_extra_and_torch_still_works(
    checkpoints: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    from multimodal_rag import _extras

    real = importlib.import_module

    def no_openvino(name: str, *args, **kwargs):
        if name.split(".")[0] in ("openvino", "nncf"):
            raise ImportError(f"No module named {name!r}")
        return real(name, *args, **kwargs)

    monkeypatch.setattr(_extras.importlib, "import_module", no_openvino)
    with pytest.raises(MissingDependencyError, match=r"pip install 'multimodal-rag\[openvino\]'"):
        CLIPEmbedder(checkpoint=checkpoints["a"], engine="openvino")
    torch_only = CLIPEmbedder(checkpoint=checkpoints["a"])
    assert torch_only.engine == "torch" and torch_only.runtime["engine"] == "torch"
    # The default engine is "auto": it fell back, and says why.
    choice = torch_only.runtime["engine_choice"]
    assert choice["requested"] == "auto" and choice["chose"] == "torch"
    assert "multimodal-rag[openvino]" in choice["reason"]
    assert "engine" not in torch_only.config()  # another machine decides for itself
    assert torch_only.embed_texts(["still works"]).shape == (1, 64)


def test_impossible_combinations_are_refused(checkpoints: dict[str, Path]) -> None:
    with pytest.raises(InvalidInputError, match="int8.*openvino"):
        CLIPEmbedder(checkpoint=checkpoints["a"], precision="int8")
    with pytest.raises(InvalidInputError, match="engine"):
        CLIPEmbedder(checkpoint=checkpoints["a"], engine="onnx")


# -- parts ---------------------------------------------------------------------


def test_held_out_inputs_are_never_calibration_inputs() -> None:
    for count in (2, 9, 40, 64, 65, 332, 1000):
        sample = np.arange(count)[:, None]
        calibration, held_out = split_sample(sample, calibration_size=300)
        assert len(held_out) >= 1 and len(calibration) <= 300
        assert not set(calibration[:, 0]) & set(held_out[:, 0])
    calibration, held_out = split_sample(np.arange(332)[:, None], calibration_size=300)
    assert len(calibration) == 300 and len(held_out) == 32


def test_a_cache_entry_published_twice_keeps_one_whole_copy(tmp_path: Path) -> None:
    cache = EngineCache(tmp_path)
    key = {"weights": "abc", "stage": "int8"}
    final = cache.entry("models", key)

    def write(text: str):
        return lambda folder: (folder / "model.bin").write_text(text)

    cache.publish_dir(final, key, write("first"))
    cache.publish_dir(final, key, write("second"))  # a racing writer: the first copy stays
    assert (final / "model.bin").read_text() == "first"
    assert [p.name for p in final.parent.iterdir()] == [final.name]  # no staging left
    cache.write_json("decisions", key, {"towers": {"image": "int8"}})
    assert cache.read_json("decisions", key) == {"towers": {"image": "int8"}}
    assert cache.read_json("decisions", {**key, "stage": "fp32"}) is None
