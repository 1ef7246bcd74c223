"""An evaluation report for people: the table, the comparison of two runs, the plot."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from PIL import Image

from multimodal_rag.errors import MissingDependencyError
from multimodal_rag.evaluation.render import (
    compare_reports,
    plot_report,
    report_differences,
    report_table,
)
from multimodal_rag.evaluation.report import (
    EvaluationReport,
    GateReport,
    QueryResult,
    SetMetrics,
)


def metrics(
    query_set: str, queries: int, r1: float, r10: float, *, exact10: float | None = None
) -> SetMetrics:
    return SetMetrics(
        query_set=query_set,
        queries=queries,
        recall={"1": r1, "5": (r1 + r10) / 2, "10": r10},
        mrr=r1 + 0.01,
        ndcg10=r1 + 0.02,
        exact_recall={"1": r1, "5": (r1 + r10) / 2, "10": r10 if exact10 is None else exact10},
        exact_mrr=r1 + 0.01,
        exact_ndcg10=r1 + 0.02,
    )


def result(query_set: str, query: str, rank: int | None, score: float = 0.9) -> QueryResult:
    ranked = [f"other{i}" for i in range(10)]
    if rank is not None:
        ranked[rank - 1] = "right"
    return QueryResult(
        query_set=query_set,
        query=query,
        expected=["right"],
        ranked=ranked,
        scores=[score - 0.01 * i for i in range(10)],
        rank=rank,
        exact_rank=rank,
        seconds=0.002,
    )


def make_report(
    *,
    ranks: dict[str, list[int | None]],
    sets: list[SetMetrics],
    gate: GateReport | None,
    settings: dict[str, Any] | None = None,
    seconds: float = 4.0,
    notes: tuple[str, ...] = (),
) -> EvaluationReport:
    results = [
        result(query_set, f"q{i}", rank, score=0.95 - 0.02 * i)
        for query_set, set_ranks in ranks.items()
        for i, rank in enumerate(set_ranks)
    ]
    return EvaluationReport(
        sets=sets,
        results=results,
        gate=gate,
        latency_ms={"p50": 1.25, "p95": 3.5},
        seconds=seconds,
        settings={"sample": 200, "seed": 0, "k": 10, "edits": ["crop", "jpeg"], **(settings or {})},
        notes=notes,
    )


GATE = GateReport(
    answerable=[0.91, 0.88, 0.95, 0.9],
    unanswerable=[0.6, 0.72, 0.65],
    auroc=0.9876,
    keep=0.95,
    recommended_min_score=0.8766,
    unanswerable_rejected=0.6667,
    negatives_source="held-out images",
)


@pytest.fixture
def report() -> EvaluationReport:
    return make_report(
        ranks={"edit:crop": [1, 1, 2, None], "text:descriptions": [1, 3, 1, None]},
        sets=[
            metrics("edit:crop", 4, 0.5, 0.75, exact10=0.8),
            metrics("text:descriptions", 4, 0.5, 0.75),
        ],
        gate=GATE,
        notes=("descriptions are not how people ask",),
    )


# -- report_table ------------------------------------------------------------------


def test_table_has_a_row_per_set_with_three_decimals(report: EvaluationReport) -> None:
    lines = report_table(report).splitlines()
    header = lines[0].split()
    assert header == ["query", "set", "queries", "R@1", "R@5", "R@10", "MRR", "nDCG@10", "loss@10"]
    crop = next(line for line in lines if line.startswith("edit:crop"))
    assert crop.split() == ["edit:crop", "4", "0.500", "0.625", "0.750", "0.510", "0.520", "0.050"]
    text = next(line for line in lines if line.startswith("text:descriptions"))
    assert text.split()[-1] == "0.000"  # exact index: nothing lost


def test_table_shows_the_gate_latency_time_and_notes(report: EvaluationReport) -> None:
    text = report_table(report)
    assert "AUROC                  0.988" in text
    assert "recommended min_score  0.877  (keeps 95% of the answerable queries)" in text
    assert "unanswerable rejected  0.667" in text
    assert "4 answerable, 3 unanswerable" in text
    assert "negatives from         held-out images" in text
    assert "p50 1.250 ms, p95 3.500 ms" in text
    assert "4.000 s in total for 8 queries, 500.000 s per 1,000 queries" in text
    assert text.endswith("Notes:\n- descriptions are not how people ask")


def test_table_without_gate_or_sets_says_so() -> None:
    empty = make_report(ranks={}, sets=[], gate=None)
    text = report_table(empty)
    assert "No query sets were evaluated." in text
    assert "Gate: not measured" in text
    assert "Notes:" not in text


def test_table_marks_figures_not_measured() -> None:
    gate = GateReport(
        answerable=[0.9],
        unanswerable=[],
        auroc=None,
        keep=0.9,
        recommended_min_score=None,
        unanswerable_rejected=None,
        negatives_source="negatives folder",
    )
    partial = SetMetrics(
        query_set="edit:jpeg",
        queries=1,
        recall={"1": 1.0, "5": 1.0},  # k = 5: no recall@10
        mrr=1.0,
        ndcg10=1.0,
        exact_recall={"1": 1.0, "5": 1.0},
        exact_mrr=1.0,
        exact_ndcg10=1.0,
    )
    text = report_table(make_report(ranks={"edit:jpeg": [1]}, sets=[partial], gate=gate))
    row = next(line for line in text.splitlines() if line.startswith("edit:jpeg"))
    assert row.split()[-4:] == ["-", "1.000", "1.000", "-"]
    assert "AUROC                  -" in text


# -- compare_reports ---------------------------------------------------------------


@pytest.fixture
def other(report: EvaluationReport) -> EvaluationReport:
    """Another run: a better crop, descriptions gone, blur added, a different seed and gate."""
    return make_report(
        ranks={"edit:crop": [1, 1, 1, 5], "edit:blur": [1, 2]},
        sets=[metrics("edit:crop", 4, 0.75, 1.0), metrics("edit:blur", 2, 0.5, 1.0)],
        gate=GateReport(
            answerable=[0.9],
            unanswerable=[0.5],
            auroc=0.9,
            keep=0.9,
            recommended_min_score=0.8,
            unanswerable_rejected=0.5,
            negatives_source="negatives folder",
        ),
        settings={"seed": 1, "edits": ["crop", "blur"], "negatives": "negs"},
        seconds=5.0,
    )


def test_compare_shows_each_metric_with_its_delta(
    report: EvaluationReport, other: EvaluationReport
) -> None:
    text = compare_reports(report, other, names=("run1", "run2"))
    assert text.startswith("Comparing run1 → run2 (Δ = run2 − run1)")
    lines = text.splitlines()
    header = next(line for line in lines if line.startswith("query set"))
    assert header.split() == ["query", "set", "metric", "queries", "run1", "run2", "Δ"]
    crop = next(line for line in lines if line.startswith("edit:crop"))
    assert crop.split() == ["edit:crop", "R@1", "4", "0.500", "0.750", "+0.250"]
    r10 = lines[lines.index(crop) + 2]
    assert r10.split() == ["R@10", "0.750", "1.000", "+0.250"]
    loss = lines[lines.index(crop) + 5]
    assert loss.split() == ["loss@10", "0.050", "0.000", "-0.050"]
    assert "Only in run1: text:descriptions" in text
    assert "Only in run2: edit:blur" in text


def test_compare_shows_gate_costs_and_the_settings_that_differ(
    report: EvaluationReport, other: EvaluationReport
) -> None:
    text = compare_reports(report, other, names=("run1", "run2"))
    assert any(line.split() == ["AUROC", "0.988", "0.900", "-0.088"] for line in text.splitlines())
    assert "negatives from: held-out images → negatives folder" in text
    assert any(
        line.split() == ["total", "time", "(s)", "4.000", "5.000", "+1.000"]
        for line in text.splitlines()
    )
    settings = text.split("Settings that differ:\n")[1].split("\n\n")[0].splitlines()
    assert settings == [
        '  edits: ["crop", "jpeg"] → ["crop", "blur"]',
        '  negatives: null → "negs"',
        "  seed: 0 → 1",
    ]


def test_compare_counts_rank_changes_with_the_largest_first(
    report: EvaluationReport, other: EvaluationReport
) -> None:
    text = compare_reports(report, other, names=("run1", "run2"))
    # edit:crop q2 (2 → 1) and q3 (miss → 5) changed; descriptions and blur are in one run only.
    assert (
        "Rank of the first right answer changed for 2 of 4 queries in both runs "
        "(2 better, 0 worse)." in text
    )
    assert "Queries not in both runs: 4 only in run1, 2 only in run2." in text
    examples = text.split("Largest changes (miss: not in the top k):\n")[1].splitlines()
    assert examples == ["  edit:crop  q3: miss → 5", "  edit:crop  q2: 2 → 1"]


def test_identical_runs_compare_as_unchanged(report: EvaluationReport) -> None:
    text = compare_reports(report, report)
    assert "Settings: the same." in text
    assert "changed for 0 of 8 queries" in text
    assert "Largest changes" not in text and "Only in" not in text
    assert all(
        line.split()[-1] in {"+0.000", "Δ", "0.000"}
        for line in text.splitlines()
        if line.startswith(("edit:", "text:"))
    )


def test_differences_are_json_ready(report: EvaluationReport, other: EvaluationReport) -> None:
    diff = json.loads(json.dumps(report_differences(report, other, names=("x", "y"))))
    assert diff["names"] == {"a": "x", "b": "y"}
    assert [s["query_set"] for s in diff["sets"]] == ["edit:crop"]
    crop = diff["sets"][0]
    assert set(crop["metrics"]) == {
        "recall@1",
        "recall@5",
        "recall@10",
        "mrr",
        "ndcg@10",
        "index_loss@10",
    }
    assert crop["metrics"]["recall@1"] == {"a": 0.5, "b": 0.75, "delta": 0.25}
    assert diff["only_in_a"] == ["text:descriptions"] and diff["only_in_b"] == ["edit:blur"]
    assert diff["settings"]["seed"] == {"a": 0, "b": 1}
    assert "sample" not in diff["settings"]
    assert diff["gate"]["negatives_source"] == {"a": "held-out images", "b": "negatives folder"}
    assert diff["ranks"]["changed"] == 2 and diff["ranks"]["examples"][0] == {
        "query_set": "edit:crop",
        "query": "q3",
        "a": None,
        "b": 5,
    }


def test_a_report_read_back_from_json_compares_equal(report: EvaluationReport) -> None:
    again = EvaluationReport.from_dict(json.loads(json.dumps(report.to_dict())))
    diff = report_differences(report, again)
    assert diff["settings"] == {} and diff["ranks"]["changed"] == 0


# -- plot_report -----------------------------------------------------------------


def test_plot_writes_a_png(report: EvaluationReport, tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    out = tmp_path / "eval.png"
    plot_report(report, out)
    with Image.open(out) as image:
        assert image.format == "PNG"
        assert image.width > image.height > 200
        image.load()


def test_plot_without_gate_or_queries(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    out = tmp_path / "empty.png"
    plot_report(make_report(ranks={}, sets=[], gate=None), str(out))
    with Image.open(out) as image:
        assert image.format == "PNG"


def test_plot_without_matplotlib_names_the_extra(
    report: EvaluationReport, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import sys

    for name in [m for m in sys.modules if m == "matplotlib" or m.startswith("matplotlib.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "matplotlib", None)  # import fails
    with pytest.raises(MissingDependencyError, match=r"multimodal-rag\[eval\]"):
        plot_report(report, tmp_path / "never.png")
    assert not (tmp_path / "never.png").exists()


def test_plot_draws_query_set_names_of_every_script_with_real_glyphs(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    from multimodal_rag._fonts import font_stack

    names = ["پرسش‌های فارسی", "أسئلة عربية", "mixed: توضیحات (v2)"]
    # Only where this machine has a CJK font (.ci/run installs one).
    if font_stack().face_for("鳥").covers("鳥"):
        names += ["中文查询 日本語 한국어", "mixed: توضیحات 説明"]
    sets = [metrics(name, 2, 0.5, 1.0) for name in names]
    out = tmp_path / "scripts.png"
    # matplotlib warns "Glyph ... missing from font(s)" for each glyph no family has; the
    # project's warning filter turns that into a failure here.
    plot_report(make_report(ranks={name: [1, 2] for name in names}, sets=sets, gate=GATE), out)
    with Image.open(out) as image:
        assert image.format == "PNG"
