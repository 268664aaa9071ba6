"""Receivers that hang (accept and never answer) or trickle their answer a byte at a time
hold up neither ingestion nor other accounts' pushes; their own deliveries time out and are
retried later per the schedule."""

from __future__ import annotations

import asyncio
import contextlib
import socket
import threading
import time
from collections.abc import Iterator

import httpx
import pytest

from smsinbox.config import Settings
from smsinbox.services import Services
from tests.conftest import LiveServer
from tests.receiver import Receiver

pytestmark = pytest.mark.slow

PUSH_TIMEOUT_S = 8.0
# Far below PUSH_TIMEOUT_S: pushes of a healthy receiver must not wait for a hanging one.
PROMPT_S = 4.0
MESSAGES = 8


class HangingReceiver:
    """A TCP server that reads requests and never completes an answer: `silent` sends
    nothing; `trickle` sends a 200 status line and headers, then a body byte per 0.2 s."""

    def __init__(self, mode: str) -> None:
        self.mode = mode
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.listener.getsockname()[1]}/hook"
        self.requests = 0
        self._stop = threading.Event()
        self._connections: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                connection, _ = self.listener.accept()
            except OSError:
                return
            self._connections.append(connection)
            threading.Thread(target=self._serve, args=(connection,), daemon=True).start()

    def _serve(self, connection: socket.socket) -> None:
        with contextlib.suppress(OSError):
            if connection.recv(65536):
                self.requests += 1
            if self.mode == "trickle":
                connection.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 1000000\r\n\r\n")
                while not self._stop.wait(0.2):
                    connection.sendall(b"x")
            else:
                self._stop.wait()

    def close(self) -> None:
        self._stop.set()
        self.listener.close()
        for connection in self._connections:
            with contextlib.suppress(OSError):
                connection.close()


@pytest.fixture
def receivers() -> Iterator[tuple[HangingReceiver, HangingReceiver, Receiver]]:
    silent, trickle, healthy = HangingReceiver("silent"), HangingReceiver("trickle"), Receiver()
    healthy.start()
    try:
        yield silent, trickle, healthy
    finally:
        silent.close()
        trickle.close()
        healthy.stop()


async def test_hanging_receivers_delay_neither_ingestion_nor_other_accounts_pushes(
    database_url: str,
    services: Services,
    receivers: tuple[HangingReceiver, HangingReceiver, Receiver],
) -> None:
    silent, trickle, healthy = receivers
    numbers = {"silent": "447700900001", "trickle": "447700900002", "healthy": "447700900003"}
    services.push.addresses.allow_private = True
    for (name, number), url in zip(
        numbers.items(), [silent.url, trickle.url, healthy.url], strict=True
    ):
        await services.accounts.add(name, "pw", msisdns=(number,))
        await services.push.add(name, url)
    _, token = await services.upstreams.create("kannel")
    settings = Settings(
        database_url=database_url,
        push_allow_private=True,
        push_timeout=PUSH_TIMEOUT_S,
        push_concurrency=8,
        push_retry_schedule="0,1,600",
        migrate_on_start=False,
    )
    with LiveServer(settings) as server:
        # The bound below is how long an ingest may take at all; none should come near.
        async with httpx.AsyncClient(base_url=server.url, timeout=PROMPT_S) as http:
            for i in range(MESSAGES):
                for name, number in numbers.items():
                    answer = await http.get(
                        "/inbound/sms",
                        params={"token": token, "from": "1", "to": number, "text": f"{name} {i}"},
                    )
                    assert answer.status_code == 200
                await asyncio.sleep(0.1)
            # Every healthy push arrives long before a hanging attempt could time out.
            await asyncio.to_thread(healthy.wait_for, MESSAGES, PROMPT_S)
            assert silent.requests and trickle.requests
            # The hanging receivers' attempts time out and are retried per the schedule.
            deadline = time.monotonic() + PUSH_TIMEOUT_S * 3
            while True:
                failed = {
                    name: await services.push.attempts(name, failed_only=True)
                    for name in ("silent", "trickle")
                }
                if all(failed.values()):
                    break
                assert time.monotonic() < deadline, "hanging attempts never timed out"
                await asyncio.sleep(0.2)
            for attempts in failed.values():
                assert all("within" in (a.error or "") for a in attempts), attempts
                assert all(a.state == "pending" for a in attempts)  # a retry is scheduled
    texts = sorted(r.body.decode().split('"text":"')[1].split('"')[0] for r in healthy.received)
    assert texts == sorted(f"healthy {i}" for i in range(MESSAGES))
