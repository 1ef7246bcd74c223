"""What PostgresDescriptionStore adds to the contract: SQL safety, credentials, errors, sharing."""

from __future__ import annotations

import json
import socket
from pathlib import Path

import pytest

from conftest import on_server, server_uri
from helpers import ColorEmbedder, solid, two_tone
from multimodal_rag import MultimodalRAG
from multimodal_rag.errors import BackendConnectionError, BackendError, InvalidInputError
from multimodal_rag.types import Record

pytest.importorskip("psycopg")
pytest.importorskip("psycopg_pool")
from multimodal_rag.descriptions import postgres as postgres_module  # noqa: E402
from multimodal_rag.descriptions.postgres import PostgresDescriptionStore  # noqa: E402


@pytest.fixture
def dsn() -> str:
    return server_uri("DATABASE_URL", "PostgreSQL")


@pytest.fixture
def store(dsn: str) -> PostgresDescriptionStore:
    return on_server(PostgresDescriptionStore(dsn))  # type: ignore[return-value]


def _password(dsn: str) -> str:
    from psycopg.conninfo import conninfo_to_dict

    password = conninfo_to_dict(dsn).get("password")
    if not password:
        pytest.skip("$DATABASE_URL has no password to keep out of the manifest")
    return str(password)


def test_hostile_ids_and_texts_round_trip_and_leave_the_table_intact(
    store: PostgresDescriptionStore,
) -> None:
    records = [
        Record(id="x'); DROP TABLE users; --", description="'; DELETE FROM records WHERE '1'='1"),
        Record(id='"quoted" ; SELECT * FROM pg_user', image_path="C:\\path\\with 'quotes'.png"),
        Record(
            id="UNION SELECT NULL--", description="%s %(name)s {table}", metadata={"k'ey": 'v"al;'}
        ),
    ]
    store.put(records)
    for record in records:
        assert store.get(record.id) == record
    assert store.get_many([r.id for r in records]) == {r.id: r for r in records}
    assert len(store) == 3
    assert store.delete([records[0].id]) == 1 and len(store) == 2


def test_hostile_table_names_are_refused(dsn: str) -> None:
    for bad in ['records"; DROP TABLE x; --', "has space", "1abc", "a" * 64]:
        with pytest.raises(InvalidInputError, match="table"):
            PostgresDescriptionStore(dsn, table=bad)


def test_the_password_is_never_saved(dsn: str, tmp_path: Path) -> None:
    password = _password(dsn)
    store = on_server(PostgresDescriptionStore(dsn))
    store.save(tmp_path)
    saved = json.dumps(store.config()) + (tmp_path / "postgres.json").read_text() + repr(store)
    assert password not in saved
    assert store.table in saved


def test_load_takes_the_password_from_the_environment(
    dsn: str, tmp_path: Path, monkeypatch
) -> None:
    _password(dsn)
    store = on_server(PostgresDescriptionStore(dsn))
    store.put([Record(id="a", description="kept")])
    store.save(tmp_path)
    config = json.loads(json.dumps(store.config()))
    monkeypatch.setenv("DATABASE_URL", dsn)
    assert PostgresDescriptionStore.load(tmp_path, **config).get("a").description == "kept"
    monkeypatch.delenv("DATABASE_URL")
    monkeypatch.delenv("PGPASSWORD", raising=False)
    with pytest.raises(BackendConnectionError, match="credentials|password"):
        PostgresDescriptionStore.load(tmp_path, **{**config, "timeout": 5})


def test_a_wrong_password_is_reported_without_it(dsn: str) -> None:
    from psycopg.conninfo import conninfo_to_dict, make_conninfo

    _password(dsn)
    params = conninfo_to_dict(dsn)
    params["password"] = "wrong-secret-123"
    with pytest.raises(BackendConnectionError, match="refused the credentials") as caught:
        PostgresDescriptionStore(make_conninfo(**params), timeout=5)
    assert "wrong-secret-123" not in str(caught.value)
    assert str(params["host"]) in str(caught.value)


def test_a_refused_connection_names_the_server() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with pytest.raises(BackendConnectionError, match=f"127.0.0.1:{port}") as caught:
        PostgresDescriptionStore(f"postgresql://u:topsecret@127.0.0.1:{port}/db", timeout=3)
    assert "topsecret" not in str(caught.value) and isinstance(caught.value, ConnectionError)


def test_missing_dsn_is_a_clear_error(monkeypatch) -> None:
    monkeypatch.delenv("DATABASE_URL", raising=False)
    with pytest.raises(InvalidInputError, match="DATABASE_URL"):
        PostgresDescriptionStore()


def test_load_of_a_dropped_table_fails_clearly(
    store: PostgresDescriptionStore, tmp_path: Path
) -> None:
    config = json.loads(json.dumps(store.config()))
    store.drop()
    with pytest.raises(BackendError, match="has no table"):
        PostgresDescriptionStore.load(tmp_path, password=_password_or_none(), **config)


def _password_or_none() -> str | None:
    from psycopg.conninfo import conninfo_to_dict

    return conninfo_to_dict(server_uri("DATABASE_URL", "PostgreSQL")).get("password")


def test_nul_characters_round_trip_and_plain_values_are_stored_as_they_are(
    store: PostgresDescriptionStore,
) -> None:
    from psycopg import sql

    records = [
        Record(id="a-nul", description="nul\x00", metadata={"tags": ["ok", "x\x00"], "n": 1.0}),
        Record(id="\uffffstarts with the mark", image_path="C:\\images\\0.png"),
        Record(id="plain", description="A red card.", metadata={"b": 2, "a": 1}),
    ]
    store.put(records)
    assert [store.get(r.id) for r in records] == records
    assert list(store.get("plain").metadata) == ["b", "a"]  # key order kept
    assert isinstance(store.get("a-nul").metadata["n"], float)
    assert store.delete(["a-nul"]) == 1 and "a-nul" not in store
    query = sql.SQL("SELECT description, metadata->>'a' FROM {} WHERE id = 'plain'")
    with store._connection("test") as conn:  # readable by any SQL client
        assert conn.execute(query.format(sql.Identifier(store.table))).fetchone() == (
            "A red card.",
            "1",
        )


def test_batch_put_and_paged_iteration(store: PostgresDescriptionStore, monkeypatch) -> None:
    monkeypatch.setattr(postgres_module, "_PAGE", 7)
    records = [
        Record(id=f"id-{i:05d}", description=f"text {i}", metadata={"i": i}) for i in range(2500)
    ]
    store.put(records)
    assert len(store) == 2500
    assert sorted(r.id for r in store) == [r.id for r in records]
    assert store.get("id-01234").metadata == {"i": 1234}


def test_replacing_keeps_created_at_and_moves_updated_at(store: PostgresDescriptionStore) -> None:
    from psycopg import sql

    store.put([Record(id="a", description="one")])
    query = sql.SQL("SELECT created_at, updated_at FROM {} WHERE id = 'a'").format(
        sql.Identifier(store.table)
    )
    with store._connection("test") as conn:
        created, updated = conn.execute(query).fetchone()
    store.put([Record(id="a", description="two")])
    with store._connection("test") as conn:
        created2, updated2 = conn.execute(query).fetchone()
    assert created2 == created and updated2 > updated


def test_two_stores_on_one_table_see_each_others_writes(
    store: PostgresDescriptionStore, dsn: str
) -> None:
    other = PostgresDescriptionStore(dsn, table=store.table, create=False)
    try:
        store.put([Record(id="a", description="from one")])
        assert other.get("a").description == "from one"
        other.delete(["a"])
        assert "a" not in store
    finally:
        other.close()


def test_knowledge_base_on_milvus_and_postgres_reopens(
    dsn: str, tmp_path: Path, monkeypatch
) -> None:
    monkeypatch.setenv("MILVUS_URI", server_uri("MILVUS_URI", "Milvus"))
    monkeypatch.setenv("DATABASE_URL", dsn)
    rag = MultimodalRAG.create(
        tmp_path / "kb",
        embedder=ColorEmbedder(),
        vector_store="milvus",
        description_store="postgres",
    )
    on_server(rag.vector_store), on_server(rag.description_store)
    rag.add([solid("red"), solid("blue")], descriptions=["a red one", "a blue one"], progress=False)
    before = rag.search(image=two_tone("red", "green"), k=2)
    rag.save()
    rag.close()
    manifest = (tmp_path / "kb" / "manifest.json").read_text()
    assert "postgres" in manifest and rag.description_store.table in manifest
    with MultimodalRAG.open(tmp_path / "kb", embedder=ColorEmbedder()) as reopened:
        assert isinstance(reopened.description_store, PostgresDescriptionStore)
        assert reopened.search(image=two_tone("red", "green"), k=2) == before
        assert before[0].description == "a red one"


def test_a_server_only_the_manifest_names_gets_the_password_once_allowed(
    dsn: str, tmp_path: Path, monkeypatch
) -> None:
    from psycopg.conninfo import conninfo_to_dict

    password = _password(dsn)
    params = conninfo_to_dict(dsn)
    monkeypatch.setenv("DATABASE_URL", dsn)
    with MultimodalRAG.create(
        tmp_path / "kb", embedder=ColorEmbedder(), description_store="postgres"
    ) as rag:
        on_server(rag.description_store)
        rag.add([solid("red")], descriptions=["a red one"], progress=False)
    # The knowledge base travels; its new owner keeps the password in $PGPASSWORD.
    monkeypatch.delenv("DATABASE_URL")
    monkeypatch.setenv("PGPASSWORD", password)
    with pytest.raises(BackendConnectionError, match="allow_endpoints"):
        MultimodalRAG.open(tmp_path / "kb", embedder=ColorEmbedder(), read_only=True)
    server = f"postgresql://{params['host']}:{params.get('port', 5432)}"
    with MultimodalRAG.open(
        tmp_path / "kb", embedder=ColorEmbedder(), read_only=True, allow_endpoints=[server]
    ) as reopened:
        assert reopened.search(image=solid("red"), k=1)[0].description == "a red one"


def test_a_table_indexed_before_normalisation_is_reindexed_on_open(dsn: str) -> None:
    import psycopg

    old = on_server(PostgresDescriptionStore(dsn))
    typed = "کتاب آشپزی ایرانی با عکس\u200cهای ۲۰۰۰ رنگی"
    old.put([Record(id="book", description=typed), Record(id="lamp", description="an old lamp")])
    table = old.table  # type: ignore[attr-defined]
    # The table as the version before the normalisation made it: the raw text in the tsvector,
    # no search_text, and a comment naming the settings without a normalisation.
    settings = json.dumps({"text_fields": ["description"], "text_search_config": "simple", "ocr": True})
    with psycopg.connect(dsn) as conn:
        conn.execute(f'ALTER TABLE "{table}" DROP COLUMN search_text CASCADE')
        conn.execute(
            f'ALTER TABLE "{table}" ADD COLUMN search_vector tsvector GENERATED ALWAYS AS '
            "(to_tsvector('simple'::regconfig, coalesce(description, '') || ' ' || coalesce(ocr_text, ''))) STORED"
        )
        conn.execute(f'CREATE INDEX ON "{table}" USING gin (search_vector)')
        conn.execute(f"""COMMENT ON COLUMN "{table}".search_vector IS '{settings}'""")
    store = PostgresDescriptionStore(dsn, table=table, create=False)  # opening it re-indexes it
    for query, expected in (("كتاب", "book"), ("2000", "book"), ("عکسهای", "book"), ("lamp", "lamp")):
        assert [id_ for id_, _ in store.search_text(query, 1)] == [expected], query
    assert store.get("book").description == typed
    store.close()


def test_rows_another_client_writes_without_search_text_are_indexed_from_their_text(
    dsn: str, store: PostgresDescriptionStore
) -> None:
    import psycopg

    store.put([Record(id="ours", description="کتاب آشپزی")])
    with psycopg.connect(dsn) as conn:
        conn.execute(f'INSERT INTO "{store.table}" (id, description) VALUES (%s, %s)', ("theirs", "lamp for the garden"))
    assert [id_ for id_, _ in store.search_text("lamp", 5)] == ["theirs"]
    assert [id_ for id_, _ in store.search_text("كتاب", 5)] == ["ours"]
