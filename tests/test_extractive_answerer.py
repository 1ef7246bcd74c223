"""ExtractiveAnswerer: answers from the best match with no model and no network."""

from __future__ import annotations

import asyncio
import socket

import pytest

from multimodal_rag import AnswerStream, ExtractiveAnswerer, Hit
from multimodal_rag._registry import kind_of, resolve
from multimodal_rag.errors import InvalidInputError

MATCHES = [
    Hit(id="b", score=0.40, description="A blue square."),
    Hit(id="r", score=0.93, description="A red square.", image_path="/kb/red.png"),
    Hit(id="g", score=0.71),
]


@pytest.fixture
def no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args, **kwargs):
        raise AssertionError("the extractive answerer opened a network connection")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


def test_answers_with_the_best_description_and_lists_the_others(no_network) -> None:
    answer = ExtractiveAnswerer().answer("What is this?", image=b"ignored", matches=MATCHES)
    lines = answer.text.splitlines()
    assert lines[0] == "Best match: A red square. (id r, score 0.930)."
    assert lines[1:] == [
        "Other candidates:",
        "- (no description) (id g, score 0.710)",
        "- A blue square. (id b, score 0.400)",
    ]
    assert [(s.id, s.score) for s in answer.sources] == [("r", 0.93), ("g", 0.71), ("b", 0.40)]
    assert answer.sources[0].image_path == "/kb/red.png"
    assert answer.model == "extractive" and answer.usage == {} and answer.latency_s >= 0


def test_min_score_gate_and_candidate_limit(no_network) -> None:
    answerer = ExtractiveAnswerer(min_score=0.5, max_candidates=0)
    answer = answerer.answer("Q?", image=None, matches=MATCHES)
    assert answer.text == "Best match: A red square. (id r, score 0.930)."
    assert [s.id for s in answer.sources] == ["r"]
    gated = ExtractiveAnswerer(min_score=0.95).answer("Q?", image=None, matches=MATCHES)
    assert gated.text.startswith("No matching item was found") and "0.930" in gated.text and "0.950" in gated.text
    assert gated.sources == ()
    empty = ExtractiveAnswerer().answer("Q?", image=None, matches=[])
    assert "No matching item" in empty.text and empty.sources == ()


def test_best_match_without_description(no_network) -> None:
    answer = ExtractiveAnswerer().answer("Q?", image=None, matches=[Hit(id="x", score=0.5)])
    assert answer.text == "Best match: id x (score 0.500), which has no description."


def test_default_stream_and_async_methods(no_network) -> None:
    answerer = ExtractiveAnswerer()
    answer_stream = answerer.stream("Q?", image=None, matches=MATCHES)
    assert isinstance(answer_stream, AnswerStream)
    assert "".join(answer_stream) == answer_stream.answer.text and answer_stream.answer.sources
    assert asyncio.run(answerer.aanswer("Q?", image=None, matches=MATCHES)).text.startswith("Best match: A red")

    async def streamed() -> str:
        async_stream = await answerer.astream("Q?", image=None, matches=MATCHES)
        return "".join([chunk async for chunk in async_stream]) + "|" + async_stream.answer.model

    assert asyncio.run(streamed()).endswith("|extractive")


def test_registry_and_config_round_trip() -> None:
    answerer = ExtractiveAnswerer(min_score=0.3, max_candidates=2)
    assert kind_of(answerer) == "extractive"
    rebuilt = resolve("answerer", "extractive")(**answerer.config())
    assert rebuilt.config() == {"min_score": 0.3, "max_candidates": 2}


@pytest.mark.parametrize("options", [{"min_score": 1.5}, {"min_score": "high"}, {"max_candidates": -1}])
def test_bad_options(options) -> None:
    with pytest.raises(InvalidInputError):
        ExtractiveAnswerer(**options)


@pytest.mark.parametrize("question", ["", "   ", None, 3])
def test_bad_questions(question) -> None:
    with pytest.raises(InvalidInputError):
        ExtractiveAnswerer().answer(question, image=None, matches=MATCHES)
