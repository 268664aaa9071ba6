"""The request log: a line per HTTP request, in the format of every other log line.

Not a `logging` logger: a LogRecord per request (the caller's frame looked up, the thread,
the process, a timestamp formatted anew) and a write per line cost as much as the whole of
a `/healthz` request. A request leaves its figures (a tuple); the writer thread formats
them, the timestamp's seconds once per second, and writes the lines in batches, at most
FLUSH_S after their request. Formatting on the request path cost a `/healthz` request
about as much again as the tuple does (alternating runs under `wrk`, 2026-12-05).
"""

from __future__ import annotations

import atexit
import collections
import threading
import time
from typing import TextIO

# Every log line of `smsinbox serve`: logging's own records use it too (cli.log_to_stderr).
LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s %(message)s"
LOGGER_NAME = "smsinbox.access"
FLUSH_S = 0.2
# Lines that wake the writer before the interval is up: a burst never holds much memory.
MAX_PENDING = 1024


class RequestLog:
    """Writes `client method path status latency` lines to `stream` (see the module)."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream
        # Appended by the event loop, taken by the writer: deque's append and popleft are
        # atomic, where swapping a list could lose a line appended during the swap.
        self._pending: collections.deque[tuple[float, str, str, str, int, float]] = (
            collections.deque()
        )
        self._lock = threading.Lock()
        self._second = -1
        self._prefix = ""
        self._closed = threading.Event()
        self._due = threading.Event()  # MAX_PENDING lines wait: write them now
        self._writer = threading.Thread(target=self._write_periodically, daemon=True,
                                        name="request log")  # fmt: skip
        self._writer.start()
        atexit.register(self.flush)  # a process that exits without closing the app

    def line(self, client: str, method: str, path: str, status: int, elapsed_s: float) -> None:
        """Log one request; `path` never with its query string (it carries passwords)."""
        pending = self._pending
        pending.append((time.time(), client, method, path, status, elapsed_s))
        if len(pending) == MAX_PENDING:
            # The writer formats and writes them: flushing here would format on the
            # request path after all, a thousand lines at a time.
            self._due.set()

    def flush(self) -> None:
        with self._lock:
            pending = self._pending
            if not pending:
                return
            lines = []
            for _ in range(len(pending)):
                now, client, method, path, status, elapsed_s = pending.popleft()
                second = int(now)
                if second != self._second:
                    # As logging's default asctime: local time, then milliseconds after a comma.
                    stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(second))
                    self._second, self._prefix = second, stamp
                lines.append(
                    f"{self._prefix},{int((now - second) * 1000):03d} INFO {LOGGER_NAME} {client}"
                    f" {method} {path} {status} {elapsed_s * 1000:.1f}ms\n"
                )
            try:
                self.stream.write("".join(lines))
                self.stream.flush()
            except (OSError, ValueError):
                pass  # the stream is closed or gone: nobody is left to read it

    def close(self) -> None:
        """Write what is pending and stop the writer thread."""
        self._closed.set()
        self._due.set()
        self.flush()
        atexit.unregister(self.flush)

    def _write_periodically(self) -> None:
        while not self._closed.is_set():
            self._due.wait(FLUSH_S)
            self._due.clear()
            self.flush()
