"""``describe_missing`` of an open knowledge base: a model describes the images that have no
description, batch by batch (see `multimodal_rag._ingest.machine_descriptions`)."""

from __future__ import annotations

from collections.abc import Iterable

from multimodal_rag._facade.records import Records
from multimodal_rag._facade.state import KnowledgeBaseState
from multimodal_rag._ingest.machine_descriptions import (
    fill_missing_descriptions,
    machine_written,
    needs_description,
)
from multimodal_rag._locks import reading, writing
from multimodal_rag.errors import InvalidInputError
from multimodal_rag.protocols import ImageDescriber
from multimodal_rag.types import Answer, DescribeResult, Record

__all__ = ["Describing"]


class Describing:
    """Fills in the missing descriptions of the knowledge base ``state`` holds, reading and
    storing them through ``records`` (documented on the facade)."""

    def __init__(self, state: KnowledgeBaseState, records: Records) -> None:
        self._state = state
        self._lock = state.lock
        self._records = records

    def describe_missing(
        self,
        *,
        describer: ImageDescriber | None,
        ids: Iterable[str] | None,
        batch_size: int,
        workers: int,
        progress: bool | None,
    ) -> DescribeResult:
        self._state.check_writable()
        describer = describer if describer is not None else self._state.answerer  # type: ignore[assignment]
        if not isinstance(describer, ImageDescriber):
            raise InvalidInputError(
                f"{type(describer).__name__} cannot describe images; pass describer=OpenAIAnswerer(...) "
                "or any object with a describe_image(image) method"
            )
        return fill_missing_descriptions(
            self._undescribed(ids),
            describer,
            store=self._store,
            batch_size=batch_size,
            workers=workers,
            progress=progress,
        )

    @reading
    def _undescribed(self, ids: Iterable[str] | None) -> list[Record]:
        # Kept images by their absolute path, for the describer.
        return [record for record in self._records.chosen(ids) if needs_description(record)]

    @writing
    def _store(self, written: list[tuple[str, Answer]]) -> list[str]:
        """Store model-written descriptions; returns the ids updated.

        Checking and writing under one write lock means a description a person wrote
        in the meantime is seen, and kept.
        """
        updates = []
        for id_, answer in written:
            if id_ not in self._state.vector_store:
                continue  # removed while it was being described
            update = machine_written(self._records.get(id_), answer)
            if update is not None:
                updates.append(update)
        self._records.put(updates)
        return [record.id for record in updates]
