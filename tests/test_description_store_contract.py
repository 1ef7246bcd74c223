"""The contract every DescriptionStore must keep. A new backend adds one entry to DESCRIPTION_STORES."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from conftest import on_server, server_uri
from multimodal_rag.errors import InvalidInputError, NotFoundError
from multimodal_rag.filters import parse_filter
from multimodal_rag.protocols import DescriptionStore
from multimodal_rag.types import Record


def _jsonl() -> DescriptionStore:
    from multimodal_rag.descriptions.jsonl import JSONLDescriptionStore

    return JSONLDescriptionStore()


def _sqlite() -> DescriptionStore:
    from multimodal_rag.descriptions.sqlite import SQLiteDescriptionStore

    return SQLiteDescriptionStore()


#: Metadata keys the filter tests compare, indexed: their conditions read the generated columns.
INDEXED_FIELDS = ("a", "category", "price", "stock", "on_sale", "note", "name", "missing", "big", "it's", "price.amount")


def _sqlite_indexed() -> DescriptionStore:
    from multimodal_rag.descriptions.sqlite import SQLiteDescriptionStore

    return SQLiteDescriptionStore(indexed_fields=INDEXED_FIELDS)


def _postgres() -> DescriptionStore:
    from multimodal_rag.descriptions.postgres import PostgresDescriptionStore

    return on_server(PostgresDescriptionStore(server_uri("DATABASE_URL", "PostgreSQL")))  # type: ignore[return-value]


#: name -> factory of an empty store. Every store here must pass every test below.
DESCRIPTION_STORES: dict[str, Callable[[], DescriptionStore]] = {
    "jsonl": _jsonl,
    "postgres": _postgres,
    "sqlite": _sqlite,
}
#: What the contract runs over: every kind, and a kind again where a setting changes how it works.
CONTRACT_STORES = {**DESCRIPTION_STORES, "sqlite-indexed": _sqlite_indexed}


@pytest.fixture(params=sorted(CONTRACT_STORES))
def make_store(request: pytest.FixtureRequest) -> Callable[[], DescriptionStore]:
    return CONTRACT_STORES[request.param]


def reload(store: DescriptionStore, directory: Path) -> DescriptionStore:
    directory.mkdir()
    store.save(directory)
    config: dict[str, Any] = json.loads(json.dumps(store.config()))
    return type(store).load(directory, **config)


RECORDS = [
    Record(id="a", image_path="/img/a.png", description="A red battery generator.", metadata={"price": 3}),
    Record(id="b", image_path=None, description=None),
    Record(id="c 🦜", image_path="/img/طوطی.png", description="پرنده‌ای سبز", metadata={"tags": ["x", {"y": 1}]}),
    Record(id="d'; DROP TABLE records;--", description='quotes " and \\ backslashes\nand lines'),
]


def test_put_and_get_round_trip(make_store) -> None:
    store = make_store()
    store.put(RECORDS)
    for record in RECORDS:
        assert store.get(record.id) == record
    assert len(store) == len(RECORDS)
    assert sorted(r.id for r in store) == sorted(r.id for r in RECORDS)
    assert "a" in store and "zzz" not in store and 3 not in store


def test_get_unknown_raises_not_found_which_is_a_key_error(make_store) -> None:
    store = make_store()
    with pytest.raises(NotFoundError, match="nope"):
        store.get("nope")
    with pytest.raises(KeyError):
        store.get("nope")


def test_get_many_skips_missing(make_store) -> None:
    store = make_store()
    store.put(RECORDS)
    found = store.get_many(["a", "missing", "b"])
    assert set(found) == {"a", "b"} and found["a"] == RECORDS[0]
    assert store.get_many([f"id-{i}" for i in range(2000)]) == {}


def test_put_replaces(make_store) -> None:
    store = make_store()
    store.put(RECORDS)
    store.put([Record(id="a", description="new")])
    assert store.get("a").description == "new" and store.get("a").metadata == {}
    assert len(store) == len(RECORDS)


def test_delete_counts_and_ignores_unknown(make_store) -> None:
    store = make_store()
    store.put(RECORDS)
    assert store.delete(["a", "zzz", "b"]) == 2
    assert len(store) == 2 and "a" not in store
    assert store.delete(["a"]) == 0


def test_save_and_load_round_trip(make_store, tmp_path: Path) -> None:
    store = make_store()
    store.put(RECORDS)
    loaded = reload(store, tmp_path / "s")
    assert sorted((r.id, r.image_path, r.description, json.dumps(r.metadata)) for r in loaded) == sorted(
        (r.id, r.image_path, r.description, json.dumps(r.metadata)) for r in RECORDS
    )


@pytest.mark.parametrize(
    "bad",
    [
        Record(id="", description="x"),
        Record(id="e", metadata={"description": "clashes with a reserved key"}),
        Record(id="e", metadata={"x": object()}),
        Record(id="e", metadata={"x": float("nan")}),
        Record(id="e", description=3),  # type: ignore[arg-type]
    ],
)
def test_bad_records_are_refused_and_change_nothing(make_store, bad: Record) -> None:
    store = make_store()
    store.put(RECORDS[:1])
    with pytest.raises(InvalidInputError):
        store.put([Record(id="fine"), bad])
    assert [r.id for r in store] == ["a"]


# -- metadata filters: matching_ids -----------------------------------------------

FILTER_RECORDS = [
    Record(id="r1", metadata={"category": "shoes", "price": 50, "stock": 3, "on_sale": True, "note": None, "name": "apple"}),
    Record(id="r2", metadata={"category": "bags", "price": 120.5, "stock": 0, "on_sale": False, "name": "Zebra"}),
    Record(id="r3", metadata={"category": "hats", "price": 99.99, "stock": 1.0, "name": "éclair", "tags": ["shoes"], "it's": "ok"}),
    Record(id="r4", metadata={"category": "shoes", "price": "cheap", "stock": True, "name": "😀"}),
    Record(id="r5", metadata={"category": ["shoes"], "price": {"amount": 10}, 'we"ird.k\\ey': "yes", "ключ": 7}),
    Record(id="r6", description="no metadata at all"),
    Record(id="r7 ' \"", metadata={"category": "bags", "price": 100, "big": 2**70, "name": "a\x00b"}),
]
ALL_IDS = {r.id for r in FILTER_RECORDS}
R7 = "r7 ' \""

#: (filter, the ids it matches among FILTER_RECORDS); every store must agree.
FILTER_CASES: list[tuple[dict[str, Any], set[str]]] = [
    ({}, ALL_IDS),
    ({"category": "shoes"}, {"r1", "r4"}),  # r5's list is not searched
    ({"category": {"$eq": "shoes"}}, {"r1", "r4"}),
    ({"category": {"$ne": "shoes"}}, {"r2", "r3", "r5", "r6", R7}),  # missing passes $ne
    ({"category": {"$in": ["shoes", "hats"]}}, {"r1", "r3", "r4"}),
    ({"category": {"$nin": ["shoes", "hats"]}}, {"r2", "r5", "r6", R7}),
    ({"price": {"$lt": 100}}, {"r1", "r3"}),  # "cheap" and an object do not order against numbers
    ({"price": {"$lte": 100}}, {"r1", "r3", R7}),
    ({"price": {"$gt": 100}}, {"r2"}),
    ({"price": {"$gte": 99.99}}, {"r2", "r3", R7}),
    ({"price": {"$gte": 10, "$lt": 100}}, {"r1", "r3"}),
    ({"price": {"$lt": "z"}}, {"r4"}),  # strings order against strings only
    ({"price": {"$in": [50.0, 100]}}, {"r1", R7}),  # 50 == 50.0
    ({"stock": 1}, {"r3"}),  # 1.0 is 1; True is not
    ({"stock": True}, {"r4"}),
    ({"stock": {"$in": [0, True]}}, {"r2", "r4"}),
    ({"stock": {"$gt": 0}}, {"r1", "r3"}),  # bool does not order
    ({"on_sale": False}, {"r2"}),
    ({"on_sale": {"$ne": True}}, ALL_IDS - {"r1"}),
    ({"note": None}, {"r1"}),  # null, not missing
    ({"note": {"$ne": None}}, ALL_IDS - {"r1"}),
    ({"missing": {"$nin": ["x"]}}, ALL_IDS),
    ({"missing": {"$lt": 5}}, set()),
    ({"name": {"$gt": "a"}}, {"r1", "r3", "r4", R7}),  # by code point: "Z" < "a" < "é" < "😀"
    ({"name": {"$lt": "b"}}, {"r1", "r2", R7}),
    ({"name": {"$gt": 5}}, set()),
    ({"name": {"$in": ["😀", "Zebra"]}}, {"r2", "r4"}),
    ({"name": "a"}, set()),  # "a\x00b" is not "a"
    ({"name": "a\x00b"}, {R7}),
    ({"name": {"$gte": "a\x00"}}, {"r1", "r3", "r4", R7}),
    ({"tags": "shoes"}, set()),
    ({"price.amount": 10}, set()),  # a key is matched whole, never as a path
    ({'we"ird.k\\ey': "yes"}, {"r5"}),
    ({"it's": {"$in": ["ok"]}}, {"r3"}),
    ({"ключ": {"$gte": 7}}, {"r5"}),
    ({"big": 2**70}, {R7}),
    ({"big": {"$gt": 2**63}}, {R7}),
    ({"$or": [{"category": "bags"}, {"price": {"$lt": 60}}]}, {"r1", "r2", R7}),
    ({"$and": [{"category": "shoes"}, {"$or": [{"stock": {"$gt": 2}}, {"stock": True}]}]}, {"r1", "r4"}),
    ({"category": "shoes", "stock": {"$ne": True}}, {"r1"}),
    ({"$or": [{"category": {"$nin": ["bags"]}, "price": {"$gte": 99}}, {"name": "Zebra"}]}, {"r2", "r3"}),
]


@pytest.mark.parametrize(("obj", "expected"), FILTER_CASES, ids=[json.dumps(c[0], ensure_ascii=False) for c in FILTER_CASES])
def test_matching_ids_keeps_exactly_the_matching_records(make_store, obj: dict[str, Any], expected: set[str]) -> None:
    store = make_store()
    store.put(FILTER_RECORDS)
    parsed = parse_filter(obj)
    assert {r.id for r in FILTER_RECORDS if parsed.matches(r.metadata)} == expected  # the table itself
    assert store.matching_ids(parsed) == expected
    assert DescriptionStore.matching_ids(store, parsed) == expected  # the protocol's default, a scan


def test_matching_ids_follows_changes(make_store) -> None:
    store = make_store()
    store.put(FILTER_RECORDS)
    shoes = parse_filter({"category": "shoes"})
    store.put([Record(id="r2", metadata={"category": "shoes"})])
    store.delete(["r1"])
    assert store.matching_ids(shoes) == {"r2", "r4"}
    assert make_store().matching_ids(shoes) == set()
