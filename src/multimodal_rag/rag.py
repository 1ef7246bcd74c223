"""The [`MultimodalRAG`][multimodal_rag.rag.MultimodalRAG] facade: one object that ingests, searches, answers and saves."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import attrs

from multimodal_rag._remote import check_endpoints
from multimodal_rag.errors import (
    DimensionMismatchError,
    KnowledgeBaseExistsError,
    NotFoundError,
    ReadOnlyError,
)
from multimodal_rag.ingest.machine_descriptions import DescribingMissing
from multimodal_rag.kb.directory import KnowledgeBaseDirectory
from multimodal_rag.kb.journal import Journal
from multimodal_rag.kb.manifest import MANIFEST_FILE, Manifest
from multimodal_rag.kb.salvage import SalvageFindings
from multimodal_rag.locks import ReentrantReadWriteLock, reading, writing
from multimodal_rag.protocols import (
    Answerer,
    DescriptionStore,
    Embedder,
    VectorStore,
    copy_metadata,
)
from multimodal_rag.query import Querying
from multimodal_rag.registry import kind_of, resolve
from multimodal_rag.types import AddResult, ImageInput, Record, is_path
from multimodal_rag.validation import check_id, check_metadata, check_record

if TYPE_CHECKING:
    from multimodal_rag.adapter.fitting import AdapterReport
    from multimodal_rag.adapter.projection import Adapter
    from multimodal_rag.ingest.pipeline import IngestItem
    from multimodal_rag.kb.manifest import AdapterEntry
    from multimodal_rag.verify import RepairReport, VerificationReport

__all__ = ["MultimodalRAG"]

logger = logging.getLogger(__name__)

#: Vectors moved at a time when the index is rebuilt for an adapter.
_REBUILD_CHUNK = 4096


def check_rebuildable(store: VectorStore) -> None:
    """Refuse to rebuild the index of a server-backed store for an adapter.

    Its data lives on the server, outside the snapshot, so it cannot be switched atomically
    with a save.

    Raises:
        InvalidInputError: The store keeps its vectors on a server (Milvus).
    """
    from multimodal_rag.errors import InvalidInputError

    if kind_of(store) == "milvus":
        raise InvalidInputError(
            "adapters need a vector store saved in the knowledge base's snapshot; the milvus store keeps "
            "its vectors on the server, so it cannot be switched atomically (migrate to faiss-flat or hnswlib first)"
        )




class MultimodalRAG(Querying, DescribingMissing):
    """A knowledge base of images and their descriptions, searchable by image or text.

    Compose it from the four parts, or let [`create`][multimodal_rag.rag.MultimodalRAG.create] and [`open`][multimodal_rag.rag.MultimodalRAG.open] do it:

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
        answerer: Answers questions from the matches (used by [`ask`][multimodal_rag.rag.MultimodalRAG.ask]). By default an
            [`OpenAIAnswerer`][multimodal_rag.answerers.openai.OpenAIAnswerer] when ``OPENAI_API_KEY`` is set, otherwise the offline
            [`ExtractiveAnswerer`][multimodal_rag.answerers.extractive.ExtractiveAnswerer]; `answerer_reason` (and a log line) says which.
        path: The knowledge-base directory, if it lives on disk.
        read_only: Refuse every change (for readers that share a knowledge base).

    Attributes:
        answerer: The answerer [`ask`][multimodal_rag.rag.MultimodalRAG.ask] uses.
        answerer_reason: Why that answerer is the one in use.
        adapter: The adapter applied to the stored vectors and to every query
            ([`fit_adapter`][multimodal_rag.rag.MultimodalRAG.fit_adapter]), or ``None``.
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
        self.embedder = embedder
        self.vector_store = vector_store
        self.description_store = description_store
        if answerer is None:
            from multimodal_rag.answerers.default import choose_answerer

            answerer, self.answerer_reason = choose_answerer()
            logger.info("%s", self.answerer_reason)
        else:
            self.answerer_reason = "given by the caller"
        self.answerer = answerer
        self.read_only = read_only
        self._dir = KnowledgeBaseDirectory(Path(path)) if path is not None else None
        # The manifest of the last save (None until the first); it names the current snapshot.
        self._manifest: Manifest | None = None
        # Searches share it; each change (a batch, a removal, a save) holds it alone.
        self._lock = ReentrantReadWriteLock()
        # Committed changes since the last save; set once the knowledge base has a snapshot.
        self._journal: Journal | None = None
        # What a salvaging open found damaged or lost; verify() and repair() report it.
        self._salvage: SalvageFindings | None = None
        # While an adapter is applied, the index holds adapter.apply(raw, "image") and the
        # embedder's raw vectors are kept here, so that the adapter can be fitted again or
        # removed without embedding anything again. Without one, the index holds the raw vectors.
        self.adapter: Adapter | None = None
        self._raw_vectors: VectorStore | None = None
        self._adapter_entry: AdapterEntry | None = None

    # -- construction ------------------------------------------------------------

    @classmethod
    def create(
        cls,
        path: str | os.PathLike[str],
        *,
        embedder: Embedder,
        vector_store: str | VectorStore | None = None,
        description_store: str | DescriptionStore = "sqlite",
        answerer: Answerer | None = None,
        exist_ok: bool = False,
        expected_size: int | None = None,
    ) -> MultimodalRAG:
        """Create a new, empty knowledge base in directory ``path`` and save it.

        Args:
            path: Directory to create (it may exist if empty).
            embedder: The embedder every image and query goes through.
            vector_store: A built-in kind (``"faiss-flat"``, ``"hnswlib"``, ...) or a store
                instance. By default, the right kind for ``expected_size`` (see
                ``docs/choosing-an-index.md``): exact search up to 100,000 images, HNSW above.
            description_store: ``"sqlite"``, ``"jsonl"`` or a store instance.
            answerer: Answerer for [`ask`][multimodal_rag.rag.MultimodalRAG.ask].
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
        elif isinstance(vector_store, str):
            vectors = resolve("vector_store", vector_store)(embedder.dim)
        else:
            vectors = vector_store
        descriptions: DescriptionStore = (
            resolve("description_store", description_store)()
            if isinstance(description_store, str)
            else description_store
        )
        directory.mkdir(parents=True, exist_ok=True)
        rag = cls(embedder, vectors, descriptions, answerer, path=directory)
        assert rag._dir is not None
        rag._dir.lock()
        try:
            if unfinished:
                rag._dir.remove_unfinished()
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
            answerer: Answerer for [`ask`][multimodal_rag.rag.MultimodalRAG.ask].
            read_only: Open without the writer's lock; changes are refused.
            allow_modules: Packages whose classes the manifest may name by dotted path
                (custom backends). Nothing else is imported from a manifest.
            salvage: Open a damaged knowledge base instead of refusing it: a vector
                store whose files fail their checksums starts empty; a damaged
                description store keeps every record its files still hold, filled in
                from the snapshot before it; a damaged or shortened journal is
                replayed up to the damage. [`verify`][multimodal_rag.rag.MultimodalRAG.verify] then lists what is damaged
                and what could not be recovered, and [`repair`][multimodal_rag.rag.MultimodalRAG.repair] rebuilds the rest
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
        from multimodal_rag.kb.loading import open_directory

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
        rag._dir, rag._manifest, rag._journal, rag._salvage = opened.directory, loaded.manifest, opened.journal, loaded.findings
        rag._raw_vectors = loaded.raw_store
        if loaded.adapter is not None:
            rag.adapter, rag._adapter_entry = loaded.adapter, loaded.manifest.adapter
        return rag

    # -- persistence -------------------------------------------------------------

    @property
    def _generation(self) -> int:
        return self._manifest.generation if self._manifest is not None else 0

    @property
    def generation(self) -> int:
        """The snapshot this object was opened at or last saved (0 before the first save).

        Another process's save makes a higher one on disk (``manifest.json``); a read-only
        opener that sees it can open the knowledge base again to follow (as ``serve`` does).
        """
        return self._generation

    @property
    def fingerprint(self) -> str:
        """The identity of the knowledge base's vector space: the embedder's fingerprint, and
        the adapter's digest while one is applied (``<embedder>+adapter:<sha256[:16]>``).

        Vectors of two knowledge bases are comparable only when their fingerprints are equal.
        """
        fingerprint = self.embedder.fingerprint
        return fingerprint if self.adapter is None else f"{fingerprint}+adapter:{self.adapter.sha256[:16]}"

    @property
    def adapter_info(self) -> dict[str, Any] | None:
        """The applied adapter as the manifest records it (``kind``, ``rank``, ``sha256``,
        ``file``, ``fitted_at``, ``report``), or ``None`` without one."""
        if self.adapter is None:
            return None
        if self._adapter_entry is None:
            return {"kind": self.adapter.kind, "rank": self.adapter.rank, "sha256": self.adapter.sha256}
        return self._adapter_entry.to_dict()

    @property
    def path(self) -> Path | None:
        """The knowledge-base directory, or ``None`` for one that lives only in memory."""
        return self._dir.path if self._dir is not None else None

    @writing
    def save(self) -> None:
        """Write the knowledge base to its directory, atomically.

        Raises:
            ReadOnlyError: Opened read-only, or not created with a path.
            KnowledgeBaseError: The disk refused the write; the previous save is intact.
        """
        self._check_writable()
        if self._dir is None:
            raise ReadOnlyError("this knowledge base has no directory; create it with MultimodalRAG.create(path)")
        if self._metadata_copy_pending:
            # Now, while the journal that would replay them on the next open still exists.
            pending = sorted(self._metadata_copy_pending)
            copy_metadata(self.vector_store, self.description_store.get_many(pending).values())
            self._metadata_copy_pending = frozenset()
        manifest = Manifest.of(
            self.embedder,
            self.vector_store,
            self.description_store,
            created_at=self._manifest.created_at if self._manifest is not None else None,
            adapter=self._adapter_entry if self.adapter is not None else None,
        )
        self._manifest = self._dir.write_snapshot(
            self._generation + 1, self.vector_store, self.description_store, manifest, parts=self._adapter_parts()
        )
        generation = self._manifest.generation
        # Only after the new manifest is in place: until then the old journal is still needed.
        if self._journal is None:
            from multimodal_rag.kb.journal import Journal

            self._journal = Journal(self._dir.journal, generation)
        self._journal.reset(generation)

    def _adapter_parts(self) -> dict[str, Any]:
        """The snapshot's parts beside the two stores: the adapter and the raw vectors."""
        from multimodal_rag.kb.directory import ADAPTER, RAW_VECTORS

        adapter, raw = self.adapter, self._raw_vectors
        if adapter is None or raw is None:
            return {}
        return {ADAPTER: lambda folder: adapter.save(folder / "adapter.npz"), RAW_VECTORS: raw.save}

    def close(self) -> None:
        """Release the writer's lock.

        Changes since the last save stay in the journal and are replayed by the next
        [`open`][multimodal_rag.rag.MultimodalRAG.open]; a save folds them into the snapshot, which makes opening faster.
        """
        if self._journal is not None:
            self._journal.close()
            self._journal = None
        if self._dir is not None:
            self._dir.unlock()

    def __enter__(self) -> MultimodalRAG:
        return self

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        try:
            if exc_type is None and self._dir is not None and not self.read_only:
                self.save()
        finally:
            self.close()

    # -- integrity ---------------------------------------------------------------

    @reading
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
        from multimodal_rag.verify import verify_knowledge_base

        return verify_knowledge_base(
            self.vector_store,
            self.description_store,
            directory=self._dir,
            findings=self._salvage,
            raw_store=self._raw_vectors if self.adapter is not None else None,
        )

    @writing
    def repair(self) -> RepairReport:
        """Rebuild what [`verify`][multimodal_rag.rag.MultimodalRAG.verify] found broken, without losing any description.

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
        from multimodal_rag.verify import repair_knowledge_base

        self._check_writable()
        repaired = repair_knowledge_base(
            self.embedder,
            self.vector_store,
            self.description_store,
            directory=self._dir,
            findings=self._salvage,
            adapter=self.adapter,
            raw_store=self._raw_vectors,
        )
        self.vector_store = repaired.vector_store
        self._raw_vectors = repaired.raw_store
        if self._raw_vectors is None:
            self.adapter, self._adapter_entry = None, None
        self._metadata_copy_pending = frozenset()  # the repair copied the metadata again
        if self._dir is not None:
            self.save()  # fresh files, fresh checksums
        # What was lost has been reported; the repaired knowledge base is whole again.
        self._salvage = None
        return attrs.evolve(repaired.report, remaining=self.verify())

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
                metadata (see `multimodal_rag.validation` for what ids and
                metadata may hold). Nothing is stored.
            KnowledgeBaseError: An image given in memory cannot be kept in the
                knowledge base's ``images/`` folder. Nothing from the call is stored,
                except batches already committed with ``on_error="skip"``.
        """
        from multimodal_rag.ingest.pipeline import items_from_arguments

        items = items_from_arguments(images, ids, descriptions, metadata)
        if self._dir is not None and not self.read_only and not all(is_path(item.image) for item in items):
            self._dir.images_folder()  # before embedding: a folder that cannot be made stores nothing
        return self._ingest(items, on_error=on_error, batch_size=batch_size, progress=progress)

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
        from multimodal_rag.ingest.pipeline import items_from_directory

        items, refused = items_from_directory(
            directory, descriptions=descriptions, recursive=recursive, allow_outside=allow_outside
        )
        result = self._ingest(items, on_error="skip", batch_size=batch_size, progress=progress)
        return attrs.evolve(result, skipped=(*refused, *result.skipped)) if refused else result

    def _ingest(self, items: list[IngestItem], *, on_error: str, batch_size: int, progress: bool | None) -> AddResult:
        from multimodal_rag.ingest.pipeline import IngestRun

        self._check_writable()
        return IngestRun(
            items,
            embedder=self.embedder,
            dim=self.vector_store.dim,
            is_stored=self.vector_store.__contains__,
            record_for=self._record_for,
            commit=self._commit,
            on_error=on_error,
            batch_size=batch_size,
            progress=progress,
        ).run()

    def _record_for(self, item: IngestItem) -> Record:
        from multimodal_rag.ingest.pipeline import encoded_image

        image_path = item.image_path
        if image_path is None and self._dir is not None:
            data, suffix = encoded_image(item)
            image_path = str(self._dir.keep_image(data, suffix, source=item.source))
        return Record(id=item.id, image_path=image_path, description=item.description, metadata=item.metadata)  # type: ignore[arg-type]

    @writing
    def _commit(self, ids: list[str], vectors: Any, records: list[Record]) -> None:
        # Vectors first: the store validates (NaN, zero rows, dimension) before it
        # changes anything, so a bad batch leaves both stores as they were. The
        # journal entry comes last, once the batch is known to be good; when it cannot
        # be written the batch is taken out again, so memory matches the disk.
        # With an adapter the index gets the mapped vectors and the raw store (and the
        # journal) the embedder's own.
        raw_store = self._raw_vectors if self.adapter is not None else None
        self.vector_store.add(ids, vectors if self.adapter is None else self.adapter.apply(vectors, "image"))

        def undo(*, records_too: bool) -> None:
            self.vector_store.remove(ids)
            if raw_store is not None:
                raw_store.remove(ids)
            if records_too:
                self.description_store.delete(ids)

        try:
            if raw_store is not None:
                raw_store.add(ids, vectors)
            self.description_store.put(records)
        except BaseException:
            undo(records_too=False)
            raise
        try:
            copy_metadata(self.vector_store, records)
        except BaseException:
            undo(records_too=True)
            raise
        if self._journal is not None:
            try:
                self._journal.add(ids, vectors, records)
            except BaseException:
                undo(records_too=True)
                raise

    def _put_records(self, records: list[Record]) -> None:
        """Replace records (the write lock is held): checked, journalled, then stored.

        A record read through the facade names a kept image by its absolute path; it is
        stored relative to the knowledge base again, so that the folder stays movable.
        """
        for record in records:
            check_record(record)
        if self._dir is not None:
            records = [self._dir.with_stored_image_path(record) for record in records]
        if records:
            if self._journal is not None:
                self._journal.put(records)
            self.description_store.put(records)
            try:
                copy_metadata(self.vector_store, records)
            except BaseException:
                # The records changed but the vector store's copy did not: filter by the
                # description store until save, repair or the journal's replay copies it again.
                self._metadata_copy_pending = self._metadata_copy_pending | {record.id for record in records}
                raise

    # -- records -----------------------------------------------------------------

    @reading
    def get(self, id: str) -> Record:
        """The stored record of ``id``.

        Raises:
            InvalidInputError: Not a valid id (see `check_id`).
            NotFoundError: Unknown id.
        """
        check_id(id)
        if id not in self.vector_store:
            raise NotFoundError(f"no image with id {id!r} in the knowledge base")
        try:
            record = self.description_store.get(id)
        except NotFoundError:
            return Record(id=id)
        return self._dir.with_image_file(record) if self._dir is not None else record

    @writing
    def describe(self, id: str, description: str | None, *, metadata: Mapping[str, Any] | None = None) -> Record:
        """Replace the description (and optionally the metadata) of ``id``, without re-embedding.

        Raises:
            InvalidInputError: Not a valid id, or metadata JSON cannot give back exactly.
            NotFoundError: Unknown id.
        """
        self._check_writable()
        check_id(id)
        if metadata is not None:
            check_metadata(metadata, owner=f"record {id!r}")
        current = self.get(id)
        updated = attrs.evolve(
            current,
            description=description,
            metadata=dict(metadata) if metadata is not None else current.metadata,
        )
        self._put_records([updated])
        return updated

    @writing
    def remove(self, ids: Iterable[str] | str) -> int:
        """Remove images by id (vectors and descriptions). Unknown ids are ignored.

        Returns:
            How many images were removed.

        Raises:
            InvalidInputError: One of ``ids`` is not a valid id; nothing is removed.
        """
        self._check_writable()
        ids = [ids] if isinstance(ids, str) else list(ids)
        for id_ in ids:
            check_id(id_)
        if self._journal is not None:
            self._journal.remove(ids)
        removed = self.vector_store.remove(ids)
        if self._raw_vectors is not None:
            self._raw_vectors.remove(ids)
        self.description_store.delete(ids)
        return removed

    # -- the adapter ---------------------------------------------------------------

    def raw_vectors(self, ids: Sequence[str]) -> Any:
        """The embedder's own vectors of ``ids`` (float32, one row each), whatever adapter is applied.

        Raises:
            NotFoundError: An id the knowledge base does not hold.
        """
        with self._lock.read():
            store = self._raw_vectors if self.adapter is not None and self._raw_vectors is not None else self.vector_store
            return store.get_vectors(list(ids))

    def fit_adapter(
        self,
        *,
        kind: str = "low-rank",
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

        self._check_writable()
        with self._lock.write():
            self._save_if_on_disk()
            report, adapter = fit_and_judge(
                self,
                kind=kind,
                rank=rank,
                pairs=pairs,
                edits=edits,
                holdout=holdout,
                seed=seed,
                progress=progress,
            )
            location = None
            if self._dir is not None:
                location = self._dir.write_adapter_report(report.to_dict())
                report = attrs.evolve(report, path=str(location))
            if adapter is not None:
                from multimodal_rag.kb.directory import ADAPTER_FILE
                from multimodal_rag.kb.manifest import AdapterEntry

                entry = AdapterEntry(
                    kind=adapter.kind,
                    rank=adapter.rank,
                    sha256=adapter.sha256,
                    file=ADAPTER_FILE,
                    fitted_at=report.fitted_at,
                    report=str(location.relative_to(self._dir.path)) if self._dir is not None and location else None,
                )
                self._switch_adapter(adapter, entry)
            return report

    def remove_adapter(self) -> bool:
        """Remove the adapter: the index gets the embedder's raw vectors back, exactly, and
        queries are no longer mapped. Saved as a new snapshot.

        Returns:
            Whether there was an adapter to remove.

        Raises:
            ReadOnlyError: Opened read-only.
        """
        self._check_writable()
        with self._lock.write():
            if self.adapter is None:
                return False
            self._save_if_on_disk()
            self._switch_adapter(None, None)
            return True

    def _save_if_on_disk(self) -> None:
        if self._dir is not None:
            self.save()

    def _switch_adapter(self, adapter: Adapter | None, entry: AdapterEntry | None) -> None:
        """Rebuild the index from the raw vectors through ``adapter`` (none: as they are), and
        save that as one new snapshot: a crash leaves the old snapshot or the new one whole.
        The write lock is held; on failure memory is as it was."""
        import numpy as np

        from multimodal_rag.vectors.faiss_flat import FaissFlatStore

        check_rebuildable(self.vector_store)
        source = self._raw_vectors if self.adapter is not None and self._raw_vectors is not None else self.vector_store
        ids = self.vector_store.ids()
        index: Any = type(self.vector_store)(self.vector_store.dim, **self.vector_store.config())  # type: ignore[call-arg]
        raw = FaissFlatStore(self.vector_store.dim) if adapter is not None else None
        for start in range(0, len(ids), _REBUILD_CHUNK):
            chunk = ids[start : start + _REBUILD_CHUNK]
            vectors = np.asarray(source.get_vectors(chunk), dtype=np.float32)
            index.add(chunk, vectors if adapter is None else adapter.apply(vectors, "image"))
            if raw is not None:
                raw.add(chunk, vectors)
        copy_metadata(index, self.description_store.get_many(ids).values())
        before = (self.vector_store, self._raw_vectors, self.adapter, self._adapter_entry)
        self.vector_store, self._raw_vectors, self.adapter, self._adapter_entry = index, raw, adapter, entry
        try:
            self._save_if_on_disk()
        except BaseException:
            self.vector_store, self._raw_vectors, self.adapter, self._adapter_entry = before
            raise

    @reading
    def ids(self) -> list[str]:
        """Ids of every image in the knowledge base."""
        return self.vector_store.ids()

    def __len__(self) -> int:
        return len(self.vector_store)

    def __contains__(self, id: object) -> bool:
        return id in self.vector_store

    def __repr__(self) -> str:
        where = str(self.path) if self.path is not None else "in memory"
        return (
            f"MultimodalRAG({where}, {len(self)} images, embedder={kind_of(self.embedder)}, "
            f"vector_store={kind_of(self.vector_store)}, description_store={kind_of(self.description_store)}"
            + (f", adapter={self.adapter.kind}:{self.adapter.sha256[:16]})" if self.adapter is not None else ")")
        )

    def _check_writable(self) -> None:
        if self.read_only:
            raise ReadOnlyError("this knowledge base was opened read-only")
