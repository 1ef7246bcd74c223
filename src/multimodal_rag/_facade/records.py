"""Reading and editing the records of an open knowledge base: get, describe, remove.

Records are read with the images the knowledge base keeps (stored relative to its folder)
named by their absolute path, and stored relative to it again, so that the folder stays
movable.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import attrs

from multimodal_rag._facade.state import KnowledgeBaseState
from multimodal_rag._locks import reading, writing
from multimodal_rag._validation import check_id, check_metadata, check_record
from multimodal_rag.errors import NotFoundError
from multimodal_rag.protocols import copy_metadata
from multimodal_rag.types import Record

__all__ = ["Records"]


class Records:
    """The records of the knowledge base ``state`` holds (see the facade's methods of the same names)."""

    def __init__(self, state: KnowledgeBaseState) -> None:
        self._state = state
        self._lock = state.lock

    @reading
    def ids(self) -> list[str]:
        return self._state.vector_store.ids()

    @reading
    def get(self, id: str) -> Record:
        check_id(id)
        state = self._state
        if id not in state.vector_store:
            raise NotFoundError(f"no image with id {id!r} in the knowledge base")
        try:
            record = state.description_store.get(id)
        except NotFoundError:
            return Record(id=id)
        return state.directory.with_image_file(record) if state.directory is not None else record

    @reading
    def get_many(self, ids: Sequence[str]) -> dict[str, Record]:
        """The stored records of those of ``ids`` that have one (no vector store is asked:
        a server-backed one would answer each id in a request)."""
        records = self._state.description_store.get_many(ids)
        directory = self._state.directory
        if directory is None:
            return records
        return {id_: directory.with_image_file(record) for id_, record in records.items()}

    @reading
    def chosen(self, ids: Iterable[str] | None) -> list[Record]:
        """The records of ``ids`` (every image for ``None``), each once, in order; an image with
        no stored record as an empty one. Kept images are named by their absolute path.

        Raises:
            NotFoundError: An id the knowledge base does not hold.
        """
        if ids is None:
            wanted = self.ids()
        else:
            wanted = list(dict.fromkeys([ids] if isinstance(ids, str) else ids))
            for id_ in wanted:
                if id_ not in self._state.vector_store:
                    raise NotFoundError(f"no image with id {id_!r} in the knowledge base")
        stored = self.get_many(wanted)
        return [stored.get(id_) or Record(id=id_) for id_ in wanted]

    @writing
    def describe(self, id: str, description: str | None, metadata: Mapping[str, Any] | None) -> Record:
        self._state.check_writable()
        check_id(id)
        if metadata is not None:
            check_metadata(metadata, owner=f"record {id!r}")
        current = self.get(id)
        updated = attrs.evolve(
            current,
            description=description,
            metadata=dict(metadata) if metadata is not None else current.metadata,
        )
        self.put([updated])
        return updated

    @writing
    def remove(self, ids: Iterable[str] | str) -> int:
        state = self._state
        state.check_writable()
        ids = [ids] if isinstance(ids, str) else list(ids)
        for id_ in ids:
            check_id(id_)
        if state.journal is not None:
            state.journal.remove(ids)
        removed = state.vector_store.remove(ids)
        if state.raw_store is not None:
            state.raw_store.remove(ids)
        state.description_store.delete(ids)
        return removed

    @writing
    def put(self, records: list[Record]) -> None:
        """Replace records: checked, journalled, then stored."""
        state = self._state
        for record in records:
            check_record(record)
        if state.directory is not None:
            records = [state.directory.with_stored_image_path(record) for record in records]
        if not records:
            return
        if state.journal is not None:
            state.journal.put(records)
        state.description_store.put(records)
        try:
            copy_metadata(state.vector_store, records)
        except BaseException:
            # The records changed but the vector store's copy did not: filter by the
            # description store until save, repair or the journal's replay copies it again.
            state.metadata_copy_pending = state.metadata_copy_pending | {record.id for record in records}
            raise
