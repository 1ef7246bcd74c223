"""Threads searching and asking while another changes the knowledge base, and the lock that makes it safe."""

from __future__ import annotations

import contextlib
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from helpers import COLORS, ColorEmbedder, solid
from multimodal_rag import MultimodalRAG
from multimodal_rag._locks import ReentrantReadWriteLock


def noise(seed: int) -> Image.Image:
    return Image.fromarray(np.random.default_rng(seed).integers(0, 256, (8, 8, 3), dtype=np.uint8))


@pytest.mark.parametrize("description_store", ["sqlite", "jsonl"])
def test_searches_in_threads_while_one_thread_ingests_edits_and_saves(
    tmp_path: Path, embedder: ColorEmbedder, description_store: str
) -> None:
    from multimodal_rag import ExtractiveAnswerer

    rag = MultimodalRAG.create(
        tmp_path / "kb", embedder=embedder, description_store=description_store, answerer=ExtractiveAnswerer()
    )
    rag.add([solid(c) for c in COLORS], descriptions=[f"seed {c}" for c in COLORS],
            metadata=[{"n": -1} for _ in COLORS], progress=False)
    errors: list[BaseException] = []
    served = [0] * 4
    stop = threading.Event()

    def search_loop(worker: int) -> None:
        rng = np.random.default_rng(worker)
        words = list(COLORS)
        try:
            while not stop.is_set():
                hits = (
                    rag.search(text=words[rng.integers(len(words))], k=5)
                    if worker % 2
                    else rag.search(image=noise(int(rng.integers(1 << 30))), k=5, filter={"n": 3})
                )
                for hit in hits:
                    # Every image was added with a description: a hit without one means a
                    # search saw a vector whose record was not there (yet, or any more).
                    assert hit.description is not None and "n" in hit.metadata, hit
                    if worker == 0:
                        assert hit.metadata["n"] == 3
                if worker == 3:  # answers are built from the same lookups
                    answer = rag.ask("What colour is it?", text=words[rng.integers(len(words))], k=3)
                    assert answer.sources and all(source.description for source in answer.sources)
                ids = rag.ids()
                if ids:
                    with contextlib.suppress(KeyError):  # removed between the two calls: allowed
                        assert rag.get(ids[-1]).id == ids[-1]
                served[worker] += 1
        except BaseException as exc:  # reported by the main thread
            errors.append(exc)

    readers = [threading.Thread(target=search_loop, args=(w,)) for w in range(4)]
    for thread in readers:
        thread.start()
    try:
        for batch in range(15):
            images = [noise(batch * 100 + i) for i in range(10)]
            result = rag.add(images, descriptions=[f"noise {batch}-{i}" for i in range(10)],
                             metadata=[{"n": i % 5} for i in range(10)], on_error="skip", batch_size=4,
                             progress=False)
            rag.describe(result.ids[0], f"edited {batch}", metadata={"n": 3})
            if batch % 3 == 2:
                rag.remove(result.ids[-2:])
            if batch % 10 == 9:
                rag.save()
    finally:
        stop.set()
        for thread in readers:
            thread.join()
    assert not errors, errors[0]
    assert all(count > 0 for count in served), served
    assert len(rag) == len(COLORS) + 15 * 10 - 5 * 2
    assert rag.verify().ok
    rag.close()


def test_a_writer_waits_for_readers_and_new_readers_wait_for_a_waiting_writer() -> None:
    lock = ReentrantReadWriteLock()
    order: list[str] = []
    reader_in = threading.Event()
    release_reader = threading.Event()

    def first_reader() -> None:
        with lock.read():
            order.append("reader 1 in")
            reader_in.set()
            release_reader.wait(5)
            order.append("reader 1 out")

    def writer() -> None:
        with lock.write():
            order.append("writer")

    def second_reader() -> None:
        with lock.read():
            order.append("reader 2")

    threads = [threading.Thread(target=first_reader)]
    threads[0].start()
    reader_in.wait(5)
    threads.append(threading.Thread(target=writer))
    threads[1].start()
    while not lock._lock._writers_waiting:  # the writer is queued behind reader 1
        time.sleep(0.001)
    threads.append(threading.Thread(target=second_reader))
    threads[2].start()
    time.sleep(0.05)
    assert order == ["reader 1 in"]  # reader 2 does not overtake the waiting writer
    release_reader.set()
    for thread in threads:
        thread.join(5)
    assert order == ["reader 1 in", "reader 1 out", "writer", "reader 2"]


def test_the_lock_is_reentrant_but_refuses_an_upgrade() -> None:
    lock = ReentrantReadWriteLock()
    with lock.write(), lock.write(), lock.read():
        pass
    with lock.read(), lock.read(), pytest.raises(RuntimeError, match="read lock"), lock.write():
        pass
    with lock.write():  # everything was released
        pass


def test_a_search_is_not_starved_by_a_thread_that_describes_and_saves_in_a_loop(
    tmp_path: Path, embedder: ColorEmbedder
) -> None:
    from multimodal_rag import ExtractiveAnswerer

    rag = MultimodalRAG.create(tmp_path / "kb", embedder=embedder, answerer=ExtractiveAnswerer())
    (red,) = rag.add([solid("red")]).ids
    stop = threading.Event()

    def busy_writer() -> None:
        turn = 0
        while not stop.is_set():
            turn += 1
            rag.describe(red, f"turn {turn}")
            rag.save()

    def search(searched: threading.Event) -> None:
        rag.search(text="red", k=1)
        searched.set()

    writer = threading.Thread(target=busy_writer, daemon=True)
    writer.start()
    try:
        for _ in range(5):
            searched = threading.Event()
            thread = threading.Thread(target=search, args=(searched,), daemon=True)
            thread.start()
            assert searched.wait(2), "a search waited more than 2 s behind a busy writer"
            thread.join(2)
    finally:
        stop.set()
        writer.join(10)
    rag.close()
