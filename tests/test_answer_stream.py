"""AnswerStream and AsyncAnswerStream: chunks first, then the complete answer."""

from __future__ import annotations

import asyncio

import pytest

from multimodal_rag import Answer, AnswerStream, AsyncAnswerStream
from multimodal_rag.errors import AnswererError


def test_chunks_then_answer_and_close_releases_the_source() -> None:
    closed = []

    def produce():
        try:
            yield "a"
            yield "b"
            yield Answer(text="ab", model="m")
        finally:
            closed.append(True)

    answer_stream = AnswerStream(produce())
    assert not answer_stream.done
    assert next(answer_stream) == "a"
    with answer_stream:
        pass
    assert closed == [True]
    full = AnswerStream(produce())
    assert list(full) == ["a", "b"] and full.done and full.answer.text == "ab"


def test_close_releases_a_source_that_never_started() -> None:
    released = []

    def produce():
        yield "never read"

    with AnswerStream(produce(), on_close=lambda: released.append("sync")):
        pass

    async def release() -> None:
        released.append("async")

    async def run() -> None:
        async def produce_async():
            yield "never read"

        async with AsyncAnswerStream(produce_async(), on_close=release):
            pass

    asyncio.run(run())
    assert released == ["sync", "async"]


def test_a_producer_without_final_answer_is_reported() -> None:
    answer_stream = AnswerStream(iter(["a"]))
    assert list(answer_stream) == ["a"]
    with pytest.raises(AnswererError, match="without a final answer"):
        answer_stream.answer  # noqa: B018


def test_async_stream_answer_requires_reading_to_the_end() -> None:
    async def produce():
        yield "x"
        yield Answer(text="x")

    async def run() -> None:
        answer_stream = AsyncAnswerStream(produce())
        with pytest.raises(AnswererError, match="not complete yet"):
            answer_stream.answer  # noqa: B018
        assert (await answer_stream.get_answer()).text == "x"
        assert answer_stream.done and answer_stream.answer.text == "x"
        async with AsyncAnswerStream.from_answer(Answer(text="y")) as one:
            assert [chunk async for chunk in one] == ["y"]

    asyncio.run(run())
