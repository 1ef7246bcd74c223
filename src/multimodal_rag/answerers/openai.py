"""Answers with a vision model behind any OpenAI-compatible chat-completions endpoint.

One request per question, as in the OpenAI cookbook: the question, the user's image, the
best match's image (and optionally the next ones) and each match's description. Pointing
``base_url`` elsewhere (or injecting a client) reaches Azure OpenAI, local servers and
gateways that speak the same protocol.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import threading
import time
import weakref
from collections.abc import (
    AsyncGenerator,
    AsyncIterator,
    Awaitable,
    Callable,
    Iterator,
    Mapping,
    Sequence,
)
from contextlib import AbstractContextManager, contextmanager
from typing import Any, ClassVar, Literal, NamedTuple

from multimodal_rag._extras import require
from multimodal_rag._remote import redact_url
from multimodal_rag._streaming import AnswerStream, AsyncAnswerStream
from multimodal_rag._validation import check_int, check_question, check_timeout
from multimodal_rag.answerers.data_urls import image_data_url
from multimodal_rag.answerers.matches import (
    check_min_score,
    image_text,
    no_match_text,
    passing_matches,
    sources_of,
)
from multimodal_rag.answerers.openai_errors import (
    Secret,
    map_provider_error,
    redact_exception,
    secret_texts,
    url_credentials,
)
from multimodal_rag.answerers.prompt import PromptTemplate
from multimodal_rag.errors import (
    AnswererAuthenticationError,
    AnswererError,
    ImageError,
    InvalidInputError,
)
from multimodal_rag.protocols import Answerer
from multimodal_rag.types import Answer, Hit, ImageInput

__all__ = [
    "API_KEY_ENV",
    "BASE_URL_ENV",
    "DEFAULT_MODEL",
    "OpenAIAnswerer",
    "client_options",
    "configured_api_key",
    "configured_base_url",
    "endpoint_name",
    "import_openai",
    "missing_key_message",
    "provider_errors",
]

logger = logging.getLogger(__name__)

#: Environment variable the API key is read from when none is passed.
API_KEY_ENV = "OPENAI_API_KEY"
#: Environment variable the endpoint is read from when no base URL is passed.
BASE_URL_ENV = "OPENAI_BASE_URL"
#: The model asked when none is named: a vision model.
DEFAULT_MODEL = "gpt-4o"

_DEFAULT_ENDPOINT = "https://api.openai.com/v1"

NoMatchPolicy = Literal["refuse", "image_only"]


class OpenAIAnswerer(Answerer):
    """Asks a vision model through the official ``openai`` client.

    Every argument is a keyword. ``api_key`` and ``base_url`` default to the
    ``OPENAI_API_KEY`` and ``OPENAI_BASE_URL`` environment variables. The key, and a
    ``user:password@`` written into the base URL, are never part of `config`,
    ``base_url``, the repr, log lines or error messages (including the provider's error
    chained as ``__cause__`` and its ``body``), even when the provider echoes them.

    Args:
        model: Model (or Azure deployment) name.
        api_key: The provider's API key.
        base_url: The endpoint, e.g. ``http://localhost:8000/v1`` for a local server. A
            ``user:password@`` in it is sent as HTTP basic authentication (in place of
            the API key's bearer token) and kept out of the URL the HTTP client logs.
        organization: OpenAI organisation id.
        timeout: Seconds to wait for one request.
        max_retries: Retries after rate limits, server errors and timeouts (the client
            backs off exponentially, honouring ``Retry-After``).
        max_tokens: Longest answer, in tokens (``None`` leaves it to the provider).
        temperature: Sampling temperature (``None`` leaves it to the provider).
        max_image_side: Every image is downscaled until its long side fits this many pixels.
        match_images: How many knowledge-base images to show the model (best first);
            every match's description is sent regardless.
        image_detail: The ``detail`` sent with each image (``"low"``, ``"high"``,
            ``"auto"``); ``None`` sends none, which any compatible server accepts.
        min_score: Similarity gate: matches below it are not used, and when none is left
            no request is made (see ``on_no_match``). ``None`` keeps every match.
        on_no_match: ``"refuse"`` answers that no matching item was found, without a
            request; ``"image_only"`` asks the model about the user's image alone.
        prompt: The prompt template (a [`PromptTemplate`][multimodal_rag.answerers.prompt.PromptTemplate] or a mapping of its fields).
        stream_usage: Ask for token usage at the end of a stream (``stream_options``);
            turn off for servers that reject it.
        client: An ``openai.OpenAI`` (or ``AzureOpenAI``) client to use instead of making one.
        async_client: An ``openai.AsyncOpenAI`` client for `aanswer` and `astream`.

    Raises:
        AnswererAuthenticationError: No API key was given or found in ``OPENAI_API_KEY``
            (and no client was injected).
        InvalidInputError: An option out of range.
    """

    kind: ClassVar[str] = "openai"

    def __init__(
        self,
        *,
        model: str = DEFAULT_MODEL,
        api_key: str | None = None,
        base_url: str | None = None,
        organization: str | None = None,
        timeout: float = 60.0,
        max_retries: int = 2,
        max_tokens: int | None = 300,
        temperature: float | None = None,
        max_image_side: int = 1024,
        match_images: int = 1,
        image_detail: str | None = None,
        min_score: float | None = None,
        on_no_match: NoMatchPolicy = "refuse",
        prompt: PromptTemplate | Mapping[str, Any] | None = None,
        stream_usage: bool = True,
        client: Any = None,
        async_client: Any = None,
    ) -> None:
        if not isinstance(model, str) or not model:
            raise InvalidInputError(f"model must be a non-empty string, got {model!r}")
        timeout = check_timeout(timeout)
        check_int("max_retries", max_retries, minimum=0)
        if max_tokens is not None:
            check_int("max_tokens", max_tokens)
        if temperature is not None and (
            isinstance(temperature, bool) or not isinstance(temperature, (int, float)) or not 0 <= temperature <= 2
        ):
            raise InvalidInputError(f"temperature must be between 0 and 2, or None; got {temperature!r}")
        check_int("match_images", match_images, minimum=0)
        if on_no_match not in ("refuse", "image_only"):
            raise InvalidInputError(f"on_no_match must be 'refuse' or 'image_only', got {on_no_match!r}")
        key = configured_api_key(api_key)
        if key is None and client is None and async_client is None:
            raise AnswererAuthenticationError(missing_key_message())
        self.model = model
        base_url = configured_base_url(base_url)
        # The endpoint without credentials: the HTTP client logs its URL and puts it in errors.
        self.base_url = redact_url(base_url) if base_url else None
        self._url_password, self._basic_auth = url_credentials(base_url)
        self.organization = organization
        self.timeout = float(timeout)
        self.max_retries = max_retries
        self.max_tokens = max_tokens
        self.temperature = None if temperature is None else float(temperature)
        self.max_image_side = check_int("max_image_side", max_image_side, minimum=16)
        self.match_images = match_images
        self.image_detail = image_detail
        self.min_score = check_min_score(min_score)
        self.on_no_match: NoMatchPolicy = on_no_match
        self.prompt = PromptTemplate.from_config(prompt)
        self.stream_usage = bool(stream_usage)
        self._api_key = Secret(key) if key is not None else None
        self._client = client
        self._client_injected = client is not None
        self._async_client = async_client
        self._client_lock = threading.Lock()
        # One async client per event loop, kept for that loop's later calls: its pooled
        # connections belong to the loop that opened them. Weak keys: a loop that is
        # dropped takes its entry with it.
        self._loop_clients: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _LoopClient] = (
            weakref.WeakKeyDictionary()
        )
        self._loop_locks: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, asyncio.Lock] = (
            weakref.WeakKeyDictionary()
        )

    # -- the Answerer protocol ---------------------------------------------------

    def answer(
        self,
        question: str,
        *,
        image: ImageInput | None,
        matches: Sequence[Hit],
        metadata: Mapping[str, Any] | None = None,
    ) -> Answer:
        started = time.perf_counter()
        kept = self._gate(question, image, matches)
        if kept is None:
            return self._no_match_answer(matches, started)
        params = self._request(self._answer_messages(question, image, kept, metadata))
        with self._provider_errors():
            response = self._sync_client().chat.completions.create(**params)
        return self._answer_from(response, kept, started)

    def stream(
        self,
        question: str,
        *,
        image: ImageInput | None,
        matches: Sequence[Hit],
        metadata: Mapping[str, Any] | None = None,
    ) -> AnswerStream:
        started = time.perf_counter()
        kept = self._gate(question, image, matches)
        if kept is None:
            return AnswerStream.from_answer(self._no_match_answer(matches, started))
        params = self._request(self._answer_messages(question, image, kept, metadata), stream=True)
        with self._provider_errors():
            response = self._sync_client().chat.completions.create(**params)
        return AnswerStream(self._stream_chunks(response, kept, started), on_close=response.close)

    async def aanswer(
        self,
        question: str,
        *,
        image: ImageInput | None,
        matches: Sequence[Hit],
        metadata: Mapping[str, Any] | None = None,
    ) -> Answer:
        if self._async_client is None and self._api_key is None:
            # Only a synchronous client was injected: run it in a worker thread.
            return await super().aanswer(question, image=image, matches=matches, metadata=metadata)
        started = time.perf_counter()
        kept = self._gate(question, image, matches)
        if kept is None:
            return self._no_match_answer(matches, started)
        # Decoding and resizing images is CPU work: keep it off the event loop.
        messages = await asyncio.to_thread(self._answer_messages, question, image, kept, metadata)
        client = await self._loop_client()
        with self._provider_errors():
            response = await client.chat.completions.create(**self._request(messages))
        return self._answer_from(response, kept, started)

    async def astream(
        self,
        question: str,
        *,
        image: ImageInput | None,
        matches: Sequence[Hit],
        metadata: Mapping[str, Any] | None = None,
    ) -> AsyncAnswerStream:
        if self._async_client is None and self._api_key is None:
            return await super().astream(question, image=image, matches=matches, metadata=metadata)
        started = time.perf_counter()
        kept = self._gate(question, image, matches)
        if kept is None:
            return AsyncAnswerStream.from_answer(self._no_match_answer(matches, started))
        messages = await asyncio.to_thread(self._answer_messages, question, image, kept, metadata)
        client = await self._loop_client()
        with self._provider_errors():
            response = await client.chat.completions.create(**self._request(messages, stream=True))

        async def release() -> None:
            await response.close()

        return AsyncAnswerStream(self._astream_chunks(response, kept, started, release), on_close=release)

    async def aprepare(self) -> None:
        """Make the running event loop's async client now rather than on the first question.

        The first one in a process imports ``openai`` (about a second, in a worker thread,
        but loading its compiled extensions holds the interpreter's lock at moments), and
        each one loads the TLS certificates; a server does this once at startup.
        """
        if self._async_client is None and self._api_key is None:
            return  # only a synchronous client: the async methods run it in worker threads
        await self._loop_client()

    async def aclose(self) -> None:
        """Close the async client this answerer made for the running event loop, and forget
        those of loops that are closed (their connections went with them).

        An injected client stays open: it belongs to the caller. ``async with answerer:``
        calls this on the way out. A loop run by `asyncio.run` also closes its client
        when it ends, so one-off ``asyncio.run(answerer.aanswer(...))`` calls leak nothing.
        """
        loop = asyncio.get_running_loop()
        with self._client_lock:
            for other in [other for other in self._loop_clients if other.is_closed()]:
                del self._loop_clients[other]
            entry = self._loop_clients.pop(loop, None)
        if entry is not None:
            await entry.closer.aclose()  # its finally closes the client

    async def __aenter__(self) -> OpenAIAnswerer:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    def close(self) -> None:
        """Close the synchronous client this answerer made (an injected one stays open)."""
        with self._client_lock:
            client, self._client = self._client, None
        if client is not None and not self._client_injected:
            client.close()

    def describe_image(self, image: ImageInput) -> Answer:
        """Write a short label of ``image`` (the prompt's ``describe`` instruction).

        Raises:
            ImageError: The image cannot be read.
            AnswererError: The provider failed (a subclass says how).
        """
        started = time.perf_counter()
        url = image_data_url(image, max_side=self.max_image_side)
        params = self._request(self.prompt.describe_messages(url, detail=self.image_detail))
        with self._provider_errors():
            response = self._sync_client().chat.completions.create(**params)
        answer = self._answer_from(response, [], started)
        return Answer(text=answer.text.strip(), model=answer.model, usage=answer.usage, latency_s=answer.latency_s)

    def config(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "base_url": self.base_url,
            "organization": self.organization,
            "timeout": self.timeout,
            "max_retries": self.max_retries,
            "max_tokens": self.max_tokens,
            "temperature": self.temperature,
            "max_image_side": self.max_image_side,
            "match_images": self.match_images,
            "image_detail": self.image_detail,
            "min_score": self.min_score,
            "on_no_match": self.on_no_match,
            "prompt": self.prompt.to_config(),
            "stream_usage": self.stream_usage,
        }

    def __repr__(self) -> str:
        return f"OpenAIAnswerer(model={self.model!r}, endpoint={self._endpoint()!r})"

    # -- building the request ----------------------------------------------------

    def _gate(self, question: str, image: ImageInput | None, matches: Sequence[Hit]) -> list[Hit] | None:
        """The matches to use, or ``None`` when the answer is "no match" without a request."""
        check_question(question)
        kept = passing_matches(matches, self.min_score)
        if not kept and (self.on_no_match == "refuse" or image is None):
            return None
        return kept

    def _no_match_answer(self, matches: Sequence[Hit], started: float) -> Answer:
        # No request was made, so no model answered: model stays empty rather than naming one.
        return Answer(text=no_match_text(matches, self.min_score), latency_s=time.perf_counter() - started)

    def _answer_messages(
        self, question: str, image: ImageInput | None, kept: Sequence[Hit], metadata: Mapping[str, Any] | None = None
    ) -> list[dict[str, Any]]:
        user_url = image_data_url(image, max_side=self.max_image_side) if image is not None else None
        match_urls = []
        for n, hit in enumerate(kept[: self.match_images], start=1):
            if hit.image_path is None:
                continue
            try:
                match_urls.append((n, image_data_url(hit.image_path, max_side=self.max_image_side)))
            except ImageError as exc:
                # A knowledge-base file gone missing should not stop the answer; its
                # description is still sent.
                logger.warning("not showing the image of match %s to the model: %s", hit.id, exc)
        return self.prompt.answer_messages(
            question,
            matches=kept,
            user_image_url=user_url,
            match_image_urls=match_urls,
            detail=self.image_detail,
            image_text=image_text(metadata),
        )

    def _request(self, messages: list[dict[str, Any]], *, stream: bool = False) -> dict[str, Any]:
        params: dict[str, Any] = {"model": self.model, "messages": messages}
        if self.max_tokens is not None:
            params["max_tokens"] = self.max_tokens
        if self.temperature is not None:
            params["temperature"] = self.temperature
        if stream:
            params["stream"] = True
            if self.stream_usage:
                params["stream_options"] = {"include_usage": True}
        return params

    # -- reading the response ----------------------------------------------------

    def _answer_from(self, response: Any, kept: Sequence[Hit], started: float) -> Answer:
        try:
            message = response.choices[0].message
            text = message.content if message.content is not None else getattr(message, "refusal", None)
        except (AttributeError, IndexError, KeyError, TypeError) as exc:
            raise AnswererError(
                f"{self._endpoint()} sent a chat completion without a message: {str(response)[:200]}"
            ) from exc
        if not isinstance(text, str):
            raise AnswererError(f"{self._endpoint()} sent an empty answer: {str(response)[:200]}")
        return Answer(
            text=text,
            sources=sources_of(kept),
            model=getattr(response, "model", None) or self.model,
            usage=_usage(getattr(response, "usage", None)),
            latency_s=time.perf_counter() - started,
        )

    def _stream_chunks(self, response: Any, kept: Sequence[Hit], started: float) -> Iterator[str | Answer]:
        parts: list[str] = []
        state: dict[str, Any] = {"model": self.model, "usage": {}}
        try:
            with self._provider_errors():
                for chunk in response:
                    text = self._read_chunk(chunk, state)
                    if text:
                        parts.append(text)
                        yield text
        finally:
            response.close()
        yield self._streamed_answer(parts, state, kept, started)

    async def _astream_chunks(
        self, response: Any, kept: Sequence[Hit], started: float, release: Callable[[], Awaitable[None]]
    ) -> AsyncIterator[str | Answer]:
        parts: list[str] = []
        state: dict[str, Any] = {"model": self.model, "usage": {}}
        try:
            with self._provider_errors():
                async for chunk in response:
                    text = self._read_chunk(chunk, state)
                    if text:
                        parts.append(text)
                        yield text
        finally:
            await release()
        yield self._streamed_answer(parts, state, kept, started)

    def _read_chunk(self, chunk: Any, state: dict[str, Any]) -> str | None:
        state["model"] = getattr(chunk, "model", None) or state["model"]
        if getattr(chunk, "usage", None) is not None:
            state["usage"] = _usage(chunk.usage)  # the last chunk, when stream_usage is on
        for choice in getattr(chunk, "choices", None) or ():
            if getattr(choice, "index", 0) == 0 and choice.delta is not None:
                content: str | None = choice.delta.content
                return content
        return None

    def _streamed_answer(self, parts: list[str], state: dict[str, Any], kept: Sequence[Hit], started: float) -> Answer:
        return Answer(
            text="".join(parts),
            sources=sources_of(kept),
            model=state["model"],
            usage=state["usage"],
            latency_s=time.perf_counter() - started,
        )

    # -- clients and errors ------------------------------------------------------

    def _sync_client(self) -> Any:
        with self._client_lock:
            if self._client is None:
                self._client = import_openai().OpenAI(**self._client_options())
            return self._client

    async def _loop_client(self) -> Any:
        """The async client of the running event loop: the injected one, or one made on first
        use and kept for the loop's later calls (one connection pool per loop, reused).
        """
        if self._async_client is not None:
            return self._async_client
        loop = asyncio.get_running_loop()
        entry = self._loop_clients.get(loop)
        if entry is not None:
            return entry.client
        with self._client_lock:
            making = self._loop_locks.setdefault(loop, asyncio.Lock())
        async with making:  # the loop's other tasks wait for this client rather than make their own
            entry = self._loop_clients.get(loop)
            if entry is not None:
                return entry.client
            # Made in a worker thread: the first call imports openai, and each client loads TLS
            # certificates and its resource modules, a second or more the loop should not wait out.
            client = await asyncio.to_thread(self._new_async_client)
            closer = _closing(client)
            self._loop_clients[loop] = _LoopClient(client, closer)
        # Started here, in this loop: asyncio.run's shutdown_asyncgens then closes it (and so
        # the client) before the loop ends, and aclose() closes it sooner.
        await closer.__anext__()
        return client

    def _new_async_client(self) -> Any:
        client = import_openai().AsyncOpenAI(**self._client_options())
        client.chat.completions  # noqa: B018 - imports the resource modules here, not on the loop
        return client

    def _client_options(self) -> dict[str, Any]:
        return client_options(
            self._api_key,
            base_url=self.base_url,
            organization=self.organization,
            timeout=self.timeout,
            max_retries=self.max_retries,
            basic_auth=self._basic_auth,
        )

    def _endpoint(self) -> str:
        """The endpoint as named in messages (never with credentials)."""
        return endpoint_name(self.base_url, self._client if self._client is not None else self._async_client)

    def _provider_errors(self) -> AbstractContextManager[None]:
        """Turn the provider's exceptions into the library's own, keeping its message."""
        return provider_errors(
            self._endpoint,
            model=self.model,
            timeout=self.timeout,
            max_retries=self.max_retries,
            secrets=lambda: secret_texts(self._api_key, self._url_password, self._basic_auth),
        )


# -- what every client of an OpenAI-compatible endpoint shares -------------------


def configured_api_key(api_key: str | None) -> str | None:
    """``api_key``, else the ``OPENAI_API_KEY`` environment variable; an empty key is no key."""
    return api_key or os.environ.get(API_KEY_ENV) or None


def configured_base_url(base_url: str | None) -> str | None:
    """``base_url``, else the ``OPENAI_BASE_URL`` environment variable (still with any credentials)."""
    return base_url if base_url is not None else os.environ.get(BASE_URL_ENV) or None


def client_options(
    api_key: Secret | None,
    *,
    base_url: str | None,
    organization: str | None,
    timeout: float,
    max_retries: int,
    basic_auth: Secret | None,
) -> dict[str, Any]:
    """Keyword arguments for ``openai.OpenAI`` or ``openai.AsyncOpenAI``.

    Args:
        api_key: The API key.
        base_url: The endpoint, already without credentials (``None``: the client's default).
        organization: OpenAI organisation id.
        timeout: Seconds to wait for one request.
        max_retries: Retries the client makes after rate limits, server errors and timeouts.
        basic_auth: The ``Authorization`` header made from the base URL's credentials.

    Raises:
        AnswererAuthenticationError: No API key.
    """
    if api_key is None:
        raise AnswererAuthenticationError(missing_key_message())
    options: dict[str, Any] = {
        "api_key": api_key.reveal(),
        "base_url": base_url,
        "organization": organization,
        "timeout": timeout,
        "max_retries": max_retries,
    }
    if basic_auth is not None:
        # What the HTTP client would make of credentials in the URL, without the URL.
        options["default_headers"] = {"Authorization": basic_auth.reveal()}
    return options


def endpoint_name(base_url: str | None, client: Any = None) -> str:
    """The endpoint as named in messages (never with credentials): ``base_url``, else the client's."""
    url = base_url or (str(client.base_url) if client is not None and hasattr(client, "base_url") else None)
    return redact_url(url or _DEFAULT_ENDPOINT)


@contextmanager
def provider_errors(
    where: Callable[[], str],
    *,
    model: str,
    timeout: float,
    max_retries: int,
    secrets: Callable[[], list[str]],
) -> Iterator[None]:
    """Turn the ``openai`` client's exceptions into the library's own, redacted of ``secrets``.

    Args:
        where: The endpoint as named in messages (asked only when an error is raised).
        model: The model asked, for the message of a refused request.
        timeout: The client's timeout, for the message of a timeout.
        max_retries: The client's retries, for the messages.
        secrets: Every form of the credentials to redact (see `secret_texts`).

    Raises:
        AnswererError: The provider failed (a subclass says how).
    """
    openai = import_openai()
    try:
        yield
    except openai.OpenAIError as exc:
        texts = secrets()
        redact_exception(exc, texts)  # it stays chained as __cause__, which tracebacks print
        raise map_provider_error(
            exc,
            openai,
            where=where(),
            model=model,
            timeout=timeout,
            max_retries=max_retries,
            api_key_env=API_KEY_ENV,
            secrets=texts,
        ) from exc
    except json.JSONDecodeError as exc:
        raise AnswererError(f"{where()} sent a response that is not valid JSON: {exc}") from exc


def missing_key_message() -> str:
    """What to say when no API key was given or found."""
    return (
        f"no OpenAI API key: set the {API_KEY_ENV} environment variable or pass api_key= "
        "(a compatible server that needs no key accepts any string, e.g. api_key='none'), "
        "or pass a configured client="
    )


def _usage(usage: Any) -> dict[str, int]:
    if usage is None:
        return {}
    counts = {}
    for name in ("prompt_tokens", "completion_tokens", "total_tokens"):
        value = getattr(usage, name, None)
        if isinstance(value, int):
            counts[name] = value
    return counts


def import_openai(user: str = "OpenAIAnswerer") -> Any:
    """The ``openai`` package, or a MissingDependencyError naming ``user`` and the pip install."""
    return require("openai", user=user)


class _LoopClient(NamedTuple):
    """An event loop's async client, and the generator whose end closes it."""

    client: Any
    closer: AsyncGenerator[None, None]


async def _closing(client: Any) -> AsyncGenerator[None, None]:
    """Waits, once started, until it is closed; then closes ``client`` in the loop that started it."""
    try:
        yield
    finally:
        await client.close()
