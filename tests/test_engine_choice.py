"""``engine="auto"`` (the default), and the first run on OpenVINO: torch ingests at once while
the OpenVINO engine is prepared in a background process, then used."""

from __future__ import annotations

import importlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from multimodal_rag import CLIPEmbedder, MultimodalRAG
from multimodal_rag.embedders.engine_choice import choose_engine
from multimodal_rag.embedders.preparation import Reservoir, preparation_mode
from multimodal_rag.errors import InvalidInputError
from tiny_clip import make_tiny_clip_checkpoint


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tiny_clip_checkpoint(tmp_path_factory.mktemp("auto") / "a.pt", seed=0)


@pytest.fixture(scope="module")
def photos(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("photos")
    rng = np.random.default_rng(5)
    for i in range(24):
        pixels = rng.integers(0, 256, (36, 44 + i, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(folder / f"{i:02d}.png")
    return folder


def test_auto_means_openvino_where_installed_and_torch_on_cuda() -> None:
    assert choose_engine("auto", None).engine == "openvino"
    assert choose_engine("auto", "cpu").engine == "openvino"
    cuda = choose_engine("auto", "cuda:0")
    assert cuda.engine == "torch" and "cuda" in cuda.reason
    assert choose_engine("torch", None).reason == "asked for"


def test_without_openvino_auto_falls_back_to_torch_and_records_why(
    checkpoint: Path, photos: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from multimodal_rag import _extras

    real = importlib.import_module

    def no_openvino(name: str, *args: object, **kwargs: object) -> object:
        if name.split(".")[0] in ("openvino", "nncf"):
            raise ImportError(f"No module named {name!r}")
        return real(name, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(_extras.importlib, "import_module", no_openvino)
    embedder = CLIPEmbedder(checkpoint=checkpoint, cache_dir=tmp_path / "cache")
    with MultimodalRAG.create(tmp_path / "kb", embedder=embedder) as rag:
        assert len(rag.add_directory(photos, progress=False).added) == 24
    runtime = embedder.runtime
    assert runtime["engine"] == "torch"
    assert runtime["engine_choice"]["chose"] == "torch"
    assert "openvino" in runtime["engine_choice"]["reason"]


def test_a_bad_preparation_setting_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MULTIMODAL_RAG_ENGINE_PREPARATION", "later")
    with pytest.raises(InvalidInputError, match="MULTIMODAL_RAG_ENGINE_PREPARATION.*'later'"):
        preparation_mode()


def test_the_reservoir_samples_the_whole_stream_not_its_head() -> None:
    reservoir = Reservoir(10)
    for i in range(1000):
        reservoir.offer(np.full(2, i))
    sample = reservoir.sample()
    assert sample is not None and sample.shape == (10, 2)
    assert len(set(sample[:, 0].tolist())) == 10
    assert sample[:, 0].max() >= 500  # a head-only sample would stop at 9


def test_a_first_run_without_preparation_stays_on_torch(
    checkpoint: Path, photos: Path, tmp_path: Path
) -> None:
    # The session's setting: "off" (no background process).
    embedder = CLIPEmbedder(checkpoint=checkpoint, cache_dir=tmp_path / "cache")
    assert embedder.engine == "openvino"
    vectors = embedder.embed_images(sorted(photos.glob("*.png")))
    assert vectors.shape == (24, 64)
    assert embedder.runtime["engine"] == "torch"
    assert not (tmp_path / "cache" / "preparing").exists()


@pytest.mark.slow
def test_the_first_run_ingests_on_torch_and_the_next_load_runs_openvino(
    checkpoint: Path, photos: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MULTIMODAL_RAG_ENGINE_PREPARATION", "background")
    cache = tmp_path / "cache"
    first = CLIPEmbedder(checkpoint=checkpoint, cache_dir=cache)
    paths = sorted(photos.glob("*.png"))
    with MultimodalRAG.create(tmp_path / "kb", embedder=first) as rag:
        assert len(rag.add_directory(photos, progress=False).added) == 24
        # The ingest did not wait: torch ran it, and the preparation runs on its own.
        assert first.runtime["engine"] == "torch"
        assert "prepared in the background" in first.runtime["engine_choice"]["first_run"]
        preparation = first._preparation
        early = first.embed_images(paths[:4])
        assert preparation is not None and preparation.wait(timeout=300) is True
        first.embed_texts(["a photo"])
        # Once it has finished, the same embedder switches at its next call.
        assert first.runtime["engine"] == "openvino"
    # A new load on this machine compiles what the preparation cached, without torch's model.
    again = CLIPEmbedder(checkpoint=checkpoint, cache_dir=cache)
    assert again.runtime["engine"] == "openvino"
    assert again.runtime["decided"]["image"] == "auto, cached decision"
    late = again.embed_images(paths[:4])
    # Vectors from the two engines agree within the quality gate (see preparation's docstring).
    assert float(np.min(np.sum(early * late, axis=1))) > 0.98
    assert not list(cache.glob("preparing/*/pid"))  # the process cleaned up after itself


def _last_pid() -> int:
    import subprocess
    import sys

    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


def test_a_preparation_that_failed_is_not_started_again(
    checkpoint: Path, photos: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import subprocess
    import sys

    from multimodal_rag.embedders.preparation import BackgroundPreparation

    monkeypatch.setenv("MULTIMODAL_RAG_ENGINE_PREPARATION", "background")
    embedder = CLIPEmbedder(checkpoint=checkpoint, cache_dir=tmp_path / "cache")
    preparation = BackgroundPreparation(embedder._engine_cache, embedder._identity)
    assert preparation.failure() is None
    # A preparation that raised: its process says why in its folder, and exits with an error.
    preparation.folder.mkdir(parents=True)
    job = '{"kind": "no-such-embedder", "config": {}, "cache_dir": "."}'
    (preparation.folder / "job.json").write_text(job)
    run = subprocess.run(
        [sys.executable, "-m", "multimodal_rag.embedders.preparation", str(preparation.folder)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert run.returncode != 0
    assert "no-such-embedder" in (preparation.failure() or "")
    assert not (preparation.folder / "pid").exists()

    vectors = embedder.embed_images(sorted(photos.glob("*.png")))
    assert vectors.shape == (24, 64)
    choice = embedder.runtime["engine_choice"]
    assert embedder.runtime["engine"] == "torch" and embedder._preparation is None
    assert "failed earlier" in choice["first_run"] and "no-such-embedder" in choice["first_run"]
    assert not (preparation.folder / "pid").exists()  # no process was started


def test_a_preparation_killed_midway_counts_as_failed(tmp_path: Path) -> None:
    from multimodal_rag.embedders.engine_cache import EngineCache
    from multimodal_rag.embedders.preparation import BackgroundPreparation

    preparation = BackgroundPreparation(EngineCache(tmp_path), {"model": "m"})
    preparation.folder.mkdir(parents=True)
    (preparation.folder / "pid").write_text(str(_last_pid()))  # a process that has ended
    assert "ended before finishing" in (preparation.failure() or "")


def test_where_the_cpu_has_bf16_the_first_run_times_it_against_fp32(
    checkpoint: Path, photos: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The flags say bf16 may pay; the first run measures whether it does, and never assumes.
    monkeypatch.setattr("multimodal_rag.embedders.towers.native_bf16", lambda: True)
    embedder = CLIPEmbedder(checkpoint=checkpoint, cache_dir=tmp_path / "cache")
    embedder.embed_images(sorted(photos.glob("*.png"))[:4])
    runtime = embedder.runtime
    assert runtime["engine"] == "torch"
    assert set(runtime["decided"].values()) == {"auto, measured now"}
    assert {key.split(":")[-1] for key in runtime["items_per_s"]} >= {"fp32", "bf16"}
