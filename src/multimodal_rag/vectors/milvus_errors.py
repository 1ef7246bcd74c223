"""What pymilvus and gRPC failures become: the library's errors, naming the server.

A failure to authenticate or to reach the server is a
[`BackendConnectionError`][multimodal_rag.errors.BackendConnectionError], anything else a
[`BackendError`][multimodal_rag.errors.BackendError]; the token never appears in either.
"""

from __future__ import annotations

from multimodal_rag.errors import BackendConnectionError, BackendError

__all__ = ["is_client_error", "translate_error"]


def is_client_error(exc: BaseException) -> bool:
    """Whether ``exc`` came from pymilvus, gRPC or Milvus Lite, or is a connection failure."""
    module = type(exc).__module__
    return module.startswith(("pymilvus", "grpc", "milvus_lite")) or isinstance(
        exc, (ConnectionError, TimeoutError)
    )


def translate_error(
    exc: BaseException, *, action: str, uri: str, secret: str | None, hint: str = ""
) -> BackendError:
    """The library's error for ``exc``, with ``secret`` taken out of its message."""
    message = str(getattr(exc, "message", "") or exc).strip() or type(exc).__name__
    if secret:
        message = message.replace(secret, "***")
    lowered = f"{message} {exc.__cause__ or ''}".lower()
    code = getattr(exc, "code", None)
    if code == 1800 or any(
        s in lowered for s in ("unauthenticated", "authenticat", "auth check", "password")
    ):
        return BackendConnectionError(
            f"Milvus at {uri} refused the credentials (could not {action}): {message}{hint}"
        )
    if code == 2 or any(
        s in lowered
        for s in ("unavailable", "deadline", "timeout", "timed out", "fail connecting", "connect")
    ):
        return BackendConnectionError(
            f"cannot reach Milvus at {uri} (could not {action}): {message}"
        )
    return BackendError(f"Milvus at {uri} could not {action}: {message}")
