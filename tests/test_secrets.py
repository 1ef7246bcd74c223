"""Canary secrets must never reach a knowledge base's files, a repr, a log line or an error."""

from __future__ import annotations

import base64
import logging
import traceback
from pathlib import Path

import pytest

from chat_server import echo_key_error, error
from helpers import ColorEmbedder, solid
from multimodal_rag import Hit, MultimodalRAG, OpenAIAnswerer
from multimodal_rag.errors import AnswererAuthenticationError, AnswererError

CANARY = "sk-canary-reliability-0c1d2e3f4a5b"
PASSWORD = "pw-canary-reliability-6a7b8c9d"


def test_a_canary_key_appears_nowhere(tmp_path: Path, chat_server, caplog, monkeypatch) -> None:
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    caplog.set_level(logging.DEBUG)
    answerer = OpenAIAnswerer(model="test-vision", api_key=CANARY, base_url=chat_server.url, max_retries=0,
                              timeout=5.0)
    rag = MultimodalRAG.create(tmp_path / "kb", embedder=ColorEmbedder(), answerer=answerer)
    rag.add([solid("red"), solid("blue")], descriptions=["a red square", "a blue square"], progress=False)
    rag.save()
    rag.add([solid("green")], descriptions=["journaled"], progress=False)
    hits = rag.search(text="red", k=2)
    chat_server.reply(echo_key_error())
    with pytest.raises(AnswererAuthenticationError) as caught:
        answerer.answer("What is it?", image=solid("red"), matches=hits)
    rag.close()

    shown = [repr(rag), str(rag), repr(answerer), str(answerer.config()), repr(hits)]
    shown.append("".join(traceback.format_exception(caught.value)))  # the whole chain, as a log would print it
    shown += [record.getMessage() for record in caplog.records]
    shown += [path.read_bytes().decode("utf-8", "replace") for path in (tmp_path / "kb").rglob("*") if path.is_file()]
    assert chat_server.requests, "the request reached the server"
    assert not [text for text in shown if CANARY in text]


def _everything_shown(errors: list[BaseException], caplog: pytest.LogCaptureFixture) -> list[str]:
    shown = ["".join(traceback.format_exception(e)) for e in errors]  # the chains, as logged
    shown += [repr(vars(e.__cause__)) for e in errors]  # the provider's error: body, message...
    shown += [record.getMessage() for record in caplog.records]
    return shown


def test_a_password_in_the_base_url_appears_nowhere(chat_server, caplog, monkeypatch) -> None:
    url = chat_server.url.replace("http://", f"http://gateway:{PASSWORD}@")
    monkeypatch.setenv("OPENAI_BASE_URL", url)
    monkeypatch.setenv("OPENAI_API_KEY", CANARY)
    caplog.set_level(logging.DEBUG)  # the HTTP client logs each request's URL at INFO
    answerer = OpenAIAnswerer(model="test-vision", max_retries=0, timeout=5.0)
    matches = [Hit(id="a", score=0.9, description="a red square")]
    answerer.answer("What is it?", image=None, matches=matches)
    # Servers that echo the authorization header, or the URL they were asked for.
    chat_server.reply(echo_key_error(), error(404, f"no route {url}/chat/completions"))
    errors = []
    for _ in range(2):
        with pytest.raises(AnswererError) as caught:
            answerer.answer("What is it?", image=None, matches=matches)
        errors.append(caught.value)

    basic = base64.b64encode(f"gateway:{PASSWORD}".encode()).decode()
    # The credentials still reach the server, as HTTP basic authentication.
    assert chat_server.requests[0].headers["authorization"] == f"Basic {basic}"
    shown = _everything_shown(errors, caplog)
    shown += [str(answerer.base_url), repr(answerer), str(answerer.config())]
    assert any("HTTP Request" in text for text in shown), "the client's request log was seen"
    assert not [text for text in shown if PASSWORD in text or basic in text]


def test_an_echoed_key_is_redacted_in_the_chained_providers_error(chat_server) -> None:
    answerer = OpenAIAnswerer(model="test-vision", api_key=CANARY, base_url=chat_server.url, max_retries=0)
    chat_server.reply(echo_key_error())
    with pytest.raises(AnswererAuthenticationError) as caught:
        answerer.answer("What is it?", image=None, matches=[Hit(id="a", score=0.9, description="red")])
    cause = caught.value.__cause__
    assert "Incorrect API key provided: ***" in str(cause.body)
    assert CANARY not in repr(vars(cause)) and CANARY not in str(cause)
