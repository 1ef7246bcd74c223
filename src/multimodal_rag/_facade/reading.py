"""The text read in the images of an open knowledge base (OCR): turning it on, reading what is
missing, editing it, and what verify, repair and ``info`` say about it.

A knowledge base reads text once a reader is turned on (``add(..., ocr=True)``,
[`read_text`][multimodal_rag._rag.MultimodalRAG.read_text]); the manifest then records the
reader's kind and config, so later adds read text too. The reader itself is built only when an
image must be read, so a knowledge base with read text opens, and searches that text, without
the ``ocr`` extra installed.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

import attrs

from multimodal_rag._facade.readers import build_reader, default_reader, reader_entry
from multimodal_rag._facade.records import Records
from multimodal_rag._facade.state import KnowledgeBaseState
from multimodal_rag._ingest.text_reading import read_images
from multimodal_rag._kb.manifest import Component
from multimodal_rag._locks import reading, writing
from multimodal_rag._validation import check_id
from multimodal_rag.errors import InvalidInputError, MissingDependencyError, NotFoundError
from multimodal_rag.types import ImageInput, ReadTextResult, Record, Skipped

if TYPE_CHECKING:
    from multimodal_rag._verify import Problem
    from multimodal_rag.ocr import ReadText, TextReader

__all__ = ["TextReading", "as_read_text", "text_problems"]


def as_read_text(text: str | ReadText | None) -> ReadText | None:
    """What a person's edit stores: a string becomes one line per line of it (confidence 1, no box).

    Raises:
        InvalidInputError: Neither a string, a ``ReadText`` nor ``None``.
    """
    from multimodal_rag.ocr import ReadText, TextLine

    if text is None or isinstance(text, ReadText):
        return text
    if not isinstance(text, str):
        raise InvalidInputError(
            f"the read text must be a string, a ReadText or None, got {type(text).__name__}"
        )
    nowhere = ((0.0, 0.0), (0.0, 0.0), (0.0, 0.0), (0.0, 0.0))
    return ReadText(
        lines=[
            TextLine(text=line, confidence=1.0, box=nowhere)
            for line in text.splitlines()
            if line.strip()
        ]
    )


class TextReading:
    """Reads and edits the text in the images of the knowledge base ``state`` holds (documented on the facade)."""

    def __init__(self, state: KnowledgeBaseState, records: Records) -> None:
        self._state = state
        self._lock = state.lock
        self._records = records
        self._query_reader: TextReader | None = None

    # -- which reader ----------------------------------------------------------------

    def turn_on(self, ocr: bool | TextReader | None) -> TextReader | None:
        """The reader an ingest uses: ``ocr`` True turns the default one on, a reader turns that
        one on (the next save records either), None follows the knowledge base, False reads nothing.

        Raises:
            MissingDependencyError: ``ocr=True`` without the ``ocr`` extra.
            InvalidInputError: ``ocr`` is not a bool, a reader or None.
        """
        from multimodal_rag.ocr import TextReader

        state = self._state
        if ocr is None:
            return self.reader() if state.ocr_entry is not None else None
        if ocr is False:
            return None
        if ocr is True:
            if state.text_reader is not None and state.ocr_entry is not None:
                return state.text_reader
            if state.ocr_entry is not None:
                return self.reader()
            state.check_writable()
            try:
                reader = default_reader()
            except MissingDependencyError:
                # Turned on all the same: what cannot be read now is read once it is installed.
                state.text_reader_entry = Component(kind="rapidocr", config={})
                raise
        elif isinstance(ocr, TextReader):
            reader = ocr
        else:
            raise InvalidInputError(
                f"ocr must be True, False, None or a text reader, got {type(ocr).__name__}"
            )
        state.check_writable()
        state.text_reader, state.text_reader_entry = reader, reader_entry(reader)
        return reader

    def reader(self) -> TextReader:
        """The knowledge base's reader, built from the manifest's kind and config on first use.

        Raises:
            InvalidInputError: The knowledge base reads no text.
            MissingDependencyError: The reader's extra is not installed.
        """
        state = self._state
        entry = state.ocr_entry
        if entry is None:
            raise InvalidInputError(
                "this knowledge base reads no text; turn it on with read_text(ocr=True)"
            )
        if state.text_reader is None:
            state.text_reader = build_reader(entry, allow_modules=state.allow_modules)
        return state.text_reader

    def query_reader(self) -> TextReader:
        """The reader of query photos: the knowledge base's, or where it reads no text, the
        built-in reader with its default settings, built once and never recorded (reading a
        query photo changes nothing stored).

        Raises:
            MissingDependencyError: The reader's extra is not installed.
        """
        if self._state.ocr_entry is not None:
            return self.reader()
        if self._query_reader is None:
            self._query_reader = default_reader()
        return self._query_reader

    def info(self) -> dict[str, Any]:
        """Whether text is read, by which reader, and how many records have it."""
        from multimodal_rag._ingest.text_reading import OCR_EXTRA_HINT, ocr_installed

        entry = self._state.ocr_entry
        read = self._read_records()
        info: dict[str, Any] = {
            "on": entry is not None,
            "reader": entry.kind if entry is not None else None,
            "config": dict(entry.config) if entry is not None else None,
            "read": len(read),
            "with_text": sum(1 for record in read if record.ocr is not None and record.ocr.lines),
        }
        if entry is not None and entry.kind == "rapidocr" and not ocr_installed():
            info["note"] = f"reading the text of new images needs the ocr extra: {OCR_EXTRA_HINT}"
        return info

    @reading
    def _read_records(self) -> list[Record]:
        return [record for record in self._state.description_store if record.ocr is not None]

    # -- reading what is missing -------------------------------------------------

    def read_text(
        self,
        *,
        ocr: bool | TextReader | None,
        ids: Iterable[str] | None,
        batch_size: int,
        progress: bool | None,
    ) -> ReadTextResult:
        """Read the text of every image that has none yet, batch by batch, each batch committed.

        Raises:
            InvalidInputError: The knowledge base reads no text and ``ocr`` does not turn it on.
            MissingDependencyError: The reader's extra is not installed.
            NotFoundError: An id of ``ids`` is not in the knowledge base.
        """
        from tqdm.auto import tqdm

        from multimodal_rag._validation import check_int

        self._state.check_writable()
        batch_size = check_int("batch_size", batch_size)
        reader = self.turn_on(True if ocr is None and self._state.ocr_entry is None else ocr)
        if reader is None:
            raise InvalidInputError("ocr=False reads nothing")
        todo = self._unread(ids)
        read: list[str] = []
        skipped: list[Skipped] = []
        bar = tqdm(
            total=len(todo),
            desc="reading text",
            unit="img",
            disable=None if progress is None else not progress,
        )
        try:
            for start in range(0, len(todo), batch_size):
                batch = todo[start : start + batch_size]
                done, failed = self._read_batch(reader, batch)
                read += done
                skipped += failed
                bar.update(len(batch))
        finally:
            bar.close()
        return ReadTextResult(read=read, skipped=skipped)

    @reading
    def _unread(self, ids: Iterable[str] | None) -> list[Record]:
        return [record for record in self._records.chosen(ids) if record.ocr is None]

    def _read_batch(
        self, reader: TextReader, batch: list[Record]
    ) -> tuple[list[str], list[Skipped]]:
        skipped = [
            Skipped(source=record.id, reason="its image is not kept, so its text cannot be read")
            for record in batch
            if record.image_path is None
        ]
        readable = [record for record in batch if record.image_path is not None]
        images: list[tuple[str, ImageInput]] = [
            (record.id, record.image_path) for record in readable if record.image_path is not None
        ]
        results, failed = read_images(reader, images)
        read = {
            record.id: result for record, result in zip(readable, results) if result is not None
        }
        return self._store(read), skipped + failed

    @writing
    def _store(self, read: dict[str, ReadText]) -> list[str]:
        """Store read text; returns the ids updated (an image removed meanwhile is left out)."""
        updates = []
        for id_, result in read.items():
            if id_ not in self._state.vector_store:
                continue
            try:
                current = self._state.description_store.get(id_)
            except NotFoundError:
                current = Record(id=id_)
            if self._state.directory is not None:
                current = self._state.directory.with_image_file(current)
            updates.append(attrs.evolve(current, ocr=result))
        self._records.put(updates)
        return [record.id for record in updates]

    # -- editing -----------------------------------------------------------------

    @writing
    def edit_text(self, id: str, text: str | ReadText | None) -> Record:
        """Replace the text read in ``id``'s image; ``None`` removes it."""
        self._state.check_writable()
        check_id(id)
        updated = attrs.evolve(self._records.get(id), ocr=as_read_text(text))
        self._records.put([updated])
        return updated


def text_problems(state: KnowledgeBaseState) -> list[Problem]:
    """What verify reports about read text: with a reader on, each image whose text was never read."""
    from multimodal_rag._verify import Problem, ProblemKind

    if state.ocr_entry is None:
        return []
    ids = state.vector_store.ids()
    records = state.description_store.get_many(ids)
    return [
        Problem(
            kind=ProblemKind.TEXT_NOT_READ,
            id=id_,
            detail=f"the text in the image of {id_!r} was not read (the knowledge base reads text: repair reads it)",
        )
        for id_ in sorted(ids)
        if id_ not in records or records[id_].ocr is None
    ]
