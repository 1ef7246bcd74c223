"""The four interfaces a knowledge base is composed of.

Each is a `typing.Protocol` whose required methods are abstract, so a
backend may either subclass it (and get the default methods) or simply provide
the same methods (duck typing). Every component also reports a JSON-serialisable
``config()``; the knowledge-base manifest stores it with the component's kind so
that [`MultimodalRAG.open`][multimodal_rag._rag.MultimodalRAG.open] can rebuild the same component after a restart.
"""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Protocol, runtime_checkable

from attrs import frozen

from multimodal_rag.errors import ImageError, InvalidInputError

if TYPE_CHECKING:
    from typing_extensions import Self

    from multimodal_rag._streaming import AnswerStream, AsyncAnswerStream
    from multimodal_rag.filters import MetadataFilter
    from multimodal_rag.types import Answer, Hit, ImageInput, Neighbor, Record, Vectors

__all__ = [
    "Answerer",
    "DescriptionStore",
    "EmbeddedBatch",
    "Embedder",
    "IdFilter",
    "ImageDescriber",
    "Reranker",
    "VectorStore",
    "copy_metadata",
]

#: A search filter over ids: keep an id when it returns True.
IdFilter = Callable[[str], bool]


@frozen
class EmbeddedBatch:
    """One batch from [`Embedder.iter_embed_images`][multimodal_rag.protocols.Embedder.iter_embed_images].

    Attributes:
        indices: Positions, in the input stream, of the images that were embedded.
        vectors: Their embeddings, shape ``(len(indices), dim)``.
        failures: ``(position, error)`` of the images of this batch that could not be read.
    """

    indices: list[int]
    vectors: Vectors
    failures: list[tuple[int, ImageError]]


@runtime_checkable
class Embedder(Protocol):
    """Maps images and texts into one vector space.

    Attributes:
        kind: Short name the backend registry knows this embedder by.
    """

    kind: ClassVar[str]

    @property
    @abstractmethod
    def dim(self) -> int:
        """Length of every embedding."""

    @property
    @abstractmethod
    def fingerprint(self) -> str:
        """Identifies the model, its weights and its preprocessing.

        Two embedders with equal fingerprints produce the same vectors; a knowledge
        base refuses to open with an embedder of another fingerprint.
        """

    @abstractmethod
    def embed_images(self, images: Sequence[ImageInput]) -> Vectors:
        """Embed images.

        Args:
            images: Paths, encoded bytes or PIL images.

        Returns:
            L2-normalised float32 array of shape ``(len(images), dim)``.

        Raises:
            ImageError: An image cannot be read; ``error.source`` names it and
                ``error.index`` (when set) is its position in ``images``.
        """

    @abstractmethod
    def embed_texts(self, texts: Sequence[str]) -> Vectors:
        """Embed texts into the same space as the images.

        Returns:
            L2-normalised float32 array of shape ``(len(texts), dim)``.
        """

    @abstractmethod
    def config(self) -> dict[str, Any]:
        """Keyword arguments that rebuild this embedder (JSON-serialisable)."""

    def iter_embed_images(
        self, images: Iterable[ImageInput], *, batch_size: int = 32
    ) -> Iterator[EmbeddedBatch]:
        """Embed a stream of images batch by batch, reporting unreadable ones.

        Memory stays bounded by the batch size whatever the stream's length. A bad
        image never stops the stream: it is reported in its batch's ``failures``.
        Embedders with a faster pipeline (parallel decoding) override this.
        """
        return iter_embed_images_in_batches(self, images, batch_size=batch_size)


def iter_embed_images_in_batches(
    embedder: Embedder, images: Iterable[ImageInput], *, batch_size: int = 32
) -> Iterator[EmbeddedBatch]:
    """Default [`Embedder.iter_embed_images`][multimodal_rag.protocols.Embedder.iter_embed_images], usable with duck-typed embedders."""
    import numpy as np

    from multimodal_rag._validation import check_int

    batch_size = check_int("batch_size", batch_size)
    batch: list[ImageInput] = []
    positions: list[int] = []

    def flush() -> EmbeddedBatch:
        failures: list[tuple[int, ImageError]] = []
        keep = list(range(len(batch)))
        while True:
            try:
                vectors = embedder.embed_images([batch[i] for i in keep]) if keep else None
                break
            except ImageError as exc:
                # Drop the image the embedder named, then retry the rest of the batch.
                bad = getattr(exc, "index", None)
                if bad is None or not 0 <= bad < len(keep):
                    bad = _find_bad_image(embedder, [batch[i] for i in keep])
                failures.append((positions[keep[bad]], exc))
                del keep[bad]
        if vectors is None:
            vectors = np.zeros((0, embedder.dim), dtype=np.float32)
        return EmbeddedBatch([positions[i] for i in keep], vectors, failures)

    for position, image in enumerate(images):
        batch.append(image)
        positions.append(position)
        if len(batch) == batch_size:
            yield flush()
            batch, positions = [], []
    if batch:
        yield flush()


def _find_bad_image(embedder: Embedder, images: list[ImageInput]) -> int:
    # The embedder did not say which image failed: embed one at a time to find it.
    for i, image in enumerate(images):
        try:
            embedder.embed_images([image])
        except ImageError:
            return i
    raise ImageError("an image failed to embed in its batch but not on its own")


@runtime_checkable
class VectorStore(Protocol):
    """Nearest-neighbour index over vectors with string ids.

    Scores are similarities: higher means more similar (inner product, which is
    the cosine for the normalised vectors an [`Embedder`][multimodal_rag.protocols.Embedder] returns). Results are
    never padded: a search for more neighbours than the store holds returns what
    there is.

    A store may also keep a copy of each record's metadata and filter searches by it
    where the vectors live ([`filters_metadata`][multimodal_rag.protocols.VectorStore.filters_metadata], [`set_metadata`][multimodal_rag.protocols.VectorStore.set_metadata],
    [`metadata_mismatches`][multimodal_rag.protocols.VectorStore.metadata_mismatches], [`search_where`][multimodal_rag.protocols.VectorStore.search_where]); by default it does not.
    """

    kind: ClassVar[str]

    @property
    @abstractmethod
    def dim(self) -> int:
        """Dimension of the vectors this store holds."""

    @abstractmethod
    def add(self, ids: Sequence[str], vectors: Vectors) -> None:
        """Add vectors, replacing the vector of any id already present.

        Raises:
            InvalidInputError: Ids repeated within the call, empty ids, non-finite
                or zero vectors, or a count that does not match the vectors.
            DimensionMismatchError: Vectors of another dimension.
        """

    @abstractmethod
    def search(
        self, queries: Vectors, k: int, *, filter: IdFilter | None = None
    ) -> list[list[Neighbor]]:
        """Find the ``k`` nearest stored vectors of each query.

        Args:
            queries: Array of shape ``(n, dim)``; the library always passes two
                dimensions, even for one query. (The built-in stores also accept
                one vector of shape ``(dim,)``.)
            k: Neighbours wanted per query; more than the store holds is fine.
            filter: Keep only ids for which this returns True; the store still
                returns ``k`` results when at least ``k`` ids pass.

        Returns:
            One list per query of ``Neighbor(id, score)``, best first.
        """

    @abstractmethod
    def remove(self, ids: Iterable[str]) -> int:
        """Remove ids; unknown ids are ignored. Returns how many were removed."""

    @property
    def filters_metadata(self) -> bool:
        """Whether this store keeps a copy of each record's metadata and answers
        [`search_where`][multimodal_rag.protocols.VectorStore.search_where]. False unless a store says otherwise.

        The knowledge base then keeps the copy in step with its description store (which
        stays the source of truth): after every add, metadata change and journal replay it
        calls [`set_metadata`][multimodal_rag.protocols.VectorStore.set_metadata]; a removed vector takes its copy with it; verify reports
        copies that [`metadata_mismatches`][multimodal_rag.protocols.VectorStore.metadata_mismatches] finds, and repair copies them again.
        """
        return False

    def set_metadata(self, items: Mapping[str, Mapping[str, Any]]) -> None:
        """Replace the metadata copy of these ids (id → metadata); ids not in the store are
        ignored. [`add`][multimodal_rag.protocols.VectorStore.add] gives a vector an empty copy. Does nothing by default."""
        return None

    def metadata_mismatches(self, items: Mapping[str, Mapping[str, Any]]) -> list[str]:
        """The ids among ``items`` (id → metadata) held here whose copy is not that metadata.
        None by default."""
        return []

    def search_where(self, queries: Vectors, k: int, where: MetadataFilter) -> list[list[Neighbor]]:
        """Find the ``k`` nearest stored vectors of each query whose metadata copy passes ``where``.

        Must agree with ``where.matches`` on the copy, as [`DescriptionStore.matching_ids`][multimodal_rag.protocols.DescriptionStore.matching_ids]
        does on the records.

        Args:
            queries: As in [`search`][multimodal_rag.protocols.VectorStore.search].
            k: As in [`search`][multimodal_rag.protocols.VectorStore.search].
            where: A filter made by [`parse_filter`][multimodal_rag.filters.parse_filter].

        Returns:
            As [`search`][multimodal_rag.protocols.VectorStore.search].

        Raises:
            NotExpressible: The store cannot apply this filter exactly (by default, any);
                the caller then filters by the ids the description store finds.
        """
        from multimodal_rag.filters import NotExpressible

        raise NotExpressible(f"{type(self).__name__} does not filter by metadata")

    @abstractmethod
    def get_vectors(self, ids: Sequence[str]) -> Vectors:
        """Stored vectors of ``ids``, shape ``(len(ids), dim)``.

        Raises:
            NotFoundError: An id is not in the store.
        """

    @abstractmethod
    def ids(self) -> list[str]:
        """Every id in the store."""

    @abstractmethod
    def __len__(self) -> int: ...

    @abstractmethod
    def __contains__(self, id: object) -> bool: ...

    @abstractmethod
    def config(self) -> dict[str, Any]:
        """Keyword arguments that rebuild an empty store like this one (without ``dim``)."""

    @abstractmethod
    def save(self, directory: Path) -> None:
        """Write the store's files into ``directory`` (which exists and is empty)."""

    @classmethod
    @abstractmethod
    def load(cls, directory: Path, *, dim: int | None = None, **config: Any) -> Self:
        """Read a store written by [`save`][multimodal_rag.protocols.VectorStore.save], with the config it reported.

        Args:
            directory: Where [`save`][multimodal_rag.protocols.VectorStore.save] wrote the store's files.
            dim: The dimension the caller expects. A store that records its dimension
                reads it from its files when ``dim`` is ``None``, and refuses files that
                disagree with a given one. [`MultimodalRAG`][multimodal_rag._rag.MultimodalRAG] always
                passes the dimension its manifest records, so a store may also require it.
            **config: What [`config`][multimodal_rag.protocols.VectorStore.config] returned.

        Raises:
            CorruptFileError: Damaged files, or files of another dimension than ``dim``.
        """


def copy_metadata(vector_store: VectorStore, records: Iterable[Record]) -> None:
    """Give a vector store that filters by metadata the records' metadata (see
    [`VectorStore.filters_metadata`][multimodal_rag.protocols.VectorStore.filters_metadata]); nothing for any other store."""
    if getattr(vector_store, "filters_metadata", False):
        vector_store.set_metadata({record.id: record.metadata for record in records})


@runtime_checkable
class DescriptionStore(Protocol):
    """Keeps each image's path, description and metadata, by id.

    Attributes:
        kind: Short name the backend registry knows this store by.
        full_text: Whether the store keeps a full-text index of its descriptions, so
            that [`search_text`][multimodal_rag.protocols.DescriptionStore.search_text] works. False unless a store says otherwise.
        identifier_search: Whether the store indexes the identifiers (model numbers) of its
            descriptions and read text, so that
            [`search_identifiers`][multimodal_rag.protocols.DescriptionStore.search_identifiers] works.
    """

    kind: ClassVar[str]
    full_text: ClassVar[bool] = False
    identifier_search: ClassVar[bool] = False

    @abstractmethod
    def get(self, id: str) -> Record:
        """The record of ``id``.

        Raises:
            NotFoundError: No record has this id.
        """

    @abstractmethod
    def get_many(self, ids: Sequence[str]) -> dict[str, Record]:
        """Records of those ``ids`` that exist, keyed by id."""

    @abstractmethod
    def put(self, records: Iterable[Record]) -> None:
        """Insert records, replacing any with the same id."""

    @abstractmethod
    def delete(self, ids: Iterable[str]) -> int:
        """Delete records; unknown ids are ignored. Returns how many were deleted."""

    @abstractmethod
    def __iter__(self) -> Iterator[Record]: ...

    @abstractmethod
    def __len__(self) -> int: ...

    @abstractmethod
    def __contains__(self, id: object) -> bool: ...

    @abstractmethod
    def config(self) -> dict[str, Any]:
        """Keyword arguments that rebuild an empty store like this one."""

    @abstractmethod
    def save(self, directory: Path) -> None:
        """Write the store's files into ``directory`` (which exists and is empty)."""

    @classmethod
    @abstractmethod
    def load(cls, directory: Path, **config: Any) -> Self:
        """Read a store written by [`save`][multimodal_rag.protocols.DescriptionStore.save], with the config it reported."""

    @classmethod
    def salvage(cls, directory: Path, **config: Any) -> Self:
        """Read every record that can still be read from files that [`load`][multimodal_rag.protocols.DescriptionStore.load] refuses as damaged.

        Used when a damaged knowledge base is opened with ``salvage=True`` (and so by
        repair): whatever this returns is kept, and what it misses is counted as lost.
        By default it is [`load`][multimodal_rag.protocols.DescriptionStore.load], so a store that cannot read around damage
        recovers nothing from a damaged file.

        Raises:
            CorruptFileError: Nothing at all can be read.
        """
        return cls.load(directory, **config)

    def matching_ids(self, filter: MetadataFilter) -> set[str]:
        """The ids of the records whose metadata passes ``filter``.

        A filtered search calls this once, then keeps the neighbours whose ids are in the
        set. By default it reads every record and tests it with ``filter.matches``; stores
        that can evaluate the filter where the records live (SQLite, PostgreSQL) override it
        with one query, which must agree with ``filter.matches`` record for record.

        Args:
            filter: A filter made by [`parse_filter`][multimodal_rag.filters.parse_filter].

        Returns:
            The matching ids.
        """
        return {record.id for record in self if filter.matches(record.metadata)}

    def search_text(self, query: str, k: int, *, ids: Collection[str] | None = None) -> list[tuple[str, float]]:
        """Find the records whose indexed text best matches ``query``, on the store's full-text index.

        The query is plain text, never a query language: it is cut into terms at white
        space, and a record matches when its text holds any of them. Index and query are
        normalised alike ([`index_text`][multimodal_rag.backend.index_text] and
        [`search_terms`][multimodal_rag.backend.search_terms]), so that a Persian or Arabic
        word is found whichever letter forms, digits or ZWNJ it was typed with; the record
        keeps its text exactly as given. Called only when
        `full_text` is true; the index always agrees with the records (after
        [`put`][multimodal_rag.protocols.DescriptionStore.put], [`delete`][multimodal_rag.protocols.DescriptionStore.delete], [`load`][multimodal_rag.protocols.DescriptionStore.load] and [`salvage`][multimodal_rag.protocols.DescriptionStore.salvage]).

        Args:
            query: The user's text. Empty or white space only finds nothing.
            k: The most results wanted; more than the store holds is fine.
            ids: Search only these records (ids the store does not hold are ignored).

        Returns:
            Up to ``k`` ``(id, score)`` pairs, best first; a higher score is a better
            match (BM25 relevance, or the engine's own rank), comparable only within
            one search.

        Raises:
            InvalidInputError: The store has no full-text index (the default), or
                ``k`` is not a positive integer.
        """
        raise InvalidInputError("this description store has no full-text index")

    def search_identifiers(
        self, query: str, k: int, *, ids: Collection[str] | None = None
    ) -> list[tuple[str, float, list[str]]]:
        """Find the records holding the identifiers of ``query`` in their description or read text.

        An identifier is a word with a digit ("XG-2047"); it matches in other spellings
        ("XG2047", "xg 2047"), in part ("2047") and, at a lower score, in the spellings a
        reader of printed text confuses ("XG-2O47"): see
        `multimodal_rag.descriptions.identifiers`. Called only when `identifier_search` is true.

        Args:
            query: The user's text; one without identifiers finds nothing.
            k: The most results wanted.
            ids: Search only these records.

        Returns:
            Up to ``k`` ``(id, score, forms)``, best first (ties by id), where ``forms`` are
            the record's identifiers that matched, normalised (``"xg2047"``).

        Raises:
            InvalidInputError: The store has no identifier index (the default), or ``k`` is
                not a positive integer.
        """
        raise InvalidInputError("this description store has no identifier index")


@runtime_checkable
class Answerer(Protocol):
    """Answers a question about an image from the retrieved matches."""

    kind: ClassVar[str]

    @abstractmethod
    def answer(
        self,
        question: str,
        *,
        image: ImageInput | None,
        matches: Sequence[Hit],
        metadata: Mapping[str, Any] | None = None,
    ) -> Answer:
        """Answer ``question``.

        Args:
            question: The user's question.
            image: The user's own image, if the question is about one.
            matches: Retrieved knowledge-base items, best first, with descriptions.
            metadata: Free-form context for the answerer (unused by the built-in ones).
        """

    @abstractmethod
    def config(self) -> dict[str, Any]:
        """Keyword arguments that rebuild this answerer (never secrets such as API keys)."""

    def stream(
        self,
        question: str,
        *,
        image: ImageInput | None,
        matches: Sequence[Hit],
        metadata: Mapping[str, Any] | None = None,
    ) -> AnswerStream:
        """Answer ``question`` as a stream of text chunks (see [`answer`][multimodal_rag.protocols.Answerer.answer]).

        Answerers that can stream override this; by default the whole answer is one chunk.
        """
        from multimodal_rag._streaming import AnswerStream

        return AnswerStream.from_answer(self.answer(question, image=image, matches=matches, metadata=metadata))

    async def aanswer(
        self,
        question: str,
        *,
        image: ImageInput | None,
        matches: Sequence[Hit],
        metadata: Mapping[str, Any] | None = None,
    ) -> Answer:
        """Answer ``question`` without blocking the event loop (see [`answer`][multimodal_rag.protocols.Answerer.answer]).

        Answerers with an asynchronous client override this; by default [`answer`][multimodal_rag.protocols.Answerer.answer]
        runs in a worker thread.
        """
        import asyncio

        return await asyncio.to_thread(self.answer, question, image=image, matches=matches, metadata=metadata)

    async def astream(
        self,
        question: str,
        *,
        image: ImageInput | None,
        matches: Sequence[Hit],
        metadata: Mapping[str, Any] | None = None,
    ) -> AsyncAnswerStream:
        """Answer ``question`` as an asynchronous stream of text chunks.

        The request has been accepted when this returns; the chunks follow. By default
        the whole answer of [`aanswer`][multimodal_rag.protocols.Answerer.aanswer] is one chunk.
        """
        from multimodal_rag._streaming import AsyncAnswerStream

        return AsyncAnswerStream.from_answer(
            await self.aanswer(question, image=image, matches=matches, metadata=metadata)
        )


@runtime_checkable
class ImageDescriber(Protocol):
    """Writes a short description of an image on its own (used to fill missing descriptions)."""

    @abstractmethod
    def describe_image(self, image: ImageInput) -> Answer:
        """Describe ``image``.

        Returns:
            An answer whose text is the description and whose model names the writer.

        Raises:
            ImageError: The image cannot be read.
            AnswererError: The model failed.
        """


@runtime_checkable
class Reranker(Protocol):
    """Puts the best search results in a better order, judging each against the query.

    A reranker sees only what the search already found: it changes the order of the
    hits, never the set. It runs on the top few results of a search (the caller decides
    how many), so it may afford a model that is too slow to search the whole knowledge
    base with.

    Attributes:
        kind: Short name the backend registry knows this reranker by.
    """

    kind: ClassVar[str]

    @abstractmethod
    def rerank(
        self, hits: Sequence[Hit], *, text: str | None = None, image: ImageInput | None = None
    ) -> list[Hit]:
        """Order ``hits`` by how well each matches the query, best first.

        Args:
            hits: Search results, best first.
            text: The query text, if the search had one.
            image: The query image, if the search had one.

        Returns:
            The same hits, each exactly once, in the new order: none is dropped and none
            added. A hit may come back as a copy (``attrs.evolve``) carrying what the
            reranker learnt, but keeps its id and its score. A reranker that cannot rank
            (its model failed, its reply made no sense) returns ``hits`` in their order
            and says why in a warning log rather than failing the search.

        Raises:
            InvalidInputError: Neither ``text`` nor ``image`` was given.
            ImageError: The query image cannot be read.
        """

    @abstractmethod
    def config(self) -> dict[str, Any]:
        """Keyword arguments that rebuild this reranker (never secrets such as API keys)."""
