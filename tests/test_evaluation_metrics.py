"""Retrieval metrics, AUROC, the recommended gate and percentiles, checked against hand arithmetic."""

from __future__ import annotations

import itertools
import json
import math
import random
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pytest
from PIL import Image

from multimodal_rag.errors import InvalidInputError
from multimodal_rag.evaluation.metrics import (
    QueryMetrics,
    auroc,
    first_rank,
    mean_metrics,
    percentiles,
    query_metrics,
    recommend_gate,
)
from multimodal_rag.evaluation.report import EvaluationReport
from multimodal_rag.protocols import Embedder

LOG2_3 = math.log2(3)


# --- one query, no ties ------------------------------------------------------------------


def test_single_answer_at_rank_3() -> None:
    m = query_metrics(["a", "b", "c", "d"], [0.9, 0.8, 0.7, 0.6], {"c"})
    # Found at rank 3: not in the top 1, in the top 5 and 10.
    assert m.recall == {1: 0.0, 5: 1.0, 10: 1.0}
    assert m.reciprocal_rank == pytest.approx(1 / 3)
    # DCG = 1 / log2(3 + 1) = 0.5; ideal DCG (one relevant at rank 1) = 1.
    assert m.ndcg == pytest.approx(0.5)


def test_answer_at_rank_1_is_perfect() -> None:
    m = query_metrics(["a", "b"], [0.9, 0.1], ["a"])
    assert m == QueryMetrics(recall={1: 1.0, 5: 1.0, 10: 1.0}, reciprocal_rank=1.0, ndcg=1.0)


def test_two_expected_ids() -> None:
    m = query_metrics(["a", "b", "c"], [0.9, 0.8, 0.7], {"a", "c"})
    # Recall divides by len(expected) = 2: one of two in the top 1, both in the top 5.
    assert m.recall == {1: 0.5, 5: 1.0, 10: 1.0}
    assert m.reciprocal_rank == 1.0
    # DCG = 1/log2(2) + 1/log2(4) = 1 + 0.5 = 1.5; ideal = 1 + 1/log2(3) = 1.6309...
    assert m.ndcg == pytest.approx(1.5 / (1 + 1 / LOG2_3))


def test_nothing_found() -> None:
    m = query_metrics(["a", "b"], [0.9, 0.8], {"z"})
    assert m.recall == {1: 0.0, 5: 0.0, 10: 0.0}
    assert m.reciprocal_rank == 0.0 and m.ndcg == 0.0
    assert query_metrics([], [], {"z"}).reciprocal_rank == 0.0


def test_answer_past_the_ndcg_cutoff_scores_zero() -> None:
    m = query_metrics(["a", "b", "c"], [0.9, 0.8, 0.7], {"c"}, k_values=(1, 2, 3), ndcg_k=2)
    assert m.recall == {1: 0.0, 2: 0.0, 3: 1.0}
    assert m.ndcg == 0.0
    assert m.reciprocal_rank == pytest.approx(1 / 3)


def test_a_repeated_id_counts_once() -> None:
    m = query_metrics(["a", "a"], [0.9, 0.8], {"a"})
    assert m.recall[5] == 1.0 and m.ndcg == 1.0


# --- one query, ties ---------------------------------------------------------------------


def test_two_tied_results_one_relevant() -> None:
    m = query_metrics(["a", "b"], [0.5, 0.5], {"b"})
    # Either order is equally likely: "b" is first half the time.
    assert m.recall[1] == 0.5
    # RR = (1/1 + 1/2) / 2 = 0.75
    assert m.reciprocal_rank == 0.75
    # DCG = (1/log2(2) + 1/log2(3)) / 2 = (1 + 0.6309) / 2
    assert m.ndcg == pytest.approx((1 + 1 / LOG2_3) / 2)


def test_three_tied_after_a_miss() -> None:
    m = query_metrics(["x", "a", "b", "c"], [0.9, 0.7, 0.7, 0.7], {"c"}, k_values=(1, 2, 3, 5))
    # "c" is at rank 2, 3 or 4 with probability 1/3 each.
    assert m.recall[1] == 0.0
    assert m.recall[2] == pytest.approx(1 / 3)
    assert m.recall[3] == pytest.approx(2 / 3)
    assert m.recall[5] == pytest.approx(1.0)
    # RR = (1/2 + 1/3 + 1/4) / 3 = (13/12) / 3 = 13/36
    assert m.reciprocal_rank == pytest.approx(13 / 36)
    # DCG = (1/log2(3) + 1/log2(4) + 1/log2(5)) / 3
    assert m.ndcg == pytest.approx((1 / LOG2_3 + 0.5 + 1 / math.log2(5)) / 3)


def test_three_tied_two_relevant() -> None:
    m = query_metrics(["a", "b", "c"], [0.4, 0.4, 0.4], {"a", "b"})
    # The one irrelevant result is at rank 1, 2 or 3 with probability 1/3 each; the first
    # relevant one is at rank 2 if it is at rank 1, else at rank 1:
    # RR = 1/3 * 1/2 + 2/3 * 1 = 5/6
    assert m.reciprocal_rank == pytest.approx(5 / 6)
    # Each rank holds a relevant result with probability 2/3; recall@1 = (2/3) / 2 = 1/3.
    assert m.recall[1] == pytest.approx(1 / 3)
    assert m.recall[5] == pytest.approx(1.0)
    # DCG = 2/3 * (1 + 1/log2(3) + 1/2); ideal = 1 + 1/log2(3)
    assert m.ndcg == pytest.approx(2 / 3 * (1.5 + 1 / LOG2_3) / (1 + 1 / LOG2_3))


def test_tie_across_the_ndcg_cutoff() -> None:
    m = query_metrics(["a", "b"], [0.5, 0.5], {"b"}, ndcg_k=1)
    # Only rank 1 counts; "b" is there half the time: DCG = 0.5, ideal = 1.
    assert m.ndcg == 0.5


def _brute_force(
    ranked: list[str], scores: list[float], expected: set[str], ks: tuple[int, ...], ndcg_k: int
) -> tuple[dict[int, float], float, float]:
    """The metrics averaged over every order of the tied results, by enumeration."""
    groups = [list(g) for _, g in itertools.groupby(zip(ranked, scores), key=lambda p: p[1])]
    orders = list(itertools.product(*(itertools.permutations(g) for g in groups)))
    recall = dict.fromkeys(ks, 0.0)
    rr = dcg = 0.0
    ideal = sum(1 / math.log2(i + 2) for i in range(min(len(expected), ndcg_k)))
    for order in orders:
        ids = [item for group in order for item, _ in group]
        rel = [item in expected for item in ids]
        for k in ks:
            recall[k] += sum(rel[:k]) / len(expected)
        first = next((i for i, r in enumerate(rel) if r), None)
        rr += 0.0 if first is None else 1 / (first + 1)
        dcg += sum(1 / math.log2(i + 2) for i, r in enumerate(rel[:ndcg_k]) if r)
    n = len(orders)
    return {k: v / n for k, v in recall.items()}, rr / n, dcg / n / ideal


def test_ties_match_enumerating_every_order() -> None:
    rand = random.Random(7)
    for _ in range(60):
        n = rand.randint(1, 7)
        ranked = [f"id{i}" for i in range(n)]
        scores = sorted((rand.choice([0.1, 0.2, 0.3]) for _ in range(n)), reverse=True)
        pool = [*ranked, "absent"]
        expected = set(rand.sample(pool, rand.randint(1, min(3, len(pool)))))
        ks = (1, 2, 3, 5)
        m = query_metrics(ranked, scores, expected, k_values=ks, ndcg_k=4)
        recall, rr, ndcg = _brute_force(ranked, scores, expected, ks, 4)
        assert m.recall == pytest.approx(recall)
        assert m.reciprocal_rank == pytest.approx(rr)
        assert m.ndcg == pytest.approx(ndcg)


def test_scores_one_float32_step_apart_are_not_tied_and_equal_ones_are() -> None:
    high = np.float32(0.9)
    below = np.nextafter(high, np.float32(0))  # 6e-8 lower: the next float32 down
    assert float(high) - float(below) == pytest.approx(6e-8, rel=0.01)
    apart = query_metrics(["a", "b"], [float(high), float(below)], {"b"})
    assert apart.recall[1] == 0.0 and apart.reciprocal_rank == 0.5
    equal = query_metrics(["a", "b"], [float(high), float(high)], {"b"})
    assert equal.recall[1] == 0.5 and equal.reciprocal_rank == 0.75


class TableEmbedder(Embedder):
    """Images (by file stem) and texts embedded as the vectors of a table: scores to the exact bit."""

    kind: ClassVar[str] = "test-table"

    def __init__(self, table: dict[str, list[float]]) -> None:
        self.table = table

    @property
    def dim(self) -> int:
        return 3

    @property
    def fingerprint(self) -> str:
        return "test-table"

    def config(self) -> dict[str, Any]:
        return {"table": self.table}

    def embed_images(self, images: Sequence[Any]) -> np.ndarray:
        return np.array([self.table[Path(image).stem] for image in images], dtype=np.float32)

    def embed_texts(self, texts: Sequence[str]) -> np.ndarray:
        return np.array([self.table[text] for text in texts], dtype=np.float32)


def test_an_evaluation_ties_exactly_equal_scores_only_through_the_index_and_exactly(tmp_path: Path) -> None:
    from multimodal_rag import MultimodalRAG

    def unit(first: float, last: float) -> list[float]:
        return [first, math.sqrt(1 - first * first - last * last), last]

    # "near" scores a and b one float32 step apart (b expected, second); "equal" scores c and
    # d exactly alike (d expected): rounded to 6 decimals, both pairs would look tied.
    high = float(np.float32(0.9))
    table = {
        "a": unit(high, 0.0), "b": unit(float(np.nextafter(np.float32(high), np.float32(0))), 0.0),
        "c": unit(0.0, 0.8), "d": unit(0.0, 0.8), "e": unit(0.1, 0.1),
        "near": [1.0, 0.0, 0.0], "equal": [0.0, 0.0, 1.0],
    }  # fmt: skip
    files = []
    for name in "abcde":
        files.append(tmp_path / f"{name}.png")
        Image.new("RGB", (4, 4)).save(files[-1])
    queries = tmp_path / "queries.jsonl"
    queries.write_text('{"query": "near", "expected": ["b"]}\n{"query": "equal", "expected": ["d"]}\n')
    with MultimodalRAG.create(tmp_path / "kb", embedder=TableEmbedder(table)) as rag:
        rag.add(files, ids=list("abcde"), progress=False)
        report = rag.evaluate(queries=queries, edits=[], progress=False)
    near, equal = sorted((r for r in report.results), key=lambda r: r.query != "near")
    # The index's own scores, unrounded: one step apart, and exactly equal.
    assert near.ranked[:2] == ("a", "b") and 0 < near.scores[0] - near.scores[1] < 1e-7
    assert round(near.scores[0], 6) == round(near.scores[1], 6)
    assert set(equal.ranked[:2]) == {"c", "d"} and equal.scores[0] == equal.scores[1]
    assert near.exact_scores[:2] == near.scores[:2] and equal.exact_scores[:2] == equal.scores[:2]
    [metrics] = report.sets
    # near: rank 2 (reciprocal rank 0.5); equal: ranks 1 and 2 on average (0.75).
    assert metrics.mrr == pytest.approx((0.5 + 0.75) / 2) and metrics.recall["1"] == pytest.approx(0.25)
    # Exact search ties the same way, so an exact index loses nothing.
    assert (metrics.exact_mrr, metrics.exact_recall) == (metrics.mrr, metrics.recall)
    again = EvaluationReport.from_dict(json.loads(json.dumps(report.to_dict())))
    assert again.results == report.results


def test_first_rank_ignores_ties() -> None:
    assert first_rank(["a", "b", "c"], {"b", "c"}) == 2
    assert first_rank(["a"], {"z"}) is None
    assert first_rank([], {"z"}) is None


@pytest.mark.parametrize(
    ("args", "kwargs", "message"),
    [
        ((["a"], [0.1, 0.2], {"a"}), {}, "differ in length"),
        ((["a"], [0.1], set()), {}, "expected is empty"),
        ((["a"], [0.1], {"a"}), {"k_values": (0, 5)}, "k_values"),
        ((["a"], [0.1], {"a"}), {"k_values": (True,)}, "k_values"),
        ((["a"], [0.1], {"a"}), {"ndcg_k": 0}, "ndcg_k"),
    ],
)
def test_query_metrics_rejects_bad_arguments(
    args: tuple[object, ...], kwargs: dict[str, object], message: str
) -> None:
    with pytest.raises(InvalidInputError, match=message):
        query_metrics(*args, **kwargs)  # type: ignore[arg-type]


# --- means -------------------------------------------------------------------------------


def test_mean_metrics() -> None:
    a = QueryMetrics(recall={1: 1.0, 5: 1.0}, reciprocal_rank=1.0, ndcg=1.0)
    b = QueryMetrics(recall={1: 0.0, 5: 1.0}, reciprocal_rank=0.25, ndcg=0.5)
    c = QueryMetrics(recall={1: 0.0, 5: 0.0}, reciprocal_rank=0.0, ndcg=0.0)
    recall, mrr, ndcg = mean_metrics([a, b, c])
    assert recall == pytest.approx({1: 1 / 3, 5: 2 / 3})
    assert mrr == pytest.approx(1.25 / 3)
    assert ndcg == pytest.approx(0.5)


def test_mean_metrics_rejects_empty_and_mixed_cutoffs() -> None:
    with pytest.raises(InvalidInputError, match="no query metrics"):
        mean_metrics([])
    a = QueryMetrics(recall={1: 1.0}, reciprocal_rank=1.0, ndcg=1.0)
    b = QueryMetrics(recall={5: 1.0}, reciprocal_rank=1.0, ndcg=1.0)
    with pytest.raises(InvalidInputError, match="cut-offs"):
        mean_metrics([a, b])


# --- AUROC -------------------------------------------------------------------------------


def test_auroc_known_cases() -> None:
    assert auroc([0.9, 0.8], [0.1, 0.2]) == 1.0
    assert auroc([0.1, 0.2], [0.9, 0.8]) == 0.0
    assert auroc([0.5, 0.5], [0.5, 0.5, 0.5]) == 0.5
    # Pairs: 0.9 > 0.5, 0.9 > 0.1, 0.4 < 0.5, 0.4 > 0.1 -> 3 of 4.
    assert auroc([0.9, 0.4], [0.5, 0.1]) == 0.75
    # One tie (half) and one win: (0.5 + 1) / 2.
    assert auroc([0.5], [0.5, 0.1]) == 0.75


def test_auroc_of_an_empty_side_is_none() -> None:
    assert auroc([], [0.1]) is None
    assert auroc([0.1], []) is None


def test_auroc_rejects_non_finite_scores() -> None:
    with pytest.raises(InvalidInputError, match="finite"):
        auroc([float("nan")], [0.1])


# --- the gate ----------------------------------------------------------------------------


def test_gate_keeps_the_requested_fraction() -> None:
    answerable = [0.5 + 0.01 * i for i in range(50)]  # 0.50 .. 0.99
    unanswerable = [0.1 + 0.01 * i for i in range(20)]  # all below 0.5
    random.Random(3).shuffle(answerable)
    threshold, rejected = recommend_gate(answerable, unanswerable, keep=0.9)
    # 45 of 50 must stay, so the threshold is the 6th lowest, 0.55.
    assert threshold == pytest.approx(0.55)
    assert threshold is not None
    assert sum(s >= threshold for s in answerable) == 45
    assert rejected == 1.0


def test_gate_threshold_is_the_highest_that_keeps_enough() -> None:
    scores = [0.1 * i for i in range(1, 11)]  # 0.1 .. 1.0
    # keep=0.7 -> 7 of 10 (0.7 * 10 is 7.000000000000001 in floating point).
    threshold, _ = recommend_gate(scores, [], keep=0.7)
    assert threshold == pytest.approx(0.4)
    # keep=1 keeps everything: the lowest score.
    assert recommend_gate(scores, [], keep=1.0)[0] == pytest.approx(0.1)
    # keep=0.95 of 10 -> 10 (rounded up).
    assert recommend_gate(scores, [], keep=0.95)[0] == pytest.approx(0.1)


def test_gate_with_overlapping_scores() -> None:
    threshold, rejected = recommend_gate(
        [0.55] * 8 + [0.9, 0.95], [0.54, 0.55, 0.56, 0.2], keep=0.5
    )
    # Five must stay; 0.55 is the highest score that keeps them (all ten in fact).
    assert threshold == 0.55
    # Below 0.55: 0.54 and 0.2 -> 2 of 4.
    assert rejected == 0.5


def test_gate_without_scores() -> None:
    assert recommend_gate([], [0.1]) == (None, None)
    assert recommend_gate([0.3, 0.7], []) == (0.3, None)


@pytest.mark.parametrize("keep", [0.0, -0.1, 1.01, float("nan"), True])
def test_gate_rejects_bad_keep(keep: float) -> None:
    with pytest.raises(InvalidInputError, match="keep"):
        recommend_gate([0.5], [0.1], keep=keep)


# --- percentiles -------------------------------------------------------------------------


def test_percentiles_interpolate_linearly() -> None:
    # p50 of 1..4 = 2.5; p95 = 1 + 0.95 * 3 = 3.85.
    assert percentiles([4.0, 1.0, 3.0, 2.0]) == pytest.approx({"p50": 2.5, "p95": 3.85})
    assert percentiles([7.0], qs=(0, 99.9)) == {"p0": 7.0, "p99.9": 7.0}


def test_percentiles_reject_bad_input() -> None:
    with pytest.raises(InvalidInputError, match="no values"):
        percentiles([])
    with pytest.raises(InvalidInputError, match=r"\[0, 100\]"):
        percentiles([1.0], qs=(101,))
