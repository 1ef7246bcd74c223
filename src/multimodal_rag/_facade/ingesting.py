"""Adding images to an open knowledge base: an ingest run's batches, each committed to the
vector store, the raw vectors, the description store and the journal together, or to none."""

from __future__ import annotations

import itertools
import os
from collections.abc import Iterable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import attrs

from multimodal_rag._facade.state import KnowledgeBaseState
from multimodal_rag._locks import writing
from multimodal_rag.protocols import copy_metadata
from multimodal_rag.types import AddResult, ImageInput, Record, is_path

if TYPE_CHECKING:
    from multimodal_rag._ingest.pipeline import IngestItem, ReadText
    from multimodal_rag.ocr import TextReader

__all__ = ["CHUNK", "Ingesting"]

#: Items of a listed source embedded per ingest run (each run keeps its items in memory).
CHUNK = 10_000


def _chunks(items: Iterator[IngestItem], size: int) -> Iterator[list[IngestItem]]:
    while chunk := list(itertools.islice(items, size)):
        yield chunk


class Ingesting:
    """``add`` and ``add_directory`` of the knowledge base ``state`` holds (documented on the facade)."""

    def __init__(self, state: KnowledgeBaseState) -> None:
        from multimodal_rag._facade.reading import TextReading
        from multimodal_rag._facade.records import Records

        self._state = state
        self._lock = state.lock
        self._reading = TextReading(state, Records(state))

    def add(
        self,
        images: Sequence[ImageInput] | ImageInput,
        *,
        ids: Sequence[str] | None,
        descriptions: Sequence[str | None] | str | None,
        metadata: Sequence[Mapping[str, Any]] | Mapping[str, Any] | None,
        on_error: str,
        batch_size: int,
        progress: bool | None,
        ocr: bool | TextReader | None = None,
    ) -> AddResult:
        from multimodal_rag._ingest.pipeline import items_from_arguments

        items = items_from_arguments(images, ids, descriptions, metadata)
        directory = self._state.directory
        if directory is not None and not self._state.read_only and not all(is_path(item.image) for item in items):
            directory.images_folder()  # before embedding: a folder that cannot be made stores nothing
        return self._ingest(items, on_error=on_error, batch_size=batch_size, progress=progress, ocr=ocr)

    def add_directory(
        self,
        directory: str | os.PathLike[str],
        *,
        descriptions: str | os.PathLike[str] | None,
        recursive: bool,
        batch_size: int,
        progress: bool | None,
        allow_outside: bool,
        ocr: bool | TextReader | None = None,
    ) -> AddResult:
        from multimodal_rag._ingest.pipeline import items_from_directory

        items, refused = items_from_directory(
            directory, descriptions=descriptions, recursive=recursive, allow_outside=allow_outside, progress=progress
        )
        result = self.ingest(items, batch_size=batch_size, progress=progress, ocr=ocr)
        return attrs.evolve(result, skipped=(*refused, *result.skipped)) if refused else result

    def ingest(self, items: Iterable[IngestItem], *, batch_size: int, progress: bool | None, ocr: bool | TextReader | None) -> AddResult:
        """Ingest prepared items, skipping (and reporting) the unreadable ones. A list is one run;
        an iterator (a bucket's listing) is taken `CHUNK` items at a time, so memory stays bounded
        however many keys it lists; each chunk's batches are committed as they are embedded."""
        if isinstance(items, list):
            return self._ingest(items, on_error="skip", batch_size=batch_size, progress=progress, ocr=ocr)
        results = [
            self._ingest(chunk, on_error="skip", batch_size=batch_size, progress=progress, ocr=ocr)
            for chunk in _chunks(iter(items), CHUNK)
        ]
        if not results:
            return self._ingest([], on_error="skip", batch_size=batch_size, progress=progress, ocr=ocr)
        return AddResult(
            ids=[id_ for result in results for id_ in result.ids],
            added=[id_ for result in results for id_ in result.added],
            duplicates=[pair for result in results for pair in result.duplicates],
            skipped=[skipped for result in results for skipped in result.skipped],
            undescribed=[id_ for result in results for id_ in result.undescribed],
            unread=[unread for result in results for unread in result.unread],
        )

    def commit_embedded(self, ids: list[str], vectors: Any, records: list[Record]) -> None:
        """Store one batch embedded elsewhere (by the workers of a Ray cluster) as an ingest's
        own batch is stored: vectors, records and journal together, or none of them."""
        self._state.check_writable()
        self._commit(ids, vectors, records)

    def _ingest(
        self, items: list[IngestItem], *, on_error: str, batch_size: int, progress: bool | None, ocr: bool | TextReader | None
    ) -> AddResult:
        from multimodal_rag._ingest.pipeline import IngestRun

        state = self._state
        state.check_writable()
        return IngestRun(
            items,
            embedder=state.embedder,
            dim=state.vector_store.dim,
            is_stored=state.vector_store.__contains__,
            record_for=self._record_for,
            commit=self._commit,
            on_error=on_error,
            batch_size=batch_size,
            progress=progress,
            read_text=self._text_reading(ocr),
        ).run()

    def _text_reading(self, ocr: bool | TextReader | None) -> ReadText | None:
        """How this ingest reads the text in its images: by the reader ``ocr`` turns on or the
        knowledge base's, or not at all. A reader that cannot be built is reported for each
        image (in ``unread``) and the images are stored without text."""
        from multimodal_rag._ingest.text_reading import read_images
        from multimodal_rag.errors import MissingDependencyError, UnknownBackendError
        from multimodal_rag.types import Skipped

        failure = ""
        reader = None
        try:
            reader = self._reading.turn_on(ocr)
        except (MissingDependencyError, UnknownBackendError) as exc:
            failure = str(exc)
        if reader is None and not failure:
            return None

        def read(items: list[IngestItem], records: list[Record]) -> tuple[list[Record], list[Skipped]]:
            if reader is None:
                return records, [Skipped(source=item.source, reason=f"its text was not read: {failure}") for item in items]
            results, unread = read_images(reader, [(item.source, item.image) for item in items])
            return [record if result is None else attrs.evolve(record, ocr=result) for record, result in zip(records, results)], unread

        return read

    def _record_for(self, item: IngestItem) -> Record:
        from multimodal_rag._ingest.pipeline import encoded_image

        image_path = item.image_path
        directory = self._state.directory
        if image_path is None and directory is not None:
            data, suffix = encoded_image(item)
            image_path = str(directory.keep_image(data, suffix, source=item.source))
        return Record(id=item.id, image_path=image_path, description=item.description, metadata=item.metadata)  # type: ignore[arg-type]

    @writing
    def _commit(self, ids: list[str], vectors: Any, records: list[Record]) -> None:
        # Vectors first: the store validates (NaN, zero rows, dimension) before it
        # changes anything, so a bad batch leaves both stores as they were. The
        # journal entry comes last, once the batch is known to be good; when it cannot
        # be written the batch is taken out again, so memory matches the disk.
        # With an adapter the index gets the mapped vectors and the raw store (and the
        # journal) the embedder's own.
        state = self._state
        index, adapter = state.vector_store, state.adapter
        raw_store = state.raw_store if adapter is not None else None
        index.add(ids, vectors if adapter is None else adapter.apply(vectors, "image"))

        def undo(*, records_too: bool) -> None:
            index.remove(ids)
            if raw_store is not None:
                raw_store.remove(ids)
            if records_too:
                state.description_store.delete(ids)

        try:
            if raw_store is not None:
                raw_store.add(ids, vectors)
            state.description_store.put(records)
        except BaseException:
            undo(records_too=False)
            raise
        try:
            copy_metadata(index, records)
        except BaseException:
            undo(records_too=True)
            raise
        if state.journal is not None:
            try:
                state.journal.add(ids, vectors, records)
            except BaseException:
                undo(records_too=True)
                raise
