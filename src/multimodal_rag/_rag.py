"""The [`MultimodalRAG`][multimodal_rag._rag.MultimodalRAG] facade: one object that ingests, searches, answers and saves.

It is composed of parts (`multimodal_rag._facade`, and `multimodal_rag._query` for searching and
answering) that share one `KnowledgeBaseState`; each public method delegates to the part that
does the work, and carries the documentation.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, overload

from multimodal_rag._facade.adapting import Adapting
from multimodal_rag._facade.components import (
    answerer_or_default,
    description_store_of,
    vector_store_of,
)
from multimodal_rag._facade.describing import Describing
from multimodal_rag._facade.ingesting import Ingesting
from multimodal_rag._facade.persistence import Persistence
from multimodal_rag._facade.reading import TextReading
from multimodal_rag._facade.records import Records
from multimodal_rag._facade.state import KnowledgeBaseState
from multimodal_rag._kb.directory import KnowledgeBaseDirectory
from multimodal_rag._kb.manifest import MANIFEST_FILE
from multimodal_rag._query import Querying
from multimodal_rag._registry import kind_of
from multimodal_rag._remote import check_endpoints

if TYPE_CHECKING:
    from typing_extensions import Unpack

    from multimodal_rag._query import AskOptions
    from multimodal_rag._retrieval import Filter
    from multimodal_rag._streaming import AnswerStream, AsyncAnswerStream
    from multimodal_rag._verify import RepairReport, VerificationReport
    from multimodal_rag.adapter.fitting import AdapterReport
    from multimodal_rag.adapter.projection import Adapter
    from multimodal_rag.evaluation.report import EvaluationReport
    from multimodal_rag.ocr import ReadText, TextReader
    from multimodal_rag.protocols import (
        Answerer,
        DescriptionStore,
        Embedder,
        ImageDescriber,
        Reranker,
        VectorStore,
    )
    from multimodal_rag.types import (
        AdapterKind,
        AddResult,
        Answer,
        DescribeResult,
        DescriptionStoreKind,
        Fusion,
        Hit,
        ImageInput,
        OnError,
        ReadTextResult,
        Record,
        SearchMode,
        SyncResult,
        Vector,
        Vectors,
        VectorStoreKind,
    )

__all__ = ["MultimodalRAG"]

logger = logging.getLogger(__name__)


class MultimodalRAG:
    """A knowledge base of images and their descriptions, searchable by image or text.

    Compose it from the four parts, or let [`create`][multimodal_rag._rag.MultimodalRAG.create] and
    [`open`][multimodal_rag._rag.MultimodalRAG.open] do it (``docs/getting-started.md``).

    Args:
        embedder: Turns images and texts into vectors.
        vector_store: Index of the vectors; an exact [`FaissFlatStore`][multimodal_rag.vectors.faiss_flat.FaissFlatStore] by default.
        description_store: Keeps paths, descriptions and metadata; in-memory SQLite by default.
        answerer: Answers from the matches; by default OpenAI's when ``OPENAI_API_KEY`` is set,
            otherwise the offline extractive one (``docs/answerers.md``).
        path: The knowledge-base directory, if it lives on disk.
        read_only: Refuse every change (for readers that share a knowledge base).

    Attributes:
        answerer_reason: Why the [`answerer`][multimodal_rag._rag.MultimodalRAG.answerer] is the one in use.

    Raises:
        DimensionMismatchError: The vector store holds vectors of another dimension.
    """

    def __init__(
        self,
        embedder: Embedder,
        vector_store: VectorStore | None = None,
        description_store: DescriptionStore | None = None,
        answerer: Answerer | None = None,
        *,
        path: str | os.PathLike[str] | None = None,
        read_only: bool = False,
    ) -> None:
        answerer, self.answerer_reason = answerer_or_default(answerer)
        logger.info("answerer: %s", self.answerer_reason)
        self._state = state = KnowledgeBaseState(
            embedder=embedder,
            vector_store=vector_store_of(embedder.dim, vector_store),
            description_store=description_store_of(description_store),
            answerer=answerer,
            read_only=read_only,
            directory=KnowledgeBaseDirectory(Path(path)) if path is not None else None,
        )
        self._records = Records(state)
        self._reading = TextReading(state, self._records)
        self._querying = Querying(state, self._records, self._reading)
        self._ingesting = Ingesting(state)
        self._describing = Describing(state, self._records)
        self._persistence = Persistence(state)
        self._adapting = Adapting(state, self._persistence)

    # -- construction ------------------------------------------------------------

    @classmethod
    def create(
        cls,
        path: str | os.PathLike[str],
        *,
        embedder: Embedder,
        vector_store: VectorStoreKind | VectorStore | None = None,
        description_store: DescriptionStoreKind | DescriptionStore = "sqlite",
        answerer: Answerer | None = None,
        exist_ok: bool = False,
        expected_size: int | None = None,
    ) -> MultimodalRAG:
        """Create a new, empty knowledge base in directory ``path`` and save it.

        Args:
            path: Directory to create (it may exist if empty).
            embedder: The embedder every image and query goes through.
            vector_store: A [`VectorStoreKind`][multimodal_rag.types.VectorStoreKind] or a store
                instance; by default the kind for ``expected_size`` (``docs/choosing-an-index.md``).
            description_store: ``"sqlite"``, ``"jsonl"``, ``"postgres"`` or a store instance.
            answerer: Answerer for [`ask`][multimodal_rag._rag.MultimodalRAG.ask].
            exist_ok: Open the knowledge base already at ``path`` instead of failing.
            expected_size: How many images it is expected to hold; picks the default ``vector_store``.

        Raises:
            KnowledgeBaseExistsError: A knowledge base (or other files) is already there.
            DimensionMismatchError: ``vector_store`` holds vectors of another dimension.
        """
        directory = Path(path)
        if exist_ok and (directory / MANIFEST_FILE).exists():
            return cls.open(directory, embedder=embedder, answerer=answerer)
        unfinished = KnowledgeBaseDirectory(directory).check_new()
        vectors = vector_store_of(embedder.dim, vector_store, expected_size=expected_size)
        descriptions = description_store_of(description_store)
        directory.mkdir(parents=True, exist_ok=True)
        rag = cls(embedder, vectors, descriptions, answerer, path=directory)
        rag._persistence.first_save(remove_unfinished=unfinished)
        return rag

    @classmethod
    def open(
        cls,
        path: str | os.PathLike[str],
        *,
        embedder: Embedder | None = None,
        answerer: Answerer | None = None,
        read_only: bool = False,
        allow_modules: Iterable[str] = (),
        salvage: bool = False,
        allow_endpoints: Iterable[str] = (),
    ) -> MultimodalRAG:
        """Open the knowledge base saved in ``path``.

        Args:
            path: The knowledge-base directory.
            embedder: The embedder, with the fingerprint the knowledge base was built with; by
                default rebuilt from the manifest.
            answerer: Answerer for [`ask`][multimodal_rag._rag.MultimodalRAG.ask].
            read_only: Open without the writer's lock; changes are refused.
            allow_modules: Packages whose classes the manifest may name by dotted path (custom
                backends, ``docs/custom-backend.md``); nothing else is imported from a manifest.
            salvage: Open a damaged knowledge base, keeping what its files still hold
                (``docs/reliability.md``).
            allow_endpoints: URLs of servers named by the manifest that may receive credentials
                from the environment (``docs/scale-out.md``).

        Raises:
            KnowledgeBaseNotFoundError: No knowledge base there.
            KnowledgeBaseLockedError: Another process has it open for writing.
            ManifestError: Unreadable manifest or unknown format version.
            CorruptFileError: A file does not match its checksum, the journal lost committed
                changes, or a path inside the knowledge base is a symbolic link.
            KnowledgeBaseAccessError: A file may not be read (nothing is changed).
            EmbedderMismatchError: ``embedder`` differs from the one it was built with.
            InvalidInputError: ``allow_endpoints`` is not a list of URLs.
        """
        from multimodal_rag._kb.loading import open_directory

        opened = open_directory(
            Path(path),
            embedder=embedder,
            read_only=read_only,
            salvage=salvage,
            allow_modules=allow_modules,
            allow_endpoints=check_endpoints(allow_endpoints),
        )
        kb = opened.loaded
        rag = cls(kb.embedder, kb.vector_store, kb.description_store, answerer, read_only=read_only)
        rag._state.attach(opened)
        return rag

    # -- the components ----------------------------------------------------------

    @property
    def embedder(self) -> Embedder:
        """Turns images and texts into vectors."""
        return self._state.embedder

    @property
    def vector_store(self) -> VectorStore:
        """The index of the vectors (a new one after a repair or an adapter's switch)."""
        return self._state.vector_store

    @property
    def description_store(self) -> DescriptionStore:
        """Keeps paths, descriptions and metadata."""
        return self._state.description_store

    @property
    def answerer(self) -> Answerer:
        """The answerer [`ask`][multimodal_rag._rag.MultimodalRAG.ask] uses; set it to use another."""
        return self._state.answerer

    @answerer.setter
    def answerer(self, answerer: Answerer) -> None:
        self._state.answerer = answerer

    @property
    def adapter(self) -> Adapter | None:
        """The adapter applied to the stored vectors and every query, or ``None``."""
        return self._state.adapter

    @property
    def read_only(self) -> bool:
        """Whether every change is refused (opened read-only)."""
        return self._state.read_only

    # -- persistence -------------------------------------------------------------

    @property
    def generation(self) -> int:
        """The snapshot this object was opened at or last saved (0 before the first save)."""
        return self._state.generation

    @property
    def fingerprint(self) -> str:
        """The identity of the vector space (the embedder's, and the adapter's digest): vectors of
        two knowledge bases compare only when these are equal."""
        return self._adapting.fingerprint

    @property
    def adapter_info(self) -> dict[str, Any] | None:
        """The applied adapter as the manifest records it, or ``None`` without one."""
        return self._adapting.info

    @property
    def path(self) -> Path | None:
        """The knowledge-base directory, or ``None`` for one that lives only in memory."""
        return self._state.directory.path if self._state.directory is not None else None

    def save(self) -> None:
        """Write the knowledge base to its directory, atomically.

        Raises:
            ReadOnlyError: Opened read-only, or not created with a path.
            KnowledgeBaseError: The disk refused the write; the previous save is intact.
        """
        self._persistence.save()

    def close(self) -> None:
        """Release the writer's lock; changes since the last save stay in the journal, replayed by
        the next [`open`][multimodal_rag._rag.MultimodalRAG.open]."""
        self._persistence.close()

    def __enter__(self) -> MultimodalRAG:
        return self

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        self._persistence.end_block(succeeded=exc_type is None)

    # -- integrity ---------------------------------------------------------------

    def verify(self) -> VerificationReport:
        """Check, changing nothing, that the parts agree and the files are intact (``docs/reliability.md``).

        Returns:
            A report: ``ok``, and ``problems``, each with a ``kind``, an ``id`` and a ``detail``.
        """
        return self._persistence.verify()

    def repair(self) -> RepairReport:
        """Rebuild what [`verify`][multimodal_rag._rag.MultimodalRAG.verify] found broken, without
        losing any description, and save (``docs/reliability.md``).

        Returns:
            What was done, and in ``remaining`` what could not be fixed.

        Raises:
            ReadOnlyError: Opened read-only.
        """
        return self._persistence.repair()

    # -- ingest ------------------------------------------------------------------

    def add(
        self,
        images: Sequence[ImageInput] | ImageInput,
        *,
        ids: Sequence[str] | None = None,
        descriptions: Sequence[str | None] | str | None = None,
        metadata: Sequence[Mapping[str, Any]] | Mapping[str, Any] | None = None,
        on_error: OnError = "raise",
        batch_size: int = 32,
        progress: bool | None = None,
        ocr: bool | TextReader | None = None,
    ) -> AddResult:
        """Embed images and store them with their descriptions.

        Args:
            images: One image or a sequence of paths, encoded bytes or PIL images.
            ids: Ids to store them under, an existing one replaced; by default a hash of each
                image's bytes, an image already present being reported in ``duplicates``.
            descriptions: A description per image (``None`` for none).
            metadata: A metadata mapping per image.
            on_error: ``"raise"`` stops at the first unreadable image, storing nothing;
                ``"skip"`` reports it in ``skipped`` and goes on, committing batch by batch.
            batch_size: Images embedded per batch.
            progress: Show a progress bar (default: when writing to a terminal).
            ocr: Read the text in each image (``True``: the built-in reader, or your own) and in
                later adds; ``None`` follows the knowledge base, ``False`` reads none now
                (``docs/ocr.md``).

        Raises:
            ImageError: An unreadable image, with ``on_error="raise"``.
            InvalidInputError: Lengths that do not match, bad ids, descriptions or metadata.
            KnowledgeBaseError: An image given in memory cannot be kept in ``images/``.
        """
        return self._ingesting.add(
            images,
            ids=ids,
            descriptions=descriptions,
            metadata=metadata,
            on_error=on_error,
            batch_size=batch_size,
            progress=progress,
            ocr=ocr,
        )

    def add_directory(
        self,
        directory: str | os.PathLike[str],
        *,
        descriptions: str | os.PathLike[str] | None = None,
        recursive: bool = True,
        batch_size: int = 32,
        progress: bool | None = None,
        allow_outside: bool = False,
        ocr: bool | TextReader | None = None,
    ) -> AddResult:
        """Index every image under ``directory``, batch by batch; what cannot be read (or leads
        outside it) is skipped and reported, never stopping the rest.

        Args:
            directory: Folder of images (jpg, png, webp, gif, bmp, tiff; heic with the ``heif`` extra).
            descriptions: JSON Lines of ``{"image_path", "description", ...}`` (the cookbook's
                ``description.json``); extra keys become metadata.
            recursive: Include subfolders.
            batch_size: As for [`add`][multimodal_rag._rag.MultimodalRAG.add].
            progress: As for add.
            allow_outside: Follow symlinks and descriptions entries that lead outside ``directory``.
            ocr: As for add.

        Raises:
            InvalidInputError: ``directory`` is not a folder, or the descriptions file
                is unreadable or has an entry leading outside ``directory``.
        """
        return self._ingesting.add_directory(
            directory,
            descriptions=descriptions,
            recursive=recursive,
            batch_size=batch_size,
            progress=progress,
            allow_outside=allow_outside,
            ocr=ocr,
        )

    def sync(
        self,
        source: str | os.PathLike[str],
        *,
        descriptions: str | os.PathLike[str] | None = None,
        recursive: bool = True,
        dry_run: bool = False,
        batch_size: int = 32,
        progress: bool | None = None,
        allow_outside: bool = False,
        page_size: int | None = None,
        ocr: bool | TextReader | None = None,
    ) -> SyncResult:
        """Make the knowledge base match ``source``: add its new images, replace the changed
        ones (same location, other bytes; their description kept unless ``descriptions`` has
        an entry for them) and remove those it no longer holds (``docs/scale-out.md``).

        Args:
            source: A folder, or a URL such as ``s3://bucket/photos`` (credentials from the
                environment; the ``s3``, ``gcs`` or ``azure`` extra).
            descriptions: As for [`add_directory`][multimodal_rag._rag.MultimodalRAG.add_directory]; a path or a URL.
            dry_run: Only list what would change.
            page_size: Keys per listing request of an S3 bucket (at most 1000).
            recursive: Include subfolders.
            batch_size: As for [`add`][multimodal_rag._rag.MultimodalRAG.add].
            progress: As for add.
            allow_outside: As for [`add_directory`][multimodal_rag._rag.MultimodalRAG.add_directory].
            ocr: As for add.

        Raises:
            InvalidInputError: ``source`` cannot be listed (missing, access denied), or the
                descriptions file is unreadable.
            MissingDependencyError: The URL's filesystem package is not installed.
        """
        from multimodal_rag._facade.syncing import Syncing

        return Syncing(self._state, self._ingesting, self._records).sync(
            source,
            descriptions=descriptions,
            recursive=recursive,
            allow_outside=allow_outside,
            dry_run=dry_run,
            batch_size=batch_size,
            progress=progress,
            page_size=page_size,
            ocr=ocr,
        )

    def read_text(
        self,
        *,
        ocr: bool | TextReader | None = None,
        ids: Iterable[str] | None = None,
        batch_size: int = 16,
        progress: bool | None = None,
    ) -> ReadTextResult:
        """Read the text in the images that have none yet (turning OCR on), batch by batch, so an
        interrupted run goes on where it stopped (``docs/ocr.md``).

        Args:
            ocr: As for [`add`][multimodal_rag._rag.MultimodalRAG.add].
            ids: Only these images (default: every image).
            batch_size: Images read and committed per batch.
            progress: As for add.

        Raises:
            MissingDependencyError: The reader's extra (``ocr``) is not installed.
            NotFoundError: An id of ``ids`` is unknown.
        """
        return self._reading.read_text(ocr=ocr, ids=ids, batch_size=batch_size, progress=progress)

    def edit_text(self, id: str, text: str | ReadText | None) -> Record:
        """Replace the text read in ``id``'s image with ``text`` (a string: one line per line);
        ``None`` removes it.

        Raises:
            NotFoundError: Unknown id.
        """
        return self._reading.edit_text(id, text)

    @property
    def ocr_info(self) -> dict[str, Any]:
        """Whether text is read in the images, by which reader, and how many records have it."""
        return self._reading.info()

    def describe_missing(
        self,
        *,
        describer: ImageDescriber | None = None,
        ids: Iterable[str] | None = None,
        batch_size: int = 8,
        workers: int = 4,
        progress: bool | None = None,
    ) -> DescribeResult:
        """Have a model describe the images that have no description, batch by batch (running it
        again continues where it stopped), each marked as the model's in its metadata
        (``docs/answerers.md``).

        Args:
            describer: Writes the descriptions; by default the `answerer`, which must be able to.
            ids: Only consider these images (default: every image).
            batch_size: Images per stored batch.
            workers: Images described at the same time.
            progress: Show a progress bar (default: when writing to a terminal).

        Returns:
            The ids described, and the images skipped with the reason.

        Raises:
            ReadOnlyError: Opened read-only.
            InvalidInputError: The describer cannot describe images.
            NotFoundError: An id in ``ids`` is not in the knowledge base.
            AnswererError: The provider failed for every image; earlier batches are kept.
        """
        return self._describing.describe_missing(
            describer=describer, ids=ids, batch_size=batch_size, workers=workers, progress=progress
        )

    # -- records -----------------------------------------------------------------

    def get(self, id: str) -> Record:
        """The stored record of ``id``.

        Raises:
            InvalidInputError: Not a valid id (see `check_id`).
            NotFoundError: Unknown id.
        """
        return self._records.get(id)

    def get_many(self, ids: Sequence[str]) -> dict[str, Record]:
        """The stored records of ``ids`` by id, as [`get`][multimodal_rag._rag.MultimodalRAG.get]
        gives them; an id without a stored record, or unknown, is left out."""
        return self._records.get_many(ids)

    def describe(
        self, id: str, description: str | None, *, metadata: Mapping[str, Any] | None = None
    ) -> Record:
        """Replace the ``description`` (and the ``metadata``, if given) of ``id``, without
        re-embedding.

        Raises:
            InvalidInputError: Not a valid id, or metadata JSON cannot give back exactly.
            NotFoundError: Unknown id.
        """
        return self._records.describe(id, description, metadata)

    def remove(self, ids: Iterable[str] | str) -> int:
        """Remove images by id (vectors and descriptions), ignoring unknown ids; returns how many.

        Raises:
            InvalidInputError: One of ``ids`` is not a valid id; nothing is removed.
        """
        return self._records.remove(ids)

    def ids(self) -> list[str]:
        """Ids of every image in the knowledge base."""
        return self._records.ids()

    def __len__(self) -> int:
        return len(self._state.vector_store)

    def __contains__(self, id: object) -> bool:
        return id in self._state.vector_store

    # -- search and answers ------------------------------------------------------

    def embed_query(
        self, image: ImageInput | None = None, text: str | None = None, *, text_weight: float = 0.5
    ) -> Vector:
        """The query vector, in the index's space, for an image, a text, or both (the normalised
        sum ``(1 - text_weight) * image_vector + text_weight * text_vector``)."""
        return self._querying.embed_query(image, text, text_weight=text_weight)

    def search(
        self,
        image: ImageInput | None = None,
        text: str | None = None,
        *,
        k: int = 5,
        filter: Filter | None = None,
        text_weight: float = 0.5,
        mode: SearchMode | None = None,
        fusion: Fusion | None = None,
        rerank: Reranker | None = None,
        query_ocr: bool | None = None,
    ) -> list[Hit]:
        """Find the knowledge-base images that best match an image, a text, or both (``docs/search.md``).

        Args:
            image: Query image (path, bytes or PIL image).
            text: Query text.
            k: How many hits; more than the knowledge base holds returns them all.
            filter: Metadata conditions (``{"price": {"$lt": 100}}``) or a predicate over ids,
                applied in every channel.
            text_weight: Weight of the text in the vector channel when both are given.
            mode: ``"vector"`` (CLIP vectors), ``"lexical"`` (the descriptions' words, BM25) or
                ``"hybrid"`` (both); by default hybrid for a text when the description store
                has a full-text index, otherwise vector.
            fusion: Hybrid mode's fusion: ``"rrf"`` (reciprocal rank) or ``"weighted"`` (scores);
                by default ``"rrf"``, and ``"weighted"`` when the query photo's text was read.
            rerank: A [`Reranker`][multimodal_rag.protocols.Reranker] that reorders the best
                candidates before the first ``k`` are returned.
            query_ocr: Read the text in ``image`` and search its words too (default: when the
                knowledge base reads text and the mode is not ``"vector"``; ``True`` also reads
                where it does not, with the built-in reader; ``docs/search.md``).

        Returns:
            Hits, best first, with their score, cosine ``similarity`` where computed, the
            ``signals`` that found them, image path, description and metadata.

        Raises:
            InvalidInputError: No image and no text, a lexical search without a text or a
                full-text index, an unknown mode or fusion, or a bad filter.
        """
        return self._querying.search(
            image,
            text,
            k=k,
            filter=filter,
            text_weight=text_weight,
            mode=mode,
            fusion=fusion,
            rerank=rerank,
            query_ocr=query_ocr,
        )

    async def asearch(
        self,
        image: ImageInput | None = None,
        text: str | None = None,
        *,
        k: int = 5,
        filter: Filter | None = None,
        text_weight: float = 0.5,
        mode: SearchMode | None = None,
        fusion: Fusion | None = None,
        rerank: Reranker | None = None,
        query_ocr: bool | None = None,
    ) -> list[Hit]:
        """[`search`][multimodal_rag._rag.MultimodalRAG.search], with its arguments, for asyncio
        code (the work runs in a worker thread)."""
        return await self._querying.asearch(
            image,
            text,
            k=k,
            filter=filter,
            text_weight=text_weight,
            mode=mode,
            fusion=fusion,
            rerank=rerank,
            query_ocr=query_ocr,
        )

    def search_by_vector(
        self, vector: Vector, *, k: int = 5, filter: Filter | None = None
    ) -> list[Hit]:
        """[`search`][multimodal_rag._rag.MultimodalRAG.search] for a ``vector`` in the index's
        space (with an adapter applied, make it with
        [`embed_query`][multimodal_rag._rag.MultimodalRAG.embed_query]); ``k`` and ``filter`` as
        in search."""
        return self._querying.search_by_vector(vector, k=k, filter=filter)

    # The overloads differ only in ``stream``; the other keywords are those of the implementation.
    @overload
    def ask(
        self, question: str, *, stream: Literal[False] = ..., **options: Unpack[AskOptions]
    ) -> Answer: ...
    @overload
    def ask(
        self, question: str, *, stream: Literal[True], **options: Unpack[AskOptions]
    ) -> AnswerStream: ...
    @overload
    def ask(
        self, question: str, *, stream: bool, **options: Unpack[AskOptions]
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
        mode: SearchMode | None = None,
        rerank: Reranker | None = None,
        stream: bool = False,
        metadata: Mapping[str, Any] | None = None,
        query_ocr: bool | None = None,
    ) -> Answer | AnswerStream:
        """Answer a question about an image (or the knowledge base) from the best matches
        (``docs/answerers.md``): ``rag.ask("What is this?", image="photo.jpg").text``.

        Args:
            question: The user's question.
            image: The user's image: the search query, and shown to the answerer.
            text: Search text; defaults to the question when there is no image.
            k: How many matches the answer may draw on.
            filter: As in [`search`][multimodal_rag._rag.MultimodalRAG.search].
            text_weight: As in search.
            mode: As in search.
            rerank: As in search.
            stream: Return an [`AnswerStream`][multimodal_rag._streaming.AnswerStream] of text chunks.
            metadata: Passed to the answerer, with the text read in ``image`` under ``"image_text"``.
            query_ocr: As in search.

        Returns:
            The answer with its sources; with ``stream=True``, an iterator of text chunks whose
            ``answer`` holds the complete answer once read.

        Raises:
            InvalidInputError: An empty question or bad search arguments.
            ImageError: The image cannot be read.
            AnswererError: The answerer failed (a subclass says how).
        """
        return self._querying.ask(
            question,
            image=image,
            text=text,
            k=k,
            filter=filter,
            text_weight=text_weight,
            mode=mode,
            rerank=rerank,
            stream=stream,
            metadata=metadata,
            query_ocr=query_ocr,
        )

    @overload
    async def aask(
        self, question: str, *, stream: Literal[False] = ..., **options: Unpack[AskOptions]
    ) -> Answer: ...
    @overload
    async def aask(
        self, question: str, *, stream: Literal[True], **options: Unpack[AskOptions]
    ) -> AsyncAnswerStream: ...
    @overload
    async def aask(
        self, question: str, *, stream: bool, **options: Unpack[AskOptions]
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
        mode: SearchMode | None = None,
        rerank: Reranker | None = None,
        stream: bool = False,
        metadata: Mapping[str, Any] | None = None,
        query_ocr: bool | None = None,
    ) -> Answer | AsyncAnswerStream:
        """[`ask`][multimodal_rag._rag.MultimodalRAG.ask], with its arguments, for asyncio code (the
        search runs in a worker thread; ``stream=True`` gives an
        [`AsyncAnswerStream`][multimodal_rag._streaming.AsyncAnswerStream])."""
        return await self._querying.aask(
            question,
            image=image,
            text=text,
            k=k,
            filter=filter,
            text_weight=text_weight,
            mode=mode,
            rerank=rerank,
            stream=stream,
            metadata=metadata,
            query_ocr=query_ocr,
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
        mode: SearchMode = "vector",
        fusion: Fusion | None = None,
        query_ocr: bool | None = None,
        progress: bool | None = None,
    ) -> EvaluationReport:
        """Measure how well this knowledge base finds the right images, with queries made from its
        own images and descriptions, and recommend a ``min_score`` gate (``docs/evaluation.md``).

        Args:
            queries: JSON Lines of ``{"query": text | "image": path, "expected": [id or path, ...]}``.
            edits: Which edits to make (default: all of ``evaluation.edits.EDIT_KINDS``).
            negatives: A folder of images with no right answer (default: a fifth held out).
            sample: How many images to make queries from (``None``: all).
            seed: Makes the sample and the edits repeatable.
            k: How many results each query returns.
            keep: The share of answerable queries the recommended gate must keep.
            mode: ``"vector"`` searches every query by its vector; ``"lexical"`` and ``"hybrid"``
                search labelled and text queries as [`search`][multimodal_rag._rag.MultimodalRAG.search]
                does, query photos read for their text (``docs/evaluation.md``).
            fusion: The fusion of hybrid mode (default: as in [`search`][multimodal_rag._rag.MultimodalRAG.search]).
            query_ocr: Read the text in labelled query photos, as in
                [`search`][multimodal_rag._rag.MultimodalRAG.search] (lexical and hybrid modes).
            progress: Show a progress bar (default: when writing to a terminal).

        Returns:
            Metrics per query set, each query's result, the gate and latency; ``to_dict()``
            gives the JSON ``multimodal-rag eval --compare`` reads.

        Raises:
            InvalidInputError: An unknown edit, a bad setting, or a queries line naming an
                answer the knowledge base does not hold.
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
            query_ocr=query_ocr,
            progress=progress,
            querying=self._querying,
        )

    # -- the adapter ---------------------------------------------------------------

    def raw_vectors(self, ids: Sequence[str]) -> Vectors:
        """The embedder's own vectors of ``ids`` (float32, one row each), whatever adapter is applied.

        Raises:
            NotFoundError: An id the knowledge base does not hold.
        """
        return self._adapting.raw_vectors(ids)

    def fit_adapter(
        self,
        *,
        kind: AdapterKind = "low-rank",
        rank: int = 32,
        pairs: str | os.PathLike[str] | None = None,
        edits: bool = True,
        holdout: float = 0.2,
        seed: int = 0,
        progress: bool | None = None,
    ) -> AdapterReport:
        """Fit an adapter to this knowledge base's own pairs, and keep it (applied to every vector
        and query, saved) only if it helps on held-out records (``docs/adapter.md``).

        Args:
            kind: ``"low-rank"`` (a residual of ``rank``) or ``"linear"`` (a full matrix).
            rank: The low-rank residual's rank.
            pairs: JSON Lines of extra pairs, ``{"image": id or path, "text": "..."}``.
            edits: Also train on edited copies of images, so image queries keep their originals.
            holdout: The share of records held out to judge the adapter.
            seed: Fixes the split, the edits and the training.
            progress: Show progress bars (default: when writing to a terminal).

        Returns:
            The before/after measurements, training figures, and whether it was kept and why
            (also saved under ``adapter-reports/``).

        Raises:
            ReadOnlyError: Opened read-only.
            InvalidInputError: Fewer than 4 described records, a bad setting, or a bad
                pairs file line (named).
        """
        from multimodal_rag.adapter.fitting import fit_and_judge

        # Judged on what this object shows (its records, raw vectors and searches).
        return self._adapting.fit(
            lambda: fit_and_judge(
                self,
                kind=kind,
                rank=rank,
                pairs=pairs,
                edits=edits,
                holdout=holdout,
                seed=seed,
                progress=progress,
            )
        )

    def remove_adapter(self) -> bool:
        """Remove the adapter, giving the index the embedder's raw vectors back exactly, and save.

        Returns:
            Whether there was an adapter to remove.

        Raises:
            ReadOnlyError: Opened read-only.
        """
        return self._adapting.remove()

    def __repr__(self) -> str:
        where = str(self.path) if self.path is not None else "in memory"
        adapter = self.adapter
        return (
            f"MultimodalRAG({where}, {len(self)} images, embedder={kind_of(self.embedder)}, "
            f"vector_store={kind_of(self.vector_store)}, description_store={kind_of(self.description_store)}"
            + (f", adapter={adapter.kind}:{adapter.sha256[:16]})" if adapter is not None else ")")
        )
