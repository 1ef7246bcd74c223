"""Every benchmark's ``--quick`` runs from a clean checkout, and its figures make sense.

Each runs in its own process, as a user runs it, writing its results to a temporary file;
the checks are on what the figures must be (exact search recalls everything, counts are
the counts asked for), not merely that they lie in a range.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parents[1]
BENCHMARKS = REPO / "benchmarks"

pytestmark = pytest.mark.slow


def run(name: str, tmp_path: Path, *extra: str) -> dict[str, Any]:
    out = tmp_path / f"{name}.json"
    env = {**os.environ, "PYTHONPATH": str(REPO / "src")}
    command = [sys.executable, str(BENCHMARKS / f"{name}.py"), "--quick", "--out", str(out), *extra]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=600, cwd=tmp_path)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    report: dict[str, Any] = json.loads(out.read_text())
    if "skipped" not in report:
        assert report["benchmark"] == name and report["variant"] == "quick"
        assert report["baseline"] is not None, f"benchmarks/baselines/{name}-quick.json is missing"
        for figure, row in report["baseline"]["figures"].items():
            assert row["ratio"] > 0 or row["now"] == 0, figure
    return report


def test_every_benchmark_is_listed_in_the_readme_and_covered_here() -> None:
    scripts = {p.stem for p in BENCHMARKS.glob("*.py") if p.stem != "common"}
    readme = (BENCHMARKS / "README.md").read_text()
    tested = {name.removeprefix("test_") for name in globals() if name.startswith("test_") and name.removeprefix("test_") in scripts}
    untested = scripts - tested - {"adapter_keep_rule"}  # its own --seeds/--images make it small
    assert not untested
    for script in scripts:
        assert f"python benchmarks/{script}.py" in readme, script


def test_compare_indexes(tmp_path: Path) -> None:
    report = run("compare_indexes", tmp_path, "--plot", str(tmp_path / "r.png"))
    (result,) = report["results"]
    assert result["n"] == 2000 and result["dim"] == 64
    rows = {(r["family"].split()[0], r["setting"]): r for r in result["rows"]}
    assert {family for family, _ in rows} == {"flat", "faiss-hnsw", "hnswlib", "faiss-ivf"}
    assert rows["flat", "exact"]["recall_at_10"] == 1.0 and rows["flat", "exact"]["recall_at_1"] == 1.0
    # HNSW at its deeper search, and IVF probing every list it was given, find nearly all.
    assert rows["faiss-hnsw", "ef=64"]["recall_at_10"] >= 0.95
    assert rows["hnswlib", "ef=64"]["recall_at_10"] >= 0.95
    for row in result["rows"]:
        assert row["p50_ms"] > 0 and row["batch_qps"] > 0 and row["bytes_per_vector"] >= 64 * 4


def test_journal(tmp_path: Path) -> None:
    report = run("journal", tmp_path)
    assert [row["size"] for row in report["rows"]] == [0, 2000]
    for row in report["rows"]:
        assert row["add_batch_on_disk_ms"] > 0 and row["save_ms"] > 0
        # The journal's append is timed inside each on-disk add: a part of it, never nothing.
        assert 0 < row["journal_cost_ms"] <= row["add_batch_on_disk_ms"]
        # A journal entry holds each image's 512 float32s and more.
        assert row["journal_bytes_per_image"] > 512 * 4


def test_answer_payload(tmp_path: Path) -> None:
    report = run("answer_payload", tmp_path)
    assert len(report["rows"]) == 6
    for row in report["rows"]:
        assert row["encode_ms_median"] > 0 and row["data_url_kb"] > 0
    photo = {r["max_image_side"]: r for r in report["rows"] if r["image"].startswith("photo")}
    assert photo[512]["data_url_kb"] < photo[1024]["data_url_kb"]  # downscaling shrinks the request


def test_soak(tmp_path: Path) -> None:
    report = run("soak", tmp_path)
    assert report["errors"] == 0 and report["verify_ok"]
    assert report["queries_served"] > 0 and report["images_added"] > 300
    assert report["images_added"] - report["images_removed"] == report["final_size"]


def test_milvus_vs_local(tmp_path: Path) -> None:
    report = run("milvus_vs_local", tmp_path)
    if "skipped" in report:
        pytest.skip(report["skipped"])
    local, remote = report["results"]
    assert local["recall_at_k"] >= 0.9 and remote["recall_at_k"] >= 0.9
    assert local["p50_ms"] > 0 and remote["p50_ms"] > 0


def test_distributed_ingest(tmp_path: Path) -> None:
    report = run("distributed_ingest", tmp_path)
    if "skipped" in report:
        pytest.skip(report["skipped"])
    # Every run stored every photo: a quarter of them, then all of them, in each of the three ways.
    assert sorted((run["mode"], run["images"]) for run in report["runs"]) == sorted(
        (mode, n) for mode in ("plain", "ray, 1 actor", "ray, 2 actors") for n in (12, 48)
    )
    assert all(run["seconds"] > 0 for run in report["runs"])
    assert {len(run["workers"]) for run in report["runs"] if run["mode"] == "ray, 2 actors"} <= {1, 2}
    assert all(cost > 0 for cost in report["per_image_ms"].values())


def test_search(tmp_path: Path) -> None:
    report = run("search", tmp_path)
    recall = {(r["mode"], r["set"]): r for r in report["recall"]}
    # A model number is one word in one caption: lexical search finds it first, every time.
    assert recall["lexical", "text:code"]["r1"] == 1.0 and recall["lexical", "text:code"]["queries"] == 10
    assert recall["hybrid (rrf)", "text:code"]["r10"] == 1.0
    assert [t["records"] for t in report["latency"]] == [2000, 5000]
    for timing in report["latency"]:
        assert all(timing[name]["p50"] > 0 for name in ("lexical", "vector", "hybrid"))


def test_bm25_pruning(tmp_path: Path) -> None:
    report = run("bm25_pruning", tmp_path)
    assert [(r["records"], r["queries_kind"]) for r in report["rows"]] == [
        (2000, "mixed"), (2000, "common words"), (10000, "mixed"), (10000, "common words")
    ]  # fmt: skip
    for row in report["rows"]:
        assert row["results_differ"] == 0 and row["queries"] == 60 and row["speedup"] > 0


def test_evaluation(tmp_path: Path) -> None:
    report = run("evaluation", tmp_path)
    runs = {r["run"]: r for r in report["runs"]}
    assert set(runs) == {"tiny-flat", "tiny-weak-hnswlib"}
    # Exact search loses nothing against exact search; the deliberately weak HNSW does.
    assert runs["tiny-flat"]["edit_loss10"] == 0.0
    assert runs["tiny-weak-hnswlib"]["edit_loss10"] > 0.0
    assert runs["tiny-flat"]["queries"] == runs["tiny-weak-hnswlib"]["queries"] > 10


def test_adapter(tmp_path: Path) -> None:
    report = run("adapter", tmp_path)
    for row in report["synthetic"]:
        # The hidden map is linear: retrieval starts near chance and an adapter recovers it.
        assert row["before"]["1"] < 0.1 and row["after"]["1"] >= 0.9, row["kind"]
    (fit,) = report["catalogue"]
    assert fit["records"]["holdout"] + fit["records"]["train"] == 120
    assert report["cost"] == []


def test_ingest(tmp_path: Path) -> None:
    report = run("ingest", tmp_path)
    runs = [(r["approach"], r["n"], r["images"]) for r in report["runs"]]
    assert runs == [("cookbook", 8, 8), ("ours", 8, 8), ("ours", 24, 24)]
    assert all(r["images_per_s"] > 0 and r["speedup_vs_cookbook"] > 0 for r in report["runs"])
    # Draft decoding and the chosen precision keep a query's vector where fp32 puts it.
    assert report["query"]["min_cosine_to_fp32_full_decode"] > 0.99


def test_first_run(tmp_path: Path) -> None:
    report = run("first_run", tmp_path)
    rows = [(r["label"], r["n"]) for r in report["rows"]]
    assert rows == [
        ("cookbook", 8),
        ("openvino, first run (cold cache)", 8),
        ("background preparation (after the command)", 0),
        ("openvino, cache warm", 8),
        ("openvino, prepared in the command", 8),
        ("cookbook", 24),
        ("openvino, first run (cold cache)", 24),
    ]
    # The command left one preparation behind it, and it ran to its end.
    preparation = report["rows"][2]
    assert preparation["processes"] == 1 and '"engine": "openvino"' in preparation["runtime"]
    assert all(r["peak_rss_mb"] > 0 for r in report["rows"])
    assert len(report["load_average_before"]) == 3


def test_gpu_ingest(tmp_path: Path) -> None:
    report = run("gpu_ingest", tmp_path)
    assert report["photos"] == 8 and [r["batch"] for r in report["rows"]] == [4, 8]
    for row in report["rows"]:
        assert row["library_cpu_decode"] > 0 and row["torchvision_cpu_decode"] > 0
        # The GPU decoder is measured only where there is a GPU, and said so where not.
        assert ("gpu_decode" in row) == (report["precision"] == "fp16")
    if report["precision"] == "fp32":
        assert "not a GPU measurement" in report["device"]


def test_serve_load(tmp_path: Path) -> None:
    pytest.importorskip("httpx")
    pytest.importorskip("fastapi")
    report = run("serve_load", tmp_path, "--duration", "3", "--warmup", "1")
    assert report["errors"] == 0 and report["knowledge_base"]["images"] == 8
    assert report["requests"] > 0 and report["latency"]["all"]["p50_ms"] > 0


def test_models(tmp_path: Path) -> None:
    report = run("models", tmp_path)
    if "skipped" in report:
        pytest.skip(report["skipped"])
    (row,) = report["models"]
    assert row["model"] == "ViT-B-32" and row["dim"] == 512
    # open_clip's own towers and the embedder's fast ones, timed side by side; --quick runs no int8.
    assert row["open_clip_images_per_s"] > 0 and row["fast_images_per_s"] > 0 and "int8" not in row
    assert row["fast_vs_open_clip"] > 0 and row["fast_text_ms"] > 0 and row["fast_query_ms"] > 0


def test_persian_search(tmp_path: Path) -> None:
    report = run("persian_search", tmp_path)
    rows = {(r["channel"], r["typed"]): r for r in report["rows"]}
    assert {typed for _, typed in rows} == {
        "canonical", "arabic-letters", "ascii-digits", "no-zwnj", "zwnj-as-space", "misplaced-space", "all-at-once",
    }  # fmt: skip
    assert rows["lexical", "canonical"]["queries"] == 48
    for (channel, _), row in rows.items():
        assert 0 < row["queries"] <= 48 and 0 <= row["top1"] <= row["r5"] <= 1
        if channel == "lexical":  # every way of typing finds what the canonical spelling finds
            assert row["within_target"], row


def test_ocr_catalogue(tmp_path: Path) -> None:
    first = run("ocr_catalogue", tmp_path, "--folder", str(tmp_path / "a"))
    again = run("ocr_catalogue", tmp_path, "--folder", str(tmp_path / "b"))
    assert first["sha256"] == again["sha256"]  # the same seed writes the same bytes
    assert first["products"] == 16 and first["descriptions_with_model"] == 8
    assert first["queries"] == {"photo": 4, "photo-turned": 12, "model": 16, "digits": 16, "confusion": 16}
    folder = tmp_path / "a"
    described = {json.loads(line)["image_path"] for line in (folder / "description.jsonl").read_text().splitlines()}
    queries = [json.loads(line) for line in (folder / "queries.jsonl").read_text().splitlines()]
    models = {q["expected"][0]: q["query"] for q in queries if q["set"] == "model"}
    for query in queries:
        (expected,) = query["expected"]
        assert expected in described and (folder / expected).is_file()
        if "image" in query:
            assert (folder / query["image"]).is_file()
        elif query["set"] == "confusion":
            model = models[expected]
            changed = [(a, b) for a, b in zip(model, query["query"], strict=True) if a != b]
            assert len(changed) == 1 and changed[0] in {("O", "0"), ("0", "O"), ("I", "1"), ("1", "I"),
                                                        ("S", "5"), ("5", "S"), ("B", "8"), ("8", "B")}  # fmt: skip
    # The library reads the queries file, resolving every expected photo to its record.
    from multimodal_rag.evaluation.queries import read_labelled_queries
    from multimodal_rag.types import Record

    records = {f"id-{i}": Record(id=f"id-{i}", image_path=str(folder / path)) for i, path in enumerate(sorted(described))}
    labelled = read_labelled_queries(folder / "queries.jsonl", records)
    assert len(labelled) == len(queries)
    assert {q.query_set for q in labelled} == {"image:photo", "image:photo-turned", "text:model", "text:digits", "text:confusion"}
    assert all(len(q.expected) == 1 and q.expected[0] in records for q in labelled)
    # Each group's four model numbers are the same digits in other orders.
    by_group: dict[str, list[str]] = {}
    for model in models.values():
        by_group.setdefault(model.split("-")[0], []).append(model.split("-")[1])
    assert all(len(digits) == 4 and len({"".join(sorted(d)) for d in digits}) == 1 for digits in by_group.values())


def test_ocr_ingest(tmp_path: Path) -> None:
    report = run("ocr_ingest", tmp_path)
    if "skipped" in report:
        pytest.skip(report["skipped"])
    rows = {(r["clip"].split()[0], r["ocr"]): r for r in report["rows"]}
    assert {ocr for _, ocr in rows} == {None, "openvino", "onnxruntime"} and ("torch", None) in rows
    for (engine, ocr), row in rows.items():
        assert row["images"] == 8 and row["images_per_s"] > 0 and row["unread"] == 0
        # Two readings of memory: Linux updates ru_maxrss lazily, so it can lag a sampled VmRSS.
        assert row["peak_rss_mb"] > 0 and row["ingest_peak_rss_mb"] > 0
        if ocr is None:
            assert row["ratio_to_clip_only"] == 1.0 and row["with_text"] == {"product": 0, "tiled": 0}
        else:
            assert row["with_text"]["product"] == 4  # every printed label was read
            assert row["query_ms_p90"] >= row["query_ms_p50"] > 0
        # The engine cache was prepared before timing: OpenVINO loads from it without torch.
        assert row["torch_loaded"] is (engine == "torch")
    assert report["load_average_before"] and report["load_average_after"]


def test_ocr_speed(tmp_path: Path) -> None:
    report = run("ocr_speed", tmp_path)
    if "skipped" in report:
        pytest.skip(report["skipped"])
    rows = {(r["engine"], r["settings"], r["kind"]): r for r in report["rows"]}
    assert len(rows) == 16 and all(r["photos"] == 4 and r["p50_ms"] > 0 for r in rows.values())
    for engine in ("onnxruntime", "openvino"):
        assert rows[engine, "reader", "label"]["read_rate"] == 1.0
        assert rows[engine, "reader", "1080p scene"]["read_rate"] is None  # nothing printed to read


def test_ocr_retrieval(tmp_path: Path) -> None:
    report = run("ocr_retrieval", tmp_path)
    if "skipped" in report:
        pytest.skip(report["skipped"])
    rows = {(r["row"], r["set"]): r for r in report["rows"]}
    assert len(rows) == 14 and {r["queries"] for r in rows.values()} == {4, 12, 16}
    # Only the printed digits tell a group's four products apart: the picture alone cannot
    # rank the right one first every time, and read text on both sides does.
    vector = [rows["image, vector only", s]["top1"] for s in ("image:photo", "image:photo-turned")]
    assert max(vector) < 1.0
    assert all(t["met"] for t in report["targets"].values()), report["targets"]
    assert set(report["commands"]) == {"vector only", "query OCR only", "OCR on both sides", "OCR on both sides, rank fusion"}
