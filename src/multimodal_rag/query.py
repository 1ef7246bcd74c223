"""Querying a knowledge base: a search, from the caller's terms to the stores' and back, and the
answer built on its matches.

`Querying` holds [`MultimodalRAG`][multimodal_rag.rag.MultimodalRAG]'s search and answer methods
(``embed_query``, ``search``, ``asearch``, ``search_by_vector``, ``ask``, ``aask``); the functions below
it turn the caller's terms into a query vector and a filter, and neighbours into hits.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, Literal, overload

from multimodal_rag.errors import InvalidInputError
from multimodal_rag.locks import ReentrantReadWriteLock, reading
from multimodal_rag.protocols import (
    Answerer,
    DescriptionStore,
    Embedder,
    IdFilter,
    Reranker,
    VectorStore,
)
from multimodal_rag.retrieval import (
    CHANNEL_DEPTH,
    RERANK_CANDIDATES,
    SUBSET_SEARCH,
    SUBSET_SHARE,
    Filter,
    choose_mode,
    exact_among,
    filter_ids,
    make_hits,
    native_filter,
    query_vector,
)
from multimodal_rag.types import Hit, ImageInput, Record

if TYPE_CHECKING:

    from multimodal_rag.evaluation.report import EvaluationReport
    from multimodal_rag.kb.directory import KnowledgeBaseDirectory
    from multimodal_rag.streaming import AnswerStream, AsyncAnswerStream
    from multimodal_rag.types import Answer

__all__ = ["Filter", "Querying"]

class Querying:
    """Search and answer methods of [`MultimodalRAG`][multimodal_rag.rag.MultimodalRAG] (documented there)."""

    # Provided by MultimodalRAG.
    embedder: Embedder
    vector_store: VectorStore
    description_store: DescriptionStore
    answerer: Answerer
    _lock: ReentrantReadWriteLock
    #: The knowledge base's adapter (an `Adapter`) or None.
    adapter: Any = None
    # Ids whose changed records could not be copied to the vector store's metadata; while
    # there are any, filters go by the description store (save and repair copy them again).
    _metadata_copy_pending: frozenset[str] = frozenset()
    #: The knowledge base's folder, when it has one.
    _dir: KnowledgeBaseDirectory | None = None

    def _records(self, ids: Sequence[str]) -> dict[str, Record]:
        """The stored records of ``ids``, with the images the knowledge base keeps (stored
        relative to it) given by their absolute path."""
        records = self.description_store.get_many(ids)
        if self._dir is None:
            return records
        return {id_: self._dir.with_image_file(record) for id_, record in records.items()}

    def embed_query(
        self, image: ImageInput | None = None, text: str | None = None, *, text_weight: float = 0.5
    ) -> Any:
        """The query vector for an image, a text, or both.

        With both, the result is the normalised weighted sum
        ``(1 - text_weight) * image_vector + text_weight * text_vector``. While an adapter
        is applied, each vector is mapped by its side of the adapter first, so the result
        is in the index's space (what [`search_by_vector`][multimodal_rag.rag.MultimodalRAG.search_by_vector] takes).
        """
        return query_vector(self.embedder, image, text, text_weight=text_weight, adapter=self.adapter)

    def search(
        self,
        image: ImageInput | None = None,
        text: str | None = None,
        *,
        k: int = 5,
        filter: Filter | None = None,
        text_weight: float = 0.5,
        mode: str | None = None,
        fusion: str = "rrf",
        rerank: Reranker | None = None,
    ) -> list[Hit]:
        """Find the knowledge-base images that best match an image, a text, or both.

        Three modes: ``"vector"`` compares the query's CLIP vector with the images'
        vectors; ``"lexical"`` searches the descriptions' words (BM25, on the description
        store's full-text index); ``"hybrid"`` does both and fuses the two rankings. A
        text query is hybrid by default when the description store has a full-text index,
        so model numbers and names written in descriptions count; an image alone is a
        vector search. With an image and a text, the vector channel uses both (see
        ``text_weight``) and the lexical channel the text.

        Args:
            image: Query image (path, bytes or PIL image).
            text: Query text.
            k: How many hits; more than the knowledge base holds returns them all.
            filter: Metadata conditions (``{"category": {"$in": ["tools", "toys"]},
                "price": {"$lt": 100}}``; see ``docs/search.md``), or a predicate over ids.
                Applied in every channel.
            text_weight: Weight of the text in the vector channel when both an image and
                a text are given.
            mode: ``"vector"``, ``"lexical"`` or ``"hybrid"`` (default: see above).
            fusion: How hybrid mode fuses the channels: ``"rrf"`` (reciprocal rank) or
                ``"weighted"`` (min-max scaled scores).
            rerank: A [`Reranker`][multimodal_rag.protocols.Reranker] that reorders the best candidates (its
                ``max_candidates``, or `RERANK_CANDIDATES`) before the first ``k`` are
                returned.

        Returns:
            Hits, best first, with the score they are ordered by, the cosine
            ``similarity`` where one was computed, which ``signals`` found them, and
            their image path, description and metadata.

        Raises:
            InvalidInputError: No image and no text, a lexical or hybrid search without a
                text or on a store with no full-text index, an unknown mode or fusion, or
                a bad filter.
        """
        from multimodal_rag.validation import check_int

        k = check_int("k", k)
        mode = choose_mode(mode, image, text, self.description_store)
        if filter is not None and not callable(filter):
            from multimodal_rag.filters import MetadataFilter, parse_filter

            if not isinstance(filter, (Mapping, MetadataFilter)):
                raise InvalidInputError(f"filter must be a mapping or a callable, got {type(filter).__name__}")
            filter = parse_filter(filter)  # a bad filter fails before the model runs
        # A reranker sees its own number of candidates (``max_candidates``) where it says one.
        depth = max(k, int(getattr(rerank, "max_candidates", RERANK_CANDIDATES))) if rerank is not None else k
        # Embedded before any lock is taken: the model is the slow part, and must not
        # keep a writer waiting.
        vector = self.embed_query(image, text, text_weight=text_weight) if mode != "lexical" else None
        if mode == "vector":
            hits = self.search_by_vector(vector, k=depth, filter=filter)
        else:
            assert text is not None
            hits = self._search_text(text, vector, depth=depth, filter=filter, fusion=fusion)
        if rerank is not None:
            hits = rerank.rerank(hits, text=text, image=image)
        return hits[:k]

    async def asearch(
        self,
        image: ImageInput | None = None,
        text: str | None = None,
        *,
        k: int = 5,
        filter: Filter | None = None,
        text_weight: float = 0.5,
        mode: str | None = None,
        fusion: str = "rrf",
        rerank: Reranker | None = None,
    ) -> list[Hit]:
        """Like [`search`][multimodal_rag.rag.MultimodalRAG.search], for asyncio code.

        Embedding the query, waiting for the lock and searching are CPU work and waits,
        so they run in a worker thread and the event loop goes on meanwhile.
        """
        import asyncio

        return await asyncio.to_thread(
            self.search,
            image,
            text,
            k=k,
            filter=filter,
            text_weight=text_weight,
            mode=mode,
            fusion=fusion,
            rerank=rerank,
        )

    @reading
    def _search_text(self, text: str, vector: Any, *, depth: int, filter: Filter | None, fusion: str) -> list[Hit]:
        """Lexical search (``vector`` is None) or hybrid search, under one read lock."""
        import numpy as np

        from multimodal_rag.fusion import fuse
        from multimodal_rag.types import Signal
        from multimodal_rag.validation import check_queries

        store = self.description_store
        fetch = max(depth, CHANNEL_DEPTH)
        allowed, predicate = filter_ids(store, filter)  # once, for both channels
        lexical = store.search_text(text, fetch if predicate is None else 4 * fetch, ids=allowed)
        if predicate is not None:
            lexical = [(id_, score) for id_, score in lexical if predicate(id_)][:fetch]
        if vector is None:
            fused = [(id_, score, {"lexical": Signal(rank=rank, score=score)}) for rank, (id_, score) in enumerate(lexical, 1)]
        else:
            queries = check_queries(vector, self.vector_store.dim, fetch)
            vector_hits = self._native_hits(queries, fetch, filter)
            if vector_hits is None:
                vector_hits = self._vector_hits(queries, fetch, allowed, predicate)
            channels = {"vector": [(hit.id, hit.score) for hit in vector_hits], "lexical": lexical}
            fused = fuse(channels, method=fusion)
        fused = [entry for entry in fused if entry[0] in self.vector_store][:depth]
        records = self._records([id_ for id_, _, _ in fused])
        similarities: dict[str, float] = {}
        if vector is not None and fused:
            # Every hybrid hit gets its cosine, also those only the lexical channel found:
            # the answerer's similarity gate judges by it.
            ids = [id_ for id_, _, _ in fused]
            stored = np.asarray(self.vector_store.get_vectors(ids), dtype=np.float32)
            similarities = dict(zip(ids, (stored @ np.asarray(vector, dtype=np.float32)).tolist()))
        hits = []
        for id_, score, signals in fused:
            record = records.get(id_) or Record(id=id_)
            hits.append(
                Hit(
                    id=id_,
                    score=score,
                    image_path=record.image_path,
                    description=record.description,
                    metadata=record.metadata,
                    similarity=similarities.get(id_),
                    signals=signals,
                )
            )
        return hits

    @reading
    def search_by_vector(self, vector: Any, *, k: int = 5, filter: Filter | None = None) -> list[Hit]:
        """Like [`search`][multimodal_rag.rag.MultimodalRAG.search], for a query vector already embedded.

        The vector must be in the index's space: while an adapter is applied that is the
        adapted space, so make it with [`embed_query`][multimodal_rag.rag.MultimodalRAG.embed_query] (which maps it), not with the
        embedder alone.
        """
        from multimodal_rag.validation import check_queries

        # The protocol's queries are (n, dim): one vector becomes one row, checked as the
        # built-in stores check it (numeric, finite, non-zero, of the store's dimension).
        queries = check_queries(vector, self.vector_store.dim, k)
        hits = self._native_hits(queries, k, filter)
        if hits is not None:
            return hits
        return self._vector_hits(queries, k, *filter_ids(self.description_store, filter))

    def _native_hits(self, queries: Any, k: int, filter: Filter | None) -> list[Hit] | None:
        """The vector channel as one request, the vector store applying a metadata filter on its
        copy of the metadata; None when it cannot, and the filter becomes ids instead."""
        from multimodal_rag.filters import NotExpressible

        where = None if self._metadata_copy_pending else native_filter(self.vector_store, filter)
        if where is None:
            return None
        try:
            neighbors = self.vector_store.search_where(queries, k, where)[0]
        except NotExpressible:  # raised before anything is sent
            return None
        return make_hits(neighbors, self._records([n.id for n in neighbors]))

    def _vector_hits(self, queries: Any, k: int, allowed: set[str] | None, predicate: IdFilter | None) -> list[Hit]:
        """The vector channel, with a filter already resolved to ids (or a predicate)."""
        if allowed is not None and len(allowed) <= max(SUBSET_SEARCH, SUBSET_SHARE * len(self.vector_store)):
            # A selective filter: comparing the query with the few vectors it allows is
            # exact and faster than asking the index for ever more candidates to filter.
            neighbors = exact_among(self.vector_store, queries[0], allowed, k)
        else:
            keep = predicate if allowed is None else allowed.__contains__
            neighbors = self.vector_store.search(queries, k, filter=keep)[0]
        return make_hits(neighbors, self._records([n.id for n in neighbors]))

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
        mode: str | None = ...,
        rerank: Reranker | None = ...,
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
        mode: str | None = ...,
        rerank: Reranker | None = ...,
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
        mode: str | None = ...,
        rerank: Reranker | None = ...,
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
        mode: str | None = None,
        rerank: Reranker | None = None,
        stream: bool = False,
        metadata: Mapping[str, Any] | None = None,
    ) -> Answer | AnswerStream:
        """Answer a question about an image (or about the knowledge base) from the best matches.

        The knowledge base is searched with ``image`` and ``text`` (by default the question
        itself when no image is given); the `answerer` then answers from the ``k``
        best matches:

        ```python
        answer = rag.ask("What is this and where can I buy it?", image="photo.jpg")
        print(answer.text, [source.id for source in answer.sources])

        for chunk in (stream := rag.ask("What is this?", image="photo.jpg", stream=True)):
            print(chunk, end="")
        print(stream.answer.usage)
        ```

        Args:
            question: The user's question.
            image: The user's image: the search query, and shown to the answerer.
            text: Search text; defaults to the question when there is no image.
            k: How many matches the answer may draw on.
            filter: Search filter, as in [`search`][multimodal_rag.rag.MultimodalRAG.search].
            text_weight: Weight of ``text`` when searching with both an image and a text.
            mode: Search mode, as in [`search`][multimodal_rag.rag.MultimodalRAG.search].
            rerank: A reranker for the matches, as in [`search`][multimodal_rag.rag.MultimodalRAG.search].
            stream: Return an [`AnswerStream`][multimodal_rag.streaming.AnswerStream] of text chunks instead of an [`Answer`][multimodal_rag.types.Answer].
            metadata: Passed to the answerer.

        Returns:
            The answer, with the sources it drew on; or, with ``stream=True``, an iterator of
            text chunks whose ``answer`` attribute holds the complete answer once read.

        Raises:
            InvalidInputError: An empty question or bad search arguments.
            ImageError: The image cannot be read.
            AnswererError: The answerer failed (a subclass says how).
        """
        answerer, matches = self._answerer_and_matches(question, image, text, k, filter, text_weight, mode, rerank)
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
        mode: str | None = ...,
        rerank: Reranker | None = ...,
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
        mode: str | None = ...,
        rerank: Reranker | None = ...,
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
        mode: str | None = ...,
        rerank: Reranker | None = ...,
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
        mode: str | None = None,
        rerank: Reranker | None = None,
        stream: bool = False,
        metadata: Mapping[str, Any] | None = None,
    ) -> Answer | AsyncAnswerStream:
        """Like [`ask`][multimodal_rag.rag.MultimodalRAG.ask], for asyncio code; with ``stream=True`` it returns an [`AsyncAnswerStream`][multimodal_rag.streaming.AsyncAnswerStream].

        Nothing blocks the event loop: the search (embedding the query, waiting for the
        lock, searching) runs in a worker thread, and the answerer is awaited.
        """
        import asyncio

        answerer, matches = await asyncio.to_thread(
            self._answerer_and_matches, question, image, text, k, filter, text_weight, mode, rerank
        )
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
        mode: str | None,
        rerank: Reranker | None,
    ) -> tuple[Answerer, list[Hit]]:
        from multimodal_rag.validation import check_question

        check_question(question)
        if self.answerer is None:
            raise InvalidInputError("this knowledge base has no answerer; set rag.answerer or pass answerer=")
        if image is None and text is None:
            text = question  # a question with no picture is its own search
        return self.answerer, self.search(
            image=image, text=text, k=k, filter=filter, text_weight=text_weight, mode=mode, rerank=rerank
        )


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
        mode: str = "vector",
        fusion: str = "rrf",
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
            mode: How text queries search (``"vector"``, ``"lexical"``, ``"hybrid"``; see
                [`search`][multimodal_rag.rag.MultimodalRAG.search]), so that modes can be compared; image queries are vector searches.
            fusion: The fusion of hybrid mode.
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
            self,
            queries=queries,
            edits=edits,
            negatives=negatives,
            sample=sample,
            seed=seed,
            k=k,
            keep=keep,
            mode=mode,
            fusion=fusion,
            progress=progress,
        )
