"""A canary API key must never reach a knowledge base's files, a repr, a log line or an error."""

from __future__ import annotations

import logging
import traceback
from pathlib import Path

import pytest

from chat_server import echo_key_error
from helpers import ColorEmbedder, solid
from multimodal_rag import AnswererAuthenticationError, MultimodalRAG, OpenAIAnswerer

CANARY = "sk-canary-reliability-0c1d2e3f4a5b"


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
