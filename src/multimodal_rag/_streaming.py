"""Answers that arrive piece by piece.

A streamed answer is an iterator of text chunks that, once exhausted, also holds the
complete [`Answer`][multimodal_rag.types.Answer] (with sources, usage and latency):

```python
stream = rag.ask("What is this?", image="photo.jpg", stream=True)
for chunk in stream:
    print(chunk, end="", flush=True)
print(stream.answer.usage)
```

Producers yield ``str`` chunks and then exactly one [`Answer`][multimodal_rag.types.Answer]; the stream passes the
chunks on and keeps the answer.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any

from multimodal_rag.errors import AnswererError
from multimodal_rag.types import Answer

__all__ = ["AnswerStream", "AsyncAnswerStream"]


class AnswerStream(Iterator[str]):
    """Text chunks of an answer as they arrive; [`answer`][multimodal_rag._streaming.AnswerStream.answer] once they are all in.

    Use it as a context manager (or call [`close`][multimodal_rag._streaming.AnswerStream.close]) to stop early and release the
    connection.

    Args:
        source: Yields the chunks, then one [`Answer`][multimodal_rag.types.Answer].
        on_close: Releases what the source holds (a connection); called by [`close`][multimodal_rag._streaming.AnswerStream.close],
            which matters when the source was never started and so cannot clean up itself.
    """

    def __init__(self, source: Iterator[str | Answer], *, on_close: Callable[[], None] | None = None) -> None:
        self._source = source
        self._on_close = on_close
        self._answer: Answer | None = None

    @classmethod
    def from_answer(cls, answer: Answer) -> AnswerStream:
        """A stream of one chunk, the whole answer (for answerers that cannot stream)."""
        return cls(iter([answer.text, answer]))

    def __iter__(self) -> AnswerStream:
        return self

    def __next__(self) -> str:
        if self._answer is not None:
            raise StopIteration
        # A producer that stops without an Answer ends the chunks; .answer then says so.
        item = next(self._source)
        if isinstance(item, Answer):
            self._answer = item
            raise StopIteration
        return item

    @property
    def done(self) -> bool:
        """Whether every chunk has been read."""
        return self._answer is not None

    @property
    def answer(self) -> Answer:
        """The complete answer. Reads (and discards) any chunks not read yet."""
        for _ in self:
            pass
        if self._answer is None:
            raise AnswererError("the answer stream ended without a final answer")
        return self._answer

    def close(self) -> None:
        """Stop reading and release the connection; [`answer`][multimodal_rag._streaming.AnswerStream.answer] is then unavailable."""
        close = getattr(self._source, "close", None)
        if close is not None:
            close()
        if self._on_close is not None:
            self._on_close()

    def __enter__(self) -> AnswerStream:
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self.close()


class AsyncAnswerStream(AsyncIterator[str]):
    """The asynchronous counterpart of [`AnswerStream`][multimodal_rag._streaming.AnswerStream] (``async for chunk in stream``).

    [`get_answer`][multimodal_rag._streaming.AsyncAnswerStream.get_answer] awaits the remaining chunks and returns the complete answer;
    [`answer`][multimodal_rag._streaming.AsyncAnswerStream.answer] returns it once the stream has been read to the end.
    """

    def __init__(
        self, source: AsyncIterator[str | Answer], *, on_close: Callable[[], Awaitable[None]] | None = None
    ) -> None:
        self._source = source
        self._on_close = on_close
        self._answer: Answer | None = None

    @classmethod
    def from_answer(cls, answer: Answer) -> AsyncAnswerStream:
        """A stream of one chunk, the whole answer (for answerers that cannot stream)."""

        async def chunks() -> AsyncIterator[str | Answer]:
            yield answer.text
            yield answer

        return cls(chunks())

    def __aiter__(self) -> AsyncAnswerStream:
        return self

    async def __anext__(self) -> str:
        if self._answer is not None:
            raise StopAsyncIteration
        item = await self._source.__anext__()
        if isinstance(item, Answer):
            self._answer = item
            raise StopAsyncIteration
        return item

    @property
    def done(self) -> bool:
        """Whether every chunk has been read."""
        return self._answer is not None

    @property
    def answer(self) -> Answer:
        """The complete answer.

        Raises:
            AnswererError: The stream has not been read to the end yet (await
                [`get_answer`][multimodal_rag._streaming.AsyncAnswerStream.get_answer] instead).
        """
        if self._answer is None:
            raise AnswererError("the answer is not complete yet; read the stream to the end or await get_answer()")
        return self._answer

    async def get_answer(self) -> Answer:
        """Read (and discard) any chunks not read yet, then return the complete answer."""
        async for _ in self:
            pass
        if self._answer is None:
            raise AnswererError("the answer stream ended without a final answer")
        return self._answer

    async def aclose(self) -> None:
        """Stop reading and release the connection."""
        aclose = getattr(self._source, "aclose", None)
        if aclose is not None:
            await aclose()
        if self._on_close is not None:
            await self._on_close()

    async def __aenter__(self) -> AsyncAnswerStream:
        return self

    async def __aexit__(self, *exc_info: Any) -> None:
        await self.aclose()
