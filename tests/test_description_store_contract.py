"""The contract every DescriptionStore must keep. A new backend adds one entry to DESCRIPTION_STORES."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from conftest import on_server, server_uri
from multimodal_rag.errors import InvalidInputError, NotFoundError
from multimodal_rag.protocols import DescriptionStore
from multimodal_rag.types import Record


def _jsonl() -> DescriptionStore:
    from multimodal_rag.descriptions.jsonl import JSONLDescriptionStore

    return JSONLDescriptionStore()


def _sqlite() -> DescriptionStore:
    from multimodal_rag.descriptions.sqlite import SQLiteDescriptionStore

    return SQLiteDescriptionStore()


def _postgres() -> DescriptionStore:
    from multimodal_rag.descriptions.postgres import PostgresDescriptionStore

    return on_server(PostgresDescriptionStore(server_uri("DATABASE_URL", "PostgreSQL")))  # type: ignore[return-value]


#: name -> factory of an empty store. Every store here must pass every test below.
DESCRIPTION_STORES: dict[str, Callable[[], DescriptionStore]] = {
    "jsonl": _jsonl,
    "postgres": _postgres,
    "sqlite": _sqlite,
}


@pytest.fixture(params=sorted(DESCRIPTION_STORES))
def make_store(request: pytest.FixtureRequest) -> Callable[[], DescriptionStore]:
    return DESCRIPTION_STORES[request.param]


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
