"""SMPP against node-smpp (npm `smpp`), an independent SMSC implementation started on
loopback by the test and told what to deliver and in which order; it reports every answer.

`make test` and `.ci/run` install it from tests/smsc/package-lock.json with `npm ci`."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
from pathlib import Path
from typing import Any

import pytest

from smsinbox.config import Settings
from smsinbox.models import SmppBind
from smsinbox.services import Services
from smsinbox.smpp import coding, udh
from tests.conftest import LiveServer, free_port

SMSC = Path(__file__).parent / "smsc"
ALICE = "447700900001"
SENDER = "447700900123"

# Skipped where Node.js or the package is missing, except in CI (.ci/run), which needs it.
pytestmark = pytest.mark.skipif(
    not os.environ.get("SMSINBOX_TEST_REQUIRE_PEERS")
    and (not (SMSC / "node_modules" / "smpp").is_dir() or shutil.which("node") is None),
    reason="node-smpp not installed: run `npm ci --prefix tests/smsc` (make test does)",
)


class NodeSmsc:
    """node-smpp's SMSC in a child process, spoken to in JSON lines."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.process: asyncio.subprocess.Process | None = None
        self.events: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self._reading: asyncio.Task[None] | None = None
        self._ids = 0

    async def __aenter__(self) -> NodeSmsc:
        self.process = await asyncio.create_subprocess_exec(
            "node", str(SMSC / "smsc.js"), str(self.port), "esme", "secret",
            stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
        )  # fmt: skip
        self._reading = asyncio.create_task(self._read())
        assert (await self.next_event())["event"] == "listening"
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        assert self.process is not None and self._reading is not None
        self.process.kill()
        await self.process.wait()
        self._reading.cancel()

    async def _read(self) -> None:
        assert self.process is not None and self.process.stdout is not None
        async for line in self.process.stdout:
            await self.events.put(json.loads(line))

    async def next_event(self, *kinds: str, timeout: float = 15) -> dict[str, Any]:
        """The next event (of one of `kinds`, skipping others)."""
        async with asyncio.timeout(timeout):
            while True:
                event = await self.events.get()
                if not kinds or event["event"] in kinds:
                    return event

    def send(self, command: dict[str, Any]) -> None:
        assert self.process is not None and self.process.stdin is not None
        self.process.stdin.write(json.dumps(command).encode() + b"\n")

    async def deliver(self, command: str = "deliver_sm", **pdu: Any) -> int:
        """Deliver one PDU and wait for its answer: the command_status."""
        self._ids += 1
        pdu.setdefault("source_addr", SENDER)
        pdu.setdefault("destination_addr", ALICE)
        for octets in ("short_message", "message_payload"):
            if isinstance(pdu.get(octets), bytes):
                pdu[octets] = pdu[octets].hex()
        self.send({"op": "deliver", "id": self._ids, "command": command, "pdu": pdu})
        answer = await self.next_event("answer")
        assert answer["id"] == self._ids
        return int(answer["status"])


async def texts(services: Services) -> list[str]:
    return sorted(m.text for m in await services.store.list_recent_messages("alice", 100))


async def test_node_smpp_delivers_parts_in_the_order_it_chooses(
    settings: Settings, services: Services
) -> None:
    await services.accounts.add("alice", "pw", msisdns=(ALICE,))
    port = free_port()
    await services.smpp.add(SmppBind("node", "127.0.0.1", port, "esme", "secret",
                                     enquire_link_s=1))  # fmt: skip
    async with NodeSmsc(port) as smsc, asyncio.timeout(60):
        with LiveServer(settings):
            assert (await smsc.next_event("bound"))["mode"] == "bind_transceiver"

            # A three-part GSM message, its parts 3, 1, 2, and part 1 once more.
            long_gsm = "Three parts in GSM 7-bit, with extension characters: [€] {~} " * 6
            segments = coding.segment(long_gsm)
            assert len(segments.payloads) == 3
            for sequence in (3, 1, 2, 1):
                part = udh.concatenation(42, 3, sequence) + segments.payloads[sequence - 1]
                assert await smsc.deliver(short_message=part, esm_class=0x40) == 0

            # UCS-2 in two parts with a 16-bit reference, an application port element
            # before the concatenation one; the second part first.
            long_ucs2 = "Привет! Сообщение в двух частях. " * 3
            segments = coding.segment(long_ucs2)
            assert len(segments.payloads) == 2
            ports = bytes([0x05, 4, 0x0B, 0x84, 0x23, 0xF0])
            for sequence in (2, 1):
                concatenation = bytes([0x08, 4, 0x12, 0x34, 2, sequence])
                header = bytes([len(ports) + len(concatenation)]) + ports + concatenation
                part = header + segments.payloads[sequence - 1]
                assert await smsc.deliver(short_message=part, esm_class=0x40, data_coding=8) == 0

            # Two parts numbered by sar_* TLVs, and a data_sm carrying message_payload.
            for sequence, piece in ((2, b" by TLVs"), (1, b"Numbered")):
                status = await smsc.deliver(
                    short_message=piece, sar_msg_ref_num=7, sar_total_segments=2,
                    sar_segment_seqnum=sequence,
                )  # fmt: skip
                assert status == 0
            payload = "A data_sm with its text in message_payload. " * 8
            assert (
                await smsc.deliver(
                    "data_sm", message_payload=payload.encode("utf-16-be"), data_coding=8
                )
                == 0
            )

            # A delivery receipt: answered, and no message of its own.
            receipt = b"id:abc123 sub:001 dlvrd:001 submit date:2612061200 done date:2612061201 "
            assert await smsc.deliver(short_message=receipt + b"stat:DELIVRD err:000",
                                      esm_class=0x04) == 0  # fmt: skip

            assert await texts(services) == sorted(
                [long_gsm, long_ucs2, "Numbered by TLVs", payload]
            )

            # Quiet for the bind's interval: smsinbox asks whether the SMSC is alive.
            await smsc.next_event("enquire_link")
            # The SMSC unbinds: answered, and smsinbox binds again after its backoff.
            smsc.send({"op": "unbind"})
            await smsc.next_event("closed")
            assert (await smsc.next_event("bound", timeout=30))["mode"] == "bind_transceiver"
