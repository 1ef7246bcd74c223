"""The ingest on a Ray cluster against real servers: the same knowledge base as a local ingest,
every image exactly once after a driver or a worker is killed, and clear errors.

The cluster: ``$RAY_ADDRESS`` when set (``.ci/run`` starts one with ``ray start --head`` on
127.0.0.1, 2 CPUs); otherwise these tests start Ray inside the test process (2 CPUs, a small
object store), and the test that kills a driver, which needs a cluster outside it, skips.
"""

from __future__ import annotations

import importlib.util
import os
import secrets
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from conftest import REQUIRE_SERVERS_ENV, on_server, server_uri
from multimodal_rag import CLIPEmbedder, MultimodalRAG
from multimodal_rag.errors import BackendConnectionError, InvalidInputError, MissingDependencyError
from tiny_clip import make_tiny_clip_checkpoint

pytest.importorskip("pymilvus")
pytest.importorskip("psycopg")

SRC = Path(__file__).resolve().parents[1] / "src"
PHOTOS = 24
#: Object store of the in-process cluster: small, the machine is shared.
OBJECT_STORE_BYTES = 150 * 2**20


@pytest.fixture(scope="module")
def ray_cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str | None]:
    """This process connected to Ray: the address of ``$RAY_ADDRESS``'s cluster, or ``None``
    for one started here (with an authentication token of its own, never one in ``~/.ray``)."""
    if importlib.util.find_spec("ray") is None:
        pytest.skip("the ray extra is not installed (pip install 'multimodal-rag[ray]')")
    address = os.environ.get("RAY_ADDRESS") or None
    saved = {name: os.environ.get(name) for name in ("RAY_AUTH_MODE", "RAY_AUTH_TOKEN_PATH")}
    if address is None:
        # Before ray is imported: it reads its authentication settings once, at import.
        token = tmp_path_factory.mktemp("ray") / "token"
        token.write_text(secrets.token_hex(32))
        os.environ.update(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN_PATH=str(token))
    import ray

    if address is not None:
        ray.init(address=address, log_to_driver=False)
    else:
        ray.init(
            num_cpus=2,
            include_dashboard=False,
            object_store_memory=OBJECT_STORE_BYTES,
            log_to_driver=False,
        )
    yield address
    ray.shutdown()
    for name, value in saved.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tiny_clip_checkpoint(tmp_path_factory.mktemp("clip") / "tiny.pt")


@pytest.fixture(scope="module")
def photos(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """``PHOTOS`` distinct pictures of several sizes, one copy of the first under another name,
    and a file that is no image."""
    root = tmp_path_factory.mktemp("photos")
    rng = np.random.default_rng(7)
    for i in range(PHOTOS):
        size = (24 + 8 * (i % 5), 20 + 6 * (i % 4))
        picture = Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8))
        picture.save(
            root / f"{'shelf-a' if i % 2 else 'shelf-b'}-{i:02d}.{'png' if i % 3 else 'jpg'}"
        )
    (root / "copy-of-00.jpg").write_bytes((root / "shelf-b-00.jpg").read_bytes())
    (root / "broken.png").write_bytes(b"not a picture")
    return root


def _server_kb(path: Path, checkpoint: Path) -> Path:
    """A knowledge base on Milvus and PostgreSQL, made empty, whose collection and table are
    dropped after the test."""
    from multimodal_rag.descriptions import PostgresDescriptionStore
    from multimodal_rag.vectors import MilvusVectorStore

    embedder = CLIPEmbedder(checkpoint=checkpoint)
    vectors = MilvusVectorStore(embedder.dim, uri=server_uri("MILVUS_URI", "Milvus"))
    records = PostgresDescriptionStore(server_uri("DATABASE_URL", "PostgreSQL"))
    on_server(vectors)
    on_server(records)
    MultimodalRAG.create(
        path, embedder=embedder, vector_store=vectors, description_store=records
    ).close()
    return path


def _contents(kb: Path) -> tuple[list[str], np.ndarray, dict[str, str | None], int, int]:
    """Ids (sorted), their vectors, image paths, and how many vectors and records there are."""
    with MultimodalRAG.open(kb, read_only=True) as rag:
        ids = sorted(rag.vector_store.ids())
        records = rag.get_many(ids)
        return (
            ids,
            rag.vector_store.get_vectors(ids),
            {id_: record.image_path for id_, record in records.items()},
            len(rag.vector_store),
            len(rag.description_store),
        )


def _local_ingest(tmp_path: Path, checkpoint: Path, photos: Path) -> tuple[list[str], np.ndarray]:
    # fp32 on both sides: "auto" may choose another precision on a worker than here (it times them).
    embedder = CLIPEmbedder(checkpoint=checkpoint, precision="fp32")
    with MultimodalRAG.create(tmp_path / "local", embedder=embedder) as rag:
        rag.add_directory(photos, progress=False)
        ids = sorted(rag.ids())
        return ids, rag.vector_store.get_vectors(ids)


@pytest.mark.slow
def test_the_ray_ingest_stores_what_a_local_ingest_stores_and_a_rerun_adds_nothing(
    ray_cluster: str | None, checkpoint: Path, photos: Path, tmp_path: Path
) -> None:
    from multimodal_rag.tools import ingest_on_ray

    kb = _server_kb(tmp_path / "kb", checkpoint)
    report = ingest_on_ray(kb, photos, actors=2, batch_size=4, precision="fp32", progress=False)

    local_ids, local_vectors = _local_ingest(tmp_path, checkpoint, photos)
    ids, vectors, paths, n_vectors, n_records = _contents(kb)
    assert ids == local_ids and len(ids) == PHOTOS
    np.testing.assert_allclose(vectors, local_vectors, atol=1e-5)
    assert n_vectors == n_records == PHOTOS
    assert sorted(report.result.added) == ids
    # Of two files with the same bytes, the one whose batch reached the driver first is stored.
    [(duplicate, duplicate_id)] = report.result.duplicates
    twins = {"copy-of-00.jpg", "shelf-b-00.jpg"}
    assert (
        Path(duplicate).name in twins
        and Path(paths[duplicate_id]).name == (twins - {Path(duplicate).name}).pop()
    )
    assert {Path(path).name for path in paths.values()} == {p.name for p in photos.iterdir()} - {
        "broken.png",
        Path(duplicate).name,
    }
    assert [Path(s.source).name for s in report.result.skipped] == ["broken.png"]
    assert "broken.png" in report.result.skipped[0].reason
    assert report.total == PHOTOS
    assert sum(w.images for w in report.workers) >= PHOTOS and all(
        w.images_per_s > 0 for w in report.workers
    )

    again = ingest_on_ray(kb, photos, actors=1, batch_size=4, progress=False)
    assert again.result.added == () and len(again.result.duplicates) == PHOTOS + 1
    assert _contents(kb)[3:] == (PHOTOS, PHOTOS)


@pytest.mark.slow
def test_an_actor_killed_mid_batch_is_retried_by_ray_with_nothing_lost_or_doubled(
    ray_cluster: str | None,
    checkpoint: Path,
    photos: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from multimodal_rag._distributed.workers import FAULT_ENV
    from multimodal_rag.tools import ingest_on_ray

    kb = _server_kb(tmp_path / "kb", checkpoint)
    marker = tmp_path / "actor-exited"
    monkeypatch.setenv(FAULT_ENV, f"{marker}:2")  # the actor's process exits on its second batch
    report = ingest_on_ray(kb, photos, actors=1, batch_size=4, progress=False)

    assert marker.exists()  # the actor did die
    assert len(report.workers) == 2  # the first actor's process and the one Ray started after it
    ids, _, _, n_vectors, n_records = _contents(kb)
    assert ids == sorted(report.result.added) and len(ids) == PHOTOS
    assert n_vectors == n_records == PHOTOS


@pytest.mark.slow
def test_a_batch_that_kills_every_worker_stops_the_ingest_and_a_rerun_finishes(
    ray_cluster: str | None,
    checkpoint: Path,
    photos: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from multimodal_rag._distributed.ingest import BATCH_ATTEMPTS
    from multimodal_rag._distributed.workers import FAULT_ENV
    from multimodal_rag.errors import BackendError
    from multimodal_rag.tools import ingest_on_ray

    kb = tmp_path / "kb"
    MultimodalRAG.create(kb, embedder=CLIPEmbedder(checkpoint=checkpoint)).close()
    marker = tmp_path / "exits"
    monkeypatch.setenv(FAULT_ENV, f"{marker}:@5")  # the batch holding the 6th image, every time
    with pytest.raises(
        BackendError, match=f"killed the embedding worker running it {BATCH_ATTEMPTS} times"
    ):
        ingest_on_ray(kb, photos, actors=1, batch_size=4, precision="fp32", progress=False)
    assert len(marker.read_text().splitlines()) == BATCH_ATTEMPTS  # tried that often, then stopped
    with MultimodalRAG.open(kb) as rag:
        stopped = set(rag.ids())
        assert len(stopped) < PHOTOS and rag.verify().ok

    monkeypatch.delenv(FAULT_ENV)
    again = ingest_on_ray(kb, photos, actors=1, batch_size=4, precision="fp32", progress=False)
    assert set(again.result.added).isdisjoint(stopped)
    ids, _, _, n_vectors, n_records = _contents(kb)
    assert len(ids) == n_vectors == n_records == PHOTOS


@pytest.mark.slow
def test_a_driver_killed_midway_and_run_again_stores_every_image_exactly_once(
    ray_cluster: str | None, checkpoint: Path, photos: Path, tmp_path: Path
) -> None:
    if ray_cluster is None:
        message = (
            "$RAY_ADDRESS is not set: killing a driver needs a Ray cluster outside the test process"
        )
        if os.environ.get(REQUIRE_SERVERS_ENV) == "1":
            pytest.fail(message)
        pytest.skip(message)
    kb = _server_kb(tmp_path / "kb", checkpoint)
    many = tmp_path / "many"
    many.mkdir()
    rng = np.random.default_rng(11)
    for i in range(120):
        Image.fromarray(rng.integers(0, 256, (20, 24, 3), dtype=np.uint8)).save(
            many / f"{i:03d}.png"
        )
    command = [
        sys.executable,
        "-m",
        "multimodal_rag",
        "index",
        str(many),
        "--kb",
        str(kb),
        "--ray",
        ray_cluster,
        "--batch-size",
        "2",
        "--no-progress",
    ]
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(SRC), os.environ.get("PYTHONPATH", "")]),
    }

    driver = subprocess.Popen(
        command, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    from multimodal_rag.descriptions import PostgresDescriptionStore

    with MultimodalRAG.open(kb, read_only=True) as watcher:
        table = watcher.description_store
        assert isinstance(table, PostgresDescriptionStore)
        deadline = time.monotonic() + 240
        while len(table) < 10 and driver.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)
        driver.send_signal(signal.SIGKILL)
        driver.wait()
        stored_at_kill = len(table)
    assert 0 < stored_at_kill < 120, (
        f"the driver was to be killed midway, it had stored {stored_at_kill}"
    )

    rerun = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stdout + rerun.stderr
    ids, _, paths, n_vectors, n_records = _contents(kb)
    assert n_vectors == n_records == len(ids) == 120
    assert sorted(Path(path).name for path in paths.values()) == sorted(
        p.name for p in many.iterdir()
    )


@pytest.mark.slow
def test_a_local_knowledge_base_is_written_by_the_driver_alone(
    ray_cluster: str | None, checkpoint: Path, photos: Path, tmp_path: Path
) -> None:
    from multimodal_rag.tools import ingest_on_ray

    kb = tmp_path / "kb"
    MultimodalRAG.create(kb, embedder=CLIPEmbedder(checkpoint=checkpoint)).close()
    report = ingest_on_ray(kb, photos, actors=1, batch_size=8, precision="fp32", progress=False)
    local_ids, local_vectors = _local_ingest(tmp_path, checkpoint, photos)
    with MultimodalRAG.open(kb) as rag:  # its journal and snapshot agree: it opens, unchanged
        assert sorted(rag.ids()) == local_ids == sorted(report.result.added)
        np.testing.assert_allclose(
            rag.vector_store.get_vectors(local_ids), local_vectors, atol=1e-5
        )
        assert rag.verify().ok


@pytest.mark.slow
def test_an_address_where_no_cluster_answers_is_a_clear_error_and_creates_nothing(
    tmp_path: Path, checkpoint: Path
) -> None:
    pytest.importorskip("ray")
    import socket

    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    kb = tmp_path / "kb"
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(SRC), os.environ.get("PYTHONPATH", "")]),
    }
    env.pop("RAY_ADDRESS", None)
    (tmp_path / "photos").mkdir()
    Image.new("RGB", (8, 8), "red").save(tmp_path / "photos" / "red.png")
    command = [
        sys.executable,
        "-m",
        "multimodal_rag",
        "index",
        str(tmp_path / "photos"),
        "--kb",
        str(kb),
        "--checkpoint",
        str(checkpoint),
        "--ray",
        f"127.0.0.1:{port}",
    ]
    out = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 1
    assert f"no Ray cluster answers at '127.0.0.1:{port}'" in out.stderr
    assert "Traceback" not in out.stderr
    assert not kb.exists()  # the knowledge base this command created is taken back


def test_bad_settings_and_a_missing_extra_are_named(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytest.importorskip("ray")
    from multimodal_rag.tools import ingest_on_ray

    with pytest.raises(
        InvalidInputError, match="actors must be a whole number of at least 1, got 0"
    ):
        ingest_on_ray(tmp_path, tmp_path, actors=0)
    with pytest.raises(
        InvalidInputError,
        match="a Ray address is 'auto', HOST:PORT or ray://HOST:PORT, got 'nowhere'",
    ):
        from multimodal_rag._distributed.ingest import _check_reachable

        _check_reachable("nowhere")
    monkeypatch.setitem(sys.modules, "ray", None)  # as if the extra were not installed
    with pytest.raises(MissingDependencyError, match=r"pip install 'multimodal-rag\[ray\]'"):
        ingest_on_ray(tmp_path, tmp_path)


def test_connecting_to_a_closed_port_fails_in_seconds() -> None:
    pytest.importorskip("ray")
    from multimodal_rag._distributed.ingest import _check_reachable

    started = time.monotonic()
    with pytest.raises(BackendConnectionError, match="no Ray cluster answers at '127.0.0.1:1'"):
        _check_reachable("127.0.0.1:1")
    assert time.monotonic() - started < 10
