"""The command line's OCR: ``index --ocr``, ``ocr``, ``edit-text``, and what ``info``, ``search``,
``verify`` and ``repair`` show of the text read in images. Run in a subprocess, as a user runs it."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

from helpers import ColorEmbedder, solid
from multimodal_rag import MultimodalRAG
from ocr_helpers import TEXTS, ColourTextReader
from test_cli import COLOR, ok, run_cli

ALLOW = (*COLOR, "--allow-module", "ocr_helpers")
RED, BLUE, GREEN = (255, 0, 0), (0, 0, 255), (0, 255, 0)


def _ocr_extra_installed() -> bool:
    return all(
        importlib.util.find_spec(name) is not None for name in ("rapidocr", "onnxruntime")
    ) and (importlib.util.find_spec("multimodal_rag.ocr.rapid") is not None)


@pytest.fixture
def kb(tmp_path: Path) -> Path:
    """A knowledge base that reads text with the test reader; blue's text was never read."""
    rag = MultimodalRAG.create(tmp_path / "kb", embedder=ColorEmbedder())
    rag.add(
        [solid(RED), solid(GREEN)],
        ids=["red0000", "green000"],
        ocr=ColourTextReader(),
        progress=False,
    )
    rag.add([solid(BLUE)], ids=["blue0000"], ocr=False, progress=False)
    rag.save()
    rag.close()
    return tmp_path / "kb"


def test_index_ocr_turns_reading_on_and_reports_what_it_could_not_read(tmp_path: Path) -> None:
    photos = tmp_path / "photos"
    photos.mkdir()
    for name, colour in (("red", RED), ("blue", BLUE)):
        solid(colour).save(photos / f"{name}.png")
    kb = tmp_path / "kb"
    args = ("index", photos, "--kb", kb, "--embedder", "helpers:ColorEmbedder", "--ocr", "--json")
    report = json.loads(ok(run_cli(*COLOR, *args)).stdout)
    assert len(report["added"]) == 2
    if _ocr_extra_installed():
        assert report["unread"] == []
    else:  # the images are indexed all the same, each reported with what to install
        assert sorted(Path(u["source"]).name for u in report["unread"]) == ["blue.png", "red.png"]
        assert all("pip install 'multimodal-rag[ocr]'" in u["reason"] for u in report["unread"])
    manifest = json.loads((kb / "manifest.json").read_text())
    assert manifest["text_reader"]["kind"] == "rapidocr"
    info = ok(run_cli(*COLOR, "info", kb)).stdout
    assert "ocr             rapidocr" in info
    # Indexing again without the flag keeps reading (the manifest says so) and reports it.
    solid(GREEN).save(photos / "green.png")
    again = ok(run_cli(*COLOR, "index", photos, "--kb", kb)).stdout
    assert "text not read:" in again


def test_ocr_reads_what_is_missing_and_info_counts_it(kb: Path) -> None:
    before = ok(run_cli(*ALLOW, "info", kb)).stdout
    assert (
        "ocr_helpers:ColourTextReader" in before and "read in 2 of 3 images, 1 with text" in before
    )
    verify = run_cli(*ALLOW, "verify", kb, "--json")
    assert verify.returncode == 1
    assert [(p["kind"], p["id"]) for p in json.loads(verify.stdout)["problems"]] == [
        ("text-not-read", "blue0000")
    ]

    result = json.loads(ok(run_cli(*ALLOW, "ocr", kb, "--json")).stdout)
    assert result["read"] == ["blue0000"] and result["skipped"] == [] and result["with_text"] == 2
    assert json.loads(ok(run_cli(*ALLOW, "ocr", kb, "--json")).stdout)["read"] == []  # nothing left
    info = json.loads(ok(run_cli(*ALLOW, "info", kb, "--json")).stdout)
    assert info["text_reader"] == {
        "kind": "ocr_helpers:ColourTextReader",
        "config": {"confidence": 0.9},
    }
    assert info["counts"] == {"vectors": 3, "descriptions": 3, "text_read": 3, "with_text": 2}
    ok(run_cli(*ALLOW, "verify", kb))

    hits = json.loads(
        ok(run_cli(*ALLOW, "search", kb, "--text", "LX-40", "--mode", "lexical", "--json")).stdout
    )["hits"]
    assert [h["id"] for h in hits] == ["blue0000"] and hits[0]["ocr"]["lines"][0]["text"] == TEXTS[
        BLUE
    ]
    shown = ok(run_cli(*ALLOW, "search", kb, "--text", "XR-2000", "--mode", "lexical")).stdout
    assert "text in the image: XR-2000 battery / 12V 7Ah" in shown
    assert "matched: XR-2000" in shown and hits[0]["matched"] == ["LX-40"]


def test_search_reads_the_text_in_the_query_photo_and_says_what_matched(kb: Path, tmp_path: Path) -> None:
    photo = tmp_path / "query.png"
    solid(RED).save(photo)  # the test reader reads TEXTS[RED] in it
    hits = json.loads(ok(run_cli(*ALLOW, "search", kb, "--image", photo, "--json")).stdout)["hits"]
    assert hits[0]["id"] == "red0000" and set(hits[0]["signals"]) == {"vector", "lexical", "identifier"}
    assert set(hits[0]["matched"]) == {"XR-2000", "battery", "12V", "7Ah"}
    shown = ok(run_cli(*ALLOW, "search", kb, "--image", photo)).stdout
    assert "matched: " in shown and "fused score" in shown
    plain = json.loads(ok(run_cli(*ALLOW, "search", kb, "--image", photo, "--no-query-ocr", "--json")).stdout)
    assert all(set(h["signals"]) == {"vector"} and h["matched"] == [] for h in plain["hits"])


def test_edit_text_sets_and_removes_and_repair_reads_it_again(kb: Path) -> None:
    record = json.loads(ok(run_cli(*ALLOW, "edit-text", kb, "red0", "XR-9 lamp", "--json")).stdout)
    assert record["id"] == "red0000" and [line["text"] for line in record["ocr"]["lines"]] == [
        "XR-9 lamp"
    ]
    hits = json.loads(
        ok(run_cli(*ALLOW, "search", kb, "--text", "XR-9", "--mode", "lexical", "--json")).stdout
    )["hits"]
    assert [h["id"] for h in hits] == ["red0000"]
    removed = json.loads(
        ok(run_cli(*ALLOW, "edit-text", kb, "red0000", "--remove", "--json")).stdout
    )
    assert "ocr" not in removed
    usage = run_cli(*ALLOW, "edit-text", kb, "red0000")
    assert usage.returncode == 2 and "give TEXT or --remove" in usage.stderr
    repaired = json.loads(ok(run_cli(*ALLOW, "repair", kb, "--json")).stdout)
    assert sorted(repaired["text_read"]) == ["blue0000", "red0000"] and repaired["ok"] is True
    rag = MultimodalRAG.open(kb, embedder=ColorEmbedder(), read_only=True)
    assert rag.get("red0000").ocr.text == TEXTS[RED]  # type: ignore[union-attr]
    rag.close()


def test_info_says_when_text_is_not_read(tmp_path: Path) -> None:
    rag = MultimodalRAG.create(tmp_path / "kb", embedder=ColorEmbedder())
    rag.add([solid(RED)], progress=False)
    rag.save()
    rag.close()
    assert (
        "ocr             off (turn it on with `multimodal-rag ocr`)"
        in ok(run_cli(*COLOR, "info", tmp_path / "kb")).stdout
    )
    assert (
        json.loads(ok(run_cli(*COLOR, "info", tmp_path / "kb", "--json")).stdout)["text_reader"]
        is None
    )
