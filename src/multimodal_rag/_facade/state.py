"""What the facade's parts share: an open knowledge base's components, where it lives, and its lock.

Every part is given the same `KnowledgeBaseState`, so a change one part makes (a repaired
index, an adapter switched, a save's new manifest) is what the others see next.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from attrs import define, field

from multimodal_rag._locks import ReentrantReadWriteLock
from multimodal_rag.errors import ReadOnlyError

if TYPE_CHECKING:
    from multimodal_rag._kb.directory import KnowledgeBaseDirectory
    from multimodal_rag._kb.journal import Journal
    from multimodal_rag._kb.loading import OpenedKnowledgeBase
    from multimodal_rag._kb.manifest import AdapterEntry, Component, Manifest
    from multimodal_rag._kb.salvage import SalvageFindings
    from multimodal_rag.adapter.projection import Adapter
    from multimodal_rag.ocr import TextReader
    from multimodal_rag.protocols import Answerer, DescriptionStore, Embedder, VectorStore

__all__ = ["KnowledgeBaseState"]


@define(kw_only=True, eq=False)
class KnowledgeBaseState:
    """The state of one open knowledge base, shared by the facade's parts.

    Attributes:
        embedder, vector_store, description_store, answerer: The components. The vector
            store is replaced when the index is rebuilt (a repair, an adapter switched).
        read_only: Every change is refused.
        directory: The knowledge base's folder, or None for one in memory.
        manifest: The manifest of the last save (None until the first); it names the
            current snapshot.
        journal: Committed changes since the last save; set once there is a snapshot.
        salvage: What a salvaging open found damaged or lost; verify and repair report it.
        adapter: The adapter applied to the index and to every query, or None. While there
            is one, the index holds ``adapter.apply(raw, "image")`` and `raw_store` the
            embedder's own vectors, so that it can be fitted again or removed without
            embedding anything again.
        raw_store: The embedder's own vectors while an adapter is applied.
        adapter_entry: The manifest's entry for the adapter.
        metadata_copy_pending: Ids whose changed records could not be copied to the vector
            store's metadata; while there are any, filters go by the description store
            (save and repair copy them again).
        text_reader_entry: The reader turned on since the last save (kind and config), which
            the next save records; until then the manifest's (see `ocr_entry`).
        text_reader: The reader in use, once one was given or built from `ocr_entry`.
        allow_modules: The modules the opener allowed a manifest to name, which the reader
            is built with too.
        lock: Searches share it; each change (a batch, a removal, a save) holds it alone.
    """

    embedder: Embedder
    vector_store: VectorStore
    description_store: DescriptionStore
    answerer: Answerer
    read_only: bool = False
    directory: KnowledgeBaseDirectory | None = None
    manifest: Manifest | None = None
    journal: Journal | None = None
    salvage: SalvageFindings | None = None
    adapter: Adapter | None = None
    raw_store: VectorStore | None = None
    adapter_entry: AdapterEntry | None = None
    metadata_copy_pending: frozenset[str] = frozenset()
    text_reader_entry: Component | None = None
    text_reader: TextReader | None = None
    allow_modules: tuple[str, ...] = ()
    lock: ReentrantReadWriteLock = field(factory=ReentrantReadWriteLock)

    @property
    def generation(self) -> int:
        """The generation of the current snapshot (0 before the first save)."""
        return self.manifest.generation if self.manifest is not None else 0

    @property
    def ocr_entry(self) -> Component | None:
        """The reader that reads the text of every image added (kind and config), or ``None``
        when the knowledge base reads none: the one turned on since the last save, else the
        manifest's."""
        if self.text_reader_entry is not None:
            return self.text_reader_entry
        return self.manifest.text_reader if self.manifest is not None else None

    @property
    def raw_vectors(self) -> VectorStore:
        """The store holding the embedder's own vectors: `raw_store` while an adapter is
        applied, the index itself otherwise."""
        if self.adapter is not None and self.raw_store is not None:
            return self.raw_store
        return self.vector_store

    def attach(self, opened: OpenedKnowledgeBase) -> None:
        """Take on what opening a knowledge base's directory found beside its components:
        the directory, the manifest, the journal, the salvage findings and the adapter."""
        loaded = opened.loaded
        self.directory, self.manifest, self.journal = (
            opened.directory,
            loaded.manifest,
            opened.journal,
        )
        self.salvage, self.raw_store = loaded.findings, loaded.raw_store
        self.allow_modules = opened.allow_modules
        if loaded.adapter is not None:
            self.adapter, self.adapter_entry = loaded.adapter, loaded.manifest.adapter

    def check_writable(self) -> None:
        """Refuse a change (`ReadOnlyError`) to a knowledge base opened read-only."""
        if self.read_only:
            raise ReadOnlyError("this knowledge base was opened read-only")
