"""Folders in a bucket: indexing, descriptions files and sync against a real S3 server on loopback.

The server is moto's server mode (`s3_server`): the one CI starts, or one started here. The
library talks to it through s3fs exactly as to S3, with credentials from the environment.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from helpers import ColorEmbedder, encoded, solid, two_tone
from s3_server import ENDPOINT_ENV, start_server
from test_cli import COLOR, ok, run_cli

pytest.importorskip("s3fs")
pytest.importorskip("moto")

from multimodal_rag import MultimodalRAG  # noqa: E402
from multimodal_rag._ingest.sources import Source  # noqa: E402
from multimodal_rag.errors import ImageError, InvalidInputError, MissingDependencyError  # noqa: E402

#: The secret access key the tests use: it must appear in no message, record or manifest.
SECRET = "wJalrXUtnFEMI-test-secret-K7MDENG"

#: Twelve different pictures, so a page of 5 keys leaves three pages.
PHOTOS = {
    **{
        f"solid/{name}.png": solid(name, (30 + i, 24))
        for i, name in enumerate(("red", "green", "blue", "yellow", "cyan", "magenta"))
    },
    **{
        f"pairs/{a}-{b}.png": two_tone(a, b)
        for a, b in (
            ("red", "blue"),
            ("green", "white"),
            ("black", "yellow"),
            ("cyan", "red"),
            ("white", "magenta"),
            ("blue", "black"),
        )
    },
}


@pytest.fixture(scope="session")
def s3_endpoint() -> Iterator[str]:
    endpoint = os.environ.get(ENDPOINT_ENV)
    if endpoint:
        yield endpoint
        return
    with start_server() as url:
        yield url


def _credentials(monkeypatch: pytest.MonkeyPatch, endpoint: str) -> None:
    import s3fs

    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET)
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("AWS_ENDPOINT_URL", endpoint)
    for name in (
        "AWS_PROFILE",
        "AWS_SESSION_TOKEN",
        "AWS_CONFIG_FILE",
        "AWS_SHARED_CREDENTIALS_FILE",
    ):
        monkeypatch.delenv(name, raising=False)
    # A filesystem made with other credentials must not be reused.
    s3fs.S3FileSystem.clear_instance_cache()


@pytest.fixture
def bucket(
    s3_endpoint: str, monkeypatch: pytest.MonkeyPatch, request: pytest.FixtureRequest
) -> Iterator[tuple[str, Any]]:
    """A fresh bucket holding `PHOTOS` under ``photos/``; its name and a boto3 client."""
    import boto3

    _credentials(monkeypatch, s3_endpoint)
    name = "b-" + request.node.name.lower().replace("_", "-")[:50]
    client = boto3.client("s3", endpoint_url=s3_endpoint)
    client.create_bucket(Bucket=name)
    for key, picture in PHOTOS.items():
        client.put_object(Bucket=name, Key=f"photos/{key}", Body=encoded(picture))
    client.put_object(Bucket=name, Key="photos/notes.txt", Body=b"not an image")
    yield name, client
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=name):
        for obj in page.get("Contents", []):
            client.delete_object(Bucket=name, Key=obj["Key"])
    client.delete_bucket(Bucket=name)


@pytest.fixture
def local_photos(tmp_path: Path) -> Path:
    root = tmp_path / "photos"
    for key, picture in PHOTOS.items():
        (root / key).parent.mkdir(parents=True, exist_ok=True)
        (root / key).write_bytes(encoded(picture))
    return root


def test_a_bucket_is_listed_page_by_page_as_it_is_read(
    bucket: tuple[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    import s3fs

    name, _ = bucket
    requests: list[dict[str, Any]] = []
    original = s3fs.S3FileSystem._call_s3

    async def counting(self: Any, method: str, *args: Any, **kwargs: Any) -> Any:
        if method == "list_objects_v2":
            requests.append(kwargs)
        return await original(self, method, *args, **kwargs)

    monkeypatch.setattr(s3fs.S3FileSystem, "_call_s3", counting)
    files = Source(f"s3://{name}/photos", page_size=5).files()
    first = next(files)
    assert len(requests) == 1  # streamed: one page asked for the first file
    rest = list(files)
    assert len(requests) == 3 and all(r["MaxKeys"] == 5 for r in requests)  # 13 keys, 5 a page
    listed = [first.location, *(file.location for file in rest)]
    assert sorted(listed) == sorted(
        f"s3://{name}/photos/{key}" for key in PHOTOS
    )  # notes.txt left out
    assert all(file.version and file.size for file in [first, *rest])


def test_a_bucket_indexes_to_the_same_records_as_the_same_photos_on_disk(
    bucket: tuple[str, Any], local_photos: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    name, _ = bucket
    # A listing is ingested a chunk at a time: 5 here, so 12 photos take three runs.
    monkeypatch.setattr("multimodal_rag._facade.ingesting.CHUNK", 5)
    with MultimodalRAG.create(tmp_path / "local", embedder=ColorEmbedder()) as local:
        local.add_directory(local_photos)
        local_ids = sorted(local.ids())
    with MultimodalRAG.create(tmp_path / "remote", embedder=ColorEmbedder()) as rag:
        result = rag.add_directory(f"s3://{name}/photos")
        assert sorted(rag.ids()) == local_ids and len(result.added) == len(PHOTOS)
        red = rag.search(text="red", k=1)[0]
        assert red.image_path == f"s3://{name}/photos/solid/red.png"
        # Seen on disk too, a photo is the same record: a duplicate, nothing stored twice.
        again = rag.add_directory(local_photos)
        assert len(again.duplicates) == len(PHOTOS) and not again.added
        assert rag.verify().ok


def test_a_descriptions_file_in_the_bucket_describes_its_photos(
    bucket: tuple[str, Any], tmp_path: Path
) -> None:
    name, client = bucket
    lines = [{"image_path": "solid/red.png", "description": "a red square", "sku": "R-1"}]
    client.put_object(
        Bucket=name,
        Key="photos/descriptions.jsonl",
        Body="\n".join(map(json.dumps, lines)).encode(),
    )
    with MultimodalRAG.create(tmp_path / "kb", embedder=ColorEmbedder()) as rag:
        rag.add_directory(
            f"s3://{name}/photos", descriptions=f"s3://{name}/photos/descriptions.jsonl"
        )
        hit = rag.search(text="red", k=1)[0]
        assert hit.description == "a red square" and hit.metadata["sku"] == "R-1"


def test_a_missing_bucket_or_key_is_a_clear_error(bucket: tuple[str, Any], tmp_path: Path) -> None:
    name, _ = bucket
    with MultimodalRAG.create(tmp_path / "kb", embedder=ColorEmbedder()) as rag:
        with pytest.raises(
            InvalidInputError, match=r"cannot list 's3://no-such-bucket-here/photos': not found"
        ):
            rag.add_directory("s3://no-such-bucket-here/photos")
        with pytest.raises(
            ImageError, match=rf"cannot read 's3://{name}/photos/none.png': not found"
        ):
            rag.add(f"s3://{name}/photos/none.png")
        with pytest.raises(InvalidInputError, match="descriptions file: cannot read .*: not found"):
            rag.add_directory(f"s3://{name}/photos", descriptions=f"s3://{name}/nothing.jsonl")
        assert len(rag) == 0
    result = run_cli(
        *COLOR,
        "index",
        "s3://no-such-bucket-here/photos",
        "--kb",
        tmp_path / "cli",
        "--embedder",
        "helpers:ColorEmbedder",
    )
    assert result.returncode != 0 and "Traceback" not in result.stderr
    assert "cannot list 's3://no-such-bucket-here/photos': not found" in result.stderr
    assert not (tmp_path / "cli").exists()


def test_an_unreadable_object_is_skipped_and_reported(
    bucket: tuple[str, Any], tmp_path: Path
) -> None:
    name, client = bucket
    client.put_object(Bucket=name, Key="photos/broken.png", Body=b"not a png")
    with MultimodalRAG.create(tmp_path / "kb", embedder=ColorEmbedder()) as rag:
        result = rag.add_directory(f"s3://{name}/photos")
    assert len(result.added) == len(PHOTOS)
    assert [(s.source, s.reason) for s in result.skipped] == [
        (
            f"s3://{name}/photos/broken.png",
            f"cannot read image 's3://{name}/photos/broken.png': not a known image format",
        )
    ]


@pytest.mark.slow
def test_wrong_credentials_are_refused_without_a_traceback_or_the_secret(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    with start_server(authenticated=True) as endpoint:
        _credentials(monkeypatch, endpoint)
        with pytest.raises(InvalidInputError) as caught:
            list(Source("s3://photos/cat").files())
        message = str(caught.value)
        assert (
            "access denied" in message and "AWS_ACCESS_KEY_ID" in message and SECRET not in message
        )
        result = run_cli(
            *COLOR,
            "index",
            "s3://photos/cat",
            "--kb",
            tmp_path / "kb",
            "--embedder",
            "helpers:ColorEmbedder",
        )
    assert result.returncode != 0
    assert "access denied" in result.stderr and "Traceback" not in result.stderr
    assert SECRET not in result.stdout + result.stderr
    assert not (tmp_path / "kb").exists()


@pytest.mark.slow
def test_sync_adds_replaces_and_removes_and_a_dry_run_changes_nothing(
    bucket: tuple[str, Any], tmp_path: Path
) -> None:
    name, client = bucket
    kb = tmp_path / "kb"
    lines = [{"image_path": "solid/red.png", "description": "a red square"}]
    client.put_object(Bucket=name, Key="descriptions.jsonl", Body=json.dumps(lines[0]).encode())
    source = f"s3://{name}/photos"
    first = ok(
        run_cli(
            *COLOR,
            "index",
            source,
            "--kb",
            kb,
            "--sync",
            "--descriptions",
            f"s3://{name}/descriptions.jsonl",
            "--embedder",
            "helpers:ColorEmbedder",
            "--page-size",
            "4",
            "--json",
        )
    )
    assert len(json.loads(first.stdout)["new"]) == len(PHOTOS)
    # One photo changes (same key, new bytes), one vanishes, one is new.
    client.put_object(Bucket=name, Key="photos/solid/red.png", Body=encoded(solid("red", (64, 64))))
    client.delete_object(Bucket=name, Key="photos/solid/blue.png")
    client.put_object(
        Bucket=name, Key="photos/new/white.png", Body=encoded(solid("white", (20, 20)))
    )
    before = {
        path.name: path.read_bytes()
        for path in kb.iterdir()
        if path.is_file() and path.name != ".lock"
    }

    plan = ok(
        run_cli(*COLOR, "index", source, "--kb", kb, "--sync", "--dry-run", "--page-size", "4")
    )
    assert "dry run, nothing changed" in plan.stdout
    for line in (
        "new:         1",
        "changed:     1",
        "removed:     1",
        f"unchanged:   {len(PHOTOS) - 2}",
    ):
        assert line in plan.stdout
    assert f"s3://{name}/photos/solid/red.png" in plan.stdout
    assert {
        path.name: path.read_bytes()
        for path in kb.iterdir()
        if path.is_file() and path.name != ".lock"
    } == before

    done = ok(run_cli(*COLOR, "index", source, "--kb", kb, "--sync", "--page-size", "4"))
    for line in (
        "new:         1",
        "changed:     1",
        "removed:     1",
        f"unchanged:   {len(PHOTOS) - 2}",
    ):
        assert line in done.stdout
    with MultimodalRAG.open(kb, allow_modules=["helpers"], read_only=True) as rag:
        records = {record.image_path: record for record in rag.get_many(rag.ids()).values()}
        assert set(records) == {
            f"s3://{name}/photos/{key}" for key in PHOTOS if key != "solid/blue.png"
        } | {f"s3://{name}/photos/new/white.png"}
        red = records[f"s3://{name}/photos/solid/red.png"]
        assert red.description == "a red square"  # kept from the record it replaced
        assert len(rag) == len(PHOTOS)
    again = ok(run_cli(*COLOR, "index", source, "--kb", kb, "--sync", "--dry-run"))
    assert (
        "new:         0" in again.stdout
        and "changed:     0" in again.stdout
        and "removed:     0" in again.stdout
    )
    assert SECRET not in (kb / "manifest.json").read_text()


def test_a_sync_stopped_before_its_removals_finishes_when_run_again(
    bucket: tuple[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from multimodal_rag._facade.records import Records

    name, client = bucket
    source = f"s3://{name}/photos"
    with MultimodalRAG.create(tmp_path / "kb", embedder=ColorEmbedder()) as rag:
        rag.sync(source)
        red_id = next(
            r.id for r in rag.get_many(rag.ids()).values() if r.image_path.endswith("solid/red.png")
        )
        rag.describe(red_id, "a red square")
    client.put_object(Bucket=name, Key="photos/solid/red.png", Body=encoded(solid("red", (64, 64))))
    client.delete_object(Bucket=name, Key="photos/solid/green.png")

    def stopped(self: Records, ids: object) -> int:
        raise KeyboardInterrupt  # as a kill would, between the ingest and the removals

    with MultimodalRAG.open(tmp_path / "kb", embedder=ColorEmbedder()) as rag:
        with monkeypatch.context() as patch:
            patch.setattr(Records, "remove", stopped)
            with pytest.raises(KeyboardInterrupt):
                rag.sync(source)
        assert len(rag) == len(PHOTOS) + 1  # the new red is in, the old red and green not yet out
    with MultimodalRAG.open(tmp_path / "kb", embedder=ColorEmbedder()) as rag:
        plan = rag.sync(source, dry_run=True)
        assert plan.removed == (f"{source}/solid/green.png",) and not plan.new and not plan.changed
        rag.sync(source)
        records = list(rag.get_many(rag.ids()).values())
        assert len(records) == len(PHOTOS) - 1 and rag.verify().ok
        assert [r.description for r in records if r.image_path.endswith("solid/red.png")] == [
            "a red square"
        ]


@pytest.mark.parametrize(
    ("url", "extra"),
    [
        ("s3://bucket/photos", "s3"),
        ("gs://bucket/photos", "gcs"),
        ("az://container/photos", "azure"),
    ],
)
def test_a_scheme_without_its_package_names_the_extra(
    url: str, extra: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    module = {"s3": "s3fs", "gcs": "gcsfs", "azure": "adlfs"}[extra]
    monkeypatch.setitem(sys.modules, module, None)  # as if it were not installed
    with pytest.raises(MissingDependencyError, match=rf"pip install 'multimodal-rag\[{extra}\]'"):
        Source(url)


def test_credentials_in_a_url_appear_in_no_error_or_record(tmp_path: Path) -> None:
    from multimodal_rag._storage import redact

    url = f"https://user:{SECRET}@127.0.0.1:9/d.jsonl?X-Amz-Signature={SECRET}&v=1"
    assert SECRET not in redact(url) and "v=1" in redact(url)
    with MultimodalRAG.create(tmp_path / "kb", embedder=ColorEmbedder()) as rag:
        (tmp_path / "photos").mkdir()
        (tmp_path / "photos" / "red.png").write_bytes(encoded(solid("red")))
        with pytest.raises(InvalidInputError) as caught:
            rag.add_directory(tmp_path / "photos", descriptions=url)
        assert SECRET not in str(caught.value) and "127.0.0.1:9" in str(caught.value)
        with pytest.raises(ImageError) as failed:
            rag.add(f"https://user:{SECRET}@127.0.0.1:9/red.png")
        assert SECRET not in str(failed.value)


def test_a_descriptions_file_is_read_over_http(tmp_path: Path) -> None:
    import http.server
    import threading

    (tmp_path / "site").mkdir()
    (tmp_path / "site" / "d.jsonl").write_text(
        '{"image_path": "red.png", "description": "from the web"}\n'
    )
    (tmp_path / "photos").mkdir()
    (tmp_path / "photos" / "red.png").write_bytes(encoded(solid("red")))

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            super().__init__(*args, directory=str(tmp_path / "site"), **kwargs)

        def log_message(self, *args: Any) -> None:
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Quiet)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/d.jsonl"
        with MultimodalRAG.create(tmp_path / "kb", embedder=ColorEmbedder()) as rag:
            rag.add_directory(tmp_path / "photos", descriptions=url)
            assert [r.description for r in rag.get_many(rag.ids()).values()] == ["from the web"]
            with pytest.raises(
                InvalidInputError,
                match="descriptions file: cannot read .*missing.jsonl': not found",
            ):
                rag.add_directory(
                    tmp_path / "photos", descriptions=url.replace("d.jsonl", "missing.jsonl")
                )
    finally:
        server.shutdown()
        server.server_close()


def test_images_in_a_bucket_are_shown_and_sent_through_the_same_layer(
    bucket: tuple[str, Any], tmp_path: Path
) -> None:
    pytest.importorskip("fastapi")
    from multimodal_rag._contact_sheet import render_contact_sheet
    from multimodal_rag.answerers.data_urls import image_data_url
    from multimodal_rag.server.app import _thumbnail, servable_path

    name, _ = bucket
    url = f"s3://{name}/photos/solid/red.png"
    # The server shows a bucket's image only under an image root that holds it.
    assert servable_path(tmp_path, url) is None
    assert servable_path(tmp_path, url, (f"s3://{name}/photos",)) == url
    assert servable_path(tmp_path, url, (f"s3://{name}/other",)) is None
    import io

    from PIL import Image

    assert Image.open(io.BytesIO(_thumbnail(url, 16))).size == (16, 13)  # 30x24 shrunk to fit 16
    assert image_data_url(url, max_side=64).startswith("data:image/png;base64,")
    with MultimodalRAG.create(tmp_path / "kb", embedder=ColorEmbedder()) as rag:
        rag.add_directory(f"s3://{name}/photos")
        hits = rag.search(image=url, k=2)
        assert hits[0].image_path == url
        assert (
            render_contact_sheet(url, hits, tile=64).size[0] > 64
        )  # the query and its matches drawn
