"""Fusing ranked lists from several retrieval channels (vector, lexical) into one.

**Reciprocal-rank fusion** (the default) scores each id ``sum(1 / (RRF_K + rank))`` over the
channels that found it (Cormack, Clarke and Büttcher, SIGIR 2009): it needs no calibration
between a cosine and a BM25 score, and an id both channels rank well wins. **Weighted-score
fusion** scales each channel's scores to [0, 1] (min–max over its results) and sums them with
weights; it keeps how much better the best result is, at the cost of depending on the scores'
spread.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from multimodal_rag.errors import InvalidInputError
from multimodal_rag.types import Signal

__all__ = ["FUSIONS", "RRF_K", "fuse"]

#: The rank offset of reciprocal-rank fusion; 60 is the published default.
RRF_K = 60
FUSIONS = ("rrf", "weighted")

#: One channel's results: ``(id, score)`` best first.
Ranked = Sequence[tuple[str, float]]


def fuse(
    channels: Mapping[str, Ranked],
    *,
    method: str = "rrf",
    weights: Mapping[str, float] | None = None,
) -> list[tuple[str, float, dict[str, Signal]]]:
    """Fuse ``channels`` (name -> ranked ``(id, score)``) into ``(id, fused score, signals)``, best first.

    Ties in the fused score keep the order in which the channels (in their given order)
    first listed the ids, so the result is deterministic.

    Raises:
        InvalidInputError: An unknown method, or weights that are negative or all zero.
    """
    if method not in FUSIONS:
        raise InvalidInputError(f"fusion must be one of {', '.join(FUSIONS)}; got {method!r}")
    weight_of = {name: 1.0 for name in channels}
    if weights is not None:
        unknown = sorted(set(weights) - set(channels))
        if unknown or any(w < 0 for w in weights.values()) or not any(weights.get(n, 1.0) > 0 for n in channels):
            raise InvalidInputError(f"weights must be non-negative, not all zero, for {sorted(channels)}; got {dict(weights)}")
        weight_of.update(weights)
    fused: dict[str, float] = {}
    signals: dict[str, dict[str, Signal]] = {}
    for name, ranked in channels.items():
        scores = [score for _, score in ranked]
        low, high = (min(scores), max(scores)) if scores else (0.0, 0.0)
        for rank, (id_, score) in enumerate(ranked, start=1):
            if name in signals.get(id_, {}):
                continue  # a channel that lists an id twice counts it once, at its best rank
            signals.setdefault(id_, {})[name] = Signal(rank=rank, score=score)
            if method == "rrf":
                contribution = 1.0 / (RRF_K + rank)
            else:
                contribution = (score - low) / (high - low) if high > low else 1.0
            fused[id_] = fused.get(id_, 0.0) + weight_of[name] * contribution
    order = {id_: position for position, id_ in enumerate(fused)}
    ranked_ids = sorted(fused, key=lambda id_: (-fused[id_], order[id_]))
    return [(id_, fused[id_], signals[id_]) for id_ in ranked_ids]
