"""The library's exceptions as HTTP statuses, and the one JSON shape every error has.

Every error answer is ``{"error": {"type": ..., "message": ..., "status": ...}}``. Bad
input is the client's to fix (4xx, with the library's own message, which names what was
wrong); a failing model provider is a bad gateway (502, 504 on a timeout); anything else is
a 500 whose message says no more than that (the details go to the server's log).
"""

from __future__ import annotations

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

__all__ = ["HTTPProblem", "error_body", "status_of"]


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
