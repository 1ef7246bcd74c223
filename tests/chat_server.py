"""A chat-completions server on 127.0.0.1 for tests: the real ``openai`` client talks to it.

Tests queue replies (a completion, a refusal, a stream of server-sent events, an error
status, bytes that are not JSON, a reply too slow to wait for) and then inspect every
request it received (its whole JSON body, ``response_format`` included). When the queue
is empty it answers with a plain completion.
"""

from __future__ import annotations

import json
import threading
from collections import deque
from collections.abc import Callable, Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import attrs

Reply = Callable[["_Handler", "Received"], None]


@attrs.define
class Received:
    """One request the server received."""

    method: str
    path: str
    headers: dict[str, str]
    body: Any  # decoded JSON

    @property
    def messages(self) -> list[dict[str, Any]]:
        return self.body["messages"]

    @property
    def response_format(self) -> dict[str, Any] | None:
        """The structured output the client asked for, if any."""
        return self.body.get("response_format")

    def user_parts(self) -> list[dict[str, Any]]:
        """The content parts of the (last) user message."""
        return [m for m in self.messages if m["role"] == "user"][-1]["content"]

    def image_urls(self) -> list[str]:
        return [p["image_url"]["url"] for p in self.user_parts() if p["type"] == "image_url"]

    def text(self) -> str:
        """Every text of the request, system message included, joined by newlines."""
        texts = []
        for message in self.messages:
            content = message["content"]
            if isinstance(content, str):
                texts.append(content)
            else:
                texts.extend(p["text"] for p in content if p["type"] == "text")
        return "\n".join(texts)


def completion(
    text: str = "A default answer.", *, model: str = "served-model", usage: tuple[int, int] = (11, 7)
) -> Reply:
    body = {
        "id": "chatcmpl-test",
        "object": "chat.completion",
        "created": 1700000000,
        "model": model,
        "choices": [
            {"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop", "logprobs": None}
        ],
        "usage": {"prompt_tokens": usage[0], "completion_tokens": usage[1], "total_tokens": sum(usage)},
    }
    return lambda handler, request: handler.send_json(200, body)


def refusal(text: str = "I can't help with that.", *, model: str = "served-model") -> Reply:
    """A completion whose message is a refusal (no content), as structured output allows."""
    body = {
        "id": "chatcmpl-test",
        "object": "chat.completion",
        "created": 1700000000,
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": None, "refusal": text},
                "finish_reason": "stop",
                "logprobs": None,
            }
        ],
    }
    return lambda handler, request: handler.send_json(200, body)


def error(status: int, message: str, *, kind: str = "invalid_request_error") -> Reply:
    body = {"error": {"message": message, "type": kind, "code": None, "param": None}}
    # retry-after-ms keeps the client's backoff between retries tiny.
    return lambda handler, request: handler.send_json(status, body, headers={"retry-after-ms": "1"})


def echo_key_error() -> Reply:
    """A 401 whose message repeats the key it was sent, as some providers do."""

    def reply(handler: _Handler, request: Received) -> None:
        key = request.headers.get("authorization", "").removeprefix("Bearer ")
        error(401, f"Incorrect API key provided: {key}", kind="authentication_error")(handler, request)

    return reply


def raw(status: int, data: bytes, *, content_type: str = "application/json") -> Reply:
    return lambda handler, request: handler.send_bytes(status, data, content_type)


def stream(chunks: Sequence[str], *, model: str = "served-model", usage: tuple[int, int] | None = (11, 7)) -> Reply:
    """Server-sent events of a streamed completion, with a usage chunk at the end."""

    def chunk(delta: dict[str, Any], finish: str | None = None) -> dict[str, Any]:
        return {
            "id": "chatcmpl-test",
            "object": "chat.completion.chunk",
            "created": 1700000000,
            "model": model,
            "choices": [{"index": 0, "delta": delta, "finish_reason": finish, "logprobs": None}],
        }

    events = [chunk({"role": "assistant", "content": ""})]
    events += [chunk({"content": text}) for text in chunks]
    events.append(chunk({}, "stop"))
    if usage is not None:
        events.append(
            {
                "id": "chatcmpl-test",
                "object": "chat.completion.chunk",
                "created": 1700000000,
                "model": model,
                "choices": [],
                "usage": {"prompt_tokens": usage[0], "completion_tokens": usage[1], "total_tokens": sum(usage)},
            }
        )
    return sse([json.dumps(e) for e in events] + ["[DONE]"])


def sse(datas: Sequence[str]) -> Reply:
    def reply(handler: _Handler, request: Received) -> None:
        handler.send_response(200)
        handler.send_header("Content-Type", "text/event-stream")
        handler.send_header("Connection", "close")  # the end of the body is the end of the connection
        handler.close_connection = True
        handler.end_headers()
        for data in datas:
            handler.wfile.write(f"data: {data}\n\n".encode())
            handler.wfile.flush()

    return reply


def slow(seconds: float, then: Reply | None = None) -> Reply:
    """Wait before answering (or until the server stops), to make the client time out."""

    def reply(handler: _Handler, request: Received) -> None:
        handler.server.stopping.wait(seconds)  # type: ignore[attr-defined]
        (then or completion())(handler, request)

    return reply


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    # Keep-alive, like real providers: clients reuse pooled connections between requests.
    protocol_version = "HTTP/1.1"

    def do_POST(self) -> None:  # noqa: N802 - the name http.server looks for
        length = int(self.headers.get("Content-Length") or 0)
        data = self.rfile.read(length)
        try:
            body = json.loads(data)
        except json.JSONDecodeError:
            body = data
        request = Received(
            method="POST",
            path=self.path,
            headers={k.lower(): v for k, v in self.headers.items()},
            body=body,
        )
        with self.server.lock:
            self.server.received.append(request)
            reply = self.server.replies.popleft() if self.server.replies else completion()
        reply(self, request)

    def send_json(self, status: int, body: Any, *, headers: dict[str, str] | None = None) -> None:
        self.send_bytes(status, json.dumps(body).encode(), "application/json", headers=headers)

    def send_bytes(self, status: int, data: bytes, content_type: str, *, headers: dict[str, str] | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: Any) -> None:
        pass  # keep test output clean


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _Handler)
        self.lock = threading.Lock()
        self.received: list[Received] = []
        self.replies: deque[Reply] = deque()
        self.stopping = threading.Event()

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # a client that timed out and hung up is expected here


class ChatServer:
    """Runs the server in a thread; use as a context manager."""

    def __init__(self) -> None:
        self._server = _Server()
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)

    @property
    def url(self) -> str:
        """The base URL to give the client (``http://127.0.0.1:PORT/v1``)."""
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}/v1"

    @property
    def requests(self) -> list[Received]:
        with self._server.lock:
            return list(self._server.received)

    def reply(self, *replies: Reply) -> None:
        """Queue replies for the next requests, in order."""
        with self._server.lock:
            self._server.replies.extend(replies)

    def __enter__(self) -> ChatServer:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: Any) -> None:
        self._server.stopping.set()
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=5)
