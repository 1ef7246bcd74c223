"""The knowledge base a server searches: opened read-only, and opened again when another
process saves a new snapshot.

A writer (``multimodal-rag index`` in another process) replaces ``manifest.json``
atomically on every save, so a change of the file's identity (inode, size, modification
time) is the cheap sign of a new generation; only then is the manifest read. The new
generation is opened in a worker thread with the embedder already loaded (no second copy of
the model) and swapped in whole, so a request sees one generation from start to end:
requests already running keep the object they started with.
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
from pathlib import Path
from typing import TYPE_CHECKING

from multimodal_rag._kb.manifest import MANIFEST_FILE, read_manifest
from multimodal_rag.errors import EmbedderMismatchError, MultimodalRAGError

if TYPE_CHECKING:
    from collections.abc import Iterable

    from multimodal_rag._rag import MultimodalRAG
    from multimodal_rag.protocols import Answerer, Embedder

__all__ = ["ReloadingKnowledgeBase"]

logger = logging.getLogger(__name__)

_Signature = tuple[int, int, int]


class ReloadingKnowledgeBase:
    """A read-only [`MultimodalRAG`][multimodal_rag._rag.MultimodalRAG] that follows the saves of another process.

    Args:
        path: The knowledge-base directory.
        embedder: The embedder to open it with (default: rebuilt from the manifest); later
            generations keep the one in use.
        answerer: The answerer every generation gets (default: the knowledge base's choice).
        allow_modules: As in [`MultimodalRAG.open`][multimodal_rag._rag.MultimodalRAG.open].
        allow_endpoints: As in [`MultimodalRAG.open`][multimodal_rag._rag.MultimodalRAG.open].
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        embedder: Embedder | None = None,
        answerer: Answerer | None = None,
        allow_modules: Iterable[str] = (),
        allow_endpoints: Iterable[str] = (),
    ) -> None:
        self.path = Path(path)
        self._embedder = embedder
        self._answerer = answerer
        self._allow_modules = tuple(allow_modules)
        self._allow_endpoints = tuple(allow_endpoints)
        self._signature: _Signature | None = None
        self._rag: MultimodalRAG | None = None
        # One reload at a time: two requests that both notice a save open it once.
        self._reloading = threading.Lock()
        self.reloads = 0

    @property
    def rag(self) -> MultimodalRAG:
        """The current generation (open it first with `open`)."""
        if self._rag is None:
            raise RuntimeError("the knowledge base is not open yet")
        return self._rag

    def open(self) -> MultimodalRAG:
        """Open the knowledge base (blocking; the server calls it in a worker thread).

        Raises:
            KnowledgeBaseError: No knowledge base there, or a damaged one.
        """
        signature = self._stat()
        self._rag = self._open(embedder=self._embedder)
        self._signature = signature
        if self._answerer is None:
            self._answerer = self._rag.answerer  # every later generation keeps the same one
        return self._rag

    def reload_if_saved(self) -> bool:
        """Open the knowledge base again if another process saved it since; blocking.

        A failed open (a save still under way, a damaged snapshot) keeps the current
        generation serving and is tried again on the next call.

        Returns:
            Whether a new generation is now served.
        """
        signature = self._stat()
        if signature == self._signature:
            return False
        with self._reloading:
            if signature == self._signature:
                return False
            current = self.rag
            try:
                if read_manifest(self.path).generation == current.generation:
                    self._signature = signature  # touched, not saved
                    return False
                try:
                    fresh = self._open(embedder=current.embedder)
                except EmbedderMismatchError:
                    # The knowledge base was rebuilt with another model: load that one.
                    fresh = self._open(embedder=None)
            except MultimodalRAGError as exc:
                logger.warning("keeping generation %d: opening the new one failed: %s", current.generation, exc)
                return False
            self._rag, self._signature = fresh, signature
            self.reloads += 1
            logger.info("now serving generation %d of %s", fresh.generation, self.path)
            return True

    async def watch(self, interval: float) -> None:
        """Check for a new generation every ``interval`` seconds, until cancelled."""
        while True:
            await asyncio.sleep(interval)
            try:
                await asyncio.to_thread(self.reload_if_saved)
            except Exception:  # a watcher that dies would silently stop following saves
                logger.exception("checking %s for a new generation failed", self.path)

    def _open(self, *, embedder: Embedder | None) -> MultimodalRAG:
        from multimodal_rag._rag import MultimodalRAG

        return MultimodalRAG.open(
            self.path,
            read_only=True,
            embedder=embedder,
            answerer=self._answerer,
            allow_modules=self._allow_modules,
            allow_endpoints=self._allow_endpoints,
        )

    def _stat(self) -> _Signature | None:
        try:
            info = os.stat(self.path / MANIFEST_FILE)
        except OSError:
            return None
        return (info.st_ino, info.st_size, info.st_mtime_ns)
