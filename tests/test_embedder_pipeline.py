"""The ordered, bounded parallel map behind fast image ingest."""

from __future__ import annotations

import threading
import time

import pytest

from multimodal_rag.embedders.pipeline import ordered_map


@pytest.mark.parametrize("workers", [0, 1, 3])
def test_results_come_in_input_order(workers: int) -> None:
    def slow_for_small(n: int) -> int:
        time.sleep(0.002 * (5 - n % 5))  # early items finish last
        return n * n

    assert list(ordered_map(slow_for_small, range(20), workers=workers, window=6)) == [
        n * n for n in range(20)
    ]


def test_work_runs_in_worker_threads() -> None:
    names = set(
        ordered_map(lambda _: threading.current_thread().name, range(8), workers=2, window=4)
    )
    assert threading.current_thread().name not in names


def test_lookahead_is_bounded_by_the_window() -> None:
    pulled: list[int] = []

    def source():
        for i in range(100):
            pulled.append(i)
            yield i

    results = ordered_map(lambda n: n, source(), workers=2, window=5)
    assert next(results) == 0
    assert len(pulled) <= 6  # the window, plus the one refilled before the first result
    results.close()
    assert len(pulled) <= 6


def test_an_error_is_raised_at_its_items_turn() -> None:
    def fail_on_three(n: int) -> int:
        if n == 3:
            raise ValueError("three")
        return n

    results = ordered_map(fail_on_three, range(10), workers=2, window=4)
    assert [next(results) for _ in range(3)] == [0, 1, 2]
    with pytest.raises(ValueError, match="three"):
        next(results)
