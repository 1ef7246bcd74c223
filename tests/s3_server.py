"""An S3-compatible server on loopback for the object-storage tests: moto's server mode.

CI starts one (``.ci/run``) and exports its address in ``MULTIMODAL_RAG_S3_ENDPOINT``; without
it, `start_server` runs one in a child process on a free port. A server that checks
credentials (``authenticated=True``) knows no access key at all, so every signed request is
refused as S3 refuses an unknown key.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager

#: Set by CI to the address of the S3 server it started.
ENDPOINT_ENV = "MULTIMODAL_RAG_S3_ENDPOINT"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def start_server(*, authenticated: bool = False) -> Iterator[str]:
    """Run ``moto_server`` on 127.0.0.1 until the block ends; yields its URL."""
    port = free_port()
    env = {**os.environ}
    if authenticated:
        # After this many requests, every one is checked against moto's (empty) IAM users.
        env["INITIAL_NO_AUTH_ACTION_COUNT"] = "0"
    process = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
                break
            except OSError:
                if process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError("moto_server did not start") from None
                time.sleep(0.1)
        yield f"http://127.0.0.1:{port}"
    finally:
        process.terminate()
        process.wait(timeout=30)
