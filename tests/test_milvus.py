"""What MilvusVectorStore adds to the contract: schema checks, credentials and errors."""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import numpy as np
import pytest

from conftest import clustered_vectors, on_server, server_uri
from helpers import ColorEmbedder, solid, two_tone
from multimodal_rag import MultimodalRAG
from multimodal_rag.errors import (
    BackendConnectionError,
    BackendError,
    DimensionMismatchError,
    InvalidInputError,
)

pytest.importorskip("pymilvus")
from multimodal_rag.vectors import milvus as milvus_module  # noqa: E402
from multimodal_rag.vectors.milvus import MilvusVectorStore  # noqa: E402

DIM = 16


@pytest.fixture
def uri() -> str:
    return server_uri("MILVUS_URI", "Milvus")


@pytest.fixture
def store(uri: str) -> MilvusVectorStore:
    return on_server(MilvusVectorStore(DIM, uri=uri))  # type: ignore[return-value]


@pytest.fixture
def vectors(rng: np.random.Generator) -> np.ndarray:
    return clustered_vectors(rng, 60, DIM)


def _with_credentials(uri: str, user: str, password: str) -> str:
    parts = urlsplit(uri)
    return parts._replace(netloc=f"{user}:{password}@{parts.netloc}").geturl()


def test_credentials_in_the_uri_are_never_saved(uri: str, tmp_path: Path) -> None:
    store = on_server(MilvusVectorStore(DIM, uri=_with_credentials(uri, "alice", "s3cret-pw")))
    assert store.config()["uri"] == uri
    store.save(tmp_path)
    saved = json.dumps(store.config()) + (tmp_path / "milvus.json").read_text() + repr(store)
    assert "s3cret-pw" not in saved and "alice" not in saved


def test_missing_uri_is_a_clear_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MILVUS_URI", raising=False)
    with pytest.raises(InvalidInputError, match="MILVUS_URI"):
        MilvusVectorStore(DIM)


def test_uri_and_token_come_from_the_environment(uri: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MILVUS_URI", uri)
    monkeypatch.setenv("MILVUS_TOKEN", "root:Milvus")
    store = on_server(MilvusVectorStore(DIM))
    assert store.uri == uri and "Milvus" not in json.dumps(store.config())


def test_refused_connection_names_the_server_without_the_password() -> None:
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with pytest.raises(BackendConnectionError, match=f"127.0.0.1:{port}") as caught:
        MilvusVectorStore(DIM, uri=f"http://bob:hunter22@127.0.0.1:{port}", timeout=3)
    assert "hunter22" not in str(caught.value)
    assert isinstance(caught.value, ConnectionError)


@pytest.fixture
def silent_server() -> Iterator[int]:
    """A port that accepts TCP connections but never speaks, like a hung server."""
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(8)
        yield server.getsockname()[1]


def test_a_server_that_never_answers_times_out(silent_server: int) -> None:
    start = time.monotonic()
    with pytest.raises(BackendConnectionError, match=f"127.0.0.1:{silent_server}"):
        MilvusVectorStore(DIM, uri=f"http://127.0.0.1:{silent_server}", timeout=1)
    assert time.monotonic() - start < 30


def test_reopening_checks_dimension_and_metric(store: MilvusVectorStore, uri: str) -> None:
    with pytest.raises(DimensionMismatchError, match=store.collection):
        MilvusVectorStore(DIM + 1, uri=uri, collection=store.collection)

    from pymilvus import DataType, MilvusClient

    client = MilvusClient(uri=uri)
    l2 = on_server(MilvusVectorStore(DIM, uri=uri))
    l2.drop()
    schema = MilvusClient.create_schema(auto_id=False)
    schema.add_field("id", DataType.VARCHAR, is_primary=True, max_length=100)
    schema.add_field("vector", DataType.FLOAT_VECTOR, dim=DIM)
    index = client.prepare_index_params()
    index.add_index(field_name="vector", index_type="FLAT", metric_type="L2")
    client.create_collection(l2.collection, schema=schema, index_params=index)
    with pytest.raises(BackendError, match="metric L2"):
        MilvusVectorStore(DIM, uri=uri, collection=l2.collection)


def test_load_of_a_dropped_collection_fails_clearly(
    store: MilvusVectorStore, uri: str, tmp_path: Path
) -> None:
    store.save(tmp_path)
    config = json.loads(json.dumps(store.config()))
    other = on_server(MilvusVectorStore(DIM, uri=uri))
    other.drop()
    config["collection"] = other.collection
    with pytest.raises(BackendError, match="has no collection"):
        MilvusVectorStore.load(tmp_path, dim=DIM, **config)


def test_bad_collection_names_are_refused(uri: str) -> None:
    for bad in ["has space", "1starts_with_digit", "semi;colon", "x" * 64]:
        with pytest.raises(InvalidInputError, match="collection"):
            MilvusVectorStore(DIM, uri=uri, collection=bad)


def test_large_adds_are_split_into_requests_under_the_size_limit(
    uri: str, vectors: np.ndarray
) -> None:
    store = on_server(MilvusVectorStore(DIM, uri=uri, max_batch_bytes=1000))
    sizes: list[int] = []
    real_upsert = store._client.upsert

    def counting_upsert(collection: str, rows: list[dict], **kwargs: object) -> object:
        sizes.append(len(rows))
        return real_upsert(collection, rows, **kwargs)

    store._client.upsert = counting_upsert  # type: ignore[method-assign]
    ids = [f"v{i}" for i in range(len(vectors))]
    store.add(ids, vectors)
    row_bytes = 4 * DIM + 64 + 3
    assert len(sizes) > 1 and sum(sizes) == len(vectors)
    assert max(sizes) * row_bytes <= 1000
    assert sorted(store.ids()) == sorted(ids)


def test_ids_are_listed_past_one_page(
    store: MilvusVectorStore, vectors: np.ndarray, monkeypatch
) -> None:
    monkeypatch.setattr(milvus_module, "_MAX_TOPK", 7)
    ids = [f'id-{i:03d}-{"🦜" if i % 3 else "x"}"q' for i in range(len(vectors))]
    store.add(ids, vectors)
    assert sorted(store.ids()) == sorted(ids) and len(store) == len(ids)


def test_ids_with_quotes_and_backslashes_round_trip(
    store: MilvusVectorStore, vectors: np.ndarray
) -> None:
    ids = ['say "hi"', "it's", "back\\slash", 'id in ["x"] or id != "', "new\nline"]
    store.add(ids, vectors[: len(ids)])
    np.testing.assert_allclose(store.get_vectors(ids[::-1]), vectors[: len(ids)][::-1], atol=1e-5)
    assert all(i in store for i in ids) and 'say "hi' not in store
    assert store.remove([ids[0], ids[3], "absent"]) == 2
    assert sorted(store.ids()) == sorted([ids[1], ids[2], ids[4]])


def test_a_set_filter_is_pushed_down_to_the_server(
    store: MilvusVectorStore, vectors: np.ndarray
) -> None:
    ids = [f"img-{i}" for i in range(len(vectors))]
    store.add(ids, vectors)
    wanted = {ids[5], ids[17], 'never "added"'}
    expressions: list[str] = []
    real_search = store._client.search

    def recording_search(*args: object, **kwargs: object) -> object:
        expressions.append(str(kwargs.get("filter")))
        return real_search(*args, **kwargs)

    store._client.search = recording_search  # type: ignore[method-assign]
    result = store.search(vectors[:1], 10, filter=wanted.__contains__)[0]
    assert {n.id for n in result} == {ids[5], ids[17]}
    assert len(expressions) == 1 and "img-17" in expressions[0]
    # A predicate that is not a set's membership test is applied to an over-fetched result.
    result = store.search(vectors[:1], 3, filter=lambda i: i.endswith("7"))[0]
    assert len(result) == 3 and all(n.id.endswith("7") for n in result)
    assert store.search(vectors[:1], 3, filter=set().__contains__) == [[]]


def test_ivf_index_type_and_params_are_used(uri: str, vectors: np.ndarray) -> None:
    store = on_server(
        MilvusVectorStore(
            DIM,
            uri=uri,
            index_type="IVF_FLAT",
            index_params={"nlist": 4},
            search_params={"nprobe": 4},
        )
    )
    store.add([f"v{i}" for i in range(len(vectors))], vectors)
    assert store.search(vectors[3:4], 1)[0][0].id == "v3"
    index = store._client.describe_index(store.collection, "vector")
    assert index["index_type"] == "IVF_FLAT"
    assert store.config()["index_params"] == {"nlist": 4}


def test_knowledge_base_reopens_through_its_manifest(uri: str, tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("MILVUS_URI", uri)
    rag = MultimodalRAG.create(tmp_path / "kb", embedder=ColorEmbedder(), vector_store="milvus")
    on_server(rag.vector_store)
    ids = rag.add(
        [solid("red"), solid("green"), solid("blue")], descriptions=["r", "g", "b"], progress=False
    )
    before = rag.search(image=two_tone("red", "green"), k=2)
    rag.save()
    rag.close()
    monkeypatch.delenv("MILVUS_URI")  # the manifest alone says where the vectors are
    manifest = json.loads((tmp_path / "kb" / "manifest.json").read_text())
    assert manifest["vector_store"]["kind"] == "milvus"
    assert manifest["vector_store"]["config"]["collection"] == rag.vector_store.collection
    with MultimodalRAG.open(tmp_path / "kb", embedder=ColorEmbedder()) as reopened:
        assert isinstance(reopened.vector_store, MilvusVectorStore)
        assert reopened.search(image=two_tone("red", "green"), k=2) == before
        assert sorted(reopened.ids()) == sorted(ids)


def test_a_filter_milvus_cannot_express_reaches_the_server_as_the_ids_it_matches(
    uri: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A control character in a string has no expression every Milvus reads alike: the
    # description store finds the matching ids in one query instead. A filter too broad to
    # compare with each allowed vector sends them as one expression.
    from multimodal_rag import _query as query

    monkeypatch.setenv("MILVUS_URI", uri)
    rag = MultimodalRAG.create(tmp_path / "kb", embedder=ColorEmbedder(), vector_store="milvus")
    on_server(rag.vector_store)
    prices = [{"price": 10}, {"price": 50}, {"price": 5}, {"price": "10"}]
    ids = rag.add([solid(c) for c in ("red", "green", "blue", "yellow")], metadata=prices, progress=False)
    expressions: list[str] = []
    real_search = rag.vector_store._client.search

    def recording_search(*args: object, **kwargs: object) -> object:
        expressions.append(str(kwargs.get("filter")))
        return real_search(*args, **kwargs)

    rag.vector_store._client.search = recording_search
    awkward = {"price": {"$lt": 20}, "note": {"$ne": "\x01"}}
    selective = rag.search(image=solid("red"), k=3, filter=awkward)
    assert {h.id for h in selective} == {ids[0], ids[2]}
    monkeypatch.setattr(query, "SUBSET_SEARCH", 0)
    monkeypatch.setattr(query, "SUBSET_SHARE", 0.0)
    broad = rag.search(image=solid("red"), k=3, filter=awkward)
    assert [h.id for h in broad] == [h.id for h in selective]
    assert len(expressions) == 1 and ids[0] in expressions[0] and ids[1] not in expressions[0]
    rag.close()
