"""The readers-writer lock that guards every built-in vector store."""

from __future__ import annotations

import threading
import time

from multimodal_rag._locks import ReadWriteLock


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


def _writer_in_a_loop(lock: ReadWriteLock, stop: threading.Event, turns: list[int]) -> None:
    while not stop.is_set():
        with lock.write():
            turns[0] += 1
            time.sleep(0.0005)  # some work under the lock; released and taken again at once


def test_a_writer_taking_the_lock_again_and_again_lets_a_waiting_reader_in() -> None:
    lock = ReadWriteLock()
    stop = threading.Event()
    turns = [0]
    writer = threading.Thread(target=_writer_in_a_loop, args=(lock, stop, turns), daemon=True)
    writer.start()
    try:
        for _ in range(5):
            entered = threading.Event()
            waited: list[int] = []

            def read(entered: threading.Event, waited: list[int]) -> None:
                start = turns[0]
                with lock.read():
                    waited.append(turns[0] - start)
                    entered.set()

            reader = threading.Thread(target=read, args=(entered, waited), daemon=True)
            reader.start()
            # Generous: the reader goes in as soon as the writer's current turn ends.
            assert entered.wait(2), "a reader waited more than 2 s behind a busy writer"
            reader.join(2)
            assert waited[0] <= 2  # writer turns that passed while the reader waited
    finally:
        stop.set()
        writer.join(5)


def test_readers_taking_turns_without_pause_do_not_starve_a_writer() -> None:
    lock = ReadWriteLock()
    stop = threading.Event()

    def reader() -> None:
        while not stop.is_set():
            with lock.read():
                time.sleep(0.001)

    readers = [threading.Thread(target=reader, daemon=True) for _ in range(3)]
    for thread in readers:
        thread.start()
    try:
        got_in = threading.Event()
        writer = threading.Thread(target=lambda: (lock.acquire_write(), got_in.set(), lock.release_write()))
        writer.start()
        assert got_in.wait(2), "a writer waited more than 2 s behind overlapping readers"
        writer.join(2)
    finally:
        stop.set()
        for thread in readers:
            thread.join(5)


def _until(condition: object) -> None:
    deadline = time.monotonic() + 5
    while not condition():  # type: ignore[operator]
        assert time.monotonic() < deadline, "the threads never queued"
        time.sleep(0.001)


def test_readers_waiting_when_a_writer_leaves_go_before_the_next_writer() -> None:
    lock = ReadWriteLock()
    events: list[str] = []
    lock.acquire_write()

    def read(name: str) -> None:
        with lock.read():
            events.append(name)

    def write() -> None:
        with lock.write():
            events.append("writer 2")

    readers = [threading.Thread(target=read, args=(f"reader {i}",), daemon=True) for i in range(2)]
    second_writer = threading.Thread(target=write, daemon=True)
    try:
        for thread in readers:
            thread.start()
        _until(lambda: lock._readers_waiting == 2)
        second_writer.start()
        _until(lambda: lock._writers_waiting == 1)
    finally:
        lock.release_write()
    for thread in [*readers, second_writer]:
        thread.join(5)
    assert sorted(events[:2]) == ["reader 0", "reader 1"]
    assert events[2:] == ["writer 2"]
