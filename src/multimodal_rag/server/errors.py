"""The library's exceptions as HTTP statuses, and the one JSON shape every error has.

Every error answer is ``{"error": {"type": ..., "message": ..., "status": ...}}``. Bad
input is the client's to fix (4xx, with the library's own message, which names what was
wrong); a failing model provider is a bad gateway (502, 504 on a timeout); anything else is
a 500 whose message says no more than that (the details go to the server's log).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from multimodal_rag.errors import (
    AnswererAuthenticationError,
    AnswererBadRequestError,
    AnswererError,
    AnswererRateLimitError,
    AnswererTimeoutError,
    EmbedderMismatchError,
    ImageError,
    InvalidInputError,
    KnowledgeBaseError,
    MultimodalRAGError,
    NotFoundError,
)

__all__ = ["HTTPProblem", "error_body", "invalid_fields", "status_of"]


class HTTPProblem(Exception):
    """A request the server refuses, with its status and a sentence saying why."""

    def __init__(self, status: int, kind: str, message: str, *, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.kind = kind
        self.message = message
        self.headers = headers or {}


# Most specific first: the first class an exception is an instance of gives its status.
_STATUSES: tuple[tuple[type[BaseException], int], ...] = (
    (ImageError, 422),
    (EmbedderMismatchError, 400),
    (InvalidInputError, 400),
    (NotFoundError, 404),
    (AnswererTimeoutError, 504),
    (AnswererRateLimitError, 503),
    (AnswererBadRequestError, 502),
    (AnswererAuthenticationError, 502),
    (AnswererError, 502),
    (KnowledgeBaseError, 503),
)


def status_of(exc: BaseException) -> int:
    """The HTTP status a library exception answers with (500 for anything unexpected)."""
    for cls, status in _STATUSES:
        if isinstance(exc, cls):
            return status
    return 500


def error_body(exc: BaseException) -> tuple[int, dict[str, Any]]:
    """The status and JSON body of an error answer."""
    if isinstance(exc, HTTPProblem):
        status, kind, message = exc.status, exc.kind, exc.message
    elif isinstance(exc, MultimodalRAGError):
        status, kind, message = status_of(exc), type(exc).__name__, str(exc)
    else:
        status, kind, message = 500, "InternalError", "the server failed to answer; its log says why"
    return status, {"error": {"type": kind, "message": message, "status": status}}


def invalid_fields(errors: Iterable[Mapping[str, Any]]) -> HTTPProblem:
    """The 400 answer to fields their model refused (pydantic's errors), in the library's words.

    Each message names the field, what it must be, and what it was (shortened).
    """
    messages: dict[str, str] = {}
    for error in errors:
        name = _field_name(error.get("loc", ()))
        # A field that may be left out is a union with None; that branch's complaint says nothing.
        if error.get("type") != "none_required" and name not in messages:
            messages[name] = _field_message(name, error)
    return HTTPProblem(400, "InvalidInputError", "; ".join(list(messages.values())[:3]) or "invalid fields")


def _field_name(loc: Iterable[Any]) -> str:
    """The field of a pydantic error's location (``("query", "size")``, ``("mode", "literal[...]")``)."""
    names = [part for part in loc if isinstance(part, str) and part not in ("query", "path", "body", "header")]
    return names[0] if names else "a field"


def _field_message(name: str, error: Mapping[str, Any]) -> str:
    kind = error.get("type", "")
    ctx = error.get("ctx") or {}
    value = error.get("input")
    got = f", got {_shown(value)}"
    if kind == "value_error" and "error" in ctx:  # a check of the whole form, which says it all
        return str(ctx["error"])
    if kind == "missing":
        return f"the {name} field is required"
    if kind in ("int_parsing", "int_type", "int_from_float"):
        return f"{name} must be an integer{got}"
    if kind in ("float_parsing", "float_type", "finite_number"):
        return f"{name} must be a number{got}"
    if kind in ("bool_parsing", "bool_type"):
        return f"{name} must be true or false{got}"
    if kind in ("greater_than_equal", "greater_than"):
        return f"{name} must be at least {ctx.get('ge', ctx.get('gt'))}{got}"
    if kind in ("less_than_equal", "less_than"):
        return f"{name} must be at most {ctx.get('le', ctx.get('lt'))}{got}"
    if kind == "literal_error":
        return f"{name} must be one of {ctx.get('expected')}{got}"
    if kind == "string_too_long" and isinstance(value, str):
        return f"{name} is {len(value):,} characters; at most {ctx.get('max_length', 0):,} are allowed"
    if kind in ("string_too_short", "string_pattern_mismatch"):
        return f"{name} is empty or only white space"
    return f"{name}: {error.get('msg', 'invalid')}{got}"


def _shown(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 40 else f"{text[:40]}..."
