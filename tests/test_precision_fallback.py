"""A precision the caller asked for is what runs, or an error: never a silent fallback.

A quality gate no precision can pass (a cosine above 1) makes every reduced precision fail
it, on a tiny random CLIP (tests/tiny_clip.py). Asked for, the precision is then a
``PrecisionError`` naming it, the gate's figures and how to allow a fallback; with
``allow_fallback`` it falls back and ``runtime`` says so; ``auto`` chooses among the
precisions that pass, and reports the ones that did not.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
from click.testing import CliRunner

from helpers import solid, varied_pictures
from multimodal_rag import CLIPEmbedder, MultimodalRAG
from multimodal_rag._kb.manifest import MANIFEST_FILE
from multimodal_rag.embedders import towers
from multimodal_rag.embedders.precision import QualityGate
from multimodal_rag.errors import ModelLoadError, PrecisionError
from tiny_clip import make_tiny_clip_checkpoint

pytest.importorskip("torch")

#: No embedding is closer to fp32 than a cosine of 1: every reduced precision fails.
IMPOSSIBLE = QualityGate(min_cosine=1.5, mean_cosine=1.5)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tiny_clip_checkpoint(tmp_path_factory.mktemp("fallback") / "tiny.pt")


def load(checkpoint: Path, cache: Path, **options: object) -> CLIPEmbedder:
    # On torch, which builds at once: the gate's rules are the same on every engine, and
    # OpenVINO's own cases (int8 included) are in test_clip_engines.py.
    return CLIPEmbedder(
        checkpoint=checkpoint,
        device="cpu",
        engine="torch",
        cache_dir=cache,
        quality_gate=IMPOSSIBLE,
        **options,
    )


def test_a_precision_asked_for_that_fails_the_gate_is_an_error(
    checkpoint: Path, tmp_path: Path
) -> None:
    # Measured now, then read from the engine cache: an error both times.
    for _ in range(2):
        with pytest.raises(PrecisionError) as caught:
            load(checkpoint, tmp_path, precision="bf16")
        error = caught.value
        message = str(error)
        assert isinstance(error, ModelLoadError)
        assert error.precision == "bf16" and error.tower == "image"
        assert error.gate is not None and error.gate["passed"] is False
        assert f"min cosine {error.gate['min_cosine']:.6f}" in message
        assert "needs min >= 1.5, mean >= 1.5" in message
        assert "precision 'bf16' was asked for" in message
        assert "allow_fallback=True" in message and "fp32" in message


def test_with_allow_fallback_it_falls_back_and_runtime_says_so(
    checkpoint: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="multimodal_rag"):
        embedder = load(checkpoint, tmp_path, precision="bf16", allow_fallback=True)
    runtime = embedder.runtime
    assert runtime["requested"] == "bf16" and runtime["precision"] == "fp32"
    assert runtime["decided"] == {"image": "fell back from bf16", "text": "fell back from bf16"}
    for tower in ("image", "text"):
        assert any(
            f"{tower} tower: bf16 failed the quality gate" in note and "using fp32" in note
            for note in runtime["fallbacks"]
        )
        assert runtime["quality_gate"][f"{tower}:bf16"]["passed"] is False
    assert "bf16 failed the quality gate" in caplog.text
    assert embedder.config()["allow_fallback"] is True
    pictures = varied_pictures(2)
    assert embedder.embed_images(pictures).shape == (len(pictures), embedder.dim)


def test_auto_falls_back_and_reports_it(
    checkpoint: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger="multimodal_rag"):
        embedder = load(checkpoint, tmp_path)  # precision="auto", the default
    runtime = embedder.runtime
    assert runtime["requested"] == "auto" and runtime["towers"] == {"image": "fp32", "text": "fp32"}
    for tower in ("image", "text"):
        assert any(
            f"{tower} tower: bf16 failed the quality gate" in note for note in runtime["fallbacks"]
        )
    assert "bf16 failed the quality gate" in caplog.text  # on stderr, where logging goes


def test_the_command_line_refuses_it_unless_allowed(
    checkpoint: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from multimodal_rag.cli import cli

    monkeypatch.setattr(towers, "QualityGate", lambda: IMPOSSIBLE)
    monkeypatch.setenv("MULTIMODAL_RAG_CACHE_DIR", str(tmp_path / "cache"))
    pictures = tmp_path / "pictures"
    pictures.mkdir()
    solid("red", (32, 32)).save(pictures / "red.png")
    index = ["index", str(pictures), "--kb", str(tmp_path / "kb"), "--checkpoint", str(checkpoint)]
    index += ["--engine", "torch"]
    refused = CliRunner().invoke(cli, [*index, "--precision", "bf16"])
    assert refused.exit_code == 1
    assert "error: precision 'bf16' was asked for" in refused.stderr
    assert "Give --allow-fallback" in refused.stderr and "--precision auto" in refused.stderr
    assert not (tmp_path / "kb").exists()  # nothing was created
    allowed = CliRunner().invoke(cli, [*index, "--precision", "bf16", "--allow-fallback", "--json"])
    assert allowed.exit_code == 0, allowed.stderr
    info = json.loads(CliRunner().invoke(cli, ["info", str(tmp_path / "kb"), "--json"]).stdout)
    assert info["embedder"]["runtime"]["decided"]["image"] == "fell back from bf16"
    # Recorded as what ran; the manifest keeps none of how it ran (allow_fallback included).
    assert "allow_fallback" not in info["embedder"]["config"]


def test_a_knowledge_base_that_recorded_a_fallback_keeps_opening(
    checkpoint: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    kb = tmp_path / "kb"
    embedder = load(checkpoint, tmp_path / "cache", precision="bf16", allow_fallback=True)
    with MultimodalRAG.create(kb, embedder=embedder) as rag:
        rag.add(varied_pictures(3), progress=False)
    # As earlier versions wrote it: the precision asked for in the config, and what ran.
    manifest = json.loads((kb / MANIFEST_FILE).read_text())
    manifest["embedder"]["config"]["precision"] = "bf16"
    assert manifest["embedder"]["runtime"]["precision"] == "fp32"
    (kb / MANIFEST_FILE).write_text(json.dumps(manifest))
    # Opened from its manifest, it asks for what the caller asks (auto): it falls back freely.
    monkeypatch.setattr(towers, "QualityGate", lambda: IMPOSSIBLE)
    with MultimodalRAG.open(kb, read_only=True) as rag:
        assert len(rag.search(text="a red square", k=2)) == 2
        assert rag.embedder.runtime["requested"] == "auto"
        assert rag.embedder.runtime["precision"] == "fp32"
