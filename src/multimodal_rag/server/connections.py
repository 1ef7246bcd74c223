"""The server's connections: a cap on how many are open, a deadline for each request's headers,
and refusals logged as counts rather than one traceback each.

uvicorn times out only idle keep-alive connections: a client that connects and then sends its
headers a byte at a time holds a file descriptor for as long as it likes, and a few hundred of
them exhaust the process's descriptors, after which every ``accept`` fails and is logged with a
traceback ([`refusals`][multimodal_rag.server.refusals] counts those instead).
[`GuardedH11Protocol`][multimodal_rag.server.connections.GuardedH11Protocol] closes a connection
whose request headers are not complete within ``header_timeout`` seconds, and answers a connection past ``max_connections``
with 503 as soon as it is made, so descriptors stay bounded and a legitimate client is told at
once instead of waiting. The body's deadline is the application's (``ServerSettings.body_timeout``).
"""

from __future__ import annotations

from typing import Any

import h11
from uvicorn.protocols.http.h11_impl import H11Protocol

from multimodal_rag.server.refusals import OVER_LIMIT, SLOW_HEADERS

__all__ = ["GuardedH11Protocol"]

# Sent before the request is read: the connection is over the limit, whatever it asks.
_BUSY = (
    b"HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\nconnection: close\r\n"
    b"retry-after: 1\r\ncontent-length: 98\r\n\r\n"
    b'{"error": {"type": "ServiceUnavailable", "message": "too many connections; retry", "status": 503}}'
)


class GuardedH11Protocol(H11Protocol):
    """uvicorn's h11 protocol with a connection cap and a deadline for each request's headers.

    Give uvicorn ``functools.partial(GuardedH11Protocol, max_connections=..., header_timeout=...)``
    as its ``http`` protocol.
    """

    def __init__(self, *args: Any, max_connections: int, header_timeout: float, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.max_connections = max_connections
        self.header_timeout = header_timeout
        self._header_deadline: Any = None

    def connection_made(self, transport: Any) -> None:
        super().connection_made(transport)
        if len(self.connections) > self.max_connections:
            OVER_LIMIT.note(f"limit {self.max_connections}")
            transport.write(_BUSY)
            transport.close()
            return
        self._await_headers()

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        if self.conn.their_state is not h11.IDLE:
            self._cancel_deadline()  # the headers are in; the body's deadline is the application's

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if not self.transport.is_closing():
            self._await_headers()  # the next request on this connection gets its own deadline

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_deadline()
        super().connection_lost(exc)

    def _await_headers(self) -> None:
        self._cancel_deadline()
        self._header_deadline = self.loop.call_later(self.header_timeout, self._headers_too_slow)

    def _cancel_deadline(self) -> None:
        if self._header_deadline is not None:
            self._header_deadline.cancel()
            self._header_deadline = None

    def _headers_too_slow(self) -> None:
        self._header_deadline = None
        busy = self.cycle is not None and not self.cycle.response_complete
        if self.conn.their_state is h11.IDLE and not busy and not self.transport.is_closing():
            SLOW_HEADERS.note(f"{self.header_timeout:g} s")
            self.transport.close()
