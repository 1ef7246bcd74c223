"""What answerers do with the matches a search found: the similarity gate, what to say when
nothing passes it, and the sources an answer cites."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from multimodal_rag.errors import InvalidInputError
from multimodal_rag.types import Hit, Source

__all__ = ["IMAGE_TEXT", "check_min_score", "image_text", "no_match_text", "passing_matches", "similarity", "sources_of"]

#: The key of an answerer's ``metadata`` under which the search gives the text it read in the
#: user's photo (``ask`` on a knowledge base that reads text).
IMAGE_TEXT = "image_text"


def image_text(metadata: Mapping[str, Any] | None) -> str | None:
    """The text read in the user's photo, from an answerer's ``metadata`` (None when none was read)."""
    value = (metadata or {}).get(IMAGE_TEXT)
    return value if isinstance(value, str) and value.strip() else None


def check_min_score(min_score: float | None) -> float | None:
    if min_score is None:
        return None
    if isinstance(min_score, bool) or not isinstance(min_score, (int, float)) or not -1.0 <= min_score <= 1.0:
        raise InvalidInputError(f"min_score must be a similarity between -1 and 1, or None; got {min_score!r}")
    return float(min_score)


def similarity(hit: Hit) -> float:
    """The cosine similarity the gate judges: the hit's own, or its score where none was computed."""
    return hit.similarity if hit.similarity is not None else hit.score


def passing_matches(matches: Sequence[Hit], min_score: float | None) -> list[Hit]:
    """The matches that clear the similarity gate, best first.

    Matches whose cosine similarity is below ``min_score`` are dropped: a weak match would
    only mislead the answer. A hit found by the lexical channel alone has no similarity
    and is judged by its score. The search's order (fused, reranked) is kept.
    """
    ordered = sorted(matches, key=lambda hit: hit.score, reverse=True) if _unordered(matches) else list(matches)
    if min_score is None:
        return ordered
    return [hit for hit in ordered if similarity(hit) >= min_score]


def _unordered(matches: Sequence[Hit]) -> bool:
    # Matches a caller built by hand may come in any order; a search's never do.
    return not any(hit.signals for hit in matches)


def no_match_text(matches: Sequence[Hit], min_score: float | None) -> str:
    """What an answerer says instead of guessing when nothing matches well enough."""
    if not matches:
        return "No matching item was found in the knowledge base (it returned no matches)."
    best = max(similarity(hit) for hit in matches)
    return (
        f"No matching item was found in the knowledge base: the closest one scores {best:.3f}, "
        f"below the minimum similarity of {min_score:.3f}."
    )


def sources_of(matches: Sequence[Hit]) -> tuple[Source, ...]:
    return tuple(
        Source(id=hit.id, score=hit.score, description=hit.description, image_path=hit.image_path) for hit in matches
    )
