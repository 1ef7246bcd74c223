"""The adapter of an open knowledge base: fitting one, removing it, and the embedder's raw
vectors kept beside the index while one is applied (see ``docs/adapter.md``)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import attrs

from multimodal_rag._facade.persistence import Persistence
from multimodal_rag._facade.state import KnowledgeBaseState
from multimodal_rag._locks import reading
from multimodal_rag._registry import kind_of
from multimodal_rag.errors import InvalidInputError
from multimodal_rag.protocols import VectorStore, copy_metadata

if TYPE_CHECKING:
    from multimodal_rag._kb.manifest import AdapterEntry
    from multimodal_rag.adapter.fitting import AdapterReport
    from multimodal_rag.adapter.projection import Adapter
    from multimodal_rag.types import Vectors

__all__ = ["Adapting", "check_rebuildable"]

#: Vectors moved at a time when the index is rebuilt for an adapter.
_REBUILD_CHUNK = 4096


def check_rebuildable(store: VectorStore) -> None:
    """Refuse to rebuild the index of a server-backed store for an adapter.

    Its data lives on the server, outside the snapshot, so it cannot be switched atomically
    with a save.

    Raises:
        InvalidInputError: The store keeps its vectors on a server (Milvus).
    """
    if kind_of(store) == "milvus":
        raise InvalidInputError(
            "adapters need a vector store saved in the knowledge base's snapshot; the milvus store keeps "
            "its vectors on the server, so it cannot be switched atomically (migrate to faiss-flat or hnswlib first)"
        )


class Adapting:
    """The adapter of the knowledge base ``state`` holds (documented on the facade);
    ``persistence`` saves each switch as one snapshot."""

    def __init__(self, state: KnowledgeBaseState, persistence: Persistence) -> None:
        self._state = state
        self._lock = state.lock
        self._persistence = persistence

    @property
    def fingerprint(self) -> str:
        state = self._state
        fingerprint = state.embedder.fingerprint
        return fingerprint if state.adapter is None else f"{fingerprint}+adapter:{state.adapter.sha256[:16]}"

    @property
    def info(self) -> dict[str, Any] | None:
        adapter, entry = self._state.adapter, self._state.adapter_entry
        if adapter is None:
            return None
        if entry is None:
            return {"kind": adapter.kind, "rank": adapter.rank, "sha256": adapter.sha256}
        return entry.to_dict()

    @reading
    def raw_vectors(self, ids: Sequence[str]) -> Vectors:
        return self._state.raw_vectors.get_vectors(list(ids))

    def fit(self, judge: Callable[[], tuple[AdapterReport, Adapter | None]]) -> AdapterReport:
        """Save, then fit and judge an adapter (``judge``, which reads the knowledge base
        through the facade); keep it when it is judged worth it."""
        state = self._state
        state.check_writable()
        with state.lock.write():
            self._persistence.save_if_on_disk()
            report, adapter = judge()
            location = None
            if state.directory is not None:
                location = state.directory.write_adapter_report(report.to_dict())
                report = attrs.evolve(report, path=str(location))
            if adapter is not None:
                from multimodal_rag._kb.directory import ADAPTER_FILE
                from multimodal_rag._kb.manifest import AdapterEntry

                entry = AdapterEntry(
                    kind=adapter.kind,
                    rank=adapter.rank,
                    sha256=adapter.sha256,
                    file=ADAPTER_FILE,
                    fitted_at=report.fitted_at,
                    report=str(location.relative_to(state.directory.path)) if state.directory is not None and location else None,
                )
                self.switch(adapter, entry)
            return report

    def remove(self) -> bool:
        state = self._state
        state.check_writable()
        with state.lock.write():
            if state.adapter is None:
                return False
            self._persistence.save_if_on_disk()
            self.switch(None, None)
            return True

    def switch(self, adapter: Adapter | None, entry: AdapterEntry | None) -> None:
        """Rebuild the index from the raw vectors through ``adapter`` (none: as they are), and
        save that as one new snapshot: a crash leaves the old snapshot or the new one whole.
        On failure memory is as it was."""
        import numpy as np

        from multimodal_rag.vectors.faiss_flat import FaissFlatStore

        state = self._state
        with state.lock.write():
            current = state.vector_store
            check_rebuildable(current)
            source = state.raw_vectors
            ids = current.ids()
            index: Any = type(current)(current.dim, **current.config())  # type: ignore[call-arg]
            raw = FaissFlatStore(current.dim) if adapter is not None else None
            for start in range(0, len(ids), _REBUILD_CHUNK):
                chunk = ids[start : start + _REBUILD_CHUNK]
                vectors = np.asarray(source.get_vectors(chunk), dtype=np.float32)
                index.add(chunk, vectors if adapter is None else adapter.apply(vectors, "image"))
                if raw is not None:
                    raw.add(chunk, vectors)
            copy_metadata(index, state.description_store.get_many(ids).values())
            before = (state.vector_store, state.raw_store, state.adapter, state.adapter_entry)
            state.vector_store, state.raw_store, state.adapter, state.adapter_entry = index, raw, adapter, entry
            try:
                self._persistence.save_if_on_disk()
            except BaseException:
                state.vector_store, state.raw_store, state.adapter, state.adapter_entry = before
                raise
