"""``multimodal-rag migrate``: moving a knowledge base between stores from the command line."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import pytest

from conftest import server_uri
from helpers import solid
from test_cli import COLOR, ok, run_cli


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, None]:
    """A knowledge base of five colour cards, one without a description, indexed by the CLI."""
    photos = tmp_path_factory.mktemp("photos")
    lines = []
    for i, name in enumerate(("red", "green", "blue", "yellow", "white")):
        solid(name, (40 + 8 * i, 30)).save(photos / f"{name}.png")
        if name != "white":
            lines.append(
                json.dumps({"image_path": f"{name}.png", "description": f"A {name} card."})
            )
    (photos / "descriptions.jsonl").write_text("\n".join(lines) + "\n")
    kb = tmp_path_factory.mktemp("kbs") / "kb"
    ok(
        run_cli(
            *COLOR,
            "index",
            photos,
            "--kb",
            kb,
            "--descriptions",
            photos / "descriptions.jsonl",
            "--embedder",
            "helpers:ColorEmbedder",
        )
    )
    return kb, None


def test_migrate_to_other_stores_and_search_the_copy(
    built: tuple[Path, dict], tmp_path: Path
) -> None:
    kb, _ = built
    target = tmp_path / "copy"
    report = json.loads(
        ok(
            run_cli(
                *COLOR,
                "migrate",
                kb,
                target,
                "--vector-store",
                "hnswlib",
                "--description-store",
                "jsonl",
                "--json",
            )
        ).stdout
    )
    assert report["vectors"] == 5 and report["descriptions"] == 5 and report["overlap"] == 1.0
    info = json.loads(ok(run_cli(*COLOR, "info", target, "--json")).stdout)
    assert json.dumps(info).count("hnswlib") >= 1
    hits = json.loads(ok(run_cli(*COLOR, "search", target, "--text", "red", "--json")).stdout)
    original = json.loads(ok(run_cli(*COLOR, "search", kb, "--text", "red", "--json")).stdout)
    assert [h["id"] for h in hits["hits"]] == [h["id"] for h in original["hits"]]


def test_migrate_to_milvus_and_postgres_with_options(
    built: tuple[Path, dict], tmp_path: Path
) -> None:
    kb, _ = built
    milvus, database = server_uri("MILVUS_URI", "Milvus"), server_uri("DATABASE_URL", "PostgreSQL")
    target = tmp_path / "served"
    name = f"cli_{uuid.uuid4().hex[:12]}"
    result = ok(
        run_cli(
            *COLOR,
            "migrate",
            kb,
            target,
            "--vector-store",
            "milvus",
            "--vector-option",
            f"uri={milvus}",
            "--vector-option",
            f"collection={name}",
            "--vector-option",
            'index_params={"M": 8, "efConstruction": 64}',
            "--description-store",
            "postgres",
            "--description-option",
            f"table={name}",
            env={"DATABASE_URL": database},
        )
    )
    assert "Copied 5 vectors, 5 descriptions" in result.stdout and "agree on 100%" in result.stdout
    manifest = json.loads((target / "manifest.json").read_text())
    assert manifest["vector_store"]["config"]["collection"] == name
    assert manifest["vector_store"]["config"]["index_params"] == {"M": 8, "efConstruction": 64}
    assert manifest["description_store"]["config"]["table"] == name
    from multimodal_rag.descriptions.postgres import PostgresDescriptionStore
    from multimodal_rag.vectors.milvus import MilvusVectorStore

    for store in (
        MilvusVectorStore(48, uri=milvus, collection=name, create=False),
        PostgresDescriptionStore(database, table=name, create=False),
    ):
        store.drop()
        store.close()


def test_a_bad_option_is_a_usage_error(built: tuple[Path, dict], tmp_path: Path) -> None:
    result = run_cli(*COLOR, "migrate", built[0], tmp_path / "x", "--vector-option", "no-equals")
    assert result.returncode == 2 and "KEY=VALUE" in result.stderr
