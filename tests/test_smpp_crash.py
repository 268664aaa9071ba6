"""Acknowledged means durable over SMPP too: kill -9 the server during a burst of multipart
deliver_sm, restart it, let the SMSC deliver again what it holds unacknowledged, and every
message is stored exactly once, whole. The SMSC is smpp34's server on loopback."""

from __future__ import annotations

import asyncio
import os
import signal
import time

import pytest
import smpp34

from smsinbox.models import SmppBind
from smsinbox.services import Services
from smsinbox.smpp import coding, udh
from tests.conftest import free_port
from tests.faults import server_process

pytestmark = pytest.mark.slow

NUMBER = "447700900001"
MESSAGES = 60  # of three parts each
WINDOW = 20
KILL_AFTER_ACKS = 60


def text_of(index: int) -> str:
    return f"message {index:03d} " + "long text of three parts " * 16  # 412 septets


def parts(index: int) -> list[bytes]:
    segments = coding.segment(text_of(index))
    assert len(segments.payloads) == 3
    return [
        udh.concatenation(index, 3, sequence) + payload
        for sequence, payload in enumerate(segments.payloads, 1)
    ]


async def next_bind(smsc: smpp34.Server) -> smpp34.Esme:
    """The next ESME to bind (an old session's end comes first after a kill)."""
    while True:
        event = await asyncio.wait_for(smsc.next(), 30)
        if isinstance(event, smpp34.Esme):
            return event


async def test_acknowledged_parts_survive_kill_9_and_redeliveries_store_once(
    services: Services, database_url: str
) -> None:
    await services.accounts.add("alice", "pw", msisdns=(NUMBER,))
    smsc_port = free_port()
    smsc = smpp34.Server("127.0.0.1", smsc_port, system_id="SMSC")
    await smsc.start()
    await services.smpp.add(SmppBind("carrier", "127.0.0.1", smsc_port, "esme", "pw"))
    pending = [(index, sequence) for index in range(MESSAGES) for sequence in (1, 2, 3)]
    # Parts in an order an SMSC might use: messages interleaved, each's parts shuffled.
    pending.sort(key=lambda item: (item[0] // 4, (item[1] * 7 + item[0]) % 3, item[0]))
    acknowledged: set[tuple[int, int]] = set()
    try:
        with server_process(database_url, free_port()) as server:
            esme = await next_bind(smsc)
            queue = list(pending)
            killed = asyncio.Event()

            async def sender() -> None:
                while queue and not killed.is_set():
                    index, sequence = queue.pop(0)
                    try:
                        answer = await esme.deliver_sm(
                            NUMBER, parts(index)[sequence - 1], source_addr="447700900123",
                            esm_class=udh.UDHI, data_coding=0,
                        )  # fmt: skip
                    except smpp34.SmppError:
                        continue  # the session died with the server: not acknowledged
                    if answer.is_success:
                        acknowledged.add((index, sequence))
                        if len(acknowledged) == KILL_AFTER_ACKS:
                            os.kill(server.pid, signal.SIGKILL)
                            killed.set()

            await asyncio.gather(*(sender() for _ in range(WINDOW)))
            server.wait(10)
        assert KILL_AFTER_ACKS <= len(acknowledged) < len(pending)

        # The SMSC delivers again everything it holds unacknowledged, to the restarted
        # server, and (as SMSCs do when an answer was lost) a few acknowledged parts too.
        redeliver = [item for item in pending if item not in acknowledged]
        redeliver += sorted(acknowledged)[:10]
        with server_process(database_url, free_port()):
            esme = await next_bind(smsc)
            for index, sequence in redeliver:
                answer = await esme.deliver_sm(
                    NUMBER, parts(index)[sequence - 1], source_addr="447700900123",
                    esm_class=udh.UDHI, data_coding=0,
                )  # fmt: skip
                assert answer.is_success
            deadline = time.monotonic() + 20
            while True:
                stored = await services.store.list_recent_messages("alice", 1000)
                if len(stored) >= MESSAGES or time.monotonic() > deadline:
                    break
                await asyncio.sleep(0.2)
        texts = sorted(message.text for message in stored)
        assert texts == sorted(text_of(index) for index in range(MESSAGES))
    finally:
        await smsc.stop()
