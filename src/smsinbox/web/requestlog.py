"""The request log: a line per HTTP request, in the format of every other log line.

Not a `logging` logger: a LogRecord per request (the caller's frame looked up, the thread,
the process, a timestamp formatted anew) and a write per line cost as much as the whole of
a `/healthz` request. A request leaves its figures (a tuple); the writer thread formats
them, the timestamp's seconds once per second, and writes the lines in batches, at most
FLUSH_S after their request. Formatting on the request path cost a `/healthz` request
about as much again as the tuple does (alternating runs under `wrk`, 2026-12-05).

Two formats, as `log_format` says (smsinbox.logs writes logging's records in the same
two): text, `client method path status latency request_id=ID` after logging's time, level
and logger; or one JSON object a line with those fields (`duration_ms` for the latency).
"""

from __future__ import annotations

import atexit
import collections
import threading
import time
from json.encoder import encode_basestring as quoted
from typing import TextIO

from smsinbox.logs import utc_seconds

LOGGER_NAME = "smsinbox.access"
FLUSH_S = 0.2
# Lines that wake the writer before the interval is up: a burst never holds much memory.
MAX_PENDING = 1024


# What a request leaves: when it ended, client, method, path, status, seconds taken, id.
_Figures = tuple[float, str, str, str, int, float, bytes]


class RequestLog:
    """Writes a line per request to `stream`, as text or as JSON (see the module)."""

    def __init__(self, stream: TextIO, *, json: bool = False) -> None:
        self.stream = stream
        self.json = json
        # Appended by the event loop, taken by the writer: deque's append and popleft are
        # atomic, where swapping a list could lose a line appended during the swap.
        self._pending: collections.deque[_Figures] = collections.deque()
        self._lock = threading.Lock()
        self._second = -1
        self._prefix = ""
        self._closed = threading.Event()
        self._due = threading.Event()  # MAX_PENDING lines wait: write them now
        self._writer = threading.Thread(target=self._write_periodically, daemon=True,
                                        name="request log")  # fmt: skip
        self._writer.start()
        atexit.register(self.flush)  # a process that exits without closing the app

    def line(
        self, client: str, method: str, path: str, status: int, elapsed_s: float, request_id: bytes
    ) -> None:
        """Log one request; `path` never with its query string (it carries passwords)."""
        pending = self._pending
        pending.append((time.time(), client, method, path, status, elapsed_s, request_id))
        if len(pending) == MAX_PENDING:
            # The writer formats and writes them: flushing here would format on the
            # request path after all, a thousand lines at a time.
            self._due.set()

    def flush(self) -> None:
        with self._lock:
            pending = self._pending
            if not pending:
                return
            batch = [pending.popleft() for _ in range(len(pending))]
            lines = self._json_lines(batch) if self.json else self._text_lines(batch)
            try:
                self.stream.write("".join(lines))
                self.stream.flush()
            except (OSError, ValueError):
                pass  # the stream is closed or gone: nobody is left to read it

    def _stamp(self, second: int) -> str:
        """The time's seconds, formatted anew once a second."""
        if second != self._second:
            # Text: as logging's default asctime, local time (milliseconds follow a comma).
            # JSON: UTC in ISO 8601, as smsinbox.logs writes records.
            stamp = (
                utc_seconds(second)
                if self.json
                else time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(second))
            )
            self._second, self._prefix = second, stamp
        return self._prefix

    def _text_lines(self, batch: list[_Figures]) -> list[str]:
        lines = []
        for now, client, method, path, status, elapsed_s, request_id in batch:
            second = int(now)
            if not path.isprintable():
                # A decoded %0A would start a line of the path's own making.
                path = path.encode("unicode_escape").decode("ascii")
            lines.append(
                f"{self._stamp(second)},{int((now - second) * 1000):03d} INFO {LOGGER_NAME}"
                f" {client} {method} {path} {status} {elapsed_s * 1000:.1f}ms"
                f" request_id={request_id.decode('ascii')}\n"
            )
        return lines

    def _json_lines(self, batch: list[_Figures]) -> list[str]:
        # A template rather than a dict for orjson: a third of the cost. The method is an
        # HTTP token and the status a number; the rest is quoted and escaped as JSON.
        lines = []
        for now, client, method, path, status, elapsed_s, request_id in batch:
            second = int(now)
            lines.append(
                f'{{"time":"{self._stamp(second)}.{int((now - second) * 1000):03d}Z",'
                f'"level":"INFO","logger":"{LOGGER_NAME}","client":{quoted(client)},'
                f'"method":"{method}","path":{quoted(path)},"status":{status},'
                f'"duration_ms":{elapsed_s * 1000:.3f},'
                f'"request_id":{quoted(request_id.decode("ascii"))}}}\n'
            )
        return lines

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
