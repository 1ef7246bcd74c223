"""BM25 pruning reads FTS5 internals only where a probe proves it reads them right; elsewhere
every search is plain ``bm25()``, with the same results."""

from __future__ import annotations

import random
from collections.abc import Iterator
from typing import Any

import pytest

from multimodal_rag.descriptions import bm25_pruning
from multimodal_rag.descriptions.jsonl import JSONLDescriptionStore
from multimodal_rag.descriptions.sqlite import SQLiteDescriptionStore
from multimodal_rag.types import Record

STORES = {"sqlite": SQLiteDescriptionStore, "jsonl": JSONLDescriptionStore}


def catalogue(count: int = 1500) -> tuple[list[Record], list[str]]:
    """Records of Zipf-weighted common words, a few rare ones and a model number, and queries
    mixing them: the queries pruning skips most records for."""
    rng = random.Random(7)
    common = ["battery", "lamp", "cable", "solar", "panel", "charger", "red", "blue", "steel", "compact"]
    rare = [f"{a}{b}" for a in ("kayak", "tent", "drill") for b in ("pro", "mini", "max")]
    weights = [1 / (i + 1) for i in range(len(common))]
    records = []
    for i in range(count):
        text = rng.choices(common, weights, k=rng.randint(2, 9)) + rng.sample(rare, rng.randint(0, 2))
        records.append(Record(id=f"r{i:05d}", description=" ".join(text) + f" model ZX-{i % 400:03d}"))
    queries = [
        " ".join(rng.sample(common, rng.randint(1, 3)) + rng.sample(rare, rng.randint(0, 2))) + f" ZX-{rng.randrange(400):03d}"
        for _ in range(30)
    ]
    return records, queries


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


@pytest.mark.parametrize("name", sorted(STORES))
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
    store = STORES[name]()
    records, queries = catalogue()
    store.put(records)
    everyone = [r.id for r in records]
    for query in queries:
        fast = store.search_text(query, 10)
        plain = store.search_text(query, 10, ids=everyone)  # the plain path: every match scored
        assert [i for i, _ in fast] == [i for i, _ in plain], query
        assert [s for _, s in fast] == [s for _, s in plain], query
    assert pruned == []  # no search took the pruned path


@pytest.mark.parametrize("name", sorted(STORES))
def test_the_same_queries_do_take_the_pruned_path_where_the_probe_passes(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    pruned: list[object] = []
    real = bm25_pruning._scores
    monkeypatch.setattr(bm25_pruning, "_scores", lambda *a: pruned.append(a) or real(*a))
    store = STORES[name]()
    records, queries = catalogue()
    store.put(records)
    for query in queries:
        store.search_text(query, 10)
    assert pruned  # so the test above shows the guard at work, not queries that never prune
