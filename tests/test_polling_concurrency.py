"""Pollers following each API's documented procedure while writers ingest: every message
reaches every poller exactly once."""

from __future__ import annotations

import asyncio
from collections import Counter

import httpx
import pytest

from smsinbox.services import Services
from tests.conftest import LiveServer

pytestmark = pytest.mark.slow

NUMBER = "447700900001"
WRITERS = 4
PER_WRITER = 120
POLLERS = 2


async def test_cursors_lose_nothing_and_repeat_nothing_under_concurrent_writes(
    services: Services, live_server: LiveServer
) -> None:
    await services.accounts.add("alice", "pw", msisdns=(NUMBER,))
    _, token = await services.upstreams.create("kannel")
    writing = True
    sent: list[str] = []

    async def writer(http: httpx.AsyncClient, number: int) -> None:
        for sequence in range(PER_WRITER):
            response = await http.get(
                "/inbound/sms",
                params={
                    "token": token,
                    "from": str(1000 + number),
                    "to": NUMBER,
                    "text": f"{number}-{sequence}",
                    "id": f"{number}-{sequence}",
                },
            )
            assert response.status_code == 200
            sent.append(response.headers["x-smsinbox-id"])

    async def mc5_poller(http: httpx.AsyncClient) -> Counter[str]:
        seen: Counter[str] = Counter()
        since, idle_rounds = 0, 0
        while writing or idle_rounds < 30:  # keep going until the open second has closed
            response = await http.get(
                "/services/rest/user/messages",
                params={"username": "alice", "password": "pw", "since": since},
            )
            page = response.json()
            assert page["status"] == 0
            seen.update(m["documentId"] for m in page["messages"])
            since = page["newestMessageTimestamp"]
            if not page["hasMoreMessages"]:
                idle_rounds = 0 if writing else idle_rounds + 1
                await asyncio.sleep(0.05)
        return seen

    async def eapi_poller(http: httpx.AsyncClient) -> Counter[str]:
        seen: Counter[str] = Counter()
        last, idle_rounds = 0, 0
        while writing or idle_rounds < 5:
            response = await http.get(
                "/eapi/reception/get_inbox/1/1.1",
                params={"username": "alice", "password": "pw", "last_retrieved_id": last},
            )
            status, _, records = response.text.partition("\n\n")
            assert status.startswith("0|records to follow|")
            ids = [record.split("|")[0] for record in records.splitlines()]
            seen.update(ids)
            if ids:
                last = int(ids[-1])
            else:
                idle_rounds = 0 if writing else idle_rounds + 1
                await asyncio.sleep(0.02)
        return seen

    async with httpx.AsyncClient(base_url=live_server.url, timeout=30) as http:
        pollers = [asyncio.create_task(mc5_poller(http)) for _ in range(POLLERS)]
        pollers += [asyncio.create_task(eapi_poller(http)) for _ in range(POLLERS)]
        await asyncio.gather(*(writer(http, n) for n in range(WRITERS)))
        writing = False
        results = await asyncio.gather(*pollers)

    expected = Counter(sent)
    assert len(expected) == WRITERS * PER_WRITER
    for seen in results:
        assert seen == expected  # every message, each exactly once
