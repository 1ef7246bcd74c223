"""BM25 pruning reads FTS5 internals only where a probe proves it reads them right; elsewhere
every search is plain ``bm25()``, with the same results."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from multimodal_rag.descriptions import bm25_pruning
from test_full_text import EMBEDDED, catalogue, configured, ids


@pytest.fixture(autouse=True)
def fresh_probe() -> Iterator[None]:
    bm25_pruning.format_understood.cache_clear()
    yield
    bm25_pruning.format_understood.cache_clear()  # the next test probes the real constants


def test_the_installed_sqlite_passes_the_probe() -> None:
    assert bm25_pruning.format_understood()


MISMATCHES: dict[str, tuple[str, Any]] = {
    # bm25() scoring with other constants than the ones the bounds assume
    "k1": ("_K1", 1.5),
    "b": ("_B", 0.5),
    # the averages record laid out otherwise: its first varint is no longer the row count
    "row count": ("_row_count", lambda db, table: 7),
}


@pytest.mark.parametrize("name", EMBEDDED)
@pytest.mark.parametrize("mismatch", sorted(MISMATCHES))
def test_a_format_the_probe_does_not_recognise_searches_with_plain_bm25(
    name: str, mismatch: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    attribute, value = MISMATCHES[mismatch]
    monkeypatch.setattr(bm25_pruning, attribute, value)
    assert not bm25_pruning.format_understood()
    pruned: list[object] = []
    real = bm25_pruning._scores
    monkeypatch.setattr(bm25_pruning, "_scores", lambda *a: pruned.append(a) or real(*a))
    store = configured(name)
    records, queries = catalogue()
    store.put(records)
    everyone = [r.id for r in records]
    for query in queries[:30]:
        fast = store.search_text(query, 10)
        plain = store.search_text(query, 10, ids=everyone)  # the plain path: every match scored
        assert ids(fast) == ids(plain), query
        assert [s for _, s in fast] == [s for _, s in plain], query
    assert pruned == []  # no search took the pruned path
