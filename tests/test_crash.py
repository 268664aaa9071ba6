"""Acknowledged means durable: kill -9 the server mid-ingest, restart, lose nothing; a poll
cursor taken before the kill still sees every message exactly once, and a push endpoint
gets every acknowledged message from the restarted server."""

from __future__ import annotations

import asyncio
import os
import signal
import time
from collections import Counter

import httpx
import pytest
from sqlalchemy import func, select

from smsinbox.services import Services
from smsinbox.store import tables as t
from tests.conftest import free_port
from tests.faults import server_process
from tests.receiver import Receiver

__all__ = ["server_process"]  # test_push_restart runs servers the same way

pytestmark = pytest.mark.slow

NUMBER = "447700900001"
SENDERS = 6
KILL_AFTER_ACKS = 150


EAPI = "/eapi/reception/get_inbox/1/1.1"


class EapiPoller:
    """A client following EAPI's procedure: last_retrieved_id = the highest msg_id seen."""

    def __init__(self) -> None:
        self.cursor = 0
        self.seen: Counter[str] = Counter()  # upstream message id -> times received

    async def poll(self, http: httpx.AsyncClient, base: str) -> int:
        params = {"username": "alice", "password": "pw", "last_retrieved_id": self.cursor}
        answer = await http.get(base + EAPI, params=params)
        head, _, body = answer.text.partition("\n\n")
        assert head.startswith("0|records to follow|"), answer.text
        records = [line.split("|") for line in body.splitlines() if line]
        for record in records:
            self.cursor = max(self.cursor, int(record[0]))
            self.seen[record[2].removeprefix("message ")] += 1
        return len(records)


async def test_acknowledged_messages_survive_kill_9(
    services: Services, database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    await services.accounts.add("alice", "pw", msisdns=(NUMBER,))
    upstream, token = await services.upstreams.create("kannel")
    receiver = Receiver().start()
    services.push.addresses.allow_private = True
    await services.push.add("alice", receiver.url)
    monkeypatch.setenv("SMSINBOX_PUSH_ALLOW_PRIVATE", "true")
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    url = f"{base}/inbound/sms"
    acked: set[str] = set()
    unacked: set[str] = set()
    poller = EapiPoller()

    async def poll_until_killed(http: httpx.AsyncClient, killed: asyncio.Event) -> None:
        while not killed.is_set():
            try:
                await poller.poll(http, base)
            except httpx.TransportError:
                return  # the answer was lost with the server; the cursor did not move
            await asyncio.sleep(0.02)

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
            polling = asyncio.create_task(poll_until_killed(http, killed))
            await asyncio.wait_for(killed.wait(), 60)
            os.kill(process.pid, signal.SIGKILL)
            process.wait(10)
            await asyncio.wait_for(asyncio.gather(*senders, polling), 30)
    assert len(acked) >= KILL_AFTER_ACKS and unacked
    assert poller.cursor, "the poll cursor was taken before the kill"

    try:
        with server_process(database_url, port):
            async with httpx.AsyncClient(timeout=5) as http:
                # The upstream retries what was never acknowledged, and some of what was.
                retries = sorted(unacked) + sorted(acked)[:20]
                results = await asyncio.gather(*(send(http, m) for m in retries))
                assert all(results)
                while await poller.poll(http, base):
                    pass
                # Deliveries claimed by the killed worker come back when their lease ends.
                pushed = await asyncio.to_thread(pushes_of, receiver, acked | unacked, 90.0)
    finally:
        receiver.stop()
    assert acked <= set(poller.seen), "the poll cursor skipped an acknowledged message"
    assert set(poller.seen.values()) == {1}, "a poll returned a message twice"
    assert acked <= pushed, "an acknowledged message was never pushed"

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


def pushes_of(receiver: Receiver, wanted: set[str], timeout: float) -> set[str]:
    """The upstream ids of messages pushed to `receiver`, once all `wanted` arrived."""
    deadline = time.monotonic() + timeout
    while True:
        pushed = {
            r.body.decode().split('"text":"message ')[1].split('"')[0] for r in receiver.received
        }
        if wanted <= pushed or time.monotonic() > deadline:
            return pushed
        time.sleep(0.1)
