"""What answerers do with the matches a search found: the similarity gate, what to say when
nothing passes it, and the sources an answer cites."""

from __future__ import annotations

from collections.abc import Sequence

from multimodal_rag.errors import InvalidInputError
from multimodal_rag.types import Hit, Source

__all__ = ["check_min_score", "no_match_text", "passing_matches", "sources_of"]


def check_min_score(min_score: float | None) -> float | None:
    if min_score is None:
        return None
    if isinstance(min_score, bool) or not isinstance(min_score, (int, float)) or not -1.0 <= min_score <= 1.0:
        raise InvalidInputError(f"min_score must be a similarity between -1 and 1, or None; got {min_score!r}")
    return float(min_score)


def passing_matches(matches: Sequence[Hit], min_score: float | None) -> list[Hit]:
    """The matches that clear the similarity gate, best first.

    Matches below ``min_score`` are dropped: a weak match would only mislead the answer.
    """
    ordered = sorted(matches, key=lambda hit: hit.score, reverse=True)
    if min_score is None:
        return ordered
    return [hit for hit in ordered if hit.score >= min_score]


def no_match_text(matches: Sequence[Hit], min_score: float | None) -> str:
    """What an answerer says instead of guessing when nothing matches well enough."""
    if not matches:
        return "No matching item was found in the knowledge base (it returned no matches)."
    best = max(hit.score for hit in matches)
    return (
        f"No matching item was found in the knowledge base: the closest one scores {best:.3f}, "
        f"below the minimum similarity of {min_score:.3f}."
    )


def sources_of(matches: Sequence[Hit]) -> tuple[Source, ...]:
    return tuple(
        Source(id=hit.id, score=hit.score, description=hit.description, image_path=hit.image_path) for hit in matches
    )
