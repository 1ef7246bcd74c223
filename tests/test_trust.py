"""A knowledge base from someone else: its manifest may name servers and files, but gets no secrets.

Each test builds a knowledge base, then rewrites its manifest as a stranger could (the
files' checksums still match) and opens it as its new owner would, with credentials in
the environment for the owner's own servers.
"""

from __future__ import annotations

import contextlib
import json
import socket
import struct
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from helpers import ColorEmbedder, solid
from multimodal_rag import MultimodalRAG
from multimodal_rag.errors import BackendConnectionError, InvalidInputError, ModelLoadError

CANARY = "canary-secret-5e1f0a9b"


def _knowledge_base(path: Path, embedder: Any = None, **stores: Any) -> Path:
    with MultimodalRAG.create(path, embedder=embedder or ColorEmbedder(), **stores) as rag:
        rag.add([solid("red"), solid("blue")], descriptions=["red", "blue"], progress=False)
    return path


def _rewrite(kb: Path, entry: str, kind: str | None = None, **config: Any) -> None:
    manifest_file = kb / "manifest.json"
    manifest = json.loads(manifest_file.read_text())
    if kind is not None:
        manifest[entry]["kind"] = kind
    manifest[entry]["config"] = config
    manifest_file.write_text(json.dumps(manifest))


# -- Milvus ----------------------------------------------------------------------


class _RefusingMilvusClient:
    """Stands in for pymilvus.MilvusClient: records what it was given, then refuses it."""

    calls: list[dict[str, Any]] = []

    def __init__(self, **kwargs: Any) -> None:
        from pymilvus.exceptions import MilvusException

        type(self).calls.append(kwargs)
        raise MilvusException(code=1800, message="auth check failure, please check the password")


@pytest.fixture
def milvus_client(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, Any]]:
    pymilvus = pytest.importorskip("pymilvus")
    monkeypatch.setattr(_RefusingMilvusClient, "calls", [])
    monkeypatch.setattr(pymilvus, "MilvusClient", _RefusingMilvusClient)
    return _RefusingMilvusClient.calls


STRANGER_MILVUS = "http://203.0.113.7:19530"


@pytest.fixture
def milvus_kb(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    kb = _knowledge_base(tmp_path / "kb")
    _rewrite(kb, "vector_store", "milvus", uri=STRANGER_MILVUS, collection="theirs", timeout=5)
    monkeypatch.setenv("MILVUS_URI", "http://milvus.internal:19530")
    monkeypatch.setenv("MILVUS_TOKEN", CANARY)
    return kb


def test_a_manifest_named_milvus_server_gets_no_token(
    milvus_kb: Path, milvus_client: list[dict[str, Any]]
) -> None:
    with pytest.raises(BackendConnectionError) as caught:
        MultimodalRAG.open(milvus_kb, embedder=ColorEmbedder(), read_only=True)
    assert [call["uri"] for call in milvus_client] == [STRANGER_MILVUS]
    assert all(CANARY not in str(call.get("token")) for call in milvus_client)
    # The error says which server was not trusted and how to trust it.
    message = str(caught.value)
    assert STRANGER_MILVUS in message and "allow_endpoints" in message and CANARY not in message


def test_an_allowed_milvus_server_gets_the_token(
    milvus_kb: Path, milvus_client: list[dict[str, Any]], monkeypatch: pytest.MonkeyPatch
) -> None:
    with pytest.raises(BackendConnectionError):
        MultimodalRAG.open(
            milvus_kb, embedder=ColorEmbedder(), read_only=True, allow_endpoints=[STRANGER_MILVUS]
        )
    assert milvus_client[-1]["token"] == CANARY
    # So does the server that $MILVUS_URI names.
    monkeypatch.setenv("MILVUS_URI", STRANGER_MILVUS)
    with pytest.raises(BackendConnectionError):
        MultimodalRAG.open(milvus_kb, embedder=ColorEmbedder(), read_only=True)
    assert milvus_client[-1]["token"] == CANARY


def test_a_milvus_server_the_caller_names_gets_the_environments_token(
    milvus_client: list[dict[str, Any]], monkeypatch: pytest.MonkeyPatch
) -> None:
    from multimodal_rag.vectors.milvus import MilvusVectorStore

    monkeypatch.setenv("MILVUS_TOKEN", CANARY)
    with pytest.raises(BackendConnectionError):
        MilvusVectorStore(8, uri=STRANGER_MILVUS)
    assert milvus_client[-1]["token"] == CANARY


def test_allow_endpoints_must_be_a_list_of_urls(milvus_kb: Path) -> None:
    with pytest.raises(InvalidInputError, match="allow_endpoints"):
        MultimodalRAG.open(milvus_kb, embedder=ColorEmbedder(), allow_endpoints=STRANGER_MILVUS)


# -- PostgreSQL ------------------------------------------------------------------

_SSL_REQUEST, _GSSENC_REQUEST = 80877103, 80877104


class FakePostgres:
    """Speaks just enough of PostgreSQL's protocol to ask for a cleartext password and keep it."""

    def __init__(self) -> None:
        self._listener = socket.socket()
        self._listener.bind(("127.0.0.1", 0))
        self._listener.listen(8)
        self.port = self._listener.getsockname()[1]
        self.passwords: list[str] = []
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        return f"postgresql://127.0.0.1:{self.port}"

    def close(self) -> None:
        self._listener.close()
        self._thread.join(timeout=5)

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self._listener.accept()
            except OSError:
                return
            with conn:
                conn.settimeout(5)
                with contextlib.suppress(OSError, struct.error):  # a client that gave up
                    self._session(conn)

    def _session(self, conn: socket.socket) -> None:
        while True:
            (length,) = struct.unpack("!I", _read(conn, 4))
            body = _read(conn, length - 4)
            if struct.unpack("!I", body[:4])[0] not in (_SSL_REQUEST, _GSSENC_REQUEST):
                break  # the startup message
            conn.sendall(b"N")  # no TLS, no GSS encryption: carry on in the clear
        conn.sendall(b"R" + struct.pack("!II", 8, 3))  # AuthenticationCleartextPassword
        if _read(conn, 1) != b"p":
            return
        (length,) = struct.unpack("!I", _read(conn, 4))
        self.passwords.append(_read(conn, length - 4).rstrip(b"\0").decode())
        fields = b"SFATAL\0C28P01\0Mpassword authentication failed\0\0"
        conn.sendall(b"E" + struct.pack("!I", 4 + len(fields)) + fields)


def _read(conn: socket.socket, count: int) -> bytes:
    data = b""
    while len(data) < count:
        chunk = conn.recv(count - len(data))
        if not chunk:
            raise OSError("the client hung up")
        data += chunk
    return data


@pytest.fixture
def fake_postgres() -> Iterator[FakePostgres]:
    pytest.importorskip("psycopg")
    pytest.importorskip("psycopg_pool")
    server = FakePostgres()
    yield server
    server.close()


@pytest.fixture
def postgres_kb(
    tmp_path: Path, fake_postgres: FakePostgres, monkeypatch: pytest.MonkeyPatch
) -> Path:
    kb = _knowledge_base(tmp_path / "kb")
    dsn = f"host=127.0.0.1 port={fake_postgres.port} user=alice dbname=theirs"
    _rewrite(kb, "description_store", "postgres", dsn=dsn, table="theirs", timeout=5)
    # Every place libpq and this library find a password: all meant for the owner's server.
    passfile = tmp_path / "pgpass"
    passfile.write_text(f"*:*:*:*:{CANARY}-pgpass\n")
    passfile.chmod(0o600)
    monkeypatch.setenv("PGPASSFILE", str(passfile))
    monkeypatch.setenv("PGPASSWORD", f"{CANARY}-pgpassword")
    monkeypatch.setenv("DATABASE_URL", f"postgresql://alice:{CANARY}-url@db.internal:5432/theirs")
    return kb


def test_a_manifest_named_postgres_server_gets_no_password(
    postgres_kb: Path, fake_postgres: FakePostgres
) -> None:
    with pytest.raises(BackendConnectionError) as caught:
        MultimodalRAG.open(postgres_kb, embedder=ColorEmbedder(), read_only=True)
    assert not [p for p in fake_postgres.passwords if CANARY in p]
    message = str(caught.value)
    assert f"127.0.0.1:{fake_postgres.port}" in message and "allow_endpoints" in message


def test_an_allowed_postgres_server_gets_the_password(
    postgres_kb: Path, fake_postgres: FakePostgres, monkeypatch: pytest.MonkeyPatch
) -> None:
    with pytest.raises(BackendConnectionError, match="refused the credentials"):
        MultimodalRAG.open(
            postgres_kb,
            embedder=ColorEmbedder(),
            read_only=True,
            allow_endpoints=[fake_postgres.url],
        )
    assert fake_postgres.passwords == [f"{CANARY}-pgpassword"]
    # So does the server $DATABASE_URL names, with that URL's password.
    own = f"postgresql://alice:{CANARY}-url@127.0.0.1:{fake_postgres.port}/theirs"
    monkeypatch.setenv("DATABASE_URL", own)
    with pytest.raises(BackendConnectionError):
        MultimodalRAG.open(postgres_kb, embedder=ColorEmbedder(), read_only=True)
    assert fake_postgres.passwords[-1] == f"{CANARY}-url"


def test_a_manifest_cannot_borrow_a_password_through_hostaddr_or_a_service(
    postgres_kb: Path, fake_postgres: FakePostgres, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    # host names the owner's server (so its password would match) but hostaddr points elsewhere.
    monkeypatch.setenv("DATABASE_URL", f"postgresql://alice:{CANARY}-url@db.internal:5432/theirs")
    dsn = f"host=db.internal hostaddr=127.0.0.1 port={fake_postgres.port} user=alice dbname=theirs"
    _rewrite(postgres_kb, "description_store", "postgres", dsn=dsn, table="theirs", timeout=5)
    with pytest.raises(BackendConnectionError):
        MultimodalRAG.open(postgres_kb, embedder=ColorEmbedder(), read_only=True)
    # A service file entry of the owner's, whose password the stranger's host would receive.
    services = tmp_path / "pg_service.conf"
    services.write_text(f"[owner]\npassword={CANARY}-service\n")
    monkeypatch.setenv("PGSERVICEFILE", str(services))
    dsn = f"service=owner host=127.0.0.1 port={fake_postgres.port} user=alice dbname=theirs"
    _rewrite(postgres_kb, "description_store", "postgres", dsn=dsn, table="theirs", timeout=5)
    with pytest.raises(BackendConnectionError):
        MultimodalRAG.open(postgres_kb, embedder=ColorEmbedder(), read_only=True)
    assert not [p for p in fake_postgres.passwords if CANARY in p]


# -- CLIP checkpoints ----------------------------------------------------------------

SIDE_EFFECT = "CODE FROM THE ARCHIVE RAN"


def _code_running_archive(path: Path) -> Path:
    """A TorchScript archive whose ``__setstate__`` runs, printing, as torch.jit.load reads it."""
    import warnings

    import torch

    class Payload(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.x = torch.zeros(1)

        def forward(self, a: torch.Tensor) -> torch.Tensor:
            return a

        @torch.jit.export
        def __getstate__(self) -> tuple[torch.Tensor, bool]:
            return (self.x, self.training)

        @torch.jit.export
        def __setstate__(self, state: tuple[torch.Tensor, bool]) -> None:
            print("CODE FROM THE ARCHIVE RAN")
            self.x = state[0]
            self.training = state[1]

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # TorchScript is deprecated
        torch.jit.save(torch.jit.script(Payload()), str(path))
    return path


@pytest.fixture(scope="module")
def clip_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    pytest.importorskip("torch")
    pytest.importorskip("clip")
    from tiny_clip import make_tiny_clip_checkpoint

    root = tmp_path_factory.mktemp("clip-trust")
    return {
        "weights": make_tiny_clip_checkpoint(root / "weights.pt"),
        "payload": _code_running_archive(root / "payload.pt"),
    }


@pytest.fixture
def clip_kb(clip_files: dict[str, Path], tmp_path: Path) -> Path:
    from multimodal_rag import CLIPEmbedder

    embedder = CLIPEmbedder(checkpoint=clip_files["weights"], precision="fp32")
    return _knowledge_base(tmp_path / "kb", embedder)


def test_a_manifest_named_torchscript_archive_is_not_run(
    clip_kb: Path, clip_files: dict[str, Path], capfd: pytest.CaptureFixture[str]
) -> None:
    _rewrite(clip_kb, "embedder", checkpoint=str(clip_files["payload"]), precision="fp32")
    with pytest.raises(ModelLoadError, match="TorchScript.*allow_torchscript"):
        MultimodalRAG.open(clip_kb, read_only=True)
    # Nor can the manifest opt in on the caller's behalf.
    _rewrite(clip_kb, "embedder", checkpoint=str(clip_files["payload"]), allow_torchscript=True)
    with pytest.raises(ModelLoadError, match="manifest"):
        MultimodalRAG.open(clip_kb, read_only=True)
    assert SIDE_EFFECT not in capfd.readouterr().out


def test_a_relative_checkpoint_in_a_manifest_is_not_looked_up_in_the_current_directory(
    clip_kb: Path, clip_files: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(clip_files["weights"].parent)
    _rewrite(clip_kb, "embedder", checkpoint="weights.pt", precision="fp32")
    with pytest.raises(ModelLoadError, match="relative"):
        MultimodalRAG.open(clip_kb, read_only=True)


def test_a_state_dict_named_by_the_manifest_still_opens(clip_kb: Path) -> None:
    with MultimodalRAG.open(clip_kb, read_only=True) as rag:
        assert rag.search(image=solid("red"), k=1)[0].description == "red"


def test_the_caller_opts_into_torchscript_by_passing_the_embedder(tmp_path: Path) -> None:
    pytest.importorskip("clip")
    from multimodal_rag import CLIPEmbedder
    from tiny_clip import make_tiny_clip_checkpoint

    archive = make_tiny_clip_checkpoint(tmp_path / "scripted.pt", jit=True)
    trusted = CLIPEmbedder(checkpoint=archive, precision="fp32", allow_torchscript=True)
    kb = _knowledge_base(tmp_path / "kb", trusted)
    manifest = json.loads((kb / "manifest.json").read_text())
    assert "allow_torchscript" not in manifest["embedder"]["config"]
    with pytest.raises(ModelLoadError, match="embedder=CLIPEmbedder"):
        MultimodalRAG.open(kb, read_only=True)
    with MultimodalRAG.open(kb, read_only=True, embedder=trusted) as rag:
        assert rag.search(image=solid("blue"), k=1)[0].description == "blue"


def test_the_command_line_allows_a_server_with_allow_endpoint(
    postgres_kb: Path, fake_postgres: FakePostgres
) -> None:
    from test_cli import run_cli

    refused = run_cli("--allow-module", "helpers", "search", postgres_kb, "--text", "red")
    assert refused.returncode == 1 and not [p for p in fake_postgres.passwords if CANARY in p]
    allowed = run_cli(
        "--allow-module", "helpers", "--allow-endpoint", fake_postgres.url, "search", postgres_kb, "--text", "red"
    )
    assert allowed.returncode == 1 and "refused the credentials" in allowed.stderr
    assert fake_postgres.passwords == [f"{CANARY}-pgpassword"]


# -- Embedder options ----------------------------------------------------------------


class _RecordingEmbedder(ColorEmbedder):
    """Stands in for CLIP under its kind: keeps every option a manifest rebuilds it with."""

    built: list[dict[str, Any]] = []

    def __init__(self, model: str = "color", **options: Any) -> None:
        super().__init__()
        type(self).built.append({"model": model, **options})
        self.model = model

    def config(self) -> dict[str, Any]:
        # What CLIPEmbedder.config() gives: the model, and how it ran.
        return {"model": self.model, "engine": "openvino", "precision": "int8", "draft": False}


@pytest.fixture
def clip_kind(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, Any]]:
    from multimodal_rag import _registry as registry

    table = {**registry.BUILTINS["embedder"], "clip": f"{__name__}:_RecordingEmbedder"}
    monkeypatch.setitem(registry.BUILTINS, "embedder", table)
    monkeypatch.setattr(_RecordingEmbedder, "built", [])
    return _RecordingEmbedder.built


def test_a_manifest_records_only_what_identifies_the_model(tmp_path: Path, clip_kind: list[dict[str, Any]]) -> None:
    kb = _knowledge_base(tmp_path / "kb", _RecordingEmbedder("color-4"), description_store="jsonl")
    entry = json.loads((kb / "manifest.json").read_text())["embedder"]
    assert entry["kind"] == "clip" and entry["config"] == {"model": "color-4"}


def test_a_manifest_cannot_set_how_the_embedder_runs(
    tmp_path: Path, clip_kind: list[dict[str, Any]], caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    kb = _knowledge_base(tmp_path / "kb", _RecordingEmbedder("color-4"), description_store="jsonl")
    elsewhere = tmp_path / "elsewhere"
    runtime = {
        "cache_dir": str(elsewhere),
        "max_pixels": 10**15,
        "num_workers": 512,
        "calibration": str(tmp_path / "calibration"),
        "device": "cuda:7",
        "allow_torchscript": True,
    }
    # What earlier versions recorded themselves is dropped quietly.
    recorded = {"engine": "openvino", "precision": "int8", "draft": False, "download_root": str(elsewhere)}
    _rewrite(kb, "embedder", model="color-4", **runtime, **recorded)
    clip_kind.clear()
    monkeypatch.chdir(tmp_path)
    with caplog.at_level("WARNING", logger="multimodal_rag._registry"), MultimodalRAG.open(kb, read_only=True) as rag:
        assert rag.search(image=solid("red"), k=1)[0].description == "red"
        assert rag.verify().ok
    assert clip_kind == [{"model": "color-4"}]
    assert not elsewhere.exists()
    (warning,) = {record.getMessage() for record in caplog.records}
    assert str(kb / "manifest.json") in warning
    assert all(key in warning for key in runtime) and not any(key in warning for key in recorded)


# -- a crafted SQLite description file -------------------------------------------------

_ENDLESS = (
    "CREATE VIEW records AS WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n) "
    "SELECT i AS seq, 'id-' || i AS id, NULL AS image_path, 'endless' AS description, '{}' AS metadata FROM n"
)
_CRAFTED = {
    "a view of endless rows": [_ENDLESS],
    "someone else's trigger": [
        "CREATE TABLE records (seq INTEGER PRIMARY KEY, id TEXT NOT NULL UNIQUE, image_path TEXT, "
        "description TEXT, metadata TEXT NOT NULL DEFAULT '{}')",
        "CREATE TABLE log (x)",
        "CREATE TRIGGER spy AFTER UPDATE ON records BEGIN INSERT INTO log VALUES (new.id); END",
    ],
    "an unknown column": [
        "CREATE TABLE records (seq INTEGER PRIMARY KEY, id TEXT NOT NULL UNIQUE, image_path TEXT, "
        "description TEXT, metadata TEXT NOT NULL DEFAULT '{}', extra TEXT)"
    ],
}

CRAFTED_SQLITE = """
import sys
sys.path[:0] = sys.argv[2:]
from helpers import ColorEmbedder, solid
from multimodal_rag import MultimodalRAG
from multimodal_rag.errors import CorruptFileError
try:
    MultimodalRAG.open(sys.argv[1], embedder=ColorEmbedder(), read_only=True)
except CorruptFileError as exc:
    print("refused:", exc)
with MultimodalRAG.open(sys.argv[1], embedder=ColorEmbedder(), salvage=True, read_only=True) as rag:
    report = rag.verify()
    print("verified:", report.ok, sorted({problem.kind for problem in report.problems}))
    print("searched:", [hit.description for hit in rag.search(text="red", k=2)])
"""


@pytest.mark.parametrize("craft", sorted(_CRAFTED))
def test_a_crafted_sqlite_file_with_a_matching_checksum_is_refused_without_hanging(
    tmp_path: Path, craft: str
) -> None:
    import hashlib
    import sqlite3
    import subprocess
    import sys

    kb = _knowledge_base(tmp_path / "kb", description_store="sqlite")
    manifest_file = kb / "manifest.json"
    manifest = json.loads(manifest_file.read_text())
    path = kb / "snapshots" / f"{manifest['generation']:08d}" / "descriptions" / "descriptions.sqlite"
    path.unlink()
    with contextlib.closing(sqlite3.connect(path)) as db:
        for statement in _CRAFTED[craft]:
            db.execute(statement)
        db.commit()
    data = path.read_bytes()
    manifest["files"]["descriptions/descriptions.sqlite"] = hashlib.sha256(data).hexdigest()
    manifest["sizes"]["descriptions/descriptions.sqlite"] = len(data)
    manifest_file.write_text(json.dumps(manifest))
    src = str(Path(__import__("multimodal_rag").__file__).parents[1])
    run = subprocess.run(
        [sys.executable, "-c", CRAFTED_SQLITE, str(kb), str(Path(__file__).parent), src],
        capture_output=True, text=True, timeout=60,
    )
    assert run.returncode == 0, run.stderr[-2000:]
    refused, verified, searched = run.stdout.splitlines()
    assert refused.startswith("refused:") and "descriptions.sqlite" in refused
    # Salvaging reads nothing from such a file: the two images keep their vectors, and the
    # records of the snapshot before (there was none) or nothing; verify says so.
    assert verified.startswith("verified: False") and "lost-records" in verified
    assert "endless" not in searched


def test_loading_a_sqlite_file_stops_at_work_out_of_proportion_to_its_size(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from multimodal_rag.descriptions import sqlite as module
    from multimodal_rag.errors import CorruptFileError
    from multimodal_rag.types import Record

    store = module.SQLiteDescriptionStore()
    store.put([Record(id=f"r{i}", description=f"number {i}") for i in range(2000)])
    store.save(tmp_path)
    assert len(module.SQLiteDescriptionStore.load(tmp_path)) == 2000
    # The same file, allowed a thousandth of the work it needs: stopped and named, not run on.
    monkeypatch.setattr(module, "_STEPS_FLOOR", 0)
    monkeypatch.setattr(module, "_STEPS_PER_BYTE", 0.0001)
    with pytest.raises(CorruptFileError, match="more work than a file of"):
        module.SQLiteDescriptionStore.load(tmp_path)
    assert len(module.SQLiteDescriptionStore.salvage(tmp_path)) < 2000
