"""MultimodalRAG.ask, aask and describe_missing, offline and through the real openai client."""

from __future__ import annotations

import asyncio
import base64
import io
import logging
import socket
from pathlib import Path

import pytest
from PIL import Image

from chat_server import completion, echo_key_error, error, stream
from helpers import ColorEmbedder, encoded, solid
from multimodal_rag import (
    Answer,
    AnswerStream,
    AsyncAnswerStream,
    ExtractiveAnswerer,
    MultimodalRAG,
    OpenAIAnswerer,
    Record,
)
from multimodal_rag.errors import (
    AnswererAuthenticationError,
    InvalidInputError,
    NotFoundError,
    ReadOnlyError,
)

CANARY = "sk-canary-0d1e2a3d4b5e6e7f"


@pytest.fixture(autouse=True)
def no_provider_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("OPENAI_API_KEY", "OPENAI_BASE_URL", "OPENAI_ORG_ID", "OPENAI_PROJECT_ID"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def no_network(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args, **kwargs):
        raise AssertionError("a network connection was opened")

    monkeypatch.setattr(socket.socket, "connect", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)


def openai_answerer(server, **options) -> OpenAIAnswerer:
    settings = {"model": "test-vision", "api_key": CANARY, "base_url": server.url, "max_retries": 0, "timeout": 5.0}
    return OpenAIAnswerer(**{**settings, **options})


@pytest.fixture
def kb(tmp_path: Path, image_dir: Path):
    """A knowledge base of the solid-colour images; the black one has no description."""
    rag = MultimodalRAG.create(tmp_path / "kb", embedder=ColorEmbedder())
    rag.add_directory(image_dir, descriptions=image_dir / "description.json", progress=False)
    yield rag
    rag.close()


def decode(url: str) -> tuple[str, Image.Image]:
    header, _, payload = url.partition(",")
    image = Image.open(io.BytesIO(base64.b64decode(payload)))
    image.load()
    return header[len("data:") : -len(";base64")], image


# -- which answerer ----------------------------------------------------------------


def test_default_answerer_is_offline_without_a_key_and_says_so(embedder, caplog) -> None:
    with caplog.at_level(logging.INFO, logger="multimodal_rag"):
        rag = MultimodalRAG(embedder)
    assert isinstance(rag.answerer, ExtractiveAnswerer)
    assert "OPENAI_API_KEY is not set" in rag.answerer_reason
    assert rag.answerer_reason in caplog.text


def test_default_answerer_is_openai_when_a_key_is_set(embedder, monkeypatch, caplog) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", CANARY)
    with caplog.at_level(logging.INFO, logger="multimodal_rag"):
        rag = MultimodalRAG(embedder)
    assert isinstance(rag.answerer, OpenAIAnswerer) and rag.answerer.model == "gpt-4o"
    assert rag.answerer_reason.startswith("OPENAI_API_KEY is set")
    assert CANARY not in rag.answerer_reason and CANARY not in caplog.text
    given = MultimodalRAG(embedder, answerer=ExtractiveAnswerer())
    assert given.answerer_reason == "given by the caller"


# -- ask, offline -------------------------------------------------------------------


def test_ask_offline_answers_from_the_best_match(kb, no_network) -> None:
    answer = kb.ask("What is this?", image=encoded(solid("red", (64, 64))))
    assert answer.text.startswith("Best match: A red square.")
    assert answer.model == "extractive" and len(answer.sources) == 3
    assert answer.sources[0].score == pytest.approx(1.0, abs=1e-3)


def test_ask_without_image_searches_with_the_question(kb, no_network) -> None:
    assert kb.ask("something blue").sources[0].description == "A blue square."
    # An explicit search text wins over the question.
    assert kb.ask("what colour is it?", text="green", k=1).sources[0].description == "A green square."
    assert len(kb.ask("anything", k=5).sources) == 5


def test_ask_filters_and_streams_offline(kb, no_network) -> None:
    answer = kb.ask("red?", text="red", filter={"shade": "blue"}, k=2)
    assert [s.description for s in answer.sources] == ["A blue square."]
    answer_stream = kb.ask("red?", text="red", stream=True)
    assert isinstance(answer_stream, AnswerStream)
    assert "".join(answer_stream) == answer_stream.answer.text


def test_ask_refuses_bad_input(kb) -> None:
    with pytest.raises(InvalidInputError, match="empty"):
        kb.ask("   ", image=encoded(solid("red")))
    kb.answerer = None
    with pytest.raises(InvalidInputError, match="no answerer"):
        kb.ask("What?")


def test_ask_on_an_empty_knowledge_base_says_nothing_matches(embedder, no_network) -> None:
    answer = MultimodalRAG(embedder).ask("What is this?", image=encoded(solid("red")))
    assert "No matching item" in answer.text and answer.sources == ()


# -- ask, through the real client ---------------------------------------------------


def test_ask_end_to_end_through_the_openai_client(kb, chat_server, image_dir) -> None:
    chat_server.reply(completion("That is a red square.", model="test-vision-2024"))
    kb.answerer = openai_answerer(chat_server, max_image_side=64, max_tokens=200)
    answer = kb.ask("What is this?", image=encoded(solid("red", (256, 128)), "JPEG"), k=3)

    [request] = chat_server.requests
    assert request.body["model"] == "test-vision" and request.body["max_tokens"] == 200
    assert [m["role"] for m in request.messages] == ["system", "user"]
    (user_mime, user_seen), (match_mime, match_seen) = map(decode, request.image_urls())
    assert user_mime == "image/jpeg" and user_seen.size == (64, 32)
    # The best match is red.png from the knowledge base (40x30, small enough to send as is).
    assert match_mime == "image/png" and match_seen.size == (40, 30) and match_seen.getpixel((5, 5)) == (255, 0, 0)
    text = request.user_parts()[0]["text"]
    assert "What is this?" in text and text.count("<description ") == 3
    assert text.index("A red square.") < text.index("</description>")  # the best match comes first

    assert answer.text == "That is a red square." and answer.model == "test-vision-2024"
    assert answer.sources[0].description == "A red square." and len(answer.sources) == 3
    assert Path(answer.sources[0].image_path) == (image_dir / "warm" / "red.png").resolve()
    assert answer.usage["total_tokens"] == 18


def test_ask_streams_through_the_openai_client(kb, chat_server) -> None:
    chat_server.reply(stream(["Red", " square"]))
    kb.answerer = openai_answerer(chat_server)
    answer_stream = kb.ask("What is this?", image=encoded(solid("red")), stream=True)
    assert list(answer_stream) == ["Red", " square"]
    assert answer_stream.answer.text == "Red square" and answer_stream.answer.sources[0].description == "A red square."
    assert chat_server.requests[0].body["stream"] is True


def test_aask_through_the_openai_client(kb, chat_server) -> None:
    chat_server.reply(completion("async red"), stream(["a", "b"]))
    kb.answerer = openai_answerer(chat_server)

    async def run() -> tuple[Answer, list[str], Answer]:
        answer = await kb.aask("What is this?", image=encoded(solid("red")))
        answer_stream = await kb.aask("And this?", text="blue", stream=True)
        assert isinstance(answer_stream, AsyncAnswerStream)
        chunks = [chunk async for chunk in answer_stream]
        return answer, chunks, answer_stream.answer

    answer, chunks, streamed = asyncio.run(run())
    assert answer.text == "async red" and answer.sources[0].description == "A red square."
    assert chunks == ["a", "b"] and streamed.sources[0].description == "A blue square."
    assert len(chat_server.requests) == 2


def test_aask_offline_and_with_a_duck_typed_answerer(kb, no_network) -> None:
    class EchoAnswerer:  # only the required methods, no base class
        kind = "echo"

        def answer(self, question, *, image, matches, metadata=None):
            return Answer(text=f"{question} -> {matches[0].description}")

        def config(self):
            return {}

    async def run() -> tuple[str, str, str]:
        offline = await kb.aask("What?", text="green")
        kb.answerer = EchoAnswerer()
        plain = await kb.aask("Q", text="blue")
        answer_stream = await kb.aask("Q", text="red", stream=True)
        return offline.text, plain.text, "".join([c async for c in answer_stream])

    offline, plain, streamed = asyncio.run(run())
    assert offline.startswith("Best match: A green square.")
    assert plain == "Q -> A blue square." and streamed == "Q -> A red square."
    assert "".join(kb.ask("Q", text="red", stream=True)) == "Q -> A red square."


def test_the_key_stays_out_of_the_saved_knowledge_base(kb, chat_server) -> None:
    kb.answerer = openai_answerer(chat_server)
    kb.ask("What?", text="red")
    kb.save()
    for file in kb.path.rglob("*"):
        if file.is_file():
            assert CANARY.encode() not in file.read_bytes(), file
    assert CANARY not in repr(kb)


# -- describe_missing -----------------------------------------------------------------


def test_describe_missing_fills_only_images_without_a_description(kb, chat_server, capsys) -> None:
    chat_server.reply(
        completion(" A black square. ", model="describer-1"), completion("A cyan tile.", model="describer-1")
    )
    [extra] = kb.add(encoded(solid("cyan", (20, 20))), progress=False)  # kept in the knowledge base's images
    kb.answerer = openai_answerer(chat_server, max_image_side=32)
    black = next(i for i in kb.ids() if kb.get(i).image_path and Path(kb.get(i).image_path).stem == "black")
    before = {i: kb.get(i) for i in kb.ids()}

    result = kb.describe_missing(batch_size=1, workers=1, progress=True)

    assert set(result.described) == {black, extra} and result.skipped == ()
    assert len(chat_server.requests) == 2
    assert "describing" in capsys.readouterr().err  # the progress bar
    assert kb.get(black).description == "A black square."
    assert kb.get(black).metadata == {"description_source": "machine", "description_model": "describer-1"}
    assert kb.get(extra).description == "A cyan tile."
    for id_, record in before.items():  # a person's descriptions are untouched
        if id_ not in (black, extra):
            assert kb.get(id_) == record
    # Every image sent was shrunk to 32 px at most.
    assert all(max(decode(r.image_urls()[0])[1].size) <= 32 for r in chat_server.requests)
    # Nothing is left to describe.
    assert kb.describe_missing(progress=False).described == ()
    assert len(chat_server.requests) == 2


def test_describe_missing_is_journalled_like_any_change(tmp_path, image_dir, chat_server) -> None:
    path = tmp_path / "kb"
    rag = MultimodalRAG.create(path, embedder=ColorEmbedder(), answerer=openai_answerer(chat_server))
    rag.add_directory(image_dir, descriptions=image_dir / "description.json", progress=False)
    [black] = rag.describe_missing(progress=False).described
    rag.close()  # no save
    reopened = MultimodalRAG.open(path, embedder=ColorEmbedder())
    try:
        assert reopened.get(black).description == "A default answer."
        assert reopened.get(black).metadata["description_source"] == "machine"
    finally:
        reopened.close()


def test_describe_missing_skips_unreadable_and_refused_images(kb, chat_server, tmp_path) -> None:
    broken = tmp_path / "broken.png"
    broken.write_bytes(b"not a png")
    kb.add([solid("white", (5, 5)), solid("cyan", (6, 6))], ids=["unreadable", "refused"], progress=False)
    kb.describe("unreadable", None)
    kb.description_store.put([Record(id="unreadable", image_path=str(broken))])  # its file went bad
    black = next(i for i in kb.ids() if kb.get(i).description is None and i not in ("unreadable", "refused"))
    chat_server.reply(error(400, "Image refused by the content filter"), completion("A black square."))
    kb.answerer = openai_answerer(chat_server)

    result = kb.describe_missing(ids=["unreadable", "refused", black], workers=1, progress=False)

    reasons = {s.source: s.reason for s in result.skipped}
    assert set(reasons) == {"unreadable", "refused"} and result.described == (black,)
    assert "broken.png" in reasons["unreadable"] and "content filter" in reasons["refused"]
    assert len(chat_server.requests) == 2  # the unreadable image was never sent
    assert kb.get("unreadable").description is None and kb.get("refused").description is None
    assert kb.get(black).description == "A black square."


def test_describe_missing_stops_on_bad_credentials_keeping_finished_batches(kb, chat_server) -> None:
    kb.add([solid("cyan", (7, 7)), solid("cyan", (8, 8))], ids=["c1", "c2"], progress=False)
    chat_server.reply(completion("first"), echo_key_error())
    kb.answerer = openai_answerer(chat_server)
    with pytest.raises(AnswererAuthenticationError) as caught:
        kb.describe_missing(batch_size=1, workers=1, progress=False)
    assert CANARY not in str(caught.value)
    described = [i for i in kb.ids() if kb.get(i).metadata.get("description_source") == "machine"]
    assert len(described) == 1 and kb.get(described[0]).description == "first"


def test_describe_missing_never_overwrites_a_description_written_meanwhile(kb) -> None:
    kb.add([solid("cyan", (9, 9))], ids=["late"], progress=False)

    class PersonFirst:
        """Describes images, but a person writes a description of 'late' while it works."""

        def describe_image(self, image):
            kb.describe("late", "Written by a person.")
            return Answer(text="machine text", model="m")

    result = kb.describe_missing(describer=PersonFirst(), ids=["late"], progress=False)
    assert result.described == () and result.skipped[0].reason == "it was described (or removed) meanwhile"
    assert kb.get("late").description == "Written by a person."


def test_describe_missing_refusals(kb, tmp_path) -> None:
    with pytest.raises(InvalidInputError, match="ExtractiveAnswerer cannot describe images"):
        kb.describe_missing(progress=False)

    class Labeller:
        def describe_image(self, image):
            return Answer(text="label", model="m")

    with pytest.raises(NotFoundError, match="nope"):
        kb.describe_missing(describer=Labeller(), ids=["nope"], progress=False)
    kb.save()
    kb.close()
    reader = MultimodalRAG.open(kb.path, embedder=ColorEmbedder(), read_only=True)
    with pytest.raises(ReadOnlyError):
        reader.describe_missing(progress=False)
