"""A readers-writer lock for the facade: many searches at once, one change at a time.

Each store guards its own data, but a knowledge base is two stores and a
journal that must change together: an ingest batch adds vectors, then records,
then a journal entry. Without a lock around the whole step, a search could find
a vector whose record is not there yet, and a save could snapshot half a batch.
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

from multimodal_rag.vectors._rwlock import ReadWriteLock

__all__ = ["ReentrantReadWriteLock", "reading", "writing"]


class ReentrantReadWriteLock:
    """The stores' :class:`ReadWriteLock`, made re-entrant for the facade's methods.

    Shared reading, exclusive writing, in fair turns: a waiting writer goes before
    new readers (so a steady stream of searches cannot starve an ingest), and the
    readers waiting when a writer finishes go before the next writer (so a thread
    that changes and saves in a loop cannot starve searches). A thread that holds
    the lock may take it again, and the writer may also read, so a locked method may
    call another; a reader may not upgrade to writing.
    """

    def __init__(self) -> None:
        self._lock = ReadWriteLock()
        self._writer: int | None = None
        self._write_depth = 0
        self._local = threading.local()

    @contextmanager
    def read(self) -> Iterator[None]:
        """Hold the lock for reading (shared) inside the ``with`` block."""
        depth = getattr(self._local, "reads", 0)
        nested = bool(depth) or self._writer == threading.get_ident()
        if not nested:
            self._lock.acquire_read()
        self._local.reads = depth + 1
        try:
            yield
        finally:
            self._local.reads = depth
            if not nested:
                self._lock.release_read()

    @contextmanager
    def write(self) -> Iterator[None]:
        """Hold the lock for writing (exclusive) inside the ``with`` block."""
        me = threading.get_ident()
        if self._writer != me:
            if getattr(self._local, "reads", 0):
                raise RuntimeError("a thread holding the read lock cannot take the write lock")
            self._lock.acquire_write()
            self._writer = me
        self._write_depth += 1
        try:
            yield
        finally:
            self._write_depth -= 1
            if not self._write_depth:
                self._writer = None
                self._lock.release_write()


_Method = TypeVar("_Method", bound=Callable[..., Any])


def reading(method: _Method) -> _Method:
    """Run a method under its object's ``_lock`` (a :class:`ReentrantReadWriteLock`), reading."""

    @functools.wraps(method)
    def locked(self: Any, *args: Any, **kwargs: Any) -> Any:
        with self._lock.read():
            return method(self, *args, **kwargs)

    return locked  # type: ignore[return-value]


def writing(method: _Method) -> _Method:
    """Run a method under its object's ``_lock`` (a :class:`ReentrantReadWriteLock`), writing."""

    @functools.wraps(method)
    def locked(self: Any, *args: Any, **kwargs: Any) -> Any:
        with self._lock.write():
            return method(self, *args, **kwargs)

    return locked  # type: ignore[return-value]
