"""Querying a knowledge base: a search, from the caller's terms to the stores' and back, and the
answer built on its matches.

:class:`Querying` holds :class:`~multimodal_rag.MultimodalRAG`'s search and answer methods
(``embed_query``, ``search``, ``search_by_vector``, ``ask``, ``aask``); the functions below
it turn the caller's terms into a query vector and a filter, and neighbours into hits.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, Literal, overload

from multimodal_rag.errors import InvalidInputError, NotFoundError
from multimodal_rag.locks import ReentrantReadWriteLock, reading
from multimodal_rag.protocols import Answerer, DescriptionStore, Embedder, IdFilter, VectorStore
from multimodal_rag.types import Hit, ImageInput, Neighbor, Record

if TYPE_CHECKING:
    import numpy as np

    from multimodal_rag.evaluation.report import EvaluationReport
    from multimodal_rag.streaming import AnswerStream, AsyncAnswerStream
    from multimodal_rag.types import Answer

__all__ = ["Filter", "Querying", "id_filter", "make_hits", "query_vector"]

#: A search filter: metadata that must match exactly, or a predicate over ids.
Filter = Mapping[str, Any] | IdFilter


class Querying:
    """Search and answer methods of :class:`~multimodal_rag.MultimodalRAG` (documented there)."""

    # Provided by MultimodalRAG.
    embedder: Embedder
    vector_store: VectorStore
    description_store: DescriptionStore
    answerer: Answerer
    _lock: ReentrantReadWriteLock

    def embed_query(
        self, image: ImageInput | None = None, text: str | None = None, *, text_weight: float = 0.5
    ) -> Any:
        """The query vector for an image, a text, or both.

        With both, the result is the normalised weighted sum
        ``(1 - text_weight) * image_vector + text_weight * text_vector``.
        """
        return query_vector(self.embedder, image, text, text_weight=text_weight)

    def search(
        self,
        image: ImageInput | None = None,
        text: str | None = None,
        *,
        k: int = 5,
        filter: Filter | None = None,
        text_weight: float = 0.5,
    ) -> list[Hit]:
        """Find the knowledge-base images most similar to an image, a text, or both.

        Args:
            image: Query image (path, bytes or PIL image).
            text: Query text, in the same space as the images.
            k: How many hits; more than the knowledge base holds returns them all.
            filter: Metadata that must match exactly (``{"category": "animals"}``), or a
                predicate over ids.
            text_weight: Weight of the text when both an image and a text are given.

        Returns:
            Hits, best first, with score, image path, description and metadata.
        """
        query = self.embed_query(image, text, text_weight=text_weight)
        return self.search_by_vector(query, k=k, filter=filter)

    @reading
    def search_by_vector(self, vector: Any, *, k: int = 5, filter: Filter | None = None) -> list[Hit]:
        """Like :meth:`search`, for a query vector already embedded."""
        from multimodal_rag.query import id_filter, make_hits
        from multimodal_rag.validation import check_queries

        # The protocol's queries are (n, dim): one vector becomes one row, checked as the
        # built-in stores check it (numeric, finite, non-zero, of the store's dimension).
        queries = check_queries(vector, self.vector_store.dim, k)
        neighbors = self.vector_store.search(queries, k, filter=id_filter(self.description_store, filter))[0]
        return make_hits(neighbors, self.description_store.get_many([n.id for n in neighbors]))

    # -- answers -----------------------------------------------------------------

    @overload
    def ask(
        self,
        question: str,
        *,
        image: ImageInput | None = ...,
        text: str | None = ...,
        k: int = ...,
        filter: Filter | None = ...,
        text_weight: float = ...,
        stream: Literal[False] = ...,
        metadata: Mapping[str, Any] | None = ...,
    ) -> Answer: ...
    @overload
    def ask(
        self,
        question: str,
        *,
        image: ImageInput | None = ...,
        text: str | None = ...,
        k: int = ...,
        filter: Filter | None = ...,
        text_weight: float = ...,
        stream: Literal[True],
        metadata: Mapping[str, Any] | None = ...,
    ) -> AnswerStream: ...
    @overload
    def ask(
        self,
        question: str,
        *,
        image: ImageInput | None = ...,
        text: str | None = ...,
        k: int = ...,
        filter: Filter | None = ...,
        text_weight: float = ...,
        stream: bool,
        metadata: Mapping[str, Any] | None = ...,
    ) -> Answer | AnswerStream: ...
    def ask(
        self,
        question: str,
        *,
        image: ImageInput | None = None,
        text: str | None = None,
        k: int = 3,
        filter: Filter | None = None,
        text_weight: float = 0.5,
        stream: bool = False,
        metadata: Mapping[str, Any] | None = None,
    ) -> Answer | AnswerStream:
        """Answer a question about an image (or about the knowledge base) from the best matches.

        The knowledge base is searched with ``image`` and ``text`` (by default the question
        itself when no image is given); the :attr:`answerer` then answers from the ``k``
        best matches::

            answer = rag.ask("What is this and where can I buy it?", image="photo.jpg")
            print(answer.text, [source.id for source in answer.sources])

            for chunk in (stream := rag.ask("What is this?", image="photo.jpg", stream=True)):
                print(chunk, end="")
            print(stream.answer.usage)

        Args:
            question: The user's question.
            image: The user's image: the search query, and shown to the answerer.
            text: Search text; defaults to the question when there is no image.
            k: How many matches the answer may draw on.
            filter: Search filter, as in :meth:`search`.
            text_weight: Weight of ``text`` when searching with both an image and a text.
            stream: Return an :class:`AnswerStream` of text chunks instead of an :class:`Answer`.
            metadata: Passed to the answerer.

        Returns:
            The answer, with the sources it drew on; or, with ``stream=True``, an iterator of
            text chunks whose ``answer`` attribute holds the complete answer once read.

        Raises:
            InvalidInputError: An empty question or bad search arguments.
            ImageError: The image cannot be read.
            AnswererError: The answerer failed (a subclass says how).
        """
        answerer, matches = self._answerer_and_matches(question, image, text, k, filter, text_weight)
        if not stream:
            return answerer.answer(question, image=image, matches=matches, metadata=metadata)
        if callable(getattr(answerer, "stream", None)):
            return answerer.stream(question, image=image, matches=matches, metadata=metadata)
        from multimodal_rag.streaming import AnswerStream

        return AnswerStream.from_answer(answerer.answer(question, image=image, matches=matches, metadata=metadata))

    @overload
    async def aask(
        self,
        question: str,
        *,
        image: ImageInput | None = ...,
        text: str | None = ...,
        k: int = ...,
        filter: Filter | None = ...,
        text_weight: float = ...,
        stream: Literal[False] = ...,
        metadata: Mapping[str, Any] | None = ...,
    ) -> Answer: ...
    @overload
    async def aask(
        self,
        question: str,
        *,
        image: ImageInput | None = ...,
        text: str | None = ...,
        k: int = ...,
        filter: Filter | None = ...,
        text_weight: float = ...,
        stream: Literal[True],
        metadata: Mapping[str, Any] | None = ...,
    ) -> AsyncAnswerStream: ...
    @overload
    async def aask(
        self,
        question: str,
        *,
        image: ImageInput | None = ...,
        text: str | None = ...,
        k: int = ...,
        filter: Filter | None = ...,
        text_weight: float = ...,
        stream: bool,
        metadata: Mapping[str, Any] | None = ...,
    ) -> Answer | AsyncAnswerStream: ...
    async def aask(
        self,
        question: str,
        *,
        image: ImageInput | None = None,
        text: str | None = None,
        k: int = 3,
        filter: Filter | None = None,
        text_weight: float = 0.5,
        stream: bool = False,
        metadata: Mapping[str, Any] | None = None,
    ) -> Answer | AsyncAnswerStream:
        """Like :meth:`ask`, for asyncio code; with ``stream=True`` it returns an :class:`AsyncAnswerStream`.

        The search itself runs in the calling thread (it is local and quick); waiting for
        the model does not block the event loop.
        """
        import asyncio

        answerer, matches = self._answerer_and_matches(question, image, text, k, filter, text_weight)
        aanswer = getattr(answerer, "aanswer", None)
        if stream and callable(getattr(answerer, "astream", None)):
            return await answerer.astream(question, image=image, matches=matches, metadata=metadata)
        if callable(aanswer):
            answer: Answer = await aanswer(question, image=image, matches=matches, metadata=metadata)
        else:  # a duck-typed answerer with only the synchronous method
            answer = await asyncio.to_thread(answerer.answer, question, image=image, matches=matches, metadata=metadata)
        if not stream:
            return answer
        from multimodal_rag.streaming import AsyncAnswerStream

        return AsyncAnswerStream.from_answer(answer)

    def _answerer_and_matches(
        self,
        question: str,
        image: ImageInput | None,
        text: str | None,
        k: int,
        filter: Filter | None,
        text_weight: float,
    ) -> tuple[Answerer, list[Hit]]:
        from multimodal_rag.validation import check_question

        check_question(question)
        if self.answerer is None:
            raise InvalidInputError("this knowledge base has no answerer; set rag.answerer or pass answerer=")
        if image is None and text is None:
            text = question  # a question with no picture is its own search
        return self.answerer, self.search(image=image, text=text, k=k, filter=filter, text_weight=text_weight)


    def evaluate(
        self,
        *,
        queries: str | os.PathLike[str] | None = None,
        edits: Sequence[str] | None = None,
        negatives: str | os.PathLike[str] | None = None,
        sample: int | None = 200,
        seed: int = 0,
        k: int = 10,
        keep: float = 0.95,
        progress: bool | None = None,
    ) -> EvaluationReport:
        """Measure how well this knowledge base finds the right images, on its own data.

        Queries are made from the knowledge base's own images by realistic edits (crop,
        downscale, JPEG, rotation, perspective, colour jitter, blur, pasted on clutter), each
        expecting its source; its descriptions serve as text queries; a labelled ``queries``
        file adds real questions and photos. Each query goes through the index and through
        exact search, so recall lost to an approximate index shows. The best match's score
        of answerable and unanswerable queries gives the similarity gate a recommended
        ``min_score``. See ``docs/evaluation.md``.

        Args:
            queries: JSON Lines of ``{"query": text, "expected": [id or image path, ...]}`` or
                ``{"image": path, "expected": [...]}`` (paths relative to the file).
            edits: Which edits to make (default: all of ``evaluation.edits.EDIT_KINDS``).
            negatives: A folder of images with no right answer; by default a fifth of the
                sampled images is held out to play that part.
            sample: How many knowledge-base images to make queries from (``None``: all).
            seed: Makes the sample and the edits repeatable.
            k: How many results each query returns.
            keep: The share of answerable queries the recommended gate must keep.
            progress: Show a progress bar (default: when writing to a terminal).

        Returns:
            Metrics per query set, every query's result, the gate, latency; ``to_dict()``
            gives JSON that ``multimodal-rag eval --compare`` reads.

        Raises:
            InvalidInputError: An unknown edit, a bad setting, or a queries file line that
                names an answer the knowledge base does not hold.
        """
        from multimodal_rag.evaluation.run import evaluate

        return evaluate(
            self, queries=queries, edits=edits, negatives=negatives, sample=sample, seed=seed, k=k, keep=keep, progress=progress
        )


def query_vector(embedder: Embedder, image: ImageInput | None, text: str | None, *, text_weight: float) -> np.ndarray:
    """The unit query vector for an image, a text, or both (see :meth:`MultimodalRAG.embed_query`).

    Raises:
        InvalidInputError: Neither an image nor a text, a text that is not a string, a
            weight outside [0, 1], an embedder's output that is not a finite vector, or
            image and text vectors that cancel out.
    """
    import numpy as np

    from multimodal_rag.validation import check_vectors

    if image is None and text is None:
        raise InvalidInputError("search needs an image, a text, or both")
    if text is not None and not isinstance(text, str):
        raise InvalidInputError(f"text must be a string, got {type(text).__name__}")
    if not 0.0 <= text_weight <= 1.0:
        raise InvalidInputError(f"text_weight must be between 0 and 1, got {text_weight}")
    dim = embedder.dim
    vector = np.zeros(dim, dtype=np.float32)
    # A custom embedder's output is checked like stored vectors are: NaN, shape, dtype.
    if image is not None:
        image_vector = check_vectors(embedder.embed_images([image]), dim, count=1, what="image query vectors")
        vector += (1.0 - text_weight if text is not None else 1.0) * image_vector[0]
    if text is not None:
        text_vector = check_vectors(embedder.embed_texts([text]), dim, count=1, what="text query vectors")
        vector += (text_weight if image is not None else 1.0) * text_vector[0]
    norm = float(np.linalg.norm(vector))
    if norm == 0.0:
        raise InvalidInputError("the image and text vectors cancel out; change text_weight")
    return vector / norm


def id_filter(description_store: DescriptionStore, filter: Filter | None) -> IdFilter | None:
    """The predicate over ids that a vector store applies for ``filter``.

    Raises:
        InvalidInputError: ``filter`` is neither a mapping nor a callable.
    """
    if filter is None or callable(filter):
        return filter
    if not isinstance(filter, Mapping):
        raise InvalidInputError(f"filter must be a mapping or a callable, got {type(filter).__name__}")
    wanted = dict(filter)

    def keep(id_: str) -> bool:
        try:
            metadata = description_store.get(id_).metadata
        except NotFoundError:
            return False
        return all(metadata.get(key) == value for key, value in wanted.items())

    return keep


def make_hits(neighbors: Sequence[Neighbor], records: Mapping[str, Record]) -> list[Hit]:
    """Hits, in the neighbours' order, with each one's stored record (an empty one where missing)."""
    hits = []
    for neighbor in neighbors:
        record = records.get(neighbor.id) or Record(id=neighbor.id)
        hits.append(
            Hit(
                id=neighbor.id,
                score=neighbor.score,
                image_path=record.image_path,
                description=record.description,
                metadata=record.metadata,
            )
        )
    return hits
