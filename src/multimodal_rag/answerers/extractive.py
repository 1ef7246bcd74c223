"""An answerer that needs no model and no network: it quotes the best match.

It does not read the question; it reports what the knowledge base knows about the closest
item (its description and score) and lists the runners-up, so a knowledge base can be
used, demonstrated and tested without any provider.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

from multimodal_rag._validation import check_int, check_question
from multimodal_rag.answerers.matches import (
    check_min_score,
    image_text,
    no_match_text,
    passing_matches,
    sources_of,
)
from multimodal_rag.protocols import Answerer
from multimodal_rag.types import Answer, Hit, ImageInput

__all__ = ["ExtractiveAnswerer"]


class ExtractiveAnswerer(Answerer):
    """Answers with the best match's description, its score and the other candidates.

    Args:
        min_score: Matches scoring below this are ignored; when none is left the answer
            says that no matching item was found. ``None`` keeps every match.
        max_candidates: How many runners-up to list after the best match.
    """

    kind: ClassVar[str] = "extractive"

    #: What `Answer.model` says for answers from this class.
    model_name: ClassVar[str] = "extractive"

    def __init__(self, *, min_score: float | None = None, max_candidates: int = 4) -> None:
        self.max_candidates = check_int("max_candidates", max_candidates, minimum=0)
        self.min_score = check_min_score(min_score)

    def answer(
        self,
        question: str,
        *,
        image: ImageInput | None,
        matches: Sequence[Hit],
        metadata: Mapping[str, Any] | None = None,
    ) -> Answer:
        started = time.perf_counter()
        check_question(question)
        kept = passing_matches(matches, self.min_score)
        if not kept:
            text = no_match_text(matches, self.min_score)
            return Answer(text=text, model=self.model_name, latency_s=time.perf_counter() - started)
        best, others = kept[0], kept[1 : 1 + self.max_candidates]
        if best.description:
            lines = [f"Best match: {best.description} (id {best.id}, score {best.score:.3f})."]
        else:
            lines = [f"Best match: id {best.id} (score {best.score:.3f}), which has no description."]
        if best.matched:
            lines.append(f"It matched on: {', '.join(best.matched)}.")
        read = image_text(metadata)
        if read is not None:
            lines.insert(0, f"Text read in your image: {' / '.join(read.splitlines())}")
        if others:
            lines.append("Other candidates:")
            lines.extend(
                f"- {hit.description or '(no description)'} (id {hit.id}, score {hit.score:.3f})" for hit in others
            )
        return Answer(
            text="\n".join(lines),
            sources=sources_of([best, *others]),
            model=self.model_name,
            latency_s=time.perf_counter() - started,
        )

    def config(self) -> dict[str, Any]:
        return {"min_score": self.min_score, "max_candidates": self.max_candidates}

    def __repr__(self) -> str:
        return f"ExtractiveAnswerer(min_score={self.min_score!r}, max_candidates={self.max_candidates})"
