"""A receiver that answers every HTTP request `200` at once and notes when it arrived.

    python bench/receiver.py PORT

Kannel's `get-url` and smsinbox's push worker deliver to it. It must never be the
bottleneck of what it measures, so it is a bare asyncio protocol on uvloop: no framework,
HTTP/1.1 keep-alive, an empty `200` for every request with the headers of smsinbox's own
(Kannel sends a non-empty answer back as a reply SMS; the `standard` and `mc5` push
formats take any `2xx`). For each request it
keeps the arrival time (wall clock, comparable with the harness's) and the `bench-t=`
timestamp the harness put in the message text, if any. Paths under `/_bench/` are its
controls, not counted: `stats` (count, first and last arrival), `arrivals` (every arrival
with its timestamp) and `reset`.
"""

from __future__ import annotations

import asyncio
import json
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx

import loops

STAMP = re.compile(rb"bench-t(?:=|%3D)([0-9.]+)")
LENGTH = re.compile(rb"\r\ncontent-length:\s*(\d+)", re.I)
# The headers of smsinbox's own answer to Kannel, so smsbox does the same work with both.
EMPTY_OK = (
    b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\ncontent-type: text/plain; charset=utf-8\r\n\r\n"
)


class Arrivals:
    def __init__(self) -> None:
        self.times: list[float] = []
        self.stamps: list[float | None] = []

    def answer(self, request: bytes) -> bytes:
        target = request.split(b" ", 2)[1] if request.count(b" ") >= 2 else b""
        if not target.startswith(b"/_bench/"):
            self.times.append(time.time())
            found = STAMP.search(request)
            self.stamps.append(float(found.group(1)) if found else None)
            return EMPTY_OK
        if target == b"/_bench/reset":
            self.times, self.stamps = [], []
            figures: Any = {}
        elif target == b"/_bench/stats":
            figures = {
                "count": len(self.times),
                "first": self.times[0] if self.times else None,
                "last": self.times[-1] if self.times else None,
            }
        else:
            figures = list(zip(self.times, self.stamps, strict=True))
        body = json.dumps(figures).encode()
        return (
            b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\n"
            b"content-length: %d\r\n\r\n%s" % (len(body), body)
        )


class Connection(asyncio.Protocol):
    def __init__(self, arrivals: Arrivals) -> None:
        self.arrivals = arrivals
        self.buffer = b""
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        while (end := self.buffer.find(b"\r\n\r\n")) >= 0:
            length = LENGTH.search(self.buffer, 0, end + 2)
            total = end + 4 + (int(length.group(1)) if length else 0)
            if len(self.buffer) < total:
                return
            request, self.buffer = self.buffer[:total], self.buffer[total:]
            assert self.transport is not None
            self.transport.write(self.arrivals.answer(request))
            if b"\r\nconnection: close" in request[:end].lower():
                self.transport.close()
                return


async def serve(port: int) -> None:
    arrivals = Arrivals()
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: Connection(arrivals), "127.0.0.1", port)
    print("ready", flush=True)
    async with server:
        await server.serve_forever()


class Receiver:
    """bench/receiver.py as a separate process, and its figures."""

    def __init__(self, port: int, log: Path) -> None:
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        self.log = log.open("ab")
        self.process: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> Receiver:
        self.process = subprocess.Popen(
            [sys.executable, __file__, str(self.port)], stdout=subprocess.PIPE, stderr=self.log
        )
        assert self.process.stdout is not None
        if self.process.stdout.readline().strip() != b"ready":
            raise RuntimeError("the receiver did not start")
        return self

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def control(self, name: str) -> Any:
        return httpx.get(f"{self.url}/_bench/{name}", timeout=30).json()

    def wait_for(self, count: int, limit_s: float) -> dict[str, Any]:
        """Its stats once `count` requests have arrived, or when `limit_s` has passed."""
        deadline = time.monotonic() + limit_s
        while (stats := self.control("stats"))["count"] < count and time.monotonic() < deadline:
            time.sleep(0.1)
        return stats  # type: ignore[no-any-return]

    def __exit__(self, *exc_info: object) -> None:
        if self.process is not None:
            self.process.terminate()
            self.process.wait(10)
        self.log.close()


if __name__ == "__main__":
    loops.run(serve(int(sys.argv[1])))
