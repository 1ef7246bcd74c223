"""The engine cache trusts nothing on disk: every entry is checked by content when it is read.

A cached OpenVINO model (IR) or compiled blob that was altered since it was written is
removed and made again, and the towers give the same vectors as before; so is a JSON entry
(a gate's result, an ``auto`` decision). Modification times play no part. Processes that
load the same model at once (a Ray ingest's workers) never remove what another is writing.
"""

from __future__ import annotations

import json
import logging
import multiprocessing
import shutil
import threading
from pathlib import Path

import numpy as np
import pytest

from multimodal_rag import CLIPEmbedder
from multimodal_rag.embedders import openvino_engine
from multimodal_rag.embedders.engine_cache import EngineCache
from multimodal_rag.embedders.towers import probe_pixels
from tiny_clip import make_tiny_clip_checkpoint

TEXTS = ["a red square", "two friends at the beach", "an old stamp", ""]


def _flip_bytes(path: Path, every: int = 97) -> None:
    """Alter a file in place without changing its size (its time changes, as any write's)."""
    data = bytearray(path.read_bytes())
    for position in range(len(data) // 3, len(data), every):
        data[position] ^= 0x5A
    path.write_bytes(bytes(data))


def test_an_altered_folder_entry_is_removed_and_reported(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    cache = EngineCache(tmp_path)
    key = {"weights_sha256": "ab", "tower": "text"}
    final = cache.entry("models", key)

    def write(folder: Path) -> None:
        (folder / "model.bin").write_bytes(b"\x00" * 64)

    cache.publish_dir(final, key, write)
    assert set(EngineCache(tmp_path).verified_dir(final, key) or {}) == {"model.bin"}
    # Altered (same size), then a file added: each makes the entry count as absent.
    for alter in (lambda: _flip_bytes(final / "model.bin", 5), lambda: (final / "x").touch()):
        cache.publish_dir(final, key, write)
        alter()
        with caplog.at_level(logging.WARNING, logger="multimodal_rag"):
            assert EngineCache(tmp_path).verified_dir(final, key) is None
        assert not final.exists()
        assert "removed, it is made again" in caplog.text
        caplog.clear()
    # An entry written before contents were recorded is made again too.
    cache.publish_dir(final, key, write)
    (final / "contents.json").unlink()
    assert EngineCache(tmp_path).verified_dir(final, key) is None


def test_an_altered_json_entry_is_ignored(tmp_path: Path) -> None:
    cache = EngineCache(tmp_path)
    key = {"weights_sha256": "ab", "engine": "openvino"}
    cache.write_json("gates", key, {"min_cosine": 0.9991, "mean_cosine": 0.9995, "count": 16})
    assert cache.read_json("gates", key) == {
        "min_cosine": 0.9991,
        "mean_cosine": 0.9995,
        "count": 16,
    }
    path = cache.entry("gates", key).with_suffix(".json")
    entry = json.loads(path.read_text())
    entry["value"]["min_cosine"] = 0.9999  # a failed gate turned into a pass
    path.write_text(json.dumps(entry))
    assert cache.read_json("gates", key) is None


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tiny_clip_checkpoint(tmp_path_factory.mktemp("engine-cache") / "clip.pt")


@pytest.mark.parametrize("altered", ["model.bin", "model.xml", "compiled blob"])
def test_an_altered_cached_model_is_converted_again_with_the_same_vectors(
    checkpoint: Path,
    tmp_path: Path,
    altered: str,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    pytest.importorskip("openvino")
    pytest.importorskip("nncf")
    settings = {"engine": "openvino", "precision": "fp32", "cache_dir": tmp_path}

    def vectors(embedder: CLIPEmbedder) -> np.ndarray:
        pixels = probe_pixels(embedder.preprocess, 6)
        return np.concatenate([embedder.embed_pixels(pixels), embedder.embed_texts(TEXTS)])

    expected = vectors(CLIPEmbedder(checkpoint=checkpoint, **settings))
    irs = sorted((tmp_path / "openvino").glob("*-fp32/*/model.xml"))
    blobs = sorted((tmp_path / "openvino-compiled").rglob("*.blob"))
    assert len(irs) == 2 and blobs  # the image and the text tower, each compiled once
    if altered == "compiled blob":
        for blob in blobs:
            _flip_bytes(blob)
    else:
        for ir in irs:
            if altered == "model.xml":
                ir.write_text(ir.read_text().replace("<layers>", "<layers> ", 1))
            else:
                _flip_bytes(ir.with_name("model.bin"))

    converted: list[str] = []
    real = openvino_engine.convert_module
    monkeypatch.setattr(
        openvino_engine,
        "convert_module",
        lambda module, example: converted.append(str(example.dtype)) or real(module, example),
    )
    with caplog.at_level(logging.WARNING, logger="multimodal_rag"):
        again = CLIPEmbedder(checkpoint=checkpoint, **settings)
    np.testing.assert_allclose(vectors(again), expected, atol=1e-5)
    assert "removed, it is made again" in caplog.text
    if altered != "compiled blob":
        assert sorted(converted) == ["float32", "int64"]  # both towers converted again
    # What was made again is checked like the first: a third load reuses it, unlogged.
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="multimodal_rag"):
        third = CLIPEmbedder(checkpoint=checkpoint, **settings)
    np.testing.assert_allclose(vectors(third), expected, atol=1e-5)
    assert "removed" not in caplog.text


def test_a_blob_folder_being_filled_is_left_alone_not_removed(
    checkpoint: Path, tmp_path: Path
) -> None:
    """A process compiling while another still fills the blob folder compiles on its own,
    without waiting and without taking the folder for a cut-short one and removing it under
    the writer, which then records its blob as usual."""
    pytest.importorskip("openvino")
    # Converted once in this process; its compiled blob lands in ``cache``.
    CLIPEmbedder(checkpoint=checkpoint, engine="openvino", precision="fp32", cache_dir=tmp_path)
    [model] = sorted((tmp_path / "openvino").glob("image-fp32/*/model.xml"))
    cache = EngineCache(tmp_path / "other-blobs")
    openvino_engine.compile_model(model, "CPU", "fp32", cache_dir=cache.root)
    [blobs] = [p for p in (cache.root / "blobs").iterdir() if p.is_dir()]
    shutil.rmtree(blobs)

    writer_holds = threading.Event()
    release = threading.Event()

    def writer() -> None:  # what another process does while OpenVINO writes its blob
        with EngineCache(cache.root).exclusive(blobs) as held:
            assert held
            blobs.mkdir()
            (blobs / "half-written.blob").write_bytes(b"\0" * 64)
            writer_holds.set()
            release.wait(60)
            EngineCache(cache.root).record_files(blobs)

    thread = threading.Thread(target=writer)
    thread.start()
    try:
        assert writer_holds.wait(30)
        compiled = openvino_engine.compile_model(model, "CPU", "fp32", cache_dir=cache.root)
        assert thread.is_alive()  # compiled while the writer still held the folder
        assert (blobs / "half-written.blob").is_file()  # whose file is still there
        assert not (blobs / "contents.json").exists()
    finally:
        release.set()
        thread.join(30)
    assert compiled is not None and (blobs / "contents.json").is_file()


def _load_in_a_process(checkpoint: Path, cache: Path, start: object) -> list[list[float]] | str:
    start.wait()  # type: ignore[attr-defined]
    try:
        embedder = CLIPEmbedder(
            checkpoint=checkpoint, engine="openvino", precision="fp32", cache_dir=cache
        )
    except Exception as exc:  # reported to the test, which names it
        return repr(exc)
    return embedder.embed_texts(TEXTS).tolist()  # type: ignore[no-any-return]


@pytest.mark.slow
def test_processes_loading_one_model_at_once_all_get_it(checkpoint: Path, tmp_path: Path) -> None:
    """Four processes start on an empty cache together (a Ray ingest's workers do): each
    gets the engine and the same vectors, and one copy of each model is kept."""
    pytest.importorskip("openvino")
    context = multiprocessing.get_context("spawn")
    with context.Manager() as manager, context.Pool(4) as pool:
        start = manager.Barrier(4)
        results = pool.starmap(_load_in_a_process, [(checkpoint, tmp_path, start)] * 4)
    failures = [r for r in results if isinstance(r, str)]
    assert not failures, failures
    for vectors in results[1:]:
        np.testing.assert_allclose(vectors, results[0], atol=1e-6)
    assert len(list((tmp_path / "openvino").glob("*-fp32/*/model.xml"))) == 2
    assert not list((tmp_path / "unavailable").glob("*.json"))  # nothing was taken for missing
