"""Which answerer a knowledge base uses when it is given none."""

from __future__ import annotations

import os

from multimodal_rag.protocols import Answerer

__all__ = ["choose_answerer"]


def choose_answerer(*, min_score: float | None = None) -> tuple[Answerer, str]:
    """The default answerer and why it was chosen.

    [`OpenAIAnswerer`][multimodal_rag.answerers.openai.OpenAIAnswerer] when ``OPENAI_API_KEY`` is set (it also reads
    ``OPENAI_BASE_URL``), otherwise the offline [`ExtractiveAnswerer`][multimodal_rag.answerers.extractive.ExtractiveAnswerer].
    Neither makes a network call here.

    Args:
        min_score: The similarity gate of either answerer (``None``: every match is used).
    """
    from multimodal_rag.answerers.openai import API_KEY_ENV, OpenAIAnswerer

    if os.environ.get(API_KEY_ENV):
        answerer = OpenAIAnswerer(min_score=min_score)
        return answerer, f"{API_KEY_ENV} is set: answering with {answerer!r}"
    from multimodal_rag.answerers.extractive import ExtractiveAnswerer

    return ExtractiveAnswerer(min_score=min_score), (
        f"{API_KEY_ENV} is not set: answering offline with ExtractiveAnswerer, which quotes the best "
        f"match's description (set {API_KEY_ENV} or pass answerer= to answer with a vision model)"
    )
