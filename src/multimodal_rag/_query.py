"""Querying a knowledge base: a search, from the caller's terms to the stores' and back, and the
answer built on its matches.

`Querying` is the part of [`MultimodalRAG`][multimodal_rag._rag.MultimodalRAG] that searches and
answers (``embed_query``, ``search``, ``asearch``, ``search_by_vector``, ``ask``, ``aask``; documented
on the facade); the functions of `multimodal_rag._retrieval` turn the caller's terms into a query
vector and a filter, and neighbours into hits.

**The text in a query photo.** On a knowledge base that reads text (a reader is on), the text of
a query image is read too (`query_ocr` None), unless the search is ``mode="vector"``: its words
join the caller's text as the lexical query, so an image alone becomes a hybrid search when its
photo holds text (fused by weighted scores unless ``fusion`` says otherwise: the label's brand
and spec words rank look-alike products just behind the right one, and only the scores keep the
margin), and the answerer is given what was read (`IMAGE_TEXT`). ``query_ocr=False``
never reads; ``True`` reads on any knowledge base with a full-text index: with its reader, or
where it reads no text, with the built-in one (the photo's words then meet the descriptions).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, TypedDict

import attrs

from multimodal_rag._facade.reading import TextReading
from multimodal_rag._facade.records import Records
from multimodal_rag._facade.state import KnowledgeBaseState
from multimodal_rag._locks import reading
from multimodal_rag._retrieval import (
    CHANNEL_DEPTH,
    RERANK_CANDIDATES,
    SUBSET_SEARCH,
    SUBSET_SHARE,
    Filter,
    choose_mode,
    exact_among,
    filter_ids,
    fuse_channels,
    identifier_channel,
    make_hits,
    native_filter,
    query_vector,
)
from multimodal_rag.errors import InvalidInputError
from multimodal_rag.protocols import Answerer, IdFilter, Reranker
from multimodal_rag.types import Fusion, Hit, ImageInput, Record, SearchMode

if TYPE_CHECKING:
    from multimodal_rag._streaming import AnswerStream, AsyncAnswerStream
    from multimodal_rag.ocr import ReadText
    from multimodal_rag.types import Answer, Vector

__all__ = ["AskOptions", "Filter", "Querying", "SearchParts"]


class AskOptions(TypedDict, total=False):
    """The keyword arguments of [`ask`][multimodal_rag._rag.MultimodalRAG.ask] and
    [`aask`][multimodal_rag._rag.MultimodalRAG.aask] besides ``stream``, which alone tells their
    overloads apart: each overload takes these as ``**options``, type checkers check them one by
    one, and the implementation lists them (with their defaults) as it always did."""

    image: ImageInput | None
    text: str | None
    k: int
    filter: Filter | None
    text_weight: float
    mode: SearchMode | None
    rerank: Reranker | None
    metadata: Mapping[str, Any] | None
    query_ocr: bool | None


@attrs.frozen(kw_only=True)
class SearchParts:
    """A search's hits and what they were made from (`Querying.search_read`).

    Attributes:
        hits: The hits, best first.
        mode: The mode the search ran in: ``vector``, ``lexical`` or ``hybrid``.
        vector: The query vector (None in lexical mode).
        channels: The word channels fused with the vector channel (``lexical``, and
            ``identifier`` when the text has identifiers), each ``(id, score)`` best first, as
            searched; empty in vector mode. With an exact vector channel in place of the index's,
            `fuse_channels` gives what an exact index would have returned.
        fusion: How the channels were fused (None in vector mode).
    """

    hits: list[Hit]
    mode: str
    vector: Any
    channels: dict[str, list[tuple[str, float]]]
    fusion: Fusion | None


class Querying:
    """Searches the knowledge base ``state`` holds and answers from it, reading hits'
    records through ``records``."""

    def __init__(self, state: KnowledgeBaseState, records: Records, reading: TextReading) -> None:
        self._state = state
        self._lock = state.lock
        self._records = records
        self._reading = reading

    def embed_query(self, image: ImageInput | None, text: str | None, *, text_weight: float) -> Vector:
        return query_vector(self._state.embedder, image, text, text_weight=text_weight, adapter=self._state.adapter)

    def search(
        self,
        image: ImageInput | None,
        text: str | None,
        *,
        k: int,
        filter: Filter | None,
        text_weight: float,
        mode: SearchMode | None,
        fusion: Fusion | None,
        rerank: Reranker | None,
        query_ocr: bool | None = None,
    ) -> list[Hit]:
        return self._search(
            image, text, k=k, filter=filter, text_weight=text_weight, mode=mode, fusion=fusion, rerank=rerank,
            query_ocr=query_ocr,
        )[0]

    def _search(
        self,
        image: ImageInput | None,
        text: str | None,
        *,
        k: int,
        filter: Filter | None,
        text_weight: float,
        mode: SearchMode | None,
        fusion: Fusion | None,
        rerank: Reranker | None,
        query_ocr: bool | None,
    ) -> tuple[list[Hit], ReadText | None]:
        """The hits, and the text read in the query image (None when it was not read)."""
        from multimodal_rag._validation import check_int

        k = check_int("k", k)
        if text is not None and not isinstance(text, str):
            raise InvalidInputError(f"text must be a string, got {type(text).__name__}")
        read = self.read_query_image(image, mode, query_ocr)
        # A reranker sees its own number of candidates (``max_candidates``) where it says one.
        depth = max(k, int(getattr(rerank, "max_candidates", RERANK_CANDIDATES))) if rerank is not None else k
        hits = self.search_read(image, text, read, depth=depth, filter=filter, text_weight=text_weight, mode=mode, fusion=fusion).hits
        if rerank is not None:
            hits = rerank.rerank(hits, text=text, image=image)
        return hits[:k], read

    def search_read(
        self,
        image: ImageInput | None,
        text: str | None,
        read: ReadText | None,
        *,
        depth: int,
        filter: Filter | None,
        text_weight: float,
        mode: SearchMode | None,
        fusion: Fusion | None,
    ) -> SearchParts:
        """The search once the query photo's text is ``read`` (None: not read, or nothing in it):
        the ``depth`` best hits, and the channels they were fused from."""
        words = " ".join(part for part in (text, read.text if read is not None else None) if part and part.strip())
        chosen = choose_mode(mode, image, words or text, self._state.description_store)
        if filter is not None and not callable(filter):
            from multimodal_rag.filters import MetadataFilter, parse_filter

            if not isinstance(filter, (Mapping, MetadataFilter)):
                raise InvalidInputError(f"filter must be a mapping or a callable, got {type(filter).__name__}")
            filter = parse_filter(filter)  # a bad filter fails before the model runs
        # Embedded before any lock is taken: the model is the slow part, and must not
        # keep a writer waiting.
        vector = self.embed_query(image, text, text_weight=text_weight) if chosen != "lexical" else None
        if chosen == "vector":
            assert vector is not None
            return SearchParts(hits=self.search_by_vector(vector, k=depth, filter=filter), mode=chosen, vector=vector, channels={}, fusion=None)
        # A photo's text repeats its whole label, brand and spec lines that look-alike products
        # share: the words rank those just behind the product, and only the scores say by how
        # much. Weighted fusion keeps that margin; rank fusion would let the picture overturn it.
        method: Fusion = fusion if fusion is not None else ("weighted" if read is not None else "rrf")
        hits, channels = self._search_text(words or text or "", vector, depth=depth, filter=filter, fusion=method)
        return SearchParts(hits=hits, mode=chosen, vector=vector, channels=channels, fusion=method)

    def read_query_image(self, image: ImageInput | None, mode: SearchMode | None, query_ocr: bool | None) -> ReadText | None:
        """The text read in the query image, when it is to be read (see the module's text)."""
        if query_ocr is not None and not isinstance(query_ocr, bool):
            raise InvalidInputError(f"query_ocr must be True, False or None, got {type(query_ocr).__name__}")
        if image is None or query_ocr is False or (query_ocr is None and mode == "vector"):
            return None
        store = self._state.description_store
        if query_ocr is None and (self._state.ocr_entry is None or not getattr(store, "full_text", False)):
            return None
        if not getattr(store, "full_text", False):
            raise InvalidInputError(
                f"query_ocr=True searches the text read in the photo, but the description store "
                f"{type(store).__name__} has no full-text index"
            )
        from multimodal_rag._ingest.text_reading import read_images
        from multimodal_rag.errors import MissingDependencyError

        try:
            reader = self._reading.query_reader()
        except MissingDependencyError:
            if query_ocr:
                raise
            return None  # a knowledge base with read text is searched without the extra
        results, _ = read_images(reader, [("the query image", image)])
        read = results[0]
        # A photo whose text cannot be read is searched by its picture alone (an unreadable
        # image fails in the embedder with its own error).
        return read if read is not None and read.text.strip() else None

    async def asearch(
        self,
        image: ImageInput | None,
        text: str | None,
        *,
        k: int,
        filter: Filter | None,
        text_weight: float,
        mode: SearchMode | None,
        fusion: Fusion | None,
        rerank: Reranker | None,
        query_ocr: bool | None = None,
    ) -> list[Hit]:
        import asyncio

        # Embedding the query, waiting for the lock and searching are CPU work and waits.
        return await asyncio.to_thread(
            self.search, image, text, k=k, filter=filter, text_weight=text_weight, mode=mode, fusion=fusion, rerank=rerank,
            query_ocr=query_ocr,
        )

    @reading
    def _search_text(
        self, text: str, vector: Any, *, depth: int, filter: Filter | None, fusion: Fusion
    ) -> tuple[list[Hit], dict[str, list[tuple[str, float]]]]:
        """Lexical search (``vector`` is None) or hybrid search, under one read lock; the hits, and
        the word channels (``lexical``, ``identifier``) as they were fused."""
        import numpy as np

        from multimodal_rag._matching import matched_terms
        from multimodal_rag._validation import check_queries

        store = self._state.description_store
        fetch = max(depth, CHANNEL_DEPTH)
        allowed, predicate = filter_ids(store, filter)  # once, for every channel
        lexical = store.search_text(text, fetch if predicate is None else 4 * fetch, ids=allowed)
        if predicate is not None:
            lexical = [(id_, score) for id_, score in lexical if predicate(id_)][:fetch]
        identifiers = identifier_channel(store, text, fetch, allowed, predicate)
        words: dict[str, list[tuple[str, float]]] = {"lexical": lexical}
        if identifiers:
            words["identifier"] = [(id_, score) for id_, score, _ in identifiers]
        vector_channel = None
        if vector is not None:
            queries = check_queries(vector, self._state.vector_store.dim, fetch)
            vector_hits = self._native_hits(queries, fetch, filter)
            if vector_hits is None:
                vector_hits = self._vector_hits(queries, fetch, allowed, predicate)
            vector_channel = [(hit.id, hit.score) for hit in vector_hits]
        fused = fuse_channels(vector_channel, words, fusion)
        fused = [entry for entry in fused if entry[0] in self._state.vector_store][:depth]
        records = self._records.get_many([id_ for id_, _, _ in fused])
        similarities: dict[str, float] = {}
        if vector is not None and fused:
            # Every hybrid hit gets its cosine, also those only the lexical channel found:
            # the answerer's similarity gate judges by it.
            ids = [id_ for id_, _, _ in fused]
            stored = np.asarray(self._state.vector_store.get_vectors(ids), dtype=np.float32)
            similarities = dict(zip(ids, (stored @ np.asarray(vector, dtype=np.float32)).tolist()))
        forms = {id_: matched for id_, _, matched in identifiers}
        hits = []
        for id_, score, signals in fused:
            record = records.get(id_) or Record(id=id_)
            read = record.ocr.text if record.ocr is not None else None
            hits.append(
                Hit(
                    id=id_,
                    score=score,
                    image_path=record.image_path,
                    description=record.description,
                    metadata=record.metadata,
                    similarity=similarities.get(id_),
                    signals=signals,
                    ocr=record.ocr,
                    matched=matched_terms(text, [record.description, read], forms.get(id_, ())),
                )
            )
        return hits, words

    @reading
    def search_by_vector(self, vector: Vector, *, k: int, filter: Filter | None) -> list[Hit]:
        from multimodal_rag._validation import check_queries

        # The protocol's queries are (n, dim): one vector becomes one row, checked as the
        # built-in stores check it (numeric, finite, non-zero, of the store's dimension).
        queries = check_queries(vector, self._state.vector_store.dim, k)
        hits = self._native_hits(queries, k, filter)
        if hits is not None:
            return hits
        return self._vector_hits(queries, k, *filter_ids(self._state.description_store, filter))

    def _native_hits(self, queries: Any, k: int, filter: Filter | None) -> list[Hit] | None:
        """The vector channel as one request, the vector store applying a metadata filter on its
        copy of the metadata; None when it cannot, and the filter becomes ids instead."""
        from multimodal_rag.filters import NotExpressible

        where = None if self._state.metadata_copy_pending else native_filter(self._state.vector_store, filter)
        if where is None:
            return None
        try:
            neighbors = self._state.vector_store.search_where(queries, k, where)[0]
        except NotExpressible:  # raised before anything is sent
            return None
        return make_hits(neighbors, self._records.get_many([n.id for n in neighbors]))

    def _vector_hits(self, queries: Any, k: int, allowed: set[str] | None, predicate: IdFilter | None) -> list[Hit]:
        """The vector channel, with a filter already resolved to ids (or a predicate)."""
        if allowed is not None and len(allowed) <= max(SUBSET_SEARCH, SUBSET_SHARE * len(self._state.vector_store)):
            # A selective filter: comparing the query with the few vectors it allows is
            # exact and faster than asking the index for ever more candidates to filter.
            neighbors = exact_among(self._state.vector_store, queries[0], allowed, k)
        else:
            keep = predicate if allowed is None else allowed.__contains__
            neighbors = self._state.vector_store.search(queries, k, filter=keep)[0]
        return make_hits(neighbors, self._records.get_many([n.id for n in neighbors]))

    # -- answers -----------------------------------------------------------------

    def ask(
        self,
        question: str,
        *,
        image: ImageInput | None,
        text: str | None,
        k: int,
        filter: Filter | None,
        text_weight: float,
        mode: SearchMode | None,
        rerank: Reranker | None,
        stream: bool,
        metadata: Mapping[str, Any] | None,
        query_ocr: bool | None = None,
    ) -> Answer | AnswerStream:
        answerer, matches, metadata = self._answerer_and_matches(
            question, image, text, k, filter, text_weight, mode, rerank, query_ocr, metadata
        )
        if not stream:
            return answerer.answer(question, image=image, matches=matches, metadata=metadata)
        if callable(getattr(answerer, "stream", None)):
            return answerer.stream(question, image=image, matches=matches, metadata=metadata)
        from multimodal_rag._streaming import AnswerStream

        return AnswerStream.from_answer(answerer.answer(question, image=image, matches=matches, metadata=metadata))

    async def aask(
        self,
        question: str,
        *,
        image: ImageInput | None,
        text: str | None,
        k: int,
        filter: Filter | None,
        text_weight: float,
        mode: SearchMode | None,
        rerank: Reranker | None,
        stream: bool,
        metadata: Mapping[str, Any] | None,
        query_ocr: bool | None = None,
    ) -> Answer | AsyncAnswerStream:
        # The search runs in a worker thread, and the answerer is awaited.
        import asyncio

        answerer, matches, metadata = await asyncio.to_thread(
            self._answerer_and_matches, question, image, text, k, filter, text_weight, mode, rerank, query_ocr, metadata
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
        from multimodal_rag._streaming import AsyncAnswerStream

        return AsyncAnswerStream.from_answer(answer)

    def _answerer_and_matches(
        self,
        question: str,
        image: ImageInput | None,
        text: str | None,
        k: int,
        filter: Filter | None,
        text_weight: float,
        mode: SearchMode | None,
        rerank: Reranker | None,
        query_ocr: bool | None,
        metadata: Mapping[str, Any] | None,
    ) -> tuple[Answerer, list[Hit], Mapping[str, Any] | None]:
        """The answerer, the matches, and the metadata it is given: the caller's, with the text
        read in the user's photo under `IMAGE_TEXT` when it was read."""
        from multimodal_rag._validation import check_question

        check_question(question)
        answerer = self._state.answerer
        if answerer is None:
            raise InvalidInputError("this knowledge base has no answerer; set rag.answerer or pass answerer=")
        if image is None and text is None:
            text = question  # a question with no picture is its own search
        matches, read = self._search(
            image, text, k=k, filter=filter, text_weight=text_weight, mode=mode, fusion=None, rerank=rerank,
            query_ocr=query_ocr,
        )
        if read is not None:
            from multimodal_rag.answerers.matches import IMAGE_TEXT

            metadata = {**(metadata or {}), IMAGE_TEXT: read.text}
        return answerer, matches, metadata
