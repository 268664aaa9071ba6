"""Acknowledged means durable: kill -9 the server mid-ingest, restart, lose nothing."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager

import httpx
import pytest
from sqlalchemy import func, select

from smsinbox.services import Services
from smsinbox.store import tables as t
from tests.conftest import free_port

pytestmark = pytest.mark.slow

NUMBER = "447700900001"
SENDERS = 6
KILL_AFTER_ACKS = 150


@contextmanager
def server_process(database_url: str, port: int) -> Iterator[subprocess.Popen[bytes]]:
    env = {**os.environ, "SMSINBOX_DATABASE_URL": database_url, "SMSINBOX_LOG_LEVEL": "warning"}
    process = subprocess.Popen(
        [sys.executable, "-m", "smsinbox", "serve", "--port", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError("server did not start")
            time.sleep(0.05)
        yield process
    finally:
        if process.poll() is None:
            process.terminate()
            process.wait(10)


async def test_acknowledged_messages_survive_kill_9(services: Services, database_url: str) -> None:
    await services.accounts.add("alice", "pw", msisdns=(NUMBER,))
    upstream, token = await services.upstreams.create("kannel")
    port = free_port()
    url = f"http://127.0.0.1:{port}/inbound/sms"
    acked: set[str] = set()
    unacked: set[str] = set()

    async def send(http: httpx.AsyncClient, message_id: str) -> bool:
        params = {
            "token": token,
            "from": "447700900123",
            "to": NUMBER,
            "text": f"message {message_id}",
            "id": message_id,
        }
        try:
            response = await http.get(url, params=params)
        except httpx.TransportError:
            return False
        return response.status_code == 200

    async def sender(http: httpx.AsyncClient, number: int, killed: asyncio.Event) -> None:
        for sequence in range(100_000):
            message_id = f"s{number}-{sequence}"
            if await send(http, message_id):
                acked.add(message_id)
            else:
                unacked.add(message_id)  # the upstream keeps it and retries later
                return
            if len(acked) >= KILL_AFTER_ACKS:
                killed.set()

    with server_process(database_url, port) as process:
        killed = asyncio.Event()
        async with httpx.AsyncClient(timeout=5) as http:
            senders = [asyncio.create_task(sender(http, n, killed)) for n in range(SENDERS)]
            await asyncio.wait_for(killed.wait(), 60)
            os.kill(process.pid, signal.SIGKILL)
            process.wait(10)
            await asyncio.wait_for(asyncio.gather(*senders), 30)
    assert len(acked) >= KILL_AFTER_ACKS and unacked

    with server_process(database_url, port):
        async with httpx.AsyncClient(timeout=5) as http:
            # The upstream retries what was never acknowledged, and some of what was.
            retries = sorted(unacked) + sorted(acked)[:20]
            results = await asyncio.gather(*(send(http, m) for m in retries))
            assert all(results)

    async with services.store.db.snapshot("test_count") as connection:
        counts = dict(
            (
                await connection.execute(
                    select(t.messages.c.upstream_message_id, func.count())
                    .where(t.messages.c.upstream_id == upstream.id)
                    .group_by(t.messages.c.upstream_message_id)
                )
            ).all()
        )
    assert acked <= counts.keys(), "an acknowledged message was lost"
    assert set(counts) == acked | unacked
    assert set(counts.values()) == {1}, "a message was stored twice"
