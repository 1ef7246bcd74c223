"""Keeping an open knowledge base on disk: saving snapshots, closing, verifying and repairing."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import attrs

from multimodal_rag._facade.state import KnowledgeBaseState
from multimodal_rag._kb.manifest import Manifest
from multimodal_rag._locks import reading, writing
from multimodal_rag.errors import ReadOnlyError
from multimodal_rag.protocols import copy_metadata

if TYPE_CHECKING:
    from multimodal_rag._verify import RepairReport, VerificationReport

__all__ = ["Persistence"]


class Persistence:
    """``save``, ``close``, ``verify`` and ``repair`` of the knowledge base ``state`` holds
    (documented on the facade)."""

    def __init__(self, state: KnowledgeBaseState) -> None:
        self._state = state
        self._lock = state.lock

    @writing
    def save(self) -> None:
        state = self._state
        state.check_writable()
        if state.directory is None:
            raise ReadOnlyError(
                "this knowledge base has no directory; create it with MultimodalRAG.create(path)"
            )
        if state.metadata_copy_pending:
            # Now, while the journal that would replay them on the next open still exists.
            pending = sorted(state.metadata_copy_pending)
            copy_metadata(state.vector_store, state.description_store.get_many(pending).values())
            state.metadata_copy_pending = frozenset()
        manifest = Manifest.of(
            state.embedder,
            state.vector_store,
            state.description_store,
            created_at=state.manifest.created_at if state.manifest is not None else None,
            adapter=state.adapter_entry if state.adapter is not None else None,
            text_reader=state.ocr_entry,
        )
        state.manifest = state.directory.write_snapshot(
            state.generation + 1,
            state.vector_store,
            state.description_store,
            manifest,
            parts=self._adapter_parts(),
        )
        generation = state.manifest.generation
        # Only after the new manifest is in place: until then the old journal is still needed.
        if state.journal is None:
            from multimodal_rag._kb.journal import Journal

            state.journal = Journal(state.directory.journal, generation)
        state.journal.reset(generation)

    def first_save(self, *, remove_unfinished: bool) -> None:
        """Lock a new knowledge base's directory and write its first snapshot (after removing
        what an interrupted create left, when ``remove_unfinished``); on failure, unlock."""
        directory = self._state.directory
        assert directory is not None
        directory.lock()
        try:
            if remove_unfinished:
                directory.remove_unfinished()
            self.save()
        except BaseException:
            self.close()
            raise

    def save_if_on_disk(self) -> None:
        """Save a knowledge base that has a directory; one in memory has nothing to save to."""
        if self._state.directory is not None:
            self.save()

    def _adapter_parts(self) -> dict[str, Any]:
        """The snapshot's parts beside the two stores: the adapter and the raw vectors."""
        from multimodal_rag._kb.directory import ADAPTER, RAW_VECTORS

        adapter, raw = self._state.adapter, self._state.raw_store
        if adapter is None or raw is None:
            return {}
        return {ADAPTER: lambda folder: adapter.save(folder / "adapter.npz"), RAW_VECTORS: raw.save}

    def end_block(self, *, succeeded: bool) -> None:
        """End a ``with`` block: save a writable knowledge base that is on disk when the block
        ``succeeded`` (raised nothing), then close."""
        try:
            if succeeded and self._state.directory is not None and not self._state.read_only:
                self.save()
        finally:
            self.close()

    def close(self) -> None:
        state = self._state
        if state.journal is not None:
            state.journal.close()
            state.journal = None
        if state.directory is not None:
            state.directory.unlock()

    @reading
    def verify(self) -> VerificationReport:
        from multimodal_rag._facade.reading import text_problems
        from multimodal_rag._verify import verify_knowledge_base

        state = self._state
        report = verify_knowledge_base(
            state.vector_store,
            state.description_store,
            directory=state.directory,
            findings=state.salvage,
            raw_store=state.raw_store if state.adapter is not None else None,
        )
        unread = text_problems(state)
        return attrs.evolve(report, problems=(*report.problems, *unread)) if unread else report

    @writing
    def repair(self) -> RepairReport:
        from multimodal_rag._verify import repair_knowledge_base

        state = self._state
        state.check_writable()
        repaired = repair_knowledge_base(
            state.embedder,
            state.vector_store,
            state.description_store,
            directory=state.directory,
            findings=state.salvage,
            adapter=state.adapter,
            raw_store=state.raw_store,
        )
        state.vector_store = repaired.vector_store
        state.raw_store = repaired.raw_store
        if state.raw_store is None:
            state.adapter, state.adapter_entry = None, None
        state.metadata_copy_pending = frozenset()  # the repair copied the metadata again
        text_read = self._read_missing_text()
        self.save_if_on_disk()  # fresh files, fresh checksums
        # What was lost has been reported; the repaired knowledge base is whole again.
        state.salvage = None
        return attrs.evolve(repaired.report, text_read=text_read, remaining=self.verify())

    def _read_missing_text(self) -> tuple[str, ...]:
        """With a reader on, read the text of the images that have none; a reader that cannot
        be built leaves them for the report (verify lists them)."""
        from multimodal_rag._facade.reading import TextReading
        from multimodal_rag._facade.records import Records
        from multimodal_rag.errors import MissingDependencyError, UnknownBackendError

        if self._state.ocr_entry is None:
            return ()
        try:
            result = TextReading(self._state, Records(self._state)).read_text(ocr=None, ids=None, batch_size=16, progress=False)
        except (MissingDependencyError, UnknownBackendError) as exc:
            import logging

            logging.getLogger(__name__).warning("the text of images was not read again: %s", exc)
            return ()
        return result.read
