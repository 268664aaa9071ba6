"""A receiver that is down while the server restarts still gets every message once both
are back: the outbox lives in the database, not in the worker's memory."""

from __future__ import annotations

import asyncio
import os
import signal
from collections import defaultdict

import httpx
import pytest

from smsinbox.services import Services
from tests.conftest import free_port
from tests.receiver import Receiver
from tests.test_crash import server_process

pytestmark = pytest.mark.slow

NUMBER = "447700900001"


async def test_pushes_survive_a_receiver_outage_across_a_server_restart(
    services: Services, database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    await services.accounts.add("alice", "pw", msisdns=(NUMBER,))
    _, token = await services.upstreams.create("kannel")
    receiver = Receiver()  # its port is known, nothing listens yet
    services.push.addresses.allow_private = True
    await services.push.add("alice", receiver.url)
    monkeypatch.setenv("SMSINBOX_PUSH_ALLOW_PRIVATE", "true")
    monkeypatch.setenv("SMSINBOX_PUSH_RETRY_SCHEDULE", "0,0.3,0.5,0.5,0.5,0.5,0.5,0.5,0.5,0.5")
    port = free_port()
    url = f"http://127.0.0.1:{port}/inbound/sms"
    with server_process(database_url, port) as process:
        async with httpx.AsyncClient(timeout=5) as http:
            for i in range(10):
                response = await http.get(
                    url, params={"token": token, "from": "1", "to": NUMBER, "text": f"m{i}"}
                )
                assert response.status_code == 200
        await asyncio.sleep(0.5)  # a few attempts fail against the closed port
        os.kill(process.pid, signal.SIGKILL)
        process.wait(10)
    failed = await services.push.attempts("alice", failed_only=True)
    assert failed and all(a.error and "Connect" in a.error for a in failed)
    receiver.start()
    try:
        with server_process(database_url, port):
            pushes = await asyncio.to_thread(receiver.wait_for, 10, 30.0)
    finally:
        receiver.stop()
    ids_by_message: defaultdict[str, set[str]] = defaultdict(set)
    for push in pushes:
        ids_by_message[push.body.decode().split('"id":"')[1].split('"')[0]].add(
            push.headers["webhook-id"]
        )
    assert len(ids_by_message) == 10  # every message
    assert all(len(ids) == 1 for ids in ids_by_message.values())  # repeats share their id
