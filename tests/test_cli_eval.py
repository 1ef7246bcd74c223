"""``multimodal-rag eval``, run as a user runs it: JSON, the text table, --compare, --plot.

The knowledge base holds solid-colour cards embedded by the deterministic colour embedder
from ``helpers``, so every run is fast and repeatable.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from PIL import Image

from helpers import COLORS, solid
from test_cli import COLOR, ok, run_cli

REPORT_KEYS = {"schema_version", "sets", "gate", "latency_ms", "seconds", "settings", "notes", "results"}
RESULT_KEYS = {
    "query_set",
    "query",
    "expected",
    "ranked",
    "scores",
    "exact_ranked",
    "exact_scores",
    "rank",
    "exact_rank",
    "seconds",
}


@pytest.fixture(scope="module")
def photos(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One solid-colour card per colour, each described."""
    root = tmp_path_factory.mktemp("photos")
    lines = []
    for i, name in enumerate(COLORS):
        solid(name, (40 + 8 * i, 30)).save(root / f"{name}.png")
        lines.append(json.dumps({"image_path": f"{name}.png", "description": f"A {name} card."}))
    (root / "descriptions.jsonl").write_text("\n".join(lines) + "\n")
    return root


@pytest.fixture(scope="module")
def negatives(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Two images of colours the knowledge base does not hold."""
    root = tmp_path_factory.mktemp("negatives")
    solid((128, 64, 0), (40, 30)).save(root / "brown.png")
    solid((90, 90, 90), (40, 30)).save(root / "grey.png")
    return root


@pytest.fixture(scope="module")
def kb(photos: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    kb = tmp_path_factory.mktemp("kbs") / "kb"
    ok(
        run_cli(
            *COLOR,
            "index",
            photos,
            "--kb",
            kb,
            "--descriptions",
            photos / "descriptions.jsonl",
            "--embedder",
            "helpers:ColorEmbedder",
        )
    )
    return kb


def evaluate_json(kb: Path, *args: object) -> dict:
    return json.loads(ok(run_cli(*COLOR, "eval", kb, "--no-progress", *args, "--json")).stdout)


@pytest.fixture(scope="module")
def runs(kb: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """Two runs saved with --json: every edit with seed 0, and two edits with seed 1."""
    folder = tmp_path_factory.mktemp("runs")
    first, second = folder / "first.json", folder / "second.json"
    first.write_text(json.dumps(evaluate_json(kb, "--seed", 0)))
    second.write_text(json.dumps(evaluate_json(kb, "--seed", 1, "--edits", "crop,jpeg")))
    return first, second


# -- a run -----------------------------------------------------------------------


def test_json_is_the_whole_report_with_every_query(runs: tuple[Path, Path]) -> None:
    from multimodal_rag.evaluation.edits import EDIT_KINDS
    from multimodal_rag.evaluation.report import EvaluationReport

    data = json.loads(runs[0].read_text())
    assert set(data) == REPORT_KEYS
    sets = [s["query_set"] for s in data["sets"]]
    assert {f"edit:{kind}" for kind in EDIT_KINDS} <= set(sets)
    assert "text:descriptions" in sets
    assert set(data["sets"][0]) >= {"query_set", "queries", "recall", "mrr", "ndcg10", "index_loss"}
    assert sum(s["queries"] for s in data["sets"]) == len(data["results"]) > 0
    assert all(set(result) == RESULT_KEYS for result in data["results"])
    assert {r["query_set"] for r in data["results"]} == set(sets)
    assert set(data["gate"]) >= {"auroc", "recommended_min_score", "unanswerable_rejected", "keep"}
    assert set(data["latency_ms"]) == {"p50", "p95"}
    assert data["settings"]["seed"] == 0 and data["settings"]["k"] == 10
    assert data["settings"]["edits"] == list(EDIT_KINDS)
    # What --json prints reads back as the report it was.
    assert EvaluationReport.from_dict(data).to_dict() == {k: v for k, v in data.items() if k != "schema_version"}


def test_text_output_is_the_table(kb: Path) -> None:
    result = ok(run_cli(*COLOR, "eval", kb, "--edits", "crop,blur", "--no-progress"))
    lines = result.stdout.splitlines()
    assert lines[0].split() == [
        "query",
        "set",
        "queries",
        "R@1",
        "R@5",
        "R@10",
        "MRR",
        "nDCG@10",
        "loss@10",
    ]
    assert [line.split()[0] for line in lines[1:4]] == [
        "edit:crop",
        "edit:blur",
        "text:descriptions",
    ]
    assert "Gate:" in result.stdout and "negatives from         held-out images" in result.stdout
    assert "Latency per query: p50 " in result.stdout
    assert "s per 1,000 queries" in result.stdout


def test_options_reach_the_evaluation(kb: Path, negatives: Path) -> None:
    data = evaluate_json(
        kb,
        "--edits",
        "jpeg",
        "--sample",
        3,
        "-k",
        4,
        "--keep",
        0.9,
        "--negatives",
        negatives,
    )
    assert [s["query_set"] for s in data["sets"]] == ["edit:jpeg", "text:descriptions"]
    assert data["sets"][0]["queries"] == 3
    assert data["settings"]["sample"] == 3 and data["settings"]["k"] == 4
    assert all(len(r["ranked"]) <= 4 for r in data["results"])
    assert data["gate"]["keep"] == 0.9
    assert data["gate"]["negatives_source"] == "negatives folder"
    assert len(data["gate"]["unanswerable"]) == 2


def test_labelled_queries_and_no_edits(kb: Path, photos: Path, tmp_path: Path) -> None:
    queries = tmp_path / "queries.jsonl"
    queries.write_text(
        "".join(
            json.dumps({"query": name, "expected": [str(photos / f"{name}.png")]}) + "\n"
            for name in ("red", "blue")
        )
    )
    data = evaluate_json(kb, "--queries", queries, "--edits", "none")
    assert [s["query_set"] for s in data["sets"]] == ["text:labelled"]
    assert [r["query"] for r in data["results"]] == ["red", "blue"]
    assert all(r["rank"] == 1 for r in data["results"])


def test_hybrid_mode_searches_labelled_queries_as_search_does(kb: Path, photos: Path, tmp_path: Path) -> None:
    queries = tmp_path / "queries.jsonl"
    queries.write_text(
        json.dumps({"query": "blue card", "expected": [str(photos / "blue.png")]}) + "\n"
        + json.dumps({"image": str(photos / "red.png"), "expected": [str(photos / "red.png")]}) + "\n"
    )  # fmt: skip
    data = evaluate_json(kb, "--queries", queries, "--edits", "none", "--mode", "hybrid", "--fusion", "weighted", "--no-query-ocr")
    assert (data["settings"]["mode"], data["settings"]["fusion"], data["settings"]["query_ocr"]) == ("hybrid", "weighted", False)
    text, image = data["results"]
    searched = json.loads(ok(run_cli(*COLOR, "search", kb, "--text", "blue card", "-k", 10, "--fusion", "weighted", "--json")).stdout)
    assert text["ranked"] == [hit["id"] for hit in searched["hits"]]  # what a user's search returns
    assert image["rank"] == 1 and all(s["latency_ms"]["p50"] > 0 for s in data["sets"])
    table = ok(run_cli(*COLOR, "eval", kb, "--no-progress", "--queries", queries, "--edits", "none", "--mode", "hybrid")).stdout
    assert "latency per set" in table and "image:labelled" in table


def test_sample_all_uses_every_image(kb: Path) -> None:
    data = evaluate_json(kb, "--edits", "crop", "--sample", "all")
    assert data["settings"]["sample"] is None
    assert data["sets"][0]["queries"] == len(COLORS)


def test_plot_writes_a_png(kb: Path, tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    out = tmp_path / "plots" / "eval.png"
    result = ok(run_cli(*COLOR, "eval", kb, "--edits", "crop", "--plot", out, "--no-progress"))
    assert f"Wrote {out}" in result.stdout
    with Image.open(out) as image:
        assert image.format == "PNG" and image.width > image.height
        image.load()
    # With --json the JSON is all that stdout holds.
    out.unlink()
    result = ok(run_cli(*COLOR, "eval", kb, "--edits", "crop", "--plot", out, "--json"))
    assert set(json.loads(result.stdout)) == REPORT_KEYS
    assert out.is_file()


# -- --compare -------------------------------------------------------------------


def test_compare_shows_what_changed_and_why(runs: tuple[Path, Path]) -> None:
    first, second = runs
    result = ok(run_cli("eval", "--compare", first, second))
    text = result.stdout
    assert text.startswith(f"Comparing {first} → {second}")
    assert "edit:crop" in text and "edit:jpeg" in text and "R@1" in text and "Δ" in text
    assert "Only in " + str(first) + ": edit:downscale" in text
    settings = text.split("Settings that differ:\n")[1].split("\n\n")[0]
    assert "  seed: 0 → 1" in settings
    assert "  edits: " in settings
    assert "Rank of the first right answer changed for " in text


def test_compare_json(runs: tuple[Path, Path]) -> None:
    first, second = runs
    diff = json.loads(ok(run_cli("eval", "--compare", first, second, "--json")).stdout)
    assert set(diff) == {
        "schema_version",
        "names",
        "sets",
        "only_in_a",
        "only_in_b",
        "gate",
        "latency_ms",
        "seconds",
        "settings",
        "ranks",
    }
    assert diff["names"] == {"a": str(first), "b": str(second)}
    assert [s["query_set"] for s in diff["sets"]] == ["edit:crop", "edit:jpeg", "text:descriptions"]
    assert set(diff["sets"][0]["metrics"]["recall@1"]) == {"a", "b", "delta"}
    assert "edit:clutter" in diff["only_in_a"] and diff["only_in_b"] == []
    assert diff["settings"]["seed"] == {"a": 0, "b": 1}
    assert set(diff["ranks"]) >= {"matched", "changed", "examples"}


def test_compare_of_a_file_that_is_not_a_report_fails(
    runs: tuple[Path, Path], tmp_path: Path
) -> None:
    bogus = tmp_path / "bogus.json"
    bogus.write_text('{"hello": 1}')
    result = run_cli("eval", "--compare", runs[0], bogus)
    assert result.returncode == 1
    assert "is not a report written by `multimodal-rag eval --json`" in result.stderr


# -- usage errors ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--edits", "crop,sepia"], "unknown edit kind(s) 'sepia'; the kinds are crop, downscale"),
        (["--sample", "0"], "0 is less than 1"),
        (["--sample", "many"], "'many' is neither a whole number nor 'all'"),
        (["--keep", "0"], "0.0 is not in the range 0.0<x<=1.0"),
        (["--keep", "1.5"], "1.5 is not in the range 0.0<x<=1.0"),
        (["-k", "0"], "0 is not in the range x>=1"),
        (["--query-ocr"], "--query-ocr needs --mode lexical or hybrid"),
        (["--mode", "hybrid", "--fusion", "max"], "'max' is not one of 'rrf', 'weighted'"),
    ],
)
def test_bad_options_are_usage_errors(kb: Path, args: list[str], message: str) -> None:
    result = run_cli(*COLOR, "eval", kb, *args)
    assert result.returncode == 2
    assert message in result.stderr


def test_compare_or_a_knowledge_base_not_both(runs: tuple[Path, Path], kb: Path) -> None:
    missing = run_cli("eval")
    assert missing.returncode == 2
    assert "give a knowledge base KB, or --compare A.json B.json" in missing.stderr
    both = run_cli("eval", kb, "--compare", *runs)
    assert both.returncode == 2 and "not a knowledge base" in both.stderr
    mixed = run_cli("eval", "--compare", *runs, "--seed", "3")
    assert mixed.returncode == 2 and "--seed cannot be combined with --compare" in mixed.stderr
