"""Retrieval metrics, the similarity gate's separation and its recommended threshold.

Pure functions over ids and scores, small enough to check by hand.

Relevance is binary: a returned id is relevant when it is one of the query's expected
ids. Results with equal scores have no defined order (an index may return them either
way), so `query_metrics` reports each metric as its expected value over every order
of the tied results (McSherry & Najork, "Computing information retrieval performance
measures efficiently in the presence of tied scores", ECIR 2008). Two tied results at
ranks 1 and 2, one of them relevant, give recall@1 = 0.5 and a reciprocal rank of
(1 + 1/2) / 2 = 0.75.

Tied means exactly equal, with no tolerance: scores one float32 step apart (6e-8 near 0.9)
were ordered by the index, and count in that order. Scores must reach these functions as
the index gave them, not rounded: rounding to 6 decimals would make such neighbours equal
and average their ranks.
"""

from __future__ import annotations

import math
from collections.abc import Collection, Iterable, Sequence

import numpy as np
import numpy.typing as npt
from attrs import field, frozen

from multimodal_rag.errors import InvalidInputError

__all__ = [
    "QueryMetrics",
    "auroc",
    "first_rank",
    "mean_metrics",
    "percentiles",
    "query_metrics",
    "recommend_gate",
]


def _recall_dict(value: dict[int, float]) -> dict[int, float]:
    return dict(value)


@frozen(kw_only=True)
class QueryMetrics:
    """One query's metrics.

    Attributes:
        recall: Recall@k for each cut-off k: the expected fraction of the expected ids
            found in the top k.
        reciprocal_rank: The expected 1 / rank of the first relevant result; 0 when none
            was returned.
        ndcg: The expected nDCG at the cut-off `query_metrics` was given.
    """

    recall: dict[int, float] = field(converter=_recall_dict)
    reciprocal_rank: float
    ndcg: float


def _positive_ints(values: Iterable[int], name: str) -> tuple[int, ...]:
    out = tuple(values)
    for k in out:
        if isinstance(k, bool) or not isinstance(k, int) or k < 1:
            raise InvalidInputError(f"{name} must be positive integers, got {k!r}")
    return out


def _tie_groups(scores: Sequence[float]) -> list[tuple[int, int]]:
    """``(start, end)`` of each run of equal consecutive scores (end exclusive).

    Results come best first, so equal scores are neighbours; a run of them is one group
    whose members could have come in any order. Equal is ``==``: any difference orders them.
    """
    groups: list[tuple[int, int]] = []
    start = 0
    for i in range(1, len(scores) + 1):
        if i == len(scores) or scores[i] != scores[start]:
            groups.append((start, i))
            start = i
    return groups


def _relevance(ranked: Sequence[str], expected: Collection[str]) -> list[bool]:
    # A repeated id counts once, at its best position: finding it twice finds nothing new.
    seen: set[str] = set()
    out = []
    for item in ranked:
        out.append(item in expected and item not in seen)
        seen.add(item)
    return out


def _expected_reciprocal_rank(start: int, size: int, relevant: int) -> float:
    """E[1 / rank of the first relevant result] for ``relevant`` of ``size`` tied results
    at 0-based positions ``start .. start + size - 1``, over all their orders.

    The first relevant result is at offset j when the other ``relevant - 1`` relevant
    results all fall among the ``size - 1 - j`` positions after it:
    P(j) = C(size - 1 - j, relevant - 1) / C(size, relevant).
    """
    total = math.comb(size, relevant)
    return sum(
        math.comb(size - 1 - j, relevant - 1) / total / (start + j + 1)
        for j in range(size - relevant + 1)
    )


def query_metrics(
    ranked: Sequence[str],
    scores: Sequence[float],
    expected: Collection[str],
    *,
    k_values: Iterable[int] = (1, 5, 10),
    ndcg_k: int = 10,
) -> QueryMetrics:
    """Recall@k, reciprocal rank and nDCG of one query, averaged over the orders of ties.

    Recall@k is the number of expected ids found in the top k divided by the number of
    expected ids (not by ``min(len(expected), k)``): with one right answer, as for an
    edited knowledge-base image, it is 1 when that answer is in the top k and 0 otherwise.
    nDCG@k uses binary gains, ``1 / log2(rank + 1)`` discounts, and an ideal ranking of
    ``min(len(expected), k)`` relevant results.

    A tie is a run of equal consecutive scores in ``scores``. Within a run of n results
    holding r relevant ones, each position is relevant with probability r / n, which gives
    the expected recall and DCG; the reciprocal rank takes the distribution of the first
    relevant position within the first run that holds any. Ties with results past the end
    of ``ranked`` (beyond the k the index was asked for) are unknown and not counted.

    Args:
        ranked: Returned ids, best first.
        scores: Their scores, same length.
        expected: The ids that count as right answers; must not be empty.
        k_values: Cut-offs for recall.
        ndcg_k: Cut-off for nDCG.

    Returns:
        The query's metrics, ``recall`` keyed by each k in ``k_values``.

    Raises:
        InvalidInputError: ``ranked`` and ``scores`` differ in length, ``expected`` is
            empty, or a cut-off is not a positive integer.
    """
    if len(ranked) != len(scores):
        raise InvalidInputError(
            f"ranked and scores differ in length ({len(ranked)} ids, {len(scores)} scores)"
        )
    if not expected:
        raise InvalidInputError("expected is empty: metrics need at least one right answer")
    cutoffs = _positive_ints(k_values, "k_values")
    (ndcg_cutoff,) = _positive_ints((ndcg_k,), "ndcg_k")

    relevant = _relevance(ranked, expected)
    n_expected = len(set(expected))
    found_at = dict.fromkeys(cutoffs, 0.0)
    dcg = 0.0
    reciprocal_rank = 0.0
    rr_done = False
    for start, end in _tie_groups(scores):
        size = end - start
        hits = sum(relevant[start:end])
        if not hits:
            continue
        share = hits / size
        for k in cutoffs:
            found_at[k] += share * max(0, min(end, k) - start)
        dcg += share * sum(1.0 / math.log2(p + 2) for p in range(start, min(end, ndcg_cutoff)))
        if not rr_done:
            reciprocal_rank = _expected_reciprocal_rank(start, size, hits)
            rr_done = True

    ideal = sum(1.0 / math.log2(p + 2) for p in range(min(n_expected, ndcg_cutoff)))
    return QueryMetrics(
        recall={k: found_at[k] / n_expected for k in cutoffs},
        reciprocal_rank=reciprocal_rank,
        ndcg=dcg / ideal,
    )


def first_rank(ranked: Sequence[str], expected: Collection[str]) -> int | None:
    """1-based rank of the first expected id in ``ranked`` as returned (ties not considered),
    or ``None`` when none is there."""
    for i, item in enumerate(ranked, start=1):
        if item in expected:
            return i
    return None


def mean_metrics(items: Sequence[QueryMetrics]) -> tuple[dict[int, float], float, float]:
    """Mean recall@k, mean reciprocal rank (MRR) and mean nDCG over queries.

    Raises:
        InvalidInputError: ``items`` is empty (a mean of nothing has no value; leave an
            empty query set out rather than report zeros), or the items were computed
            with different recall cut-offs.
    """
    if not items:
        raise InvalidInputError("no query metrics to average")
    cutoffs = tuple(items[0].recall)
    for item in items:
        if tuple(item.recall) != cutoffs:
            raise InvalidInputError(
                f"query metrics have different recall cut-offs: {cutoffs} and {tuple(item.recall)}"
            )
    n = len(items)
    recall = {k: math.fsum(item.recall[k] for item in items) / n for k in cutoffs}
    mrr = math.fsum(item.reciprocal_rank for item in items) / n
    ndcg = math.fsum(item.ndcg for item in items) / n
    return recall, mrr, ndcg


def _finite(values: Sequence[float], name: str) -> npt.NDArray[np.float64]:
    array = np.asarray(values, dtype=np.float64).reshape(-1)
    if not np.all(np.isfinite(array)):
        raise InvalidInputError(f"{name} holds a value that is not a finite number")
    return array


def auroc(positive: Sequence[float], negative: Sequence[float]) -> float | None:
    """Area under the ROC curve: the probability that a positive scores above a negative.

    The Mann–Whitney U statistic divided by ``len(positive) * len(negative)``; a tie
    counts one half. 1.0 separates perfectly, 0.5 is chance, 0.0 is perfectly reversed.

    Returns:
        The area, or ``None`` when either side is empty.

    Raises:
        InvalidInputError: A score is not a finite number.
    """
    pos = _finite(positive, "positive")
    neg = np.sort(_finite(negative, "negative"))
    if pos.size == 0 or neg.size == 0:
        return None
    below = np.searchsorted(neg, pos, side="left")
    not_above = np.searchsorted(neg, pos, side="right")
    u = float(np.sum(below)) + 0.5 * float(np.sum(not_above - below))
    return u / (pos.size * neg.size)


def recommend_gate(
    answerable: Sequence[float],
    unanswerable: Sequence[float],
    *,
    keep: float = 0.95,
) -> tuple[float | None, float | None]:
    """The highest ``min_score`` that keeps ``keep`` of the answerable queries.

    The threshold ``t`` is one of the answerable scores: the highest for which at least
    ``ceil(keep * len(answerable))`` of them are ``>= t``. With 50 distinct scores and
    ``keep=0.9``, 45 must pass, so ``t`` is the 6th lowest.

    Args:
        answerable: Top-1 scores of queries that have a right answer.
        unanswerable: Top-1 scores of queries that have none.
        keep: The fraction of answerable queries to keep, in (0, 1].

    Returns:
        ``(t, rejected)``: the threshold, and the fraction of unanswerable scores below it
        (those the gate turns away). ``t`` is ``None`` when there are no answerable scores,
        and ``rejected`` is ``None`` then or when there are no unanswerable scores.

    Raises:
        InvalidInputError: ``keep`` is outside (0, 1], or a score is not a finite number.
    """
    if isinstance(keep, bool) or not isinstance(keep, (int, float)) or not 0 < keep <= 1:
        raise InvalidInputError(f"keep must be in (0, 1], got {keep!r}")
    pos = np.sort(_finite(answerable, "answerable"))
    neg = _finite(unanswerable, "unanswerable")
    if pos.size == 0:
        return None, None
    # Rounded first, so that 0.9 * 50 = 45.000000000000004 still asks for 45.
    needed = max(1, math.ceil(round(keep * pos.size, 9)))
    threshold = float(pos[pos.size - needed])
    if neg.size == 0:
        return threshold, None
    return threshold, float(np.count_nonzero(neg < threshold)) / neg.size


def percentiles(values: Sequence[float], qs: Iterable[float] = (50, 95)) -> dict[str, float]:
    """Percentiles by linear interpolation (numpy's default), keyed ``"p50"``, ``"p95"``, ...

    Raises:
        InvalidInputError: ``values`` is empty or not finite, or a ``q`` is outside [0, 100].
    """
    array = _finite(values, "values")
    if array.size == 0:
        raise InvalidInputError("no values to take percentiles of")
    out: dict[str, float] = {}
    for q in qs:
        if isinstance(q, bool) or not isinstance(q, (int, float)) or not 0 <= q <= 100:
            raise InvalidInputError(f"percentiles must be in [0, 100], got {q!r}")
        out[f"p{q:g}"] = float(np.percentile(array, q))
    return out
