"""An evaluation report for people: a plain-text table, a comparison of two runs, a plot.

`report_table` and `compare_reports` print with no library beyond this one;
`report_differences` is the comparison as JSON-ready data (what ``eval --compare
--json`` prints). `plot_report` needs matplotlib (the ``eval`` extra).

The plot's own text (query set names) is drawn with the fonts of contact sheets, given to
matplotlib as a fallback list: for each glyph it takes the first family that has it (the
user's fonts, Vazirmatn, the system's CJK font...). matplotlib from 3.11 lays text out with
libraqm, which shapes Arabic and Persian and orders right-to-left text itself; older
releases do neither, so for them the text is handed over already in visual order with its
letters in their joined presentation forms (`multimodal_rag._text_layout.visual_text`).
"""

from __future__ import annotations

import json
import os
import textwrap
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from multimodal_rag._extras import require
from multimodal_rag._fonts import FontFace, font_stack
from multimodal_rag._text_layout import clean_text, clusters, visual_text
from multimodal_rag.evaluation.report import (
    RECALL_AT,
    EvaluationReport,
    GateReport,
    QueryResult,
    SetMetrics,
)

__all__ = ["compare_reports", "plot_report", "report_differences", "report_table"]

#: How many queries whose rank changed `compare_reports` shows.
EXAMPLES = 5

#: Notes are wrapped to this many characters.
WIDTH = 100

#: The recall@k curve of `plot_report` runs over k = 1..CURVE_K.
CURVE_K = 10

_MISSING = "-"


def _number(value: float | None) -> str:
    return _MISSING if value is None else f"{value:.3f}"


def _delta(value: float | None) -> str:
    return _MISSING if value is None else f"{value:+.3f}"


def _table(header: Sequence[str], rows: Sequence[Sequence[str]], *, left: int = 1) -> list[str]:
    """Columns padded to their widest cell: the first ``left`` to the left, numbers to the right."""
    widths = [max(len(row[i]) for row in (header, *rows)) for i in range(len(header))]

    def line(cells: Sequence[str]) -> str:
        padded = [
            cell.ljust(width) if i < left else cell.rjust(width)
            for i, (cell, width) in enumerate(zip(cells, widths))
        ]
        return "  ".join(padded).rstrip()

    return [line(header), *(line(row) for row in rows)]


# -- the metrics of a set, by name ----------------------------------------------


def _recall(key: str) -> Callable[[SetMetrics], float | None]:
    return lambda s: s.recall.get(key)


def _loss(key: str) -> Callable[[SetMetrics], float | None]:
    return lambda s: s.index_loss.get(key)


_LOSS_AT = str(RECALL_AT[-1])
#: (column of the text table, key in JSON, how to read it from a set's metrics)
_METRICS: tuple[tuple[str, str, Callable[[SetMetrics], float | None]], ...] = (
    *((f"R@{k}", f"recall@{k}", _recall(str(k))) for k in RECALL_AT),
    ("MRR", "mrr", lambda s: s.mrr),
    ("nDCG@10", "ndcg@10", lambda s: s.ndcg10),
    (f"loss@{_LOSS_AT}", f"index_loss@{_LOSS_AT}", _loss(_LOSS_AT)),
)


def _query_count(report: EvaluationReport) -> int:
    return len(report.results) or sum(s.queries for s in report.sets)


def _per_thousand(report: EvaluationReport) -> float | None:
    count = _query_count(report)
    return report.seconds / count * 1000 if count else None


# -- report_table ----------------------------------------------------------------


def report_table(report: EvaluationReport) -> str:
    """The report as a plain-text table, for a terminal.

    One row per query set (queries, recall@1/5/10, MRR, nDCG@10 and the recall@10 lost to
    an approximate index), then the similarity gate, latency, time and the report's notes.
    Numbers have 3 decimals; ``-`` stands for a figure that was not measured.
    """
    lines: list[str] = []
    if report.sets:
        header = ["query set", "queries", *(column for column, _, _ in _METRICS)]
        rows = [
            [s.query_set, str(s.queries), *(_number(read(s)) for _, _, read in _METRICS)]
            for s in report.sets
        ]
        lines += _table(header, rows)
        lines.append(
            f"(loss@{_LOSS_AT}: recall@{_LOSS_AT} lost to the approximate index; "
            "0 for an exact one)"
        )
    else:
        lines.append("No query sets were evaluated.")

    lines += ["", *_gate_lines(report.gate)]

    p50, p95 = report.latency_ms.get("p50"), report.latency_ms.get("p95")
    lines += ["", f"Latency per query: p50 {_number(p50)} ms, p95 {_number(p95)} ms"]
    if report.settings.get("mode", "vector") != "vector" and any(s.latency_ms for s in report.sets):
        # Queries searched as users search take another path (a photo's text read, every
        # channel): one figure for all would hide what each kind of query costs.
        rows = [[s.query_set, _number(s.latency_ms.get("p50")), _number(s.latency_ms.get("p95"))] for s in report.sets if s.latency_ms]
        lines += ["", *_table(["latency per set", "p50 ms", "p95 ms"], rows)]
    per_thousand = _per_thousand(report)
    lines.append(
        f"Time: {report.seconds:.3f} s in total for {_query_count(report)} queries"
        + (f", {per_thousand:.3f} s per 1,000 queries" if per_thousand is not None else "")
    )

    if report.notes:
        lines += ["", "Notes:"]
        lines += [
            textwrap.fill(
                note,
                width=WIDTH,
                initial_indent="- ",
                subsequent_indent="  ",
                break_on_hyphens=False,
            )
            for note in report.notes
        ]
    return "\n".join(lines)


def _gate_lines(gate: GateReport | None) -> list[str]:
    if gate is None:
        return ["Gate: not measured (no queries without a right answer)."]
    rows = [
        ("AUROC", _number(gate.auroc) + "  (answerable vs unanswerable top-1 score)"),
        (
            "recommended min_score",
            _number(gate.recommended_min_score)
            + f"  (keeps {gate.keep:.0%} of the answerable queries)",
        ),
        ("unanswerable rejected", _number(gate.unanswerable_rejected)),
        (
            "queries",
            f"{len(gate.answerable)} answerable, {len(gate.unanswerable)} unanswerable",
        ),
        ("negatives from", gate.negatives_source),
    ]
    width = max(len(name) for name, _ in rows)
    return ["Gate:", *(f"  {name:<{width}}  {value}" for name, value in rows)]


# -- report_differences and compare_reports -------------------------------------


def _change(a: float | None, b: float | None) -> dict[str, float | None]:
    delta = b - a if a is not None and b is not None else None
    return {"a": a, "b": b, "delta": delta}


def _gate_value(gate: GateReport | None, name: str) -> Any:
    return getattr(gate, name) if gate is not None else None


def _rank_value(rank: int | None, miss: int) -> int:
    return rank if rank is not None else miss


def _rank_changes(a: EvaluationReport, b: EvaluationReport) -> dict[str, Any]:
    """Queries matched by ``(query_set, query)`` (in order, when one is asked twice)."""
    by_key: dict[tuple[str, str], list[QueryResult]] = {}
    for result in a.results:
        by_key.setdefault((result.query_set, result.query), []).append(result)
    pairs: list[tuple[QueryResult, QueryResult]] = []
    only_b = 0
    for result in b.results:
        waiting = by_key.get((result.query_set, result.query))
        if waiting:
            pairs.append((waiting.pop(0), result))
        else:
            only_b += 1
    only_a = sum(len(left) for left in by_key.values())

    # A right answer missing from the top k ranks just below the deeper of the two runs.
    miss = max(int(a.settings.get("k", CURVE_K)), int(b.settings.get("k", CURVE_K))) + 1
    changed = [(x, y) for x, y in pairs if x.rank != y.rank]
    changed.sort(
        key=lambda pair: (
            -abs(_rank_value(pair[1].rank, miss) - _rank_value(pair[0].rank, miss)),
            pair[0].query_set,
            pair[0].query,
        )
    )
    improved = sum(1 for x, y in changed if _rank_value(y.rank, miss) < _rank_value(x.rank, miss))
    return {
        "matched": len(pairs),
        "only_in_a": only_a,
        "only_in_b": only_b,
        "changed": len(changed),
        "improved": improved,
        "worsened": len(changed) - improved,
        "examples": [
            {"query_set": x.query_set, "query": x.query, "a": x.rank, "b": y.rank}
            for x, y in changed[:EXAMPLES]
        ],
    }


def report_differences(
    a: EvaluationReport, b: EvaluationReport, *, names: tuple[str, str] = ("a", "b")
) -> dict[str, Any]:
    """What changed from run ``a`` to run ``b``, as JSON-ready data.

    Keys: ``names`` (``{"a": ..., "b": ...}``); ``sets``, one entry per query set in both runs
    with ``queries`` and ``metrics`` (``recall@1``, ``recall@5``, ``recall@10``, ``mrr``,
    ``ndcg@10``, ``index_loss@10``), each ``{"a", "b", "delta"}``; ``only_in_a`` and
    ``only_in_b`` (query sets in one run only); ``gate`` (``None`` when neither run measured
    one); ``latency_ms``; ``seconds``; ``settings`` (only those that differ, each
    ``{"a", "b"}``, a missing one as ``None``); ``ranks``: how many queries matched by
    ``(query_set, query)`` changed the rank of their first right answer, with the largest
    changes as ``examples`` (a rank of ``None``: not in the top k).
    """
    sets_a = {s.query_set: s for s in a.sets}
    sets_b = {s.query_set: s for s in b.sets}
    sets = [
        {
            "query_set": name,
            "queries": {"a": sets_a[name].queries, "b": sets_b[name].queries},
            "metrics": {
                key: _change(read(sets_a[name]), read(sets_b[name])) for _, key, read in _METRICS
            },
        }
        for name in [s.query_set for s in a.sets]
        if name in sets_b
    ]
    gate: dict[str, Any] | None = None
    if a.gate is not None or b.gate is not None:
        gate = {
            key: _change(_gate_value(a.gate, key), _gate_value(b.gate, key))
            for key in ("auroc", "recommended_min_score", "unanswerable_rejected", "keep")
        }
        gate["negatives_source"] = {
            "a": _gate_value(a.gate, "negatives_source"),
            "b": _gate_value(b.gate, "negatives_source"),
        }
    settings = {
        key: {"a": a.settings.get(key), "b": b.settings.get(key)}
        for key in sorted({*a.settings, *b.settings})
        if a.settings.get(key) != b.settings.get(key)
    }
    return {
        "names": {"a": names[0], "b": names[1]},
        "sets": sets,
        "only_in_a": [name for name in sets_a if name not in sets_b],
        "only_in_b": [name for name in sets_b if name not in sets_a],
        "gate": gate,
        "latency_ms": {
            key: _change(a.latency_ms.get(key), b.latency_ms.get(key)) for key in ("p50", "p95")
        },
        "seconds": _change(a.seconds, b.seconds),
        "settings": settings,
        "ranks": _rank_changes(a, b),
    }


def _setting(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, sort_keys=True)


def _rank_text(rank: int | None) -> str:
    return "miss" if rank is None else str(rank)


def compare_reports(
    a: EvaluationReport, b: EvaluationReport, *, names: tuple[str, str] = ("a", "b")
) -> str:
    """Two runs side by side, as plain text: what changed and the settings that explain it.

    Per query set in both runs, each metric as ``a``, ``b`` and the difference (Δ = b − a);
    the sets in only one run; the gate, latency and time; the settings that differ; and how
    many queries (matched by ``(query_set, query)``) changed rank, with the largest changes.
    """
    diff = report_differences(a, b, names=names)
    name_a, name_b = names
    lines = [f"Comparing {name_a} → {name_b} (Δ = {name_b} − {name_a})", ""]

    if diff["sets"]:
        rows: list[list[str]] = []
        for entry in diff["sets"]:
            queries = entry["queries"]
            count = (
                str(queries["a"])
                if queries["a"] == queries["b"]
                else f"{queries['a']} → {queries['b']}"
            )
            for i, (column, key, _) in enumerate(_METRICS):
                change = entry["metrics"][key]
                rows.append(
                    [
                        entry["query_set"] if i == 0 else "",
                        column,
                        count if i == 0 else "",
                        _number(change["a"]),
                        _number(change["b"]),
                        _delta(change["delta"]),
                    ]
                )
        lines += _table(["query set", "metric", "queries", name_a, name_b, "Δ"], rows, left=2)
    else:
        lines.append("No query set is in both runs.")
    for key, name in (("only_in_a", name_a), ("only_in_b", name_b)):
        if diff[key]:
            lines.append(f"Only in {name}: {', '.join(diff[key])}")

    gate = diff["gate"]
    if gate is not None:
        rows = [
            [label, _number(gate[key]["a"]), _number(gate[key]["b"]), _delta(gate[key]["delta"])]
            for label, key in (
                ("AUROC", "auroc"),
                ("recommended min_score", "recommended_min_score"),
                ("unanswerable rejected", "unanswerable_rejected"),
                ("keep", "keep"),
            )
        ]
        lines += ["", *_table(["gate", name_a, name_b, "Δ"], rows)]
        sources = gate["negatives_source"]
        if sources["a"] != sources["b"]:
            lines.append(
                f"  negatives from: {sources['a'] or '(no gate)'} → {sources['b'] or '(no gate)'}"
            )
        else:
            lines.append(f"  negatives from: {sources['a']}")
    else:
        lines += ["", "Gate: measured in neither run."]

    rows = [
        [f"latency {key} (ms)", _number(change["a"]), _number(change["b"]), _delta(change["delta"])]
        for key, change in diff["latency_ms"].items()
    ]
    seconds = diff["seconds"]
    rows.append(
        ["total time (s)", _number(seconds["a"]), _number(seconds["b"]), _delta(seconds["delta"])]
    )
    lines += ["", *_table(["cost", name_a, name_b, "Δ"], rows)]

    lines.append("")
    if diff["settings"]:
        lines.append("Settings that differ:")
        lines += [
            f"  {key}: {_setting(change['a'])} → {_setting(change['b'])}"
            for key, change in diff["settings"].items()
        ]
    else:
        lines.append("Settings: the same.")

    ranks = diff["ranks"]
    lines += [
        "",
        f"Rank of the first right answer changed for {ranks['changed']} of {ranks['matched']} "
        f"queries in both runs ({ranks['improved']} better, {ranks['worsened']} worse).",
    ]
    unmatched = [
        f"{ranks[key]} only in {name}"
        for key, name in (("only_in_a", name_a), ("only_in_b", name_b))
        if ranks[key]
    ]
    if unmatched:
        lines.append(f"Queries not in both runs: {', '.join(unmatched)}.")
    if ranks["examples"]:
        lines.append("Largest changes (miss: not in the top k):")
        lines += [
            f"  {example['query_set']}  {example['query']}: "
            f"{_rank_text(example['a'])} → {_rank_text(example['b'])}"
            for example in ranks["examples"]
        ]
    return "\n".join(lines)


# -- plot_report -------------------------------------------------------------------


def _recall_curve(results: Sequence[QueryResult], depth: int) -> list[float]:
    ranks = [r.rank for r in results]
    return [
        sum(1 for rank in ranks if rank is not None and rank <= k) / len(ranks)
        for k in range(1, depth + 1)
    ]


def plot_report(report: EvaluationReport, path: str | os.PathLike[str]) -> None:
    """Write a PNG: recall@k curves per query set (left), top-1 score histograms (right).

    The curves run over k = 1..10 and come from each query's rank. The histograms show the
    best match's score for answerable and unanswerable queries, with the recommended
    ``min_score`` as a vertical line.

    Query set names may be in any script; they are drawn with the fonts contact sheets use
    (``MULTIMODAL_RAG_FONTS``, the shipped Vazirmatn, the system's fonts).

    Raises:
        MissingDependencyError: matplotlib is not installed (``pip install 'multimodal-rag[eval]'``).
        InvalidInputError: A font file named in ``MULTIMODAL_RAG_FONTS`` is missing or not a font.
    """
    matplotlib = require("matplotlib", user="plot_report", extra="eval")
    families = _font_families([metrics.query_set for metrics in report.sets])
    # Text objects take their font family from rcParams when they are made: make them all here.
    with matplotlib.rc_context({"font.family": families}):
        _plot(report, path)


def _font_families(texts: Sequence[str]) -> list[str]:
    """matplotlib's fallback list of families, with every font file the texts need registered."""
    font_manager = require("matplotlib.font_manager", user="plot_report", extra="eval")
    stack = font_stack()
    for text in texts:  # lets the stack ask fontconfig for letters its fonts lack
        face = None
        for cluster in clusters(clean_text(text)):
            face = stack.face_for(cluster, prefer=face)
    families: list[str] = []
    for face in stack.faces:
        if face.index != 0:  # matplotlib reads only the first face of a collection
            continue
        if face not in _REGISTERED:
            font_manager.fontManager.addfont(os.fspath(face.path))
            _REGISTERED.add(face)
        families.append(face.family)
    return [*dict.fromkeys(families), "DejaVu Sans"]


def _plot_text(text: str) -> str:
    """``text`` as matplotlib must be given it to show it shaped and in reading order."""
    ft2font = require("matplotlib.ft2font", user="plot_report", extra="eval")
    if hasattr(ft2font, "__libraqm_version__"):  # matplotlib lays it out itself
        return clean_text(text)
    return visual_text(text)


#: Font files already added to matplotlib's font manager (adding one again duplicates it).
_REGISTERED: set[FontFace] = set()


def _plot(report: EvaluationReport, path: str | os.PathLike[str]) -> None:
    figure_module = require("matplotlib.figure", user="plot_report", extra="eval")
    agg = require("matplotlib.backends.backend_agg", user="plot_report", extra="eval")

    figure = figure_module.Figure(figsize=(12, 4.8), layout="constrained")
    agg.FigureCanvasAgg(figure)  # draws without a display, whatever pyplot's backend is
    curves, scores = figure.subplots(1, 2)

    by_set: dict[str, list[QueryResult]] = {}
    for result in report.results:
        by_set.setdefault(result.query_set, []).append(result)
    ks = list(range(1, CURVE_K + 1))
    drawn = False
    for metrics in report.sets:
        results = by_set.get(metrics.query_set)
        if results:
            curves.plot(
                ks,
                _recall_curve(results, CURVE_K),
                marker="o",
                label=_plot_text(metrics.query_set),
            )
            drawn = True
    curves.set(xlabel="k", ylabel="recall@k", title="Recall@k per query set", ylim=(0, 1.02))
    curves.set_xticks(ks)
    curves.grid(alpha=0.3)
    if drawn:
        curves.legend(fontsize="small", loc="lower right")
    else:
        curves.text(0.5, 0.5, "no queries", ha="center", va="center", transform=curves.transAxes)

    _plot_gate(scores, report.gate)
    figure.savefig(os.fspath(path), format="png", dpi=100)


def _plot_gate(axes: Any, gate: GateReport | None) -> None:
    axes.set(xlabel="top-1 score", ylabel="queries", title="Best match's score")
    if gate is None or not (gate.answerable or gate.unanswerable):
        axes.text(
            0.5,
            0.5,
            "gate not measured:\nno queries without a right answer",
            ha="center",
            va="center",
            transform=axes.transAxes,
        )
        return
    values = [*gate.answerable, *gate.unanswerable]
    low, high = min(values), max(values)
    if high - low < 1e-6:  # one value: give the bins some width
        low, high = low - 0.01, high + 0.01
    bins = [low + (high - low) * i / 30 for i in range(31)]
    series: Mapping[str, tuple[float, ...]] = {
        f"answerable ({len(gate.answerable)})": gate.answerable,
        f"unanswerable ({len(gate.unanswerable)})": gate.unanswerable,
    }
    for label, data in series.items():
        if data:
            axes.hist(data, bins=bins, alpha=0.6, label=label)
    if gate.recommended_min_score is not None:
        axes.axvline(
            gate.recommended_min_score,
            color="black",
            linestyle="--",
            label=f"min_score {gate.recommended_min_score:.3f} (keeps {gate.keep:.0%})",
        )
    title = "Best match's score"
    if gate.auroc is not None:
        title += f" (AUROC {gate.auroc:.3f})"
    axes.set_title(title)
    axes.legend(fontsize="small")
