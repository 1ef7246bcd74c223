"""Metadata filters run inside Milvus: the same ids as ``MetadataFilter.matches``, and a copy of
the metadata that the knowledge base keeps in step with its description store."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import attrs
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from conftest import clustered_vectors, on_server, server_uri
from helpers import ColorEmbedder, solid
from multimodal_rag import MultimodalRAG
from multimodal_rag._verify import ProblemKind
from multimodal_rag.filters import NotExpressible, parse_filter
from test_filters import FILTERS, METADATA

pytest.importorskip("pymilvus")
from multimodal_rag.vectors.milvus import MilvusVectorStore  # noqa: E402

DIM = 8


@pytest.fixture
def uri() -> str:
    return server_uri("MILVUS_URI", "Milvus")


@pytest.fixture
def store(uri: str) -> MilvusVectorStore:
    # An exact index, so a filtered search of k = everything finds every match.
    return on_server(MilvusVectorStore(DIM, uri=uri, index_type="FLAT"))  # type: ignore[return-value]


def _load(store: MilvusVectorStore, rows: list[dict[str, Any]]) -> list[str]:
    store.remove(store.ids())
    ids = [f"r{i}" for i in range(len(rows))]
    if ids:
        store.add(ids, clustered_vectors(np.random.default_rng(len(ids)), len(ids), DIM))
        store.set_metadata(dict(zip(ids, rows, strict=True)))
    return ids


def _found(store: MilvusVectorStore, obj: Any, n: int) -> set[str]:
    query = np.eye(DIM, dtype=np.float32)[:1]
    return {hit.id for hit in store.search_where(query, max(n, 1), parse_filter(obj))[0]}


def _expected(rows: list[dict[str, Any]], obj: Any) -> set[str]:
    parsed = parse_filter(obj)
    return {f"r{i}" for i, metadata in enumerate(rows) if parsed.matches(metadata)}


# Mixed kinds under the same keys, missing keys, nulls, lists and objects.
ROWS: list[dict[str, Any]] = [
    {"price": 10, "category": "shoes", "on_sale": True, "brand": "acme"},
    {"price": 10.0, "category": "bags", "on_sale": False, "brand": None},
    {"price": "10", "category": "Shoes", "on_sale": 1},
    {"price": 99.5, "category": ["shoes"], "brand": "ACME"},
    {"price": None, "category": {"shoes": 1}, "on_sale": 0},
    {},
    {"price": -3, "category": "", "on_sale": True, "brand": "é"},
    {"price": 2**62, "category": "shoes", "brand": 'a"b\\c'},
    {"price": True, "category": "bags", "brand": "acme"},
    {"price": 2**70, "a.b": 1, "ключ": "значение", "q\"'\\": "x", "$x": 1},
]

CASES: list[Any] = [
    {"price": 10},
    {"price": {"$eq": 10.0}},
    {"price": {"$ne": 10}},
    {"price": {"$in": [10, "10", True, None]}},
    {"price": {"$nin": [10, None]}},
    {"price": {"$gt": 9}},
    {"price": {"$gte": 10, "$lt": 100}},
    {"price": {"$lt": 2**62}},
    {"price": {"$lte": "10"}},
    {"price": {"$gt": 2**69}},
    {"price": None},
    {"price": {"$ne": None}},
    {"price": True},
    {"on_sale": True},
    {"on_sale": {"$ne": False}},
    {"on_sale": 1},
    {"category": "shoes"},
    {"category": {"$in": ["shoes", "bags"]}},
    {"category": {"$nin": ["shoes", "bags"]}},
    {"category": {"$gt": "R"}},
    {"category": {"$lt": "a"}},
    {"brand": {"$ne": "acme"}},
    {"brand": {"$in": ["é", 'a"b\\c', None]}},
    {"missing": {"$ne": 1}},
    {"missing": {"$nin": ["x", None]}},
    {"missing": {"$lt": 5}},
    {"a.b": 1},
    {"ключ": "значение"},
    {"q\"'\\": "x"},
    {"$or": [{"brand": "acme"}, {"on_sale": True}]},
    {"$and": [{"category": "shoes"}, {"$or": [{"price": {"$lt": 50}}, {"brand": {"$ne": "acme"}}]}]},
    {"category": {"$in": ["shoes", "bags"]}, "price": {"$lt": 100}, "$or": [{"brand": "acme"}, {"on_sale": True}]},
    {},
]


@pytest.mark.parametrize("obj", CASES, ids=[str(i) for i in range(len(CASES))])
def test_each_operator_finds_what_matches_finds(store: MilvusVectorStore, obj: Any) -> None:
    _load(store, ROWS)
    assert _found(store, obj, len(ROWS)) == _expected(ROWS, obj)


# One collection serves every example (emptied each time): a collection costs several requests.
@settings(
    max_examples=150,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
@given(rows=st.lists(METADATA, max_size=8), obj=FILTERS)
def test_random_filters_agree_with_python(store: MilvusVectorStore, rows: list[dict[str, Any]], obj: Any) -> None:
    _load(store, rows)
    assert _found(store, obj, len(rows)) == _expected(rows, obj)


HOSTILE = ['"] or true or metadata["x', "x\" or id != \"", "\\", "\\\"", "a'b", "' or 1 == 1 or '", "]]", "%22", "%"]


def test_injection_attempts_in_keys_and_values_stay_text(store: MilvusVectorStore) -> None:
    rows = [{key: value for key, value in zip(HOSTILE, HOSTILE[i:] + HOSTILE[:i], strict=True)} for i in range(len(HOSTILE))]
    rows.append({})
    _load(store, rows)
    for key in HOSTILE:
        for value in HOSTILE:
            for obj in ({key: value}, {key: {"$ne": value}}, {key: {"$gt": value}}, {key: {"$in": [value, "zz"]}}):
                assert _found(store, obj, len(rows)) == _expected(rows, obj), obj


def test_a_filter_milvus_cannot_hold_exactly_is_not_sent(store: MilvusVectorStore) -> None:
    _load(store, [{"a": "x\x01"}])
    with pytest.raises(NotExpressible):
        _found(store, {"a": "x\x01"}, 1)


# -- the knowledge base ------------------------------------------------------------


class _Spy:
    """Stands in for the pymilvus client, recording the name of every call."""

    def __init__(self, client: Any) -> None:
        self.client = client
        self.calls: list[str] = []
        self.filters: list[str] = []

    def __getattr__(self, name: str) -> Any:
        attribute = getattr(self.client, name)
        if not callable(attribute):
            return attribute

        def call(*args: Any, **kwargs: Any) -> Any:
            self.calls.append(name)
            self.filters.append(str(kwargs.get("filter", "")))
            return attribute(*args, **kwargs)

        return call


def _color(i: int) -> Any:
    return solid((40 + 23 * i % 200, 200 - 17 * i % 150, 30 + 41 * i % 210))


@pytest.fixture
def kb(uri: str, tmp_path: Path) -> MultimodalRAG:
    store = on_server(MilvusVectorStore(ColorEmbedder().dim, uri=uri, index_type="FLAT"))
    rag = MultimodalRAG.create(tmp_path / "kb", embedder=ColorEmbedder(), vector_store=store)  # type: ignore[arg-type]
    rag.add([_color(i) for i in range(len(ROWS))], ids=[f"r{i}" for i in range(len(ROWS))], metadata=ROWS, progress=False)
    return rag


def _in_step(rag: MultimodalRAG) -> bool:
    report = rag.verify()
    return not report.of_kind(ProblemKind.METADATA_COPY_DIFFERS)


def _search_ids(rag: MultimodalRAG, obj: Any) -> set[str]:
    return {hit.id for hit in rag.search(image=_color(0), k=len(ROWS), filter=obj)}


def test_a_filtered_search_is_one_milvus_request(kb: MultimodalRAG) -> None:
    store = kb.vector_store
    assert isinstance(store, MilvusVectorStore) and store.filters_metadata
    real = store._client
    spy = store._client = _Spy(real)
    try:
        obj = {"category": {"$in": ["shoes", "bags"]}, "price": {"$lt": 100}}
        assert _search_ids(kb, obj) == _expected(ROWS, obj)
    finally:
        store._client = real
    assert spy.calls == ["search"] and 'metadata["s"]["category"]' in spy.filters[0]
    kb.close()


def test_a_text_search_in_vector_mode_filters_in_milvus_too(kb: MultimodalRAG) -> None:
    obj = {"on_sale": True}
    assert {h.id for h in kb.search(text="red", k=len(ROWS), filter=obj, mode="vector")} == _expected(ROWS, obj)
    kb.close()


def test_the_copy_follows_describe_and_remove(kb: MultimodalRAG) -> None:
    assert _in_step(kb)
    kb.describe("r5", "now on sale", metadata={"on_sale": True, "price": 1})
    kb.describe("r0", None, metadata={})
    kb.remove(["r6"])
    rows = {f"r{i}": m for i, m in enumerate(ROWS)} | {"r5": {"on_sale": True, "price": 1}, "r0": {}}
    del rows["r6"]
    for obj in ({"on_sale": True}, {"price": {"$lt": 5}}, {"brand": {"$ne": "x"}}):
        parsed = parse_filter(obj)
        assert _search_ids(kb, obj) == {id_ for id_, m in rows.items() if parsed.matches(m)}
    assert _in_step(kb)
    kb.close()


class _Crash(BaseException):
    """The process dying at that moment."""


def test_a_crash_before_the_copy_is_made_is_mended_by_the_journal(
    kb: MultimodalRAG, monkeypatch: pytest.MonkeyPatch
) -> None:
    kb.save()
    store = kb.vector_store
    assert isinstance(store, MilvusVectorStore)

    def crash(items: Any) -> None:
        raise _Crash

    monkeypatch.setattr(store, "set_metadata", crash)
    with pytest.raises(_Crash):
        kb.describe("r1", "d", metadata={"category": "hats"})
    monkeypatch.undo()
    # Until the copy is made again, filters go by the description store.
    assert _search_ids(kb, {"category": "hats"}) == {"r1"}
    assert not _in_step(kb)
    path = kb.path
    kb.close()  # no save: the change is only in the journal
    reopened = MultimodalRAG.open(path, embedder=ColorEmbedder())  # type: ignore[arg-type]
    on_server(reopened.vector_store)
    assert _in_step(reopened)
    assert _search_ids(reopened, {"category": "hats"}) == {"r1"}
    reopened.close()


def test_a_copy_that_failed_is_made_again_by_save(kb: MultimodalRAG, monkeypatch: pytest.MonkeyPatch) -> None:
    from multimodal_rag.errors import BackendConnectionError

    store = kb.vector_store
    assert isinstance(store, MilvusVectorStore)

    def unreachable(items: Any) -> None:
        raise BackendConnectionError("cannot reach Milvus")

    monkeypatch.setattr(store, "set_metadata", unreachable)
    with pytest.raises(BackendConnectionError):
        kb.describe("r2", None, metadata={"category": "hats"})
    monkeypatch.undo()
    assert _search_ids(kb, {"category": "hats"}) == {"r2"}  # by the description store meanwhile
    kb.save()  # folds the journal away, so the copy is made now
    assert _in_step(kb)
    real = store._client
    spy = store._client = _Spy(real)
    try:
        assert _search_ids(kb, {"category": "hats"}) == {"r2"}
    finally:
        store._client = real
    assert spy.calls == ["search"]
    kb.close()


def test_hybrid_search_filters_both_channels(kb: MultimodalRAG) -> None:
    for i in range(len(ROWS)):
        kb.describe(f"r{i}", "a red thing" if i % 2 else "a blue thing")
    obj = {"brand": {"$ne": "acme"}}
    hits = kb.search(text="red thing", k=len(ROWS), filter=obj, mode="hybrid")
    assert hits and {h.id for h in hits} <= _expected(ROWS, obj)
    assert any("lexical" in h.signals for h in hits) and any("vector" in h.signals for h in hits)
    kb.close()


def test_repair_copies_a_differing_copy_again(kb: MultimodalRAG) -> None:
    store = kb.vector_store
    assert isinstance(store, MilvusVectorStore)
    store.set_metadata({"r0": {"category": "wrong"}, "r3": {}})
    report = kb.verify()
    assert sorted(p.id for p in report.of_kind(ProblemKind.METADATA_COPY_DIFFERS)) == ["r0", "r3"]  # type: ignore[type-var]
    repaired = kb.repair()
    assert sorted(repaired.metadata_copied) == ["r0", "r3"] and repaired.remaining.ok
    assert _search_ids(kb, {"category": "shoes"}) == _expected(ROWS, {"category": "shoes"})
    kb.close()


def test_a_collection_made_without_the_field_keeps_the_old_path(uri: str, tmp_path: Path) -> None:
    from pymilvus import DataType, MilvusClient

    dim = ColorEmbedder().dim
    name = f"mrag_old_{tmp_path.name[-12:].replace('-', '_')}"
    client = MilvusClient(uri=uri)
    if client.has_collection(name):
        client.drop_collection(name)
    schema = MilvusClient.create_schema(auto_id=False, enable_dynamic_field=False)
    schema.add_field("id", DataType.VARCHAR, is_primary=True, max_length=65_535)
    schema.add_field("vector", DataType.FLOAT_VECTOR, dim=dim)
    index = client.prepare_index_params()
    index.add_index(field_name="vector", index_type="FLAT", metric_type="IP")
    client.create_collection(name, schema=schema, index_params=index, consistency_level="Strong")
    client.close()
    store = on_server(MilvusVectorStore(dim, uri=uri, collection=name))
    assert isinstance(store, MilvusVectorStore) and not store.filters_metadata
    rag = MultimodalRAG.create(tmp_path / "kb", embedder=ColorEmbedder(), vector_store=store)
    rag.add([_color(i) for i in range(len(ROWS))], ids=[f"r{i}" for i in range(len(ROWS))], metadata=ROWS, progress=False)
    rag.describe("r5", None, metadata={"category": "shoes"})
    rows = [*ROWS[:5], {"category": "shoes"}, *ROWS[6:]]
    real = store._client
    spy = store._client = _Spy(real)
    try:
        for obj in ({"category": "shoes"}, {"price": {"$ne": 10}}):
            assert _search_ids(rag, obj) == _expected(rows, obj)
    finally:
        store._client = real
    assert "search" not in spy.calls or all("metadata" not in f for f in spy.filters)
    assert rag.verify().ok and rag.repair().remaining.ok
    rag.close()


def test_a_migration_to_milvus_copies_the_metadata(uri: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from multimodal_rag.tools import migrate

    source = MultimodalRAG.create(tmp_path / "src", embedder=ColorEmbedder())
    source.add([_color(i) for i in range(len(ROWS))], ids=[f"r{i}" for i in range(len(ROWS))], metadata=ROWS, progress=False)
    source.close()
    monkeypatch.setenv("MILVUS_URI", uri)
    migrate(tmp_path / "src", tmp_path / "dst", vector_store="milvus", embedder=ColorEmbedder())
    with MultimodalRAG.open(tmp_path / "dst", embedder=ColorEmbedder()) as copy:
        on_server(copy.vector_store)
        assert copy.vector_store.filters_metadata and _in_step(copy)
        assert _search_ids(copy, {"on_sale": True}) == _expected(ROWS, {"on_sale": True})


def test_records_keep_their_metadata_unchanged(kb: MultimodalRAG) -> None:
    # The copy is a layout for filters; the records stay as they were given.
    assert kb.get("r9").metadata == ROWS[9] and attrs.evolve(kb.get("r0")).metadata == ROWS[0]
    kb.close()
