"""The server's HTTP protocol joins an answer's head and body into one write: answers still
arrive whole, in order, and a streamed answer's parts arrive when they are sent."""

from __future__ import annotations

import asyncio
import socket
import threading
import time
from collections.abc import Iterator

import pytest
import uvicorn
from starlette.types import Receive, Scope, Send

from smsinbox.web.protocol import JoinedWritesProtocol
from tests.conftest import free_port

STREAM_PAUSE_S = 1.0


async def app(scope: Scope, receive: Receive, send: Send) -> None:
    if scope["type"] != "http":
        return
    if scope["path"] == "/stream":
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"first", "more_body": True})
        await asyncio.sleep(STREAM_PAUSE_S)
        await send({"type": "http.response.body", "body": b"second"})
        return
    body = scope["path"].encode()
    headers = [(b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": body})


@pytest.fixture(scope="module")
def port() -> Iterator[int]:
    chosen = free_port()
    config = uvicorn.Config(
        app, host="127.0.0.1", port=chosen, log_level="warning", http=JoinedWritesProtocol
    )
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        assert time.monotonic() < deadline, "server did not start"
        time.sleep(0.01)
    yield chosen
    server.should_exit = True
    thread.join(10)


def _read_until(sock: socket.socket, marker: bytes, limit_s: float = 5.0) -> bytes:
    sock.settimeout(limit_s)
    data = b""
    while marker not in data:
        chunk = sock.recv(65536)
        assert chunk, f"connection closed before {marker!r}; got {data!r}"
        data += chunk
    return data


def test_keep_alive_answers_arrive_whole_and_in_order(port: int) -> None:
    with socket.create_connection(("127.0.0.1", port)) as sock:
        # Pipelined: both requests at once, the answers one after the other.
        sock.sendall(b"GET /one HTTP/1.1\r\nHost: x\r\n\r\nGET /two HTTP/1.1\r\nHost: x\r\n\r\n")
        data = _read_until(sock, b"/two")
        for _ in range(20):
            sock.sendall(b"GET /again HTTP/1.1\r\nHost: x\r\n\r\n")
            answer = _read_until(sock, b"/again")
            assert answer.startswith(b"HTTP/1.1 200 OK\r\n")
            assert answer.endswith(b"\r\n\r\n/again")
    assert data.index(b"/one") < data.index(b"/two")
    assert data.count(b"HTTP/1.1 200 OK") == 2


def test_a_streamed_answer_part_is_not_held_until_the_next(port: int) -> None:
    with socket.create_connection(("127.0.0.1", port)) as sock:
        sock.sendall(b"GET /stream HTTP/1.1\r\nHost: x\r\n\r\n")
        started = time.monotonic()
        first = _read_until(sock, b"first")
        waited = time.monotonic() - started
        assert b"second" not in first
        rest = _read_until(sock, b"0\r\n\r\n")
    # The first part came while the application was still pausing before the second.
    assert waited < STREAM_PAUSE_S
    assert b"second" in rest


def test_a_connection_closed_by_the_client_request_gets_its_answer(port: int) -> None:
    with socket.create_connection(("127.0.0.1", port)) as sock:
        sock.sendall(b"GET /last HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        sock.settimeout(5)
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    assert data.startswith(b"HTTP/1.1 200 OK\r\n")
    assert data.endswith(b"/last")
