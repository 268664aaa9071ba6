"""The request log: a line per HTTP request, in the format of every other log line.

Not a `logging` logger: a LogRecord per request (the caller's frame looked up, the thread,
the process, a timestamp formatted anew) and a write per line cost as much as the whole of
a `/healthz` request. The line is formatted here from the request's own figures, the
timestamp's seconds once per second, and the lines are written in batches by a thread,
at most FLUSH_S after their request.
"""

from __future__ import annotations

import atexit
import threading
import time
from typing import TextIO

# Every log line of `smsinbox serve`: logging's own records use it too (cli.log_to_stderr).
LOG_FORMAT = "%(asctime)s %(levelname)s %(name)s %(message)s"
LOGGER_NAME = "smsinbox.access"
FLUSH_S = 0.2
# Lines held before a write regardless of the interval: a burst never holds much memory.
MAX_PENDING = 1024


class RequestLog:
    """Writes `client method path status latency` lines to `stream` (see the module)."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream
        self._pending: list[str] = []
        self._lock = threading.Lock()
        self._second = -1
        self._prefix = ""
        self._closed = threading.Event()
        self._writer = threading.Thread(target=self._write_periodically, daemon=True,
                                        name="request log")  # fmt: skip
        self._writer.start()
        atexit.register(self.flush)  # a process that exits without closing the app

    def line(self, client: str, method: str, path: str, status: int, elapsed_s: float) -> None:
        """Log one request; `path` never with its query string (it carries passwords)."""
        now = time.time()
        second = int(now)
        if second != self._second:
            # As logging's default asctime: local time, then milliseconds after a comma.
            stamp = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(second))
            self._second, self._prefix = second, stamp
        millis = int((now - second) * 1000)
        self._pending.append(
            f"{self._prefix},{millis:03d} INFO {LOGGER_NAME} {client} {method} {path}"
            f" {status} {elapsed_s * 1000:.1f}ms"
        )  # list.append is atomic: the request path takes no lock
        if len(self._pending) >= MAX_PENDING:
            self.flush()

    def flush(self) -> None:
        with self._lock:
            lines, self._pending = self._pending, []
            if not lines:
                return
            try:
                self.stream.write("\n".join(lines) + "\n")
                self.stream.flush()
            except (OSError, ValueError):
                pass  # the stream is closed or gone: nobody is left to read it

    def close(self) -> None:
        """Write what is pending and stop the writer thread."""
        self._closed.set()
        self.flush()
        atexit.unregister(self.flush)

    def _write_periodically(self) -> None:
        while not self._closed.wait(FLUSH_S):
            self.flush()
