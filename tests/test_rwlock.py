"""The readers-writer lock that guards every built-in vector store."""

from __future__ import annotations

import threading
import time

from multimodal_rag.vectors._rwlock import ReadWriteLock


def test_readers_share_the_lock() -> None:
    lock = ReadWriteLock()
    inside = threading.Barrier(3, timeout=5)  # passes only if all three read at once

    def read() -> None:
        with lock.read():
            inside.wait()

    threads = [threading.Thread(target=read) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert not inside.broken


def test_a_writer_waits_for_readers_and_excludes_everyone() -> None:
    lock = ReadWriteLock()
    events: list[str] = []
    lock.acquire_read()
    writer = threading.Thread(target=lambda: (lock.acquire_write(), events.append("write"), lock.release_write()))
    writer.start()
    time.sleep(0.05)
    assert events == []  # still held by the reader
    late_reader = threading.Thread(target=lambda: (lock.acquire_read(), events.append("late read"), lock.release_read()))
    late_reader.start()
    time.sleep(0.05)
    assert events == []  # a waiting writer holds new readers back
    lock.release_read()
    writer.join(5)
    late_reader.join(5)
    assert events == ["write", "late read"]
