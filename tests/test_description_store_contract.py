"""The contract every DescriptionStore must keep (`multimodal_rag.testing.DescriptionStoreContract`),
run over every built-in store; a new backend adds one entry to DESCRIPTION_STORES."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from conftest import on_server, server_uri
from multimodal_rag.protocols import DescriptionStore
from multimodal_rag.testing import DescriptionStoreContract


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


def _postgres_without_trigrams() -> DescriptionStore:
    """A PostgreSQL store on a server without pg_trgm: identifiers through the words fallback."""
    from unittest import mock

    with mock.patch("multimodal_rag.descriptions.postgres_identifiers.trigrams_available", return_value=False):
        store = _postgres()
    assert store._identifiers is False  # type: ignore[attr-defined]
    return store


#: name -> factory of an empty store. Every store here must pass every test below.
DESCRIPTION_STORES: dict[str, Callable[[], DescriptionStore]] = {
    "jsonl": _jsonl,
    "postgres": _postgres,
    "sqlite": _sqlite,
}
#: What the contract runs over: every kind, and a kind again where a setting changes how it works.
CONTRACT_STORES = {
    **DESCRIPTION_STORES,
    "sqlite-indexed": _sqlite_indexed,
    "postgres-without-trigrams": _postgres_without_trigrams,
}


class TestDescriptionStores(DescriptionStoreContract):
    """The library's contract suite over every store above."""

    @pytest.fixture(params=sorted(CONTRACT_STORES))
    def make_store(self, request: pytest.FixtureRequest) -> Callable[[], DescriptionStore]:
        return CONTRACT_STORES[request.param]
