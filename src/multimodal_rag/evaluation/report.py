"""What an evaluation found: per-query results, metrics per query set, the similarity gate, costs.

Every class here is JSON-ready (``to_dict()`` / ``from_dict()``), so that runs can be
saved and compared (``multimodal-rag eval --compare a.json b.json``).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from attr import asdict
from attrs import field, frozen

from multimodal_rag.types import str_tuple

__all__ = ["EvaluationReport", "GateReport", "QueryResult", "SetMetrics"]

#: The cut-offs recall is reported at.
RECALL_AT = (1, 5, 10)


def _results(value: Iterable[QueryResult]) -> tuple[QueryResult, ...]:
    return tuple(value)


def _sets(value: Iterable[SetMetrics]) -> tuple[SetMetrics, ...]:
    return tuple(value)


def _floats(value: Iterable[float]) -> tuple[float, ...]:
    return tuple(value)


@frozen(kw_only=True)
class QueryResult:
    """One query and what came back.

    Attributes:
        query_set: The set it belongs to: ``"edit:<kind>"`` (an edited knowledge-base
            image), ``"text:labelled"``, ``"text:descriptions"``, ``"image:labelled"``.
        query: What was asked: the source id and edit for edited images, the text, or
            the image path.
        expected: Ids that count as right answers.
        ranked: Ids returned by the knowledge base's own index, best first (at most ``k``).
        scores: Their scores, as the index gave them (unrounded: equal scores are ties).
        exact_ranked: Ids returned by exact search over the same vectors.
        exact_scores: Their scores.
        rank: 1-based rank of the first right answer in ``ranked``, or ``None`` if absent.
        exact_rank: The same in ``exact_ranked``.
        seconds: Time to embed the query and search the index (a batch's share, for queries
            embedded in batches); for a query searched as users search, its whole search.
    """

    query_set: str
    query: str
    expected: tuple[str, ...] = field(converter=str_tuple)
    ranked: tuple[str, ...] = field(converter=str_tuple)
    scores: tuple[float, ...] = field(converter=_floats)
    exact_ranked: tuple[str, ...] = field(converter=str_tuple, default=())
    exact_scores: tuple[float, ...] = field(converter=_floats, default=())
    rank: int | None = None
    exact_rank: int | None = None
    seconds: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self, retain_collection_types=False)


@frozen(kw_only=True)
class SetMetrics:
    """Metrics of one query set, through the index and through exact search.

    Attributes:
        query_set: Which set (see `QueryResult.query_set`).
        queries: How many queries.
        recall: Recall@k for k in `RECALL_AT`, as ``{"1": r, "5": r, "10": r}``.
        mrr: Mean reciprocal rank (of the first right answer; 0 when absent from the top k).
        ndcg10: Mean nDCG@10.
        exact_recall: Recall@k through exact search (what the index would give if it were exact).
        exact_mrr: MRR through exact search.
        exact_ndcg10: nDCG@10 through exact search.
        latency_ms: ``{"p50": ..., "p95": ...}`` of the set's queries timed one at a time (every
            query searched as users search; the first of a vector evaluation's), empty when none was.
    """

    query_set: str
    queries: int
    recall: dict[str, float]
    mrr: float
    ndcg10: float
    exact_recall: dict[str, float]
    exact_mrr: float
    exact_ndcg10: float
    latency_ms: dict[str, float] = field(factory=dict)

    @property
    def index_loss(self) -> dict[str, float]:
        """Recall@k lost to the approximate index: exact minus indexed (0 for an exact store)."""
        return {k: self.exact_recall[k] - self.recall[k] for k in self.recall}

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self, retain_collection_types=False), "index_loss": self.index_loss}


@frozen(kw_only=True)
class GateReport:
    """How well the best match's score separates answerable queries from those with no right answer.

    Attributes:
        answerable: Top-1 scores of image queries that have a right answer in the knowledge base
            (text queries score on another scale, and the gate is weighed against images).
        unanswerable: Top-1 scores of queries that have none (held-out images, user negatives).
        auroc: Probability that an answerable query scores above an unanswerable one (ties half).
        keep: The fraction of answerable queries the recommended gate keeps.
        recommended_min_score: The highest ``min_score`` that still keeps ``keep`` of the
            answerable queries; pass it to the answerer (``OpenAIAnswerer(min_score=...)``).
        unanswerable_rejected: The fraction of unanswerable queries that gate turns away.
        negatives_source: Where the unanswerable queries came from.
    """

    answerable: tuple[float, ...] = field(converter=_floats)
    unanswerable: tuple[float, ...] = field(converter=_floats)
    auroc: float | None
    keep: float
    recommended_min_score: float | None
    unanswerable_rejected: float | None
    negatives_source: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self, retain_collection_types=False)


@frozen(kw_only=True)
class EvaluationReport:
    """What [`MultimodalRAG.evaluate`][multimodal_rag._rag.MultimodalRAG.evaluate] measured.

    Attributes:
        sets: Metrics per query set, in a stable order.
        results: Every query's result.
        gate: The similarity gate's measurement, when there were unanswerable queries.
        latency_ms: Query latency (embedding and index search): ``{"p50": ..., "p95": ...}``.
        seconds: Wall time of the whole evaluation.
        settings: How it was run (sample, seed, edits, k, the knowledge base's kinds), for comparing runs.
        notes: What the figures do and do not tell (for instance, about descriptions used as queries).
    """

    sets: tuple[SetMetrics, ...] = field(converter=_sets)
    results: tuple[QueryResult, ...] = field(converter=_results)
    gate: GateReport | None
    latency_ms: dict[str, float]
    seconds: float
    settings: dict[str, Any]
    notes: tuple[str, ...] = field(converter=str_tuple, default=())

    def to_dict(self) -> dict[str, Any]:
        return {
            "sets": [s.to_dict() for s in self.sets],
            "gate": self.gate.to_dict() if self.gate is not None else None,
            "latency_ms": dict(self.latency_ms),
            "seconds": self.seconds,
            "settings": dict(self.settings),
            "notes": list(self.notes),
            "results": [r.to_dict() for r in self.results],
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> EvaluationReport:
        """A report read back from `to_dict`'s JSON."""
        sets = [
            SetMetrics(**{k: v for k, v in s.items() if k != "index_loss"})  # derived, not stored
            for s in data["sets"]
        ]
        gate = GateReport(**data["gate"]) if data.get("gate") else None
        return cls(
            sets=sets,
            results=[QueryResult(**r) for r in data.get("results", ())],
            gate=gate,
            latency_ms=data["latency_ms"],
            seconds=data["seconds"],
            settings=data["settings"],
            notes=data.get("notes", ()),
        )
