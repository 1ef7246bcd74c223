"""An ordered, bounded parallel map: decode the next images while the model runs.

Decoding and resizing in PIL release the GIL, so worker *threads* decode in
parallel with the encoder without copying pixels between processes. At most
``window`` inputs are in flight at once, so memory stays bounded however long
the input stream is.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TypeVar

__all__ = ["ordered_map"]

T = TypeVar("T")
R = TypeVar("R")


def ordered_map(
    fn: Callable[[T], R], items: Iterable[T], *, workers: int, window: int
) -> Iterator[R]:
    """Yield ``fn(item)`` for every item, in input order, computed by ``workers`` threads.

    Args:
        fn: The work for one item. An exception it raises is re-raised here, at
            that item's turn.
        items: Consumed lazily, from the calling thread only.
        workers: Worker threads; 0 runs ``fn`` in the calling thread.
        window: Most items submitted but not yet yielded (at least 1).
    """
    if workers <= 0:
        yield from map(fn, items)
        return
    window = max(window, 1)
    source = iter(items)
    pending: deque[Future[R]] = deque()
    pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="multimodal-rag-decode")
    try:
        for item in source:
            pending.append(pool.submit(fn, item))
            if len(pending) >= window:
                break
        while pending:
            head = pending.popleft()
            # Refill first, so the workers keep going while we wait and while the
            # caller (the encoder) works on what it has been given.
            for item in source:
                pending.append(pool.submit(fn, item))
                break
            yield head.result()
    finally:
        # Abandoned early (an error, or the caller stopped): drop queued work.
        pool.shutdown(wait=True, cancel_futures=True)
