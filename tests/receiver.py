"""A real HTTP receiver on loopback for push tests: records requests, answers as scripted."""

from __future__ import annotations

import dataclasses
import threading
import time
from collections import deque
from typing import Any
from urllib.parse import parse_qsl

import uvicorn

from tests.conftest import free_port


@dataclasses.dataclass(frozen=True)
class Received:
    method: str
    path: str
    params: dict[str, str]
    headers: dict[str, str]
    body: bytes


class Receiver:
    def __init__(self, port: int | None = None) -> None:
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}/hook"
        self.received: list[Received] = []
        # Scripted answers, used in order; then `default`.
        self.script: deque[tuple[int, bytes, dict[str, str]]] = deque()
        self.default: tuple[int, bytes, dict[str, str]] = (200, b"OK", {})
        self._lock = threading.Lock()
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None

    async def app(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        body = b""
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return  # cut off (the sender was killed mid-push): not a delivery
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        with self._lock:
            self.received.append(
                Received(
                    scope["method"],
                    scope["path"],
                    dict(parse_qsl(scope["query_string"].decode(), keep_blank_values=True)),
                    {k.decode(): v.decode() for k, v in scope["headers"]},
                    body,
                )
            )
            status, answer, headers = self.script.popleft() if self.script else self.default
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [(k.encode(), v.encode()) for k, v in headers.items()],
            }
        )
        await send({"type": "http.response.body", "body": answer})

    def start(self) -> Receiver:
        config = uvicorn.Config(
            self.app, host="127.0.0.1", port=self.port, log_level="warning", interface="asgi3"
        )
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(target=self._server.run, daemon=True)
        self._thread.start()
        deadline = time.monotonic() + 10
        while not self._server.started:
            assert time.monotonic() < deadline, "receiver did not start"
            time.sleep(0.01)
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(10)

    def wait_for(self, count: int, timeout: float = 20.0) -> list[Received]:
        """Block until `count` requests arrived (a test that hangs fails here, with a reason)."""
        deadline = time.monotonic() + timeout
        while len(self.received) < count:
            assert time.monotonic() < deadline, (
                f"only {len(self.received)} of {count} pushes arrived"
            )
            time.sleep(0.01)
        return list(self.received)
