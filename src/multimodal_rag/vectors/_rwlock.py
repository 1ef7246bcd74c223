"""A readers-writer lock: many searches at once, or one change alone."""

from __future__ import annotations

import threading
from types import TracebackType

__all__ = ["ReadWriteLock"]


class ReadWriteLock:
    """Lets any number of readers in together, or exactly one writer.

    Writers are preferred: once a writer waits, new readers queue behind it, so a
    steady stream of searches cannot starve an add. The lock is not re-entrant; code
    holding it must not take it again (a nested read would wait for a queued writer
    that waits for the outer read).

    Usage::

        with lock.read():
            ...  # many threads at once
        with lock.write():
            ...  # this thread alone
    """

    def __init__(self) -> None:
        self._cond = threading.Condition(threading.Lock())
        self._readers = 0
        self._writing = False
        self._writers_waiting = 0
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
            while self._writing or self._writers_waiting:
                self._cond.wait()
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
                while self._writing or self._readers:
                    self._cond.wait()
            finally:
                self._writers_waiting -= 1
            self._writing = True

    def release_write(self) -> None:
        with self._cond:
            self._writing = False
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
