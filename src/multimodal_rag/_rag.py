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
from multimodal_rag._facade.describing import Describing
from multimodal_rag._facade.ingesting import Ingesting
from multimodal_rag._facade.persistence import Persistence
from multimodal_rag._facade.records import Records
from multimodal_rag._facade.state import KnowledgeBaseState
from multimodal_rag._kb.directory import KnowledgeBaseDirectory
from multimodal_rag._kb.manifest import MANIFEST_FILE
from multimodal_rag._query import Querying
from multimodal_rag._registry import kind_of, resolve
from multimodal_rag._remote import check_endpoints
from multimodal_rag.errors import DimensionMismatchError, KnowledgeBaseExistsError

if TYPE_CHECKING:
    from multimodal_rag._retrieval import Filter
    from multimodal_rag._streaming import AnswerStream, AsyncAnswerStream
    from multimodal_rag._verify import RepairReport, VerificationReport
    from multimodal_rag.adapter.fitting import AdapterReport
    from multimodal_rag.adapter.projection import Adapter
    from multimodal_rag.evaluation.report import EvaluationReport
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
        Record,
        SearchMode,
        Vector,
        Vectors,
        VectorStoreKind,
    )

__all__ = ["MultimodalRAG"]

logger = logging.getLogger(__name__)


class MultimodalRAG:
    """A knowledge base of images and their descriptions, searchable by image or text.

    Compose it from the four parts, or let [`create`][multimodal_rag._rag.MultimodalRAG.create] and [`open`][multimodal_rag._rag.MultimodalRAG.open] do it:

    ```python
    rag = MultimodalRAG.create("kb/", embedder=CLIPEmbedder())
    rag.add_directory("image_database/", descriptions="description.json")
    hits = rag.search(image="query.jpg", k=3)
    rag.save()
    ```

    Args:
        embedder: Turns images and texts into vectors.
        vector_store: Index of the vectors; an exact [`FaissFlatStore`][multimodal_rag.vectors.faiss_flat.FaissFlatStore] by default.
        description_store: Keeps paths, descriptions and metadata; in-memory SQLite by default.
        answerer: Answers questions from the matches (used by [`ask`][multimodal_rag._rag.MultimodalRAG.ask]). By default an
            [`OpenAIAnswerer`][multimodal_rag.answerers.openai.OpenAIAnswerer] when ``OPENAI_API_KEY`` is set, otherwise the offline
            [`ExtractiveAnswerer`][multimodal_rag.answerers.extractive.ExtractiveAnswerer]; `answerer_reason` (and a log line) says which.
        path: The knowledge-base directory, if it lives on disk.
        read_only: Refuse every change (for readers that share a knowledge base).

    Attributes:
        answerer_reason: Why the [`answerer`][multimodal_rag._rag.MultimodalRAG.answerer] is the one in use.
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
        if vector_store is None:
            from multimodal_rag.vectors.faiss_flat import FaissFlatStore

            vector_store = FaissFlatStore(embedder.dim)
        if description_store is None:
            from multimodal_rag.descriptions.sqlite import SQLiteDescriptionStore

            description_store = SQLiteDescriptionStore()
        if vector_store.dim != embedder.dim:
            raise DimensionMismatchError(
                f"the embedder makes {embedder.dim}-d vectors but the vector store holds {vector_store.dim}-d"
            )
        if answerer is None:
            from multimodal_rag.answerers.default import choose_answerer

            answerer, self.answerer_reason = choose_answerer()
            logger.info("%s", self.answerer_reason)
        else:
            self.answerer_reason = "given by the caller"
        directory = KnowledgeBaseDirectory(Path(path)) if path is not None else None
        self._state = state = KnowledgeBaseState(
            embedder=embedder,
            vector_store=vector_store,
            description_store=description_store,
            answerer=answerer,
            read_only=read_only,
            directory=directory,
        )
        self._records = Records(state)
        self._querying = Querying(state, self._records)
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
            vector_store: A built-in kind (``"faiss-flat"``, ``"hnswlib"``, ...; see
                [`VectorStoreKind`][multimodal_rag.types.VectorStoreKind]) or a store
                instance. By default, the right kind for ``expected_size`` (see
                ``docs/choosing-an-index.md``): exact search up to 100,000 images, HNSW above.
                Type checkers know only the built-in kinds: pass a store of another class
                (your own, or an installed package's) as an instance. At run time the kind
                an installed package registers is found by name too.
            description_store: ``"sqlite"``, ``"jsonl"``, ``"postgres"`` or a store instance;
                as for ``vector_store``, a store of another class is passed as an instance.
            answerer: Answerer for [`ask`][multimodal_rag._rag.MultimodalRAG.ask].
            exist_ok: Open the knowledge base already at ``path`` instead of failing.
            expected_size: How many images the knowledge base is expected to hold; picks
                the default ``vector_store``.

        Raises:
            KnowledgeBaseExistsError: A knowledge base (or other files) is already there.
        """
        directory = Path(path)
        if (directory / MANIFEST_FILE).exists():
            if exist_ok:
                return cls.open(directory, embedder=embedder, answerer=answerer)
            raise KnowledgeBaseExistsError(f"a knowledge base already exists at {str(directory)!r}")
        unfinished = KnowledgeBaseDirectory(directory).check_new()
        vectors: VectorStore
        if vector_store is None:
            from multimodal_rag.vectors.defaults import default_vector_store

            vectors = default_vector_store(embedder.dim, expected_size=expected_size)
        else:
            vectors = resolve("vector_store", vector_store)(embedder.dim) if isinstance(vector_store, str) else vector_store
        descriptions: DescriptionStore = (
            resolve("description_store", description_store)() if isinstance(description_store, str) else description_store
        )
        directory.mkdir(parents=True, exist_ok=True)
        rag = cls(embedder, vectors, descriptions, answerer, path=directory)
        assert rag._state.directory is not None
        rag._state.directory.lock()
        try:
            if unfinished:
                rag._state.directory.remove_unfinished()
            rag.save()
        except BaseException:
            rag.close()
            raise
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
            embedder: The embedder to use; it must have the fingerprint the knowledge
                base was built with. By default it is rebuilt from the manifest.
            answerer: Answerer for [`ask`][multimodal_rag._rag.MultimodalRAG.ask].
            read_only: Open without the writer's lock; changes are refused.
            allow_modules: Packages whose classes the manifest may name by dotted path
                (custom backends). Nothing else is imported from a manifest.
            salvage: Open a damaged knowledge base instead of refusing it: a vector
                store whose files fail their checksums starts empty; a damaged
                description store keeps every record its files still hold, filled in
                from the snapshot before it; a damaged or shortened journal is
                replayed up to the damage. [`verify`][multimodal_rag._rag.MultimodalRAG.verify] then lists what is damaged
                and what could not be recovered, and [`repair`][multimodal_rag._rag.MultimodalRAG.repair] rebuilds the rest
                (for instance, re-embeds the images of descriptions whose vectors
                were lost).
            allow_endpoints: Servers named by the manifest that may receive credentials
                from the environment (``$MILVUS_TOKEN``, ``$PGPASSWORD``, ``~/.pgpass``),
                as URLs: ``["http://milvus.internal:19530", "postgresql://db.internal:5432"]``.
                The servers ``$MILVUS_URI`` and ``$DATABASE_URL`` name always may; any other
                is reached without credentials. A manifest never opts into loading code
                (a TorchScript checkpoint): pass your own ``embedder`` for that.

        Raises:
            KnowledgeBaseNotFoundError: No knowledge base there.
            KnowledgeBaseLockedError: Another process has it open for writing.
            ManifestError: Unreadable manifest or unknown format version.
            CorruptFileError: A file does not match its checksum (names the file), the
                journal lost committed changes, or a path inside the knowledge base
                is a symbolic link.
            KnowledgeBaseAccessError: A file may not be read (a permission problem, not
                damage; nothing is changed, even when salvaging).
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
        loaded = opened.loaded
        rag = cls(loaded.embedder, loaded.vector_store, loaded.description_store, answerer, read_only=read_only)
        state = rag._state
        state.directory, state.manifest, state.journal, state.salvage = opened.directory, loaded.manifest, opened.journal, loaded.findings
        state.raw_store = loaded.raw_store
        if loaded.adapter is not None:
            state.adapter, state.adapter_entry = loaded.adapter, loaded.manifest.adapter
        return rag

    # -- the components ----------------------------------------------------------

    @property
    def embedder(self) -> Embedder:
        """Turns images and texts into vectors."""
        return self._state.embedder

    @property
    def vector_store(self) -> VectorStore:
        """The index of the vectors (a new one after a [`repair`][multimodal_rag._rag.MultimodalRAG.repair] or an adapter's switch)."""
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
        """The adapter applied to the stored vectors and to every query
        ([`fit_adapter`][multimodal_rag._rag.MultimodalRAG.fit_adapter]), or ``None``."""
        return self._state.adapter

    @property
    def read_only(self) -> bool:
        """Whether every change is refused (opened read-only)."""
        return self._state.read_only

    # -- persistence -------------------------------------------------------------

    @property
    def generation(self) -> int:
        """The snapshot this object was opened at or last saved (0 before the first save).

        Another process's save makes a higher one on disk (``manifest.json``); a read-only
        opener that sees it can open the knowledge base again to follow (as ``serve`` does).
        """
        return self._state.generation

    @property
    def fingerprint(self) -> str:
        """The identity of the knowledge base's vector space: the embedder's fingerprint, and
        the adapter's digest while one is applied (``<embedder>+adapter:<sha256[:16]>``).

        Vectors of two knowledge bases are comparable only when their fingerprints are equal.
        """
        return self._adapting.fingerprint

    @property
    def adapter_info(self) -> dict[str, Any] | None:
        """The applied adapter as the manifest records it (``kind``, ``rank``, ``sha256``,
        ``file``, ``fitted_at``, ``report``), or ``None`` without one."""
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
        """Release the writer's lock.

        Changes since the last save stay in the journal and are replayed by the next
        [`open`][multimodal_rag._rag.MultimodalRAG.open]; a save folds them into the snapshot, which makes opening faster.
        """
        self._persistence.close()

    def __enter__(self) -> MultimodalRAG:
        return self

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        try:
            if exc_type is None and self._state.directory is not None and not self.read_only:
                self.save()
        finally:
            self.close()

    # -- integrity ---------------------------------------------------------------

    def verify(self) -> VerificationReport:
        """Check that the knowledge base's parts agree and its files are intact.

        Looks for vectors without a description record, records without a vector,
        image files that are missing, vectors that are not finite or all zeros, and
        (for a knowledge base on disk) files whose checksum no longer matches the
        manifest. Nothing is changed.

        Returns:
            A report; ``report.ok`` is true when nothing is wrong, and each of
            ``report.problems`` has a ``kind``, the ``id`` concerned (or ``None``)
            and a ``detail`` sentence.
        """
        return self._persistence.verify()

    def repair(self) -> RepairReport:
        """Rebuild what [`verify`][multimodal_rag._rag.MultimodalRAG.verify] found broken, without losing any description.

        Rebuilds the vector index from the vectors it still holds, embeds again the
        images of records whose vector is missing, gives vectors without a record an
        empty one, and saves (for a knowledge base on disk). An adapter whose file is
        missing or changed is removed: the index is rebuilt from the raw vectors kept
        beside it (or, where those are damaged too, from the images).

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
        on_error: str = "raise",
        batch_size: int = 32,
        progress: bool | None = None,
    ) -> AddResult:
        """Embed images and store them with their descriptions.

        An image whose id is already present is reported in ``duplicates`` and not
        embedded again. With explicit ``ids``, an existing id is replaced.

        Args:
            images: One image or a sequence of paths, encoded bytes or PIL images.
            ids: Ids to store them under; by default a hash of each image's bytes.
            descriptions: A description per image (``None`` for none).
            metadata: A metadata mapping per image.
            on_error: ``"raise"`` stops at the first unreadable image and stores
                nothing from this call; ``"skip"`` reports it in ``skipped`` and
                goes on, committing batch by batch.
            batch_size: Images embedded per batch.
            progress: Show a progress bar (default: when writing to a terminal).

        Raises:
            ImageError: An unreadable image, with ``on_error="raise"``.
            InvalidInputError: Lengths that do not match, bad ids, descriptions or
                metadata (see `multimodal_rag._validation` for what ids and
                metadata may hold). Nothing is stored.
            KnowledgeBaseError: An image given in memory cannot be kept in the
                knowledge base's ``images/`` folder. Nothing from the call is stored,
                except batches already committed with ``on_error="skip"``.
        """
        return self._ingesting.add(images, ids=ids, descriptions=descriptions, metadata=metadata, on_error=on_error, batch_size=batch_size, progress=progress)

    def add_directory(
        self,
        directory: str | os.PathLike[str],
        *,
        descriptions: str | os.PathLike[str] | None = None,
        recursive: bool = True,
        batch_size: int = 32,
        progress: bool | None = None,
        allow_outside: bool = False,
    ) -> AddResult:
        """Index every image under ``directory``.

        Unreadable images are skipped and reported, never stopping the rest; the
        knowledge base is updated batch by batch. So are symlinks that lead outside
        ``directory``, unless ``allow_outside`` is true, and image names that are not
        regular files (FIFOs, devices, symlink loops, broken symlinks), which are
        never opened.

        Args:
            directory: Folder of images (jpg, jpeg, png, webp, gif, bmp, tif, tiff; heic and
                heif with the ``heif`` extra; avif with a Pillow that reads it).
            descriptions: A JSON Lines file of ``{"image_path", "description", ...}``
                objects (the cookbook's ``description.json``). Extra keys become metadata.
            recursive: Include subfolders.
            allow_outside: Follow symlinks, and descriptions-file entries, that lead
                outside ``directory`` (refused by default: the folder or the file may
                come from someone else).

        Raises:
            InvalidInputError: ``directory`` is not a folder, or the descriptions file
                is unreadable or has an entry leading outside ``directory``.
        """
        return self._ingesting.add_directory(directory, descriptions=descriptions, recursive=recursive, batch_size=batch_size, progress=progress, allow_outside=allow_outside)

    def describe_missing(
        self,
        *,
        describer: ImageDescriber | None = None,
        ids: Iterable[str] | None = None,
        batch_size: int = 8,
        workers: int = 4,
        progress: bool | None = None,
    ) -> DescribeResult:
        """Have a model describe the images that have no description.

        Each description is written into the record with metadata
        ``{"description_source": "machine", "description_model": <model>}`` so that a
        person can find and review it. An image that already has a description is never
        touched. Batches are stored as they finish (and journalled like any change), so an
        interrupted run keeps what it had done; running it again continues where it stopped.

        Args:
            describer: Writes the descriptions; by default the `answerer`, which must
                be able to ([`OpenAIAnswerer`][multimodal_rag.answerers.openai.OpenAIAnswerer] can, [`ExtractiveAnswerer`][multimodal_rag.answerers.extractive.ExtractiveAnswerer] cannot).
            ids: Only consider these images (default: every image).
            batch_size: Images per stored batch.
            workers: Images described at the same time.
            progress: Show a progress bar (default: when writing to a terminal).

        Returns:
            The ids described, and the images skipped with the reason (unreadable image,
            no image file kept, refused by the provider).

        Raises:
            ReadOnlyError: Opened read-only.
            InvalidInputError: The describer cannot describe images.
            NotFoundError: An id in ``ids`` is not in the knowledge base.
            AnswererError: The provider failed for every image (credentials, rate limit,
                connection); the batches finished before are kept.
        """
        return self._describing.describe_missing(describer=describer, ids=ids, batch_size=batch_size, workers=workers, progress=progress)

    # -- records -----------------------------------------------------------------

    def get(self, id: str) -> Record:
        """The stored record of ``id``.

        Raises:
            InvalidInputError: Not a valid id (see `check_id`).
            NotFoundError: Unknown id.
        """
        return self._records.get(id)

    def get_many(self, ids: Sequence[str]) -> dict[str, Record]:
        """The stored records of ``ids``, by id, as [`get`][multimodal_rag._rag.MultimodalRAG.get] gives them (a kept image
        by its absolute path); an id without a stored record, or unknown, is left out."""
        return self._records.get_many(ids)

    def describe(self, id: str, description: str | None, *, metadata: Mapping[str, Any] | None = None) -> Record:
        """Replace the description (and optionally the metadata) of ``id``, without re-embedding.

        Raises:
            InvalidInputError: Not a valid id, or metadata JSON cannot give back exactly.
            NotFoundError: Unknown id.
        """
        return self._records.describe(id, description, metadata)

    def remove(self, ids: Iterable[str] | str) -> int:
        """Remove images by id (vectors and descriptions). Unknown ids are ignored.

        Returns:
            How many images were removed.

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

    def embed_query(self, image: ImageInput | None = None, text: str | None = None, *, text_weight: float = 0.5) -> Vector:
        """The query vector for an image, a text, or both.

        With both, the result is the normalised weighted sum
        ``(1 - text_weight) * image_vector + text_weight * text_vector``. While an adapter
        is applied, each vector is mapped by its side of the adapter first, so the result
        is in the index's space (what [`search_by_vector`][multimodal_rag._rag.MultimodalRAG.search_by_vector] takes).
        """
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
        fusion: Fusion = "rrf",
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
        return self._querying.search(image, text, k=k, filter=filter, text_weight=text_weight, mode=mode, fusion=fusion, rerank=rerank)

    async def asearch(
        self,
        image: ImageInput | None = None,
        text: str | None = None,
        *,
        k: int = 5,
        filter: Filter | None = None,
        text_weight: float = 0.5,
        mode: SearchMode | None = None,
        fusion: Fusion = "rrf",
        rerank: Reranker | None = None,
    ) -> list[Hit]:
        """Like [`search`][multimodal_rag._rag.MultimodalRAG.search], for asyncio code.

        Embedding the query, waiting for the lock and searching are CPU work and waits,
        so they run in a worker thread and the event loop goes on meanwhile.
        """
        return await self._querying.asearch(image, text, k=k, filter=filter, text_weight=text_weight, mode=mode, fusion=fusion, rerank=rerank)

    def search_by_vector(self, vector: Vector, *, k: int = 5, filter: Filter | None = None) -> list[Hit]:
        """Like [`search`][multimodal_rag._rag.MultimodalRAG.search], for a query vector already embedded.

        The vector must be in the index's space: while an adapter is applied that is the
        adapted space, so make it with [`embed_query`][multimodal_rag._rag.MultimodalRAG.embed_query] (which maps it), not with the
        embedder alone.
        """
        return self._querying.search_by_vector(vector, k=k, filter=filter)

    # Each overload: ``stream`` decides what comes back (the arguments are those of the last).
    @overload
    def ask(self, question: str, *, image: ImageInput | None = ..., text: str | None = ..., k: int = ..., filter: Filter | None = ..., text_weight: float = ..., mode: SearchMode | None = ..., rerank: Reranker | None = ..., stream: Literal[False] = ..., metadata: Mapping[str, Any] | None = ...) -> Answer: ...
    @overload
    def ask(self, question: str, *, image: ImageInput | None = ..., text: str | None = ..., k: int = ..., filter: Filter | None = ..., text_weight: float = ..., mode: SearchMode | None = ..., rerank: Reranker | None = ..., stream: Literal[True], metadata: Mapping[str, Any] | None = ...) -> AnswerStream: ...
    @overload
    def ask(self, question: str, *, image: ImageInput | None = ..., text: str | None = ..., k: int = ..., filter: Filter | None = ..., text_weight: float = ..., mode: SearchMode | None = ..., rerank: Reranker | None = ..., stream: bool, metadata: Mapping[str, Any] | None = ...) -> Answer | AnswerStream: ...
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
            filter: Search filter, as in [`search`][multimodal_rag._rag.MultimodalRAG.search].
            text_weight: Weight of ``text`` when searching with both an image and a text.
            mode: Search mode, as in [`search`][multimodal_rag._rag.MultimodalRAG.search].
            rerank: A reranker for the matches, as in [`search`][multimodal_rag._rag.MultimodalRAG.search].
            stream: Return an [`AnswerStream`][multimodal_rag._streaming.AnswerStream] of text chunks instead of an [`Answer`][multimodal_rag.types.Answer].
            metadata: Passed to the answerer.

        Returns:
            The answer, with the sources it drew on; or, with ``stream=True``, an iterator of
            text chunks whose ``answer`` attribute holds the complete answer once read.

        Raises:
            InvalidInputError: An empty question or bad search arguments.
            ImageError: The image cannot be read.
            AnswererError: The answerer failed (a subclass says how).
        """
        return self._querying.ask(question, image=image, text=text, k=k, filter=filter, text_weight=text_weight, mode=mode, rerank=rerank, stream=stream, metadata=metadata)

    @overload
    async def aask(self, question: str, *, image: ImageInput | None = ..., text: str | None = ..., k: int = ..., filter: Filter | None = ..., text_weight: float = ..., mode: SearchMode | None = ..., rerank: Reranker | None = ..., stream: Literal[False] = ..., metadata: Mapping[str, Any] | None = ...) -> Answer: ...
    @overload
    async def aask(self, question: str, *, image: ImageInput | None = ..., text: str | None = ..., k: int = ..., filter: Filter | None = ..., text_weight: float = ..., mode: SearchMode | None = ..., rerank: Reranker | None = ..., stream: Literal[True], metadata: Mapping[str, Any] | None = ...) -> AsyncAnswerStream: ...
    @overload
    async def aask(self, question: str, *, image: ImageInput | None = ..., text: str | None = ..., k: int = ..., filter: Filter | None = ..., text_weight: float = ..., mode: SearchMode | None = ..., rerank: Reranker | None = ..., stream: bool, metadata: Mapping[str, Any] | None = ...) -> Answer | AsyncAnswerStream: ...
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
    ) -> Answer | AsyncAnswerStream:
        """Like [`ask`][multimodal_rag._rag.MultimodalRAG.ask], for asyncio code; with ``stream=True`` it returns an [`AsyncAnswerStream`][multimodal_rag._streaming.AsyncAnswerStream].

        Nothing blocks the event loop: the search (embedding the query, waiting for the
        lock, searching) runs in a worker thread, and the answerer is awaited.
        """
        return await self._querying.aask(question, image=image, text=text, k=k, filter=filter, text_weight=text_weight, mode=mode, rerank=rerank, stream=stream, metadata=metadata)

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
        fusion: Fusion = "rrf",
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
                [`search`][multimodal_rag._rag.MultimodalRAG.search]), so that modes can be compared; image queries are vector searches.
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
            self, queries=queries, edits=edits, negatives=negatives, sample=sample, seed=seed, k=k, keep=keep, mode=mode, fusion=fusion, progress=progress
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
        """Fit an adapter to this knowledge base's own pairs, and keep it only if it helps.

        The embedder stays frozen; a small map on its vectors (one for images, one for
        texts) is trained on each record's image and description (and ``pairs``), so that
        descriptions find their images better. A share of the records is held out; the
        adapter is kept only when, on them, text-to-image recall@5 goes up by more than
        chance (a one-sided sign test over the descriptions found or lost, p < 0.01) and
        edited images still find their originals (image-to-image recall down by at most 0.01,
        or by more only as chance would).
        Kept, it is applied to every stored vector and every query, and saved as a new
        snapshot; the embedder's raw vectors are kept beside the index. Not kept, nothing
        changes. Either way the report is saved as JSON under ``adapter-reports/``.
        See ``docs/adapter.md``.

        Args:
            kind: ``"low-rank"`` (a residual of ``rank``, the default) or ``"linear"``
                (a full matrix, for a space that is far off).
            rank: The low-rank residual's rank.
            pairs: A JSON Lines file of extra pairs, ``{"image": id or path, "text": "..."}``
                (paths relative to the file).
            edits: Also train image-to-image pairs (an edited copy of each training image
                and its original), so that image queries keep finding their originals.
            holdout: The share of records held out to judge the adapter.
            seed: Fixes the split, the edits and the training: the same data and seed
                give the same adapter.
            progress: Show progress bars (default: when writing to a terminal).

        Returns:
            The before/after measurements, the training figures, and whether the
            adapter was kept and why.

        Raises:
            ReadOnlyError: Opened read-only.
            InvalidInputError: Fewer than 4 described records, a bad setting, or a bad
                pairs file line (named).
        """
        from multimodal_rag.adapter.fitting import fit_and_judge

        # Judged on what this object shows (its records, raw vectors and searches).
        return self._adapting.fit(lambda: fit_and_judge(self, kind=kind, rank=rank, pairs=pairs, edits=edits, holdout=holdout, seed=seed, progress=progress))

    def remove_adapter(self) -> bool:
        """Remove the adapter: the index gets the embedder's raw vectors back, exactly, and
        queries are no longer mapped. Saved as a new snapshot.

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
