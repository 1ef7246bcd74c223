"""Readers-writer locks: many searches at once, one change at a time.

`ReadWriteLock` guards each vector store; `ReentrantReadWriteLock` wraps it for
the facade, whose locked methods call one another.

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
from types import TracebackType
from typing import Any, TypeVar

__all__ = ["ReadWriteLock", "ReentrantReadWriteLock", "reading", "writing"]


class ReadWriteLock:
    """Lets any number of readers in together, or exactly one writer, in fair turns.

    The lock is phase-fair, so neither side can starve the other:

    - once a writer waits, newly arriving readers queue behind it, so a steady
      stream of searches cannot starve an add;
    - when a writer releases the lock, every reader that was waiting at that moment
      goes in before the next writer, so a thread that changes and saves in a loop
      cannot starve searches. A reader waits for at most one writer's turn (and for
      the readers that were already in, when that writer was queued behind them).

    Writers among themselves are not ordered: the condition variable wakes them in no
    promised order.

    The lock is not re-entrant; code holding it must not take it again (a nested
    read would wait for a queued writer that waits for the outer read).

    Usage:

    ```python
    with lock.read():
        ...  # many threads at once
    with lock.write():
        ...  # this thread alone
    ```
    """

    def __init__(self) -> None:
        self._cond = threading.Condition(threading.Lock())
        self._readers = 0
        self._writing = False
        self._writers_waiting = 0
        self._readers_waiting = 0
        # Each writer's release starts a new read phase: readers that waited through it
        # are let in ("admitted"), and no writer goes in until all of them have.
        self._phase = 0
        self._admitted = 0
        self._read = _Guard(self.acquire_read, self.release_read)
        self._write = _Guard(self.acquire_write, self.release_write)

    def read(self) -> _Guard:
        """Context manager that holds the lock shared."""
        return self._read

    def write(self) -> _Guard:
        """Context manager that holds the lock exclusively."""
        return self._write

    def acquire_read(self) -> None:
        with self._cond:
            if not self._writing and not self._writers_waiting:
                self._readers += 1
                return
            phase = self._phase
            self._readers_waiting += 1
            try:
                while self._phase == phase and (self._writing or self._writers_waiting):
                    self._cond.wait()
            finally:
                self._readers_waiting -= 1
                if self._phase != phase:
                    # Admitted by a writer's release (or interrupted after it): either
                    # way this reader no longer holds the next writer back.
                    self._admitted -= 1
                    if not self._admitted:
                        self._cond.notify_all()
            self._readers += 1

    def release_read(self) -> None:
        with self._cond:
            self._readers -= 1
            if self._readers == 0:
                self._cond.notify_all()

    def acquire_write(self) -> None:
        with self._cond:
            self._writers_waiting += 1
            try:
                while self._writing or self._readers or self._admitted:
                    self._cond.wait()
            finally:
                self._writers_waiting -= 1
            self._writing = True

    def release_write(self) -> None:
        with self._cond:
            self._writing = False
            if self._readers_waiting:
                self._phase += 1
                self._admitted = self._readers_waiting
            self._cond.notify_all()


class _Guard:
    """A reusable ``with`` block around an acquire/release pair (no per-use allocation)."""

    __slots__ = ("_acquire", "_release")

    def __init__(self, acquire: object, release: object) -> None:
        self._acquire = acquire
        self._release = release

    def __enter__(self) -> None:
        self._acquire()  # type: ignore[operator]

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self._release()  # type: ignore[operator]


class ReentrantReadWriteLock:
    """The stores' `ReadWriteLock`, made re-entrant for the facade's methods.

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
    """Run a method under its object's ``_lock`` (a `ReentrantReadWriteLock`), reading."""

    @functools.wraps(method)
    def locked(self: Any, *args: Any, **kwargs: Any) -> Any:
        with self._lock.read():
            return method(self, *args, **kwargs)

    return locked  # type: ignore[return-value]


def writing(method: _Method) -> _Method:
    """Run a method under its object's ``_lock`` (a `ReentrantReadWriteLock`), writing."""

    @functools.wraps(method)
    def locked(self: Any, *args: Any, **kwargs: Any) -> Any:
        with self._lock.write():
            return method(self, *args, **kwargs)

    return locked  # type: ignore[return-value]
