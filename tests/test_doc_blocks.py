"""Every page's code runs as written: its Python blocks in order in one interpreter, its shell
blocks in bash, all in one fresh folder per page.

The folder is the one the README's main job leaves behind: a copy of ``examples/``, the random
checkpoint at ``demo/clip-random.pt`` and the knowledge base ``demo/kb`` indexed from the
stamps with it. HOME and every cache point into the test's temporary folder, nothing reaches
the network, and ``OPENAI_BASE_URL`` / ``OPENAI_API_KEY`` point at a local chat-completions
server (tests/chat_server.py), so the pages' OpenAI-compatible examples talk to it (the Azure
examples, which only build clients, get a placeholder ``AZURE_OPENAI_API_KEY``). A block
marked ``<!-- needs: NAME -->`` runs only where NAME is set (CI sets ``MILVUS_URI`` and
``DATABASE_URL``); one marked ``<!-- not-run: REASON -->`` never runs.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from chat_server import ChatServer, completion, stream
from doc_examples import REPO, blocks, pages, run_by_page_runner

README_INDEX = [
    "index", "examples/stamps/images", "--descriptions", "examples/stamps/description.jsonl",
    "--kb", "demo/kb", "--checkpoint", "demo/clip-random.pt",
]


def page_environment(home: Path, chat_url: str) -> dict[str, str]:
    """The environment a page's code runs in: no setting of the developer's, no network."""
    environ = {
        k: v for k, v in os.environ.items()
        if not k.startswith(("MULTIMODAL_RAG_", "OPENAI_", "HF_", "XDG_"))
    }
    environ.update(
        HOME=str(home),
        XDG_CACHE_HOME=str(home / ".cache"),
        XDG_CONFIG_HOME=str(home / ".config"),
        MULTIMODAL_RAG_CACHE_DIR=str(home / "engine-cache"),
        HF_HUB_OFFLINE="1",
        PYTHONPATH=str(REPO / "src"),
        OPENAI_BASE_URL=chat_url,
        OPENAI_API_KEY="sk-local-test-server",
        # The Azure examples only build clients (no request is made): any key will do.
        AZURE_OPENAI_API_KEY="azure-key-never-sent",
        MPLBACKEND="Agg",
    )
    return environ


@pytest.fixture(scope="module")
def readme_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """What the README's main job leaves: examples/, the random checkpoint and demo/kb."""
    from multimodal_rag._random_checkpoint import make_random_clip_checkpoint

    folder = tmp_path_factory.mktemp("readme")
    shutil.copytree(REPO / "examples", folder / "examples")
    make_random_clip_checkpoint(folder / "demo" / "clip-random.pt")
    home = tmp_path_factory.mktemp("home")
    built = subprocess.run(
        [sys.executable, "-m", "multimodal_rag", *README_INDEX],
        cwd=folder, env=page_environment(home, "http://127.0.0.1:9/v1"),
        capture_output=True, text=True, timeout=300, check=False,
    )
    assert built.returncode == 0, built.stderr
    return folder


def _answer_in_kind(handler: Any, request: Any) -> None:
    """A reply of the kind asked for: a stream for a streamed request, a ranking for a
    reranker's structured request, a plain completion otherwise."""
    body = request.body if isinstance(request.body, dict) else {}
    if body.get("stream"):
        stream(["An answer ", "from the test server."])(handler, request)
    elif (body.get("response_format") or {}).get("json_schema", {}).get("name") == "ranking":
        completion(json.dumps({"ranking": [1]}))(handler, request)
    else:
        completion("An answer from the test server.")(handler, request)


@pytest.fixture
def answering_server() -> Iterator[ChatServer]:
    with ChatServer() as server:
        server.reply(*[_answer_in_kind] * 1000)
        yield server


def pages_to_run() -> list[Path]:
    return [
        page for page in pages()
        if run_by_page_runner(page) and any(block.executed for block in blocks(page))
    ]


@pytest.mark.slow
@pytest.mark.parametrize("page", pages_to_run(), ids=lambda p: str(p.relative_to(REPO)))
def test_page_runs_as_written(
    page: Path, readme_folder: Path, answering_server: ChatServer, tmp_path: Path
) -> None:
    runnable = [block for block in blocks(page) if block.executed]
    missing = sorted({name for block in runnable for name in block.needs if not os.environ.get(name)})
    if missing:
        skipped = [block.where for block in runnable if set(block.needs) & set(missing)]
        # A later block may build on a skipped one: run the page only with all it needs.
        pytest.skip(f"${' and $'.join(missing)} not set: {skipped} cannot run here")
    folder = tmp_path / "work"
    shutil.copytree(readme_folder, folder)
    steps = tmp_path / "steps.json"
    steps.write_text(json.dumps(
        # Blank lines before the body: a traceback names the page and the line in it.
        [{"where": b.where, "language": b.language, "body": "\n" * b.line + b.body}
         for b in runnable]
    ))
    result = subprocess.run(
        [sys.executable, str(REPO / "tests" / "doc_examples.py"), str(steps)],
        # A bound on a hang, not on speed: a page such as scale-out.md runs Ray ingests and
        # migrations beside the other test worker, and took over 300 s on a loaded machine.
        cwd=folder, env=page_environment(tmp_path / "home", answering_server.url),
        capture_output=True, text=True, timeout=900, check=False,
    )
    assert result.returncode == 0, f"{result.stdout[-3000:]}\n{result.stderr[-6000:]}"
