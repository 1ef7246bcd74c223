"""The provider's errors as the library's own, with no secret left in them.

[`OpenAIAnswerer`][multimodal_rag.answerers.openai.OpenAIAnswerer] holds its API key and the
credentials of its base URL as `Secret`; every exception the ``openai`` client
raises is redacted of them (with the errors chained to it, which tracebacks print) and
mapped to an [`AnswererError`][multimodal_rag.errors.AnswererError] that keeps its message.
"""

from __future__ import annotations

import base64
from typing import Any
from urllib.parse import unquote

from multimodal_rag._remote import split_credentials
from multimodal_rag.errors import (
    AnswererAuthenticationError,
    AnswererBadRequestError,
    AnswererConnectionError,
    AnswererError,
    AnswererRateLimitError,
    AnswererTimeoutError,
)

__all__ = [
    "Secret",
    "map_provider_error",
    "redact",
    "redact_exception",
    "secret_texts",
    "url_credentials",
]


class Secret:
    """Holds an API key so that no repr, str or ``vars()`` dump shows it."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "'***'"

    __str__ = __repr__


def url_credentials(url: str | None) -> tuple[Secret | None, Secret | None]:
    """The password as written in ``url``, and the basic-auth header its user and password make."""
    if not url:
        return None, None
    _, user, password = split_credentials(url)
    if user is None and password is None:
        return None, None
    pair = f"{unquote(user or '')}:{unquote(password or '')}"
    header = "Basic " + base64.b64encode(pair.encode("utf-8")).decode("ascii")
    return (Secret(password) if password else None), Secret(header)


def secret_texts(
    api_key: Secret | None, url_password: Secret | None, basic_auth: Secret | None
) -> list[str]:
    """Every form in which a provider might echo the credentials, longest first."""
    secrets = [api_key.reveal()] if api_key is not None else []
    if url_password is not None:
        password = url_password.reveal()
        secrets += [password, unquote(password)]
    if basic_auth is not None:
        secrets.append(basic_auth.reveal().removeprefix("Basic "))
    # Longest first, so that no secret is left half-replaced by a shorter one inside it.
    return sorted({s for s in secrets if s}, key=len, reverse=True)


def redact(text: str, secrets: list[str]) -> str:
    # Some providers echo the key or the authorization header they rejected, or the URL
    # they were asked for; none of it may reach a log or a traceback.
    for secret in secrets:
        text = text.replace(secret, "***")
    return text


def redact_exception(exc: BaseException, secrets: list[str]) -> None:
    """Redact the provider's error and those chained to it: tracebacks print them all."""
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        current.args = tuple(_redact_value(a, secrets) for a in current.args)
        for attr in ("message", "body"):  # an APIError's parsed message and JSON body
            if hasattr(current, attr):
                setattr(current, attr, _redact_value(getattr(current, attr), secrets))
        current = current.__cause__ or current.__context__


def _redact_value(value: Any, secrets: list[str]) -> Any:
    if isinstance(value, str):
        return redact(value, secrets)
    if isinstance(value, dict):
        return {key: _redact_value(item, secrets) for key, item in value.items()}
    if isinstance(value, list):
        return [_redact_value(item, secrets) for item in value]
    return value


def map_provider_error(
    exc: Exception,
    openai: Any,
    *,
    where: str,
    model: str,
    timeout: float,
    max_retries: int,
    api_key_env: str,
    secrets: list[str],
) -> AnswererError:
    """The library's error for ``exc``, one of the ``openai`` package's, naming the endpoint."""
    message = redact(getattr(exc, "message", None) or str(exc) or type(exc).__name__, secrets)
    if isinstance(exc, (openai.AuthenticationError, openai.PermissionDeniedError)):
        return AnswererAuthenticationError(
            f"{where} refused the credentials: {message} (check {api_key_env} or the api_key argument)"
        )
    if isinstance(exc, openai.RateLimitError):
        return AnswererRateLimitError(
            f"{where} kept hitting its rate limit ({max_retries} retries): {message}"
        )
    if isinstance(exc, openai.APITimeoutError):
        return AnswererTimeoutError(
            f"{where} did not answer within {timeout:g} s ({max_retries} retries): {message}"
        )
    if isinstance(exc, openai.APIConnectionError):
        cause = redact(str(exc.__cause__), secrets) if exc.__cause__ is not None else ""
        return AnswererConnectionError(f"cannot reach {where}: {message}{f' ({cause})' if cause else ''}")
    if isinstance(
        exc,
        (openai.BadRequestError, openai.NotFoundError, openai.UnprocessableEntityError, openai.ConflictError),
    ):
        return AnswererBadRequestError(f"{where} refused the request for model {model!r}: {message}")
    if isinstance(exc, openai.APIStatusError):
        return AnswererError(f"{where} failed ({max_retries} retries): {message}")
    return AnswererError(f"{where}: {message}")
