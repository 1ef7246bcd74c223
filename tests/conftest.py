from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest

from helpers import COLORS, ColorEmbedder, solid

# The contract suites live in the package; their assertions report values as the tests' do.
pytest.register_assert_rewrite("multimodal_rag.testing")

SHARED_DATA = Path(__file__).resolve().parents[1].parent / "shared" / "data"


#: Modules whose tests take tens of seconds each: a type checker over a script, a browser, a
#: site build and the documentation's commands, crash and fuzz loops in subprocesses, model
#: conversion and quantization. Marked ``slow``: the README's `pytest` skips them, `.ci/run`
#: runs them (single slow tests elsewhere carry ``@pytest.mark.slow`` themselves).
SLOW_MODULES = frozenset(
    {
        "test_benchmark_smoke.py",
        "test_clip_engines.py",
        "test_crash.py",
        "test_clip_architectures.py",
        "test_doc_blocks.py",
        "test_docs.py",
        "test_engine_cache.py",
        "test_install.py",
        "test_loader_fuzz.py",
        "test_server_browser.py",
        "test_typing.py",
    }
)


#: Single tests of other modules that take tens of seconds (every parameter of each): adapter
#: fits repeated or killed mid-save, randomised search comparisons, thread races, benchmarks.
SLOW_TESTS = frozenset(
    {
        "test_adapter.py::test_a_fit_on_shuffled_descriptions_is_refused_and_a_true_map_is_kept",
        "test_adapter.py::test_a_kill_during_the_switching_save_leaves_one_whole_state",
        "test_adapter.py::test_the_same_seed_gives_the_same_adapter",
        "test_adapter_core.py::test_a_linear_adapter_undoes_a_hidden_distortion",
        "test_concurrency.py::test_searches_in_threads_while_one_thread_ingests_edits_and_saves",
        "test_data_loss.py::test_a_damaged_checksum_of_an_intact_adapter_keeps_the_adapter",
        "test_full_text.py::test_pruned_and_plain_searches_break_exact_ties_alike_over_random_queries",
        "test_open_clip_embedder.py::test_the_model_benchmark_runs",
        "test_open_clip_embedder.py::test_the_openvino_engine_runs_open_clip_towers",
    }
)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    slow = pytest.mark.slow
    for item in items:
        name = getattr(item, "originalname", item.name)  # without its parameters
        if item.path.name in SLOW_MODULES or f"{item.path.name}::{name}" in SLOW_TESTS:
            item.add_marker(slow)


@pytest.fixture(autouse=True, scope="session")
def _engine_cache(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Converted models and precision decisions go to a temporary folder, never the home."""
    settings = {
        "MULTIMODAL_RAG_CACHE_DIR": str(tmp_path_factory.mktemp("engine-cache")),
        # A first run on OpenVINO (the default engine here) runs on torch; the tests of the
        # background preparation turn it on themselves, so no other test leaves a process
        # preparing an engine behind it.
        "MULTIMODAL_RAG_ENGINE_PREPARATION": "off",
    }
    previous = {name: os.environ.get(name) for name in settings}
    os.environ.update(settings)
    yield
    for name, value in previous.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value


@pytest.fixture
def embedder() -> ColorEmbedder:
    return ColorEmbedder()


@pytest.fixture
def image_dir(tmp_path: Path) -> Path:
    """A folder of solid-colour images in two subfolders, with a cookbook descriptions file."""
    root = tmp_path / "image_database"
    entries = []
    for i, name in enumerate(COLORS):
        sub = root / ("warm" if name in ("red", "yellow", "magenta") else "other")
        sub.mkdir(parents=True, exist_ok=True)
        suffix = [".png", ".JPG", ".jpeg", ".webp"][i % 4]
        file = sub / f"{name}{suffix}"
        fmt = {".png": "PNG", ".JPG": "JPEG", ".jpeg": "JPEG", ".webp": "WEBP"}[suffix]
        solid(name, (40 + i, 30)).save(file, format=fmt, quality=95)
        if name != "black":  # one image has no description
            entries.append(
                {
                    "image_path": str(file.relative_to(root)),
                    "description": f"A {name} square.",
                    "shade": name,
                }
            )
    (root / "description.json").write_text("\n".join(json.dumps(e) for e in entries) + "\n")
    return root


@pytest.fixture
def rng() -> np.random.Generator:
    return np.random.default_rng(1234)


def clustered_vectors(rng: np.random.Generator, n: int, dim: int, clusters: int = 8) -> np.ndarray:
    """Normalised vectors in a few clusters, so nearest neighbours are well defined."""
    centers = rng.standard_normal((clusters, dim))
    rows = centers[rng.integers(0, clusters, n)] + 0.3 * rng.standard_normal((n, dim))
    return (rows / np.linalg.norm(rows, axis=1, keepdims=True)).astype(np.float32)


VectorStoreFactory = Callable[[int], object]


@pytest.fixture
def chat_server():
    """A chat-completions server on 127.0.0.1 that the real openai client can talk to."""
    from chat_server import ChatServer

    with ChatServer() as server:
        yield server


#: Set by CI, which starts the servers: a test that needs one then fails instead of skipping.
REQUIRE_SERVERS_ENV = "MULTIMODAL_RAG_REQUIRE_SERVERS"

#: Collections and tables made on a server by the current test; dropped after it.
SERVER_OBJECTS: list[object] = []


def server_uri(variable: str, server: str) -> str:
    """The URI of a test server from environment ``variable``, or skip (fail in CI) without one."""
    uri = os.environ.get(variable)
    if uri:
        return uri
    message = f"${variable} is not set, so there is no {server} server to test against"
    if os.environ.get(REQUIRE_SERVERS_ENV) == "1":
        pytest.fail(f"{message}, but ${REQUIRE_SERVERS_ENV}=1 requires one")
    pytest.skip(message)


def on_server(store: object) -> object:
    """Register a server-backed store so its collection or table is dropped after the test."""
    SERVER_OBJECTS.append(store)
    return store


@pytest.fixture(autouse=True)
def _drop_server_objects() -> Iterator[None]:
    yield
    while SERVER_OBJECTS:
        store = SERVER_OBJECTS.pop()
        store.drop()  # type: ignore[attr-defined]
        store.close()  # type: ignore[attr-defined]


def pytest_configure(config: pytest.Config) -> None:
    # Tests that take minutes (the documentation's transcripts run every command they show):
    # `pytest -m "not slow"` leaves them out.
    config.addinivalue_line("markers", "slow: takes minutes; deselect with -m 'not slow'")
