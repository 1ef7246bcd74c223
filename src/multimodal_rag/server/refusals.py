"""Refusals the server counts and logs as counts, never as one traceback each.

An attack makes the same event thousands of times a second (a slow client timed out, a
connection over the limit, an ``accept`` that fails because descriptors ran out); one line a
minute saying how many keeps the log readable and its size bounded. Nothing here needs uvicorn.
"""

from __future__ import annotations

import logging
import threading
import time

__all__ = ["ACCEPT_FAILURES", "OVER_LIMIT", "SLOW_BODIES", "SLOW_HEADERS", "AcceptFailureFilter", "Tally"]

logger = logging.getLogger("multimodal_rag.server")


class Tally:
    """Counts one kind of refusal and logs it once, then as a count at most every ``interval`` s.

    An attack makes the same event thousands of times a second; one line a minute saying how
    many keeps the log readable and its size bounded.
    """

    def __init__(self, what: str, *, interval: float = 60.0, level: int = logging.WARNING) -> None:
        self.what = what
        self.interval = interval
        self.level = level
        self.total = 0
        self._unlogged = 0
        self._next_log = 0.0
        self._lock = threading.Lock()

    def note(self, detail: str = "") -> None:
        """Count one event; log it if the last line about this kind is ``interval`` seconds old."""
        now = time.monotonic()
        with self._lock:
            self.total += 1
            self._unlogged += 1
            if now < self._next_log:
                return
            count, self._unlogged = self._unlogged, 0
            self._next_log = now + self.interval
        suffix = f" ({detail})" if detail else ""
        if count == 1:
            logger.log(self.level, "%s%s; further ones are counted, not logged one by one", self.what, suffix)
        else:
            logger.log(self.level, "%s: %d times in the last %g s (%d in all)%s", self.what, count, self.interval, self.total, suffix)


#: Connections answered 503 at once because ``max_connections`` were open.
OVER_LIMIT = Tally("refused a connection over the connection limit")
#: Connections closed because their request headers were not complete in time.
SLOW_HEADERS = Tally("closed a connection that sent no complete request headers in time")
#: Requests answered 408 because their body was not complete in time (counted by the application).
SLOW_BODIES = Tally("answered 408 to a request whose body did not arrive in time")
#: ``accept`` failures of the event loop (descriptors exhausted), which asyncio logs with a traceback.
ACCEPT_FAILURES = Tally("could not accept a connection", level=logging.ERROR)


class AcceptFailureFilter(logging.Filter):
    """On the ``asyncio`` logger: turns its traceback per failed ``accept`` into [`ACCEPT_FAILURES`][multimodal_rag.server.refusals.ACCEPT_FAILURES]."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.getMessage().startswith("socket.accept() out of system resource"):
            error = record.exc_info[1] if record.exc_info else None
            ACCEPT_FAILURES.note(str(error) if error is not None else "")
            return False
        return True
