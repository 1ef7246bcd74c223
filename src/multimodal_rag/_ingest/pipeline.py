"""One ingest: the images of an ``add`` or ``add_directory`` call, hashed, deduplicated, embedded
and committed in batches.

`items_from_arguments` and `items_from_directory` turn a call's arguments into
`IngestItem` s, checking everything that can be checked before an image is read.
`IngestRun` then streams them through the embedder: images are read and hashed
lazily (so memory stays bounded by the embedder's batches), ids already stored are
reported as duplicates, and each embedded batch goes to the ``commit`` callback — batch
by batch with ``on_error="skip"``, or all at once at the end with ``on_error="raise"``, so
that such a call is stored whole or not at all. When the text in the images is read (OCR),
each batch is read in a thread of its own while the next one is embedded, and committed,
in order, once its text is read.
"""

from __future__ import annotations

import io
import os
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, get_args

import attrs

from multimodal_rag._images import content_id, image_bytes
from multimodal_rag._ingest.sources import (
    DescriptionsFile,
    Source,
    SourceFile,
    outside_root,
    scan_images,
)
from multimodal_rag._storage import is_url, local_path
from multimodal_rag._validation import check_metadata, check_new_id, check_record
from multimodal_rag.errors import ImageError, InvalidInputError
from multimodal_rag.protocols import EmbeddedBatch, Embedder, iter_embed_images_in_batches
from multimodal_rag.types import (
    AddResult,
    ImageInput,
    OnError,
    Record,
    Skipped,
    is_path,
    source_name,
)

__all__ = [
    "VERSION_KEY",
    "IngestItem",
    "IngestRun",
    "encoded_image",
    "items_from_arguments",
    "items_from_directory",
    "items_from_source",
]

#: Stores one batch: ``commit(ids, vectors, records)``.
Commit = Callable[[list[str], Any, list[Record]], None]
#: Reads the text in a batch's images: the records with it, and the images it was not read in.
ReadText = Callable[[list["IngestItem"], list[Record]], tuple[list[Record], list[Skipped]]]


@attrs.define
class IngestItem:
    """One input of an ingest, on its way to the stores."""

    image: ImageInput
    source: str
    id: str | None = None
    description: str | None = None
    metadata: dict[str, Any] = attrs.field(factory=dict)
    image_path: str | None = None


def items_from_arguments(
    images: Sequence[ImageInput] | ImageInput,
    ids: Sequence[str] | None,
    descriptions: Sequence[str | None] | str | None,
    metadata: Sequence[Mapping[str, Any]] | Mapping[str, Any] | None,
) -> list[IngestItem]:
    """The items of an ``add`` call; one image may be given alone.

    Raises:
        InvalidInputError: Lengths that do not match, bad ids or metadata. Checked
            before any image is read, so the message can name an image that has no id
            yet, and a bad entry anywhere in the call stores nothing.
    """
    if not isinstance(images, Sequence) or isinstance(images, (str, bytes)):
        images = [images]  # one image
        descriptions = [descriptions] if isinstance(descriptions, str) else descriptions
        metadata = [metadata] if isinstance(metadata, Mapping) else metadata
    n = len(images)
    ids_list = _aligned("ids", ids, n)
    descriptions_list = _aligned("descriptions", descriptions, n)
    metadata_list = _aligned("metadata", metadata, n)
    for i, image in enumerate(images):
        if ids_list[i] is not None:
            check_new_id(ids_list[i])
        if metadata_list[i] is not None:
            owner = f"record {ids_list[i]!r}" if ids_list[i] is not None else f"image {i} ({source_name(image)})"
            check_metadata(metadata_list[i], owner=owner)
    return [
        IngestItem(
            image=image,
            source=source_name(image),
            id=ids_list[i],
            description=descriptions_list[i],
            metadata=dict(metadata_list[i] or {}),
            image_path=_stored_path(image),
        )
        for i, image in enumerate(images)
    ]


def items_from_directory(
    directory: str | os.PathLike[str],
    *,
    descriptions: str | os.PathLike[str] | None,
    recursive: bool,
    allow_outside: bool,
    progress: bool | None = False,
) -> tuple[Iterable[IngestItem], list[Skipped]]:
    """The items of an ``add_directory`` call, and what was refused without being opened.

    A bucket is listed page by page, with a progress bar (``progress``: as `IngestRun`'s), and
    its items are an iterator that lists as it is consumed; a folder's are a list.

    Refused: symlinks leading outside ``directory`` (unless ``allow_outside``) and image
    names that are not regular files (FIFOs, devices, symlink loops, broken links).

    Raises:
        InvalidInputError: ``directory`` is not a folder, or the descriptions file is
            unreadable or has an entry leading outside ``directory``.
    """
    if is_url(os.fspath(directory)):
        from tqdm.auto import tqdm

        source = Source(directory, recursive=recursive)
        # tqdm's disable=None shows the bar only on a terminal; the total is unknown while listing.
        listing = tqdm(source.files(), desc="listing", unit="file", disable=None if progress is None else not progress)
        return items_from_source(source, listing, descriptions=descriptions, allow_outside=allow_outside), []
    root = Path(local_path(os.fspath(directory)))
    files, not_files = scan_images(root, recursive=recursive)
    escaping = [] if allow_outside else outside_root(files, root)
    if escaping:
        refused_files = set(escaping)
        files = [file for file in files if file not in refused_files]
    catalog = DescriptionsFile(descriptions, root, allow_outside=allow_outside) if descriptions is not None else None
    items = []
    for file in files:
        entry = catalog.lookup(file) if catalog is not None else None
        items.append(
            IngestItem(
                image=file,
                source=str(file),
                description=entry.description if entry else None,
                metadata=dict(entry.metadata) if entry else {},
                image_path=str(file.resolve()),
            )
        )
    refused = [
        Skipped(source=str(file), reason=f"a symlink to {os.path.realpath(file)!r}, outside {str(root)!r}")
        for file in escaping
    ]
    refused += [Skipped(source=str(path), reason=reason) for path, reason in not_files]
    return items, refused


#: The metadata key that keeps the version of an image listed from a source (its ETag, or a
#: local file's size and modification time), so that a sync knows it unchanged unread.
VERSION_KEY = "source_version"


def items_from_source(
    source: Source,
    files: Iterable[SourceFile],
    *,
    descriptions: str | os.PathLike[str] | None,
    allow_outside: bool,
    kept: Mapping[str, Record] | None = None,
) -> Iterator[IngestItem]:
    """The items for ``files`` of ``source``, made as they are consumed, described by the
    descriptions file (read now, so a bad one fails before any file is listed), each with its
    version in its metadata (`VERSION_KEY`).

    ``kept`` maps a location to the record a changed file replaces: its description and
    metadata carry over, unless the descriptions file has an entry for it.
    """
    catalog = DescriptionsFile(descriptions, source.location, allow_outside=allow_outside) if descriptions is not None else None
    return _described(files, catalog, kept)


def _described(files: Iterable[SourceFile], catalog: DescriptionsFile | None, kept: Mapping[str, Record] | None) -> Iterator[IngestItem]:
    for file in files:
        entry = catalog.lookup(file.location) if catalog is not None else None
        old = kept.get(file.location) if kept is not None else None
        if entry is not None:
            description, metadata = entry.description, dict(entry.metadata)
        elif old is not None:
            description, metadata = old.description, {k: v for k, v in old.metadata.items() if k != VERSION_KEY}
        else:
            description, metadata = None, {}
        if file.version is not None:
            metadata[VERSION_KEY] = file.version
        yield IngestItem(image=file.location, source=file.location, description=description, metadata=metadata, image_path=file.location)


def encoded_image(item: IngestItem) -> tuple[bytes, str]:
    """The bytes to keep for an image given in memory, and their file suffix."""
    from PIL import Image

    if isinstance(item.image, (bytes, bytearray, memoryview)):
        data = bytes(item.image)
        with Image.open(io.BytesIO(data)) as probe:  # already decoded once: cannot fail
            suffix = (probe.format or "bin").lower()
        return data, suffix if suffix.isalnum() else "bin"
    buffer = io.BytesIO()
    item.image.save(buffer, format="PNG")  # type: ignore[union-attr]
    return buffer.getvalue(), "png"


class IngestRun:
    """One ingest call's state: which items were stored, duplicated or skipped.

    Args:
        items: What to ingest.
        embedder: Embeds the images, in batches.
        dim: The vector store's dimension (vectors are checked against it).
        is_stored: Whether an id is already in the knowledge base.
        record_for: The record to store for an item once its id is known.
        commit: Stores a batch: ids, vectors and records together.
        on_error: ``"raise"`` or ``"skip"`` (see [`MultimodalRAG.add`][multimodal_rag._rag.MultimodalRAG.add]).
        batch_size: Images embedded per batch.
        progress: Show a progress bar (``None``: when writing to a terminal).
        read_text: Reads the text in each batch's images before it is stored (OCR), or ``None``;
            called in another thread, one batch at a time, while the next batch is embedded.
    """

    def __init__(
        self,
        items: list[IngestItem],
        *,
        embedder: Embedder,
        dim: int,
        is_stored: Callable[[str], bool],
        record_for: Callable[[IngestItem], Record],
        commit: Commit,
        on_error: str,
        batch_size: int,
        progress: bool | None,
        read_text: ReadText | None = None,
    ) -> None:
        if on_error not in get_args(OnError):
            raise InvalidInputError(f"on_error must be 'raise' or 'skip', got {on_error!r}")
        for item in items:  # refuse bad records before anything is embedded
            if item.id is not None:
                check_new_id(item.id)
            check_record(Record(id=item.id or "-", description=item.description, metadata=item.metadata))
        self.items = items
        self.embedder = embedder
        self.dim = dim
        self.is_stored = is_stored
        self.record_for = record_for
        self.commit = commit
        self.on_error = on_error
        self.batch_size = batch_size
        self.progress = progress
        self.read_text = read_text
        self.unread: list[Skipped] = []
        self.ids: dict[int, str] = {}  # item position -> id, for every item that ends up stored
        self.duplicates: list[tuple[str, str]] = []
        self.skipped: list[Skipped] = []
        self.queued: list[int] = []  # position in the embedder's stream -> item position
        self.claimed: set[str] = set()  # ids taken by an earlier item of this call
        self.added: list[int] = []  # item positions embedded and stored
        self.pending: list[tuple[list[str], Any, list[Record]]] = []  # batches held until the end

    def run(self) -> AddResult:
        """Embed and commit every item; returns what happened to each."""
        from tqdm.auto import tqdm

        # tqdm's disable=None shows the bar only on a terminal.
        bar = tqdm(
            total=len(self.items), desc="embedding", unit="img", disable=None if self.progress is None else not self.progress
        )
        iterate = getattr(self.embedder, "iter_embed_images", None)
        batches = (
            iterate(self._stream(), batch_size=self.batch_size)
            if iterate is not None
            else iter_embed_images_in_batches(self.embedder, self._stream(), batch_size=self.batch_size)
        )
        try:
            if self.read_text is None:
                for batch in batches:
                    self._store(self._take(batch))
                    bar.update(len(batch.indices) + len(batch.failures))
            else:
                self._store_reading(batches, self.read_text, bar)
        finally:
            bar.close()
        if self.pending:  # one commit, so the call is stored whole or not at all
            import numpy as np

            self.commit(
                [id_ for batch_ids, _, _ in self.pending for id_ in batch_ids],
                np.concatenate([vectors for _, vectors, _ in self.pending]),
                [record for _, _, records in self.pending for record in records],
            )
        self.added.sort()
        return AddResult(
            ids=[self.ids[pos] for pos in sorted(self.ids)],
            added=[self.ids[pos] for pos in self.added],
            duplicates=self.duplicates,
            skipped=self.skipped,
            undescribed=[self.ids[pos] for pos in self.added if self.items[pos].description is None],
            unread=self.unread,
        )

    def _store_reading(self, batches: Iterator[EmbeddedBatch], read_text: ReadText, bar: Any) -> None:
        """Embed and read text at once: a batch's text is read in a thread of its own while the
        embedder embeds the next batch, and each batch is stored, in order, once both are done.

        The OCR and CLIP engines release the GIL while their models run, so on a few cores
        the one's Python and decoding fill the gaps the other's model leaves. A failure of
        the embedder stores the batch already read before it is raised, as a sequential run
        would have."""
        from concurrent.futures import Future, ThreadPoolExecutor

        in_flight: tuple[_Taken, Future[tuple[list[Record], list[Skipped]]]] | None = None

        def finish() -> None:
            nonlocal in_flight
            if in_flight is not None:
                taken, reading = in_flight
                in_flight = None
                records, unread = reading.result()
                self.unread += unread
                self._store(attrs.evolve(taken, records=records))
                bar.update(taken.size)

        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="read-text") as pool:
            try:
                for batch in batches:
                    taken = self._take(batch)
                    reading = pool.submit(read_text, taken.chosen, taken.records)
                    finish()
                    in_flight = taken, reading
            except Exception:
                finish()  # the batch already embedded and being read is stored before raising
                raise
            finish()

    def _stream(self) -> Iterator[ImageInput]:
        """The images to embed, read and hashed as the embedder asks for them."""
        for pos, item in enumerate(self.items):
            try:
                data = image_bytes(item.image) if item.id is None else None
            except ImageError as exc:
                if self.on_error == "raise":
                    raise
                self.skipped.append(Skipped(source=item.source, reason=str(exc)))
                continue
            item.id = item.id or content_id(data)  # type: ignore[arg-type]
            if item.id in self.claimed or (data is not None and self.is_stored(item.id)):
                self.duplicates.append((item.source, item.id))
                self.ids[pos] = item.id
                continue
            self.claimed.add(item.id)
            self.queued.append(pos)
            # The embedder reads a local image itself (in parallel, where it can), so its
            # errors name the file; the hashing read above is served by the page cache.
            # An image at a URL is not fetched twice: the embedder gets the bytes read.
            yield data if data is not None and is_url(item.image) else item.image

    def _take(self, batch: EmbeddedBatch) -> _Taken:
        """One embedded batch's failures reported, and its items' records made."""
        for index, error in batch.failures:
            item = self.items[self.queued[index]]
            if self.on_error == "raise":
                raise error
            self.claimed.discard(item.id or "")
            reason = str(error).replace("'<bytes>'", repr(item.source)) if is_url(item.image) else str(error)
            self.skipped.append(Skipped(source=item.source, reason=reason))
        chosen = [self.items[self.queued[i]] for i in batch.indices]
        return _Taken(
            positions=[self.queued[i] for i in batch.indices],
            chosen=chosen,
            vectors=batch.vectors,
            records=[self.record_for(item) for item in chosen],
            size=len(batch.indices) + len(batch.failures),
        )

    def _store(self, taken: _Taken) -> None:
        """Store (or hold, with ``on_error="raise"``) one batch, its text read if it is to be."""
        from multimodal_rag._validation import check_vectors

        batch_ids: list[str] = [item.id for item in taken.chosen]  # type: ignore[misc]
        if self.on_error == "raise":
            # All or nothing: checked now, so a bad batch fails before more are embedded.
            self.pending.append((batch_ids, check_vectors(taken.vectors, self.dim, count=len(batch_ids)), taken.records))
        else:
            self.commit(batch_ids, taken.vectors, taken.records)
        for pos, id_ in zip(taken.positions, batch_ids, strict=True):
            self.ids[pos] = id_
            self.added.append(pos)


@attrs.frozen
class _Taken:
    """One embedded batch on its way to the stores: the item positions and items embedded, their
    vectors and records, and how many images of the stream it took (failures included)."""

    positions: list[int]
    chosen: list[IngestItem]
    vectors: Any
    records: list[Record]
    size: int


def _stored_path(image: ImageInput) -> str | None:
    """Where a record keeps an image given by path: its absolute path, or its URL without credentials."""
    if not is_path(image):
        return None
    name = os.fspath(image)  # type: ignore[arg-type]
    if is_url(name):
        from multimodal_rag._storage import redact

        return redact(name)
    return str(Path(local_path(name)).resolve())


def _aligned(name: str, values: object, n: int) -> list[Any]:
    if values is None:
        return [None] * n
    if isinstance(values, (str, Mapping)) or not isinstance(values, Sequence):
        raise InvalidInputError(f"{name} must be a sequence with one entry per image")
    values = list(values)
    if len(values) != n:
        raise InvalidInputError(f"got {n} images but {len(values)} {name}")
    return values
