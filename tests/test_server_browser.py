"""The web page of ``multimodal-rag serve`` in a real browser: a real server process on a free
loopback port, a tiny-model knowledge base of the example images, an answer streamed from the
local chat server, and Chromium driven by Playwright; then the same in Persian, right to left.

Skips only when Chromium or Playwright is missing (``apt-get install chromium``;
``pip install playwright``, in the dev extra); the screenshots go to docs/images/serving.png and
docs/images/serving-fa.png. Persian needs an Arabic-script font (Debian's fonts-noto-core).
"""

from __future__ import annotations

import contextlib
import io
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from chat_server import stream
from multimodal_rag import CLIPEmbedder, MultimodalRAG
from tiny_clip import make_tiny_clip_checkpoint

ROOT = Path(__file__).resolve().parents[1]
STAMPS = ROOT / "examples" / "stamps"
SCREENSHOT = ROOT / "docs" / "images" / "serving.png"
SCREENSHOT_FA = ROOT / "docs" / "images" / "serving-fa.png"
#: Five stamps described in Persian (one in English: each description takes its own direction).
PERSIAN_DESCRIPTIONS = {
    "heron_greatblue.png": "حواصیل آبی بزرگ (Ardea herodias)، پرنده‌ای بلندپا که کنار آب شکار می‌کند.",
    "penguin.png": "پنگوئن، پرنده‌ای که پرواز نمی‌کند اما شناگری چیره‌دست است.",
    "frog.png": "قورباغه‌ای سبز، دوزیستی که هم در آب زندگی می‌کند و هم در خشکی.",
    "tiger.png": "ببر، بزرگ‌ترین گربه‌سان جهان، با راه‌راه‌های سیاه بر پوست نارنجی.",
    "teapot.png": "A teapot.",
}
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


@contextlib.contextmanager
def serving(kb: Path, log: Path, chat_server, *options: str) -> Iterator[str]:
    """A ``multimodal-rag serve`` process over ``kb``; yields its base URL."""
    port = free_port()
    env = {
        **os.environ,
        "OPENAI_API_KEY": "local-test-key",
        "OPENAI_BASE_URL": chat_server.url,
        "PYTHONUNBUFFERED": "1",
    }
    env.pop("MULTIMODAL_RAG_TOKEN", None)
    with log.open("w") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "multimodal_rag", "serve", str(kb), "--port", str(port),
             "--answerer", "openai", "--answer-model", "vision-model", "--log-level", "warning",
             "--image-root", str(STAMPS / "images"), *options],
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


def tiny_embedder(tmp_path: Path) -> CLIPEmbedder:
    return CLIPEmbedder(
        checkpoint=make_tiny_clip_checkpoint(tmp_path / "tiny.pt", image_resolution=64, patch_size=16),
        precision="fp32",
        device="cpu",
    )


@pytest.fixture
def served(tmp_path: Path, chat_server) -> Iterator[str]:
    """A ``multimodal-rag serve`` process over the example images; yields its base URL."""
    with MultimodalRAG.create(tmp_path / "stamps-kb", embedder=tiny_embedder(tmp_path)) as rag:
        rag.add_directory(STAMPS / "images", descriptions=STAMPS / "description.jsonl", progress=False)
    with serving(tmp_path / "stamps-kb", tmp_path / "serve.log", chat_server) as url:
        yield url


@pytest.fixture
def served_in_persian(tmp_path: Path, chat_server) -> Iterator[str]:
    """``serve`` over five stamps described in Persian (no --lang: each browser's
    Accept-Language chooses); yields its base URL."""
    with MultimodalRAG.create(tmp_path / "تمبرها", embedder=tiny_embedder(tmp_path)) as rag:
        rag.add(
            [STAMPS / "images" / name for name in PERSIAN_DESCRIPTIONS],
            descriptions=list(PERSIAN_DESCRIPTIONS.values()),
            progress=False,
        )
    with serving(tmp_path / "تمبرها", tmp_path / "serve.log", chat_server) as url:
        yield url


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
            # The server's first query runs the model for the first time (on a busy machine,
            # seconds): the same allowance as the answer below, not the 5 s default.
            sync_api.expect(matches).to_have_count(3, timeout=15_000)
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


def dark_columns(png: bytes) -> tuple[int, int, int]:
    """The first and last column holding dark (text) pixels of a screenshot, and its width."""
    with Image.open(io.BytesIO(png)) as shot:
        gray = np.asarray(shot.convert("L"))
    columns = np.flatnonzero(gray.min(axis=0) < 100)
    return int(columns[0]), int(columns[-1]), gray.shape[1]


def test_the_page_in_persian_runs_right_to_left(served_in_persian: str, chat_server) -> None:
    """A browser that asks for Persian gets Persian labels and digits, the layout mirrored, and
    every description, the question and the answer in their own script's direction; one that
    asks for English gets the English page, where the Persian descriptions still run right to
    left. (``serve --lang``, which overrides the browser, is tested in test_server.py.)"""
    chat_server.reply(
        stream(["این عکس ", "به احتمال زیاد ", "حواصیل آبی بزرگی ", "در حال پرواز است."]),
        stream(["A great blue heron."]),
    )
    directions = {text: "ltr" if text.isascii() else "rtl" for text in PERSIAN_DESCRIPTIONS.values()}
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=["--no-sandbox"])
        try:
            # Chromium's Accept-Language: fa-IR,fa;q=0.9.
            page = browser.new_page(viewport={"width": 1100, "height": 900}, locale="fa-IR")
            errors: list[str] = []
            page.on("pageerror", lambda exc: errors.append(str(exc)))
            page.goto(served_in_persian + "/")
            direction = "(element) => getComputedStyle(element).direction"
            assert page.locator("html").get_attribute("lang") == "fa"
            assert page.locator("html").evaluate(direction) == "rtl"
            # Persian labels, Persian digits, and the knowledge base's Persian name.
            sync_api.expect(page.locator("#kb-info")).to_contain_text("پایگاه دانش تمبرها: ۵ تصویر")
            sync_api.expect(page.get_by_role("alert")).to_contain_text("وزن‌های تصادفی")
            question = page.get_by_label("پرسش")
            assert question.input_value() == "این چیست؟" and question.evaluate(direction) == "rtl"
            question.fill("این چه پرنده‌ای است؟")
            page.locator("#image").set_input_files(str(STAMPS / "queries" / "heron_greatblue_flying.png"))
            sync_api.expect(page.locator("#preview")).to_be_visible()
            page.get_by_label("تعداد تطابق‌ها").select_option("5")
            # Mirrored: the photo's box, first in the form, stands on the right.
            drop, fields = page.locator("#drop").bounding_box(), page.locator(".fields").bounding_box()
            assert drop is not None and fields is not None and drop["x"] > fields["x"] + fields["width"]
            page.get_by_role("button", name="بپرس").click()

            matches = page.locator("#matches li.match")
            # The server's first query runs the model for the first time: as in the test above.
            sync_api.expect(matches).to_have_count(5, timeout=15_000)
            answer = page.locator("#answer")
            sync_api.expect(answer).to_have_text("این عکس به احتمال زیاد حواصیل آبی بزرگی در حال پرواز است.", timeout=15_000)
            sync_api.expect(page.locator("#status")).to_contain_text("served-model در")
            sync_api.expect(matches.first.locator(".score")).to_contain_text("۱. امتیاز ")
            page.wait_for_function(
                "[...document.querySelectorAll('#matches img')].every(img => img.complete && img.naturalWidth > 0)"
            )
            assert answer.evaluate(direction) == "rtl" and page.locator("#status").evaluate(direction) == "rtl"
            # Each description runs its own way: the Persian ones right to left, the English one left to right.
            shown = {}
            for description in matches.locator(".description").all():
                shown[description.inner_text()] = description.evaluate(direction)
            assert shown == directions
            assert errors == []
            # In pixels too: the answer's text hugs the right edge of its box, not the left.
            left, right, width = dark_columns(answer.screenshot())
            assert width - right < 40 and left > width / 3, (left, right, width)
            SCREENSHOT_FA.parent.mkdir(parents=True, exist_ok=True)
            page.screenshot(path=str(SCREENSHOT_FA), full_page=True)

            # A browser that asks for English: the English page, the Persian text still right to left.
            english = browser.new_page(viewport={"width": 1100, "height": 900}, locale="en-US")
            english.on("pageerror", lambda exc: errors.append(str(exc)))
            english.goto(served_in_persian + "/")
            assert english.locator("html").evaluate(direction) == "ltr"
            sync_api.expect(english.locator("#kb-info")).to_contain_text("Knowledge base تمبرها: 5 images")
            english.get_by_label("Question").fill("What bird is this?")
            english.get_by_label("Number of matches").select_option("5")
            english.get_by_role("button", name="Ask").click()
            sync_api.expect(english.locator("#answer")).to_have_text("A great blue heron.", timeout=15_000)
            english_matches = english.locator("#matches li.match .description")
            sync_api.expect(english_matches).to_have_count(5)
            assert {d.inner_text(): d.evaluate(direction) for d in english_matches.all()} == directions
            assert errors == []
        finally:
            browser.close()
    persian_request, english_request = chat_server.requests
    assert "این چه پرنده‌ای است؟" in persian_request.text() and "What bird" in english_request.text()
