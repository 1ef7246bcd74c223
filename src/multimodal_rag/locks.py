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

__all__ = ["ReadWriteLock", "reading", "writing"]


class ReadWriteLock:
    """Shared reading, exclusive writing; a waiting writer goes before new readers.

    Writer preference keeps a steady stream of searches from starving an ingest.
    Both sides are re-entrant in one thread, and the writer may also read, so a
    locked method may call another.
    """

    def __init__(self) -> None:
        self._cond = threading.Condition(threading.Lock())
        self._readers = 0
        self._writer: int | None = None
        self._write_depth = 0
        self._writers_waiting = 0
        self._local = threading.local()

    @contextmanager
    def read(self) -> Iterator[None]:
        """Hold the lock for reading (shared) inside the ``with`` block."""
        me = threading.get_ident()
        depth = getattr(self._local, "reads", 0)
        if depth or self._writer == me:
            # Already inside: waiting here for a queued writer would deadlock.
            self._local.reads = depth + 1
            try:
                yield
            finally:
                self._local.reads = depth
            return
        with self._cond:
            while self._writer is not None or self._writers_waiting:
                self._cond.wait()
            self._readers += 1
        self._local.reads = 1
        try:
            yield
        finally:
            self._local.reads = 0
            with self._cond:
                self._readers -= 1
                if not self._readers:
                    self._cond.notify_all()

    @contextmanager
    def write(self) -> Iterator[None]:
        """Hold the lock for writing (exclusive) inside the ``with`` block."""
        me = threading.get_ident()
        with self._cond:
            if self._writer == me:
                self._write_depth += 1
            else:
                if getattr(self._local, "reads", 0):
                    raise RuntimeError("a thread holding the read lock cannot take the write lock")
                self._writers_waiting += 1
                try:
                    while self._writer is not None or self._readers:
                        self._cond.wait()
                finally:
                    self._writers_waiting -= 1
                self._writer, self._write_depth = me, 1
        try:
            yield
        finally:
            with self._cond:
                self._write_depth -= 1
                if not self._write_depth:
                    self._writer = None
                    self._cond.notify_all()


_Method = TypeVar("_Method", bound=Callable[..., Any])


def reading(method: _Method) -> _Method:
    """Run a method of an object with a ``_lock`` :class:`ReadWriteLock` under its read lock."""

    @functools.wraps(method)
    def locked(self: Any, *args: Any, **kwargs: Any) -> Any:
        with self._lock.read():
            return method(self, *args, **kwargs)

    return locked  # type: ignore[return-value]


def writing(method: _Method) -> _Method:
    """Run a method of an object with a ``_lock`` :class:`ReadWriteLock` under its write lock."""

    @functools.wraps(method)
    def locked(self: Any, *args: Any, **kwargs: Any) -> Any:
        with self._lock.write():
            return method(self, *args, **kwargs)

    return locked  # type: ignore[return-value]
