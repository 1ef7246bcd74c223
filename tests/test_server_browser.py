"""The web page of ``multimodal-rag serve`` in a real browser: a real server process on a free
loopback port, a tiny-model knowledge base of the example images, an answer streamed from the
local chat server, and Chromium driven by Playwright.

Skips only when Chromium or Playwright is missing (``apt-get install chromium``;
``pip install playwright``, in the dev extra); the screenshot goes to docs/images/serving.png.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from chat_server import stream
from multimodal_rag import CLIPEmbedder, MultimodalRAG
from tiny_clip import make_tiny_clip_checkpoint

ROOT = Path(__file__).resolve().parents[1]
STAMPS = ROOT / "examples" / "stamps"
SCREENSHOT = ROOT / "docs" / "images" / "serving.png"
CHROMIUM = next(
    (found for name in ("chromium", "chromium-browser", "google-chrome") if (found := shutil.which(name))), None
)

pytest.importorskip("starlette", reason="the server extra is not installed")
sync_api = pytest.importorskip(
    "playwright.sync_api", reason="playwright is not installed (pip install playwright; it is in the dev extra)"
)
pytestmark = pytest.mark.skipif(
    CHROMIUM is None, reason="no chromium on PATH (apt-get install -y chromium); the browser test needs one"
)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def served(tmp_path: Path, chat_server):
    """A ``multimodal-rag serve`` process over the example images; yields its base URL."""
    embedder = CLIPEmbedder(
        checkpoint=make_tiny_clip_checkpoint(tmp_path / "tiny.pt", image_resolution=64, patch_size=16),
        precision="fp32",
        device="cpu",
    )
    with MultimodalRAG.create(tmp_path / "stamps-kb", embedder=embedder) as rag:
        rag.add_directory(STAMPS / "images", descriptions=STAMPS / "description.jsonl", progress=False)
    port = free_port()
    env = {
        **os.environ,
        "OPENAI_API_KEY": "local-test-key",
        "OPENAI_BASE_URL": chat_server.url,
        "PYTHONUNBUFFERED": "1",
    }
    env.pop("MULTIMODAL_RAG_TOKEN", None)
    log = tmp_path / "serve.log"
    with log.open("w") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "multimodal_rag", "serve", str(tmp_path / "stamps-kb"), "--port", str(port),
             "--answerer", "openai", "--answer-model", "vision-model", "--log-level", "warning",
             "--image-root", str(STAMPS / "images")],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(f"{url}/healthz", timeout=2) as response:
                    if response.status == 200:
                        break
            except OSError:
                pass
            assert process.poll() is None, f"serve exited:\n{log.read_text()}"
            assert time.monotonic() < deadline, f"serve did not start:\n{log.read_text()}"
            time.sleep(0.1)
        yield url
    finally:
        process.terminate()
        try:
            process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def test_the_page_finds_matches_and_streams_the_answer(served: str, chat_server) -> None:
    chat_server.reply(stream(["This looks like ", "a great blue heron ", "in flight, ", "like the first match."]))
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        try:
            page = browser.new_page(viewport={"width": 1100, "height": 900})
            errors: list[str] = []
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            page.goto(served + "/")
            sync_api.expect(page.locator("#kb-info")).to_contain_text("8 images")
            # The tiny model's weights are random: the page says so above everything else.
            sync_api.expect(page.get_by_role("alert")).to_contain_text("random weights")
            # By label, as a person using a screen reader or the keyboard finds them.
            page.get_by_label("Question").fill("What bird is this?")
            page.locator("#image").set_input_files(str(STAMPS / "queries" / "heron_greatblue_flying.png"))
            sync_api.expect(page.locator("#preview")).to_be_visible()
            page.get_by_label("Number of matches").select_option("3")
            page.get_by_label("Question").press("Enter")  # submits the form from the keyboard

            matches = page.locator("#matches li.match")
            sync_api.expect(matches).to_have_count(3)
            sync_api.expect(page.locator("#answer")).to_have_text(
                "This looks like a great blue heron in flight, like the first match.", timeout=15_000
            )
            sync_api.expect(page.locator("#status")).to_contain_text("Answered by served-model")
            sync_api.expect(matches.first.locator(".score")).to_contain_text("1. score ")
            page.wait_for_function(
                "[...document.querySelectorAll('#matches img')].every(img => img.complete && img.naturalWidth > 0)"
            )
            descriptions = matches.locator(".description").all_inner_texts()
            assert len(descriptions) == 3 and all(text.strip() for text in descriptions)
            assert errors == []
            SCREENSHOT.parent.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(SCREENSHOT), full_page=True)
        finally:
            browser.close()
    [request] = chat_server.requests
    assert request.body["stream"] is True and request.body["model"] == "vision-model"
    assert "What bird is this?" in request.text()
