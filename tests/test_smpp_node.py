"""SMPP against node-smpp (npm `smpp`), an independent SMSC implementation started on
loopback by the test and told what to deliver and in which order, and how to answer what
smsinbox submits; it reports every answer and every submit_sm.

`make test` and `.ci/run` install it from tests/smsc/package-lock.json with `npm ci`."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from smsinbox.config import Settings
from smsinbox.core import gsm
from smsinbox.models import MessageStatus, SmppBind
from smsinbox.services import Services
from smsinbox.smpp import coding, udh
from tests.conftest import LiveServer, free_port
from tests.waiting import eventually

SMSC = Path(__file__).parent / "smsc"
ALICE = "447700900001"
SENDER = "447700900123"
FRIEND = "33612345678"

# Skipped where Node.js or the package is missing, except in CI (.ci/run), which needs it.
pytestmark = pytest.mark.skipif(
    not os.environ.get("SMSINBOX_TEST_REQUIRE_PEERS")
    and (not (SMSC / "node_modules" / "smpp").is_dir() or shutil.which("node") is None),
    reason="node-smpp not installed: run `npm ci --prefix tests/smsc` (make test does)",
)


class NodeSmsc:
    """node-smpp's SMSC in a child process, spoken to in JSON lines (the protocol is
    described at the top of tests/smsc/smsc.js)."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.process: asyncio.subprocess.Process | None = None
        self.events: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self.submits: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self.errors: list[dict[str, Any]] = []
        self._answers: dict[object, asyncio.Future[dict[str, Any]]] = {}
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

    async def __aexit__(self, exc_type: object, *exc_info: object) -> None:
        assert self.process is not None and self._reading is not None
        self.process.kill()
        await self.process.wait()
        self._reading.cancel()
        if exc_type is None:
            assert not self.errors, f"smsc.js refused commands: {self.errors}"

    async def _read(self) -> None:
        assert self.process is not None and self.process.stdout is not None
        async for line in self.process.stdout:
            event = json.loads(line)
            if event["event"] == "submit":
                await self.submits.put(event)
            elif event["event"] == "answer":
                key = event["id"] if event["id"] is not None else ("submit", event["submit"])
                self._answer(key).set_result(event)
            elif event["event"] == "error":
                self.errors.append(event)
            else:
                await self.events.put(event)

    def _answer(self, key: object) -> asyncio.Future[dict[str, Any]]:
        if key not in self._answers:
            self._answers[key] = asyncio.get_running_loop().create_future()
        return self._answers[key]

    async def next_event(self, *kinds: str, timeout: float = 15) -> dict[str, Any]:
        """The next event (of one of `kinds`, skipping others); submit_sm, answers and
        errors are kept apart (next_submit, the commands that wait for their answers)."""
        async with asyncio.timeout(timeout):
            while True:
                event = await self.events.get()
                if not kinds or event["event"] in kinds:
                    return event

    async def next_submit(self, timeout: float = 15) -> dict[str, Any]:
        """The next submit_sm smsinbox sent: the "submit" event."""
        return await asyncio.wait_for(self.submits.get(), timeout)

    async def answer_of(self, key: object, timeout: float = 15) -> int:
        """The command_status of the answer to command `key` (or ("submit", N): to the
        receipt the policy sent for submit_sm N)."""
        answer = await asyncio.wait_for(asyncio.shield(self._answer(key)), timeout)
        return int(answer["status"])

    def send(self, command: dict[str, Any]) -> None:
        assert self.process is not None and self.process.stdin is not None
        self.process.stdin.write(json.dumps(command).encode() + b"\n")

    def _next_id(self) -> int:
        self._ids += 1
        return self._ids

    async def deliver(self, command: str = "deliver_sm", **pdu: Any) -> int:
        """Deliver one PDU and wait for its answer: the command_status."""
        pdu.setdefault("source_addr", SENDER)
        pdu.setdefault("destination_addr", ALICE)
        for octets in ("short_message", "message_payload"):
            if isinstance(pdu.get(octets), bytes):
                pdu[octets] = pdu[octets].hex()
        number = self._next_id()
        self.send({"op": "deliver", "id": number, "command": command, "pdu": pdu})
        return await self.answer_of(number)

    async def policy(self, **fields: Any) -> None:
        """How the submit_sm read from now on are answered; in force once this returns."""
        self.send({"op": "policy", **fields})
        await self.next_event("policy")

    def respond(self, submit: int, status: int = 0, message_id: str | None = None) -> None:
        """Answer a held submit_sm."""
        command: dict[str, Any] = {"op": "respond", "id": submit, "status": status}
        if message_id is not None:
            command["message_id"] = message_id
        self.send(command)

    async def receipt(self, **fields: Any) -> int:
        """Send a delivery receipt (fields as smsc.js's "receipt" command takes them) and
        wait for its answer: the command_status."""
        number = self._next_id()
        self.send({"op": "receipt", "id": number, **fields})
        return await self.answer_of(number)


def short_message(submit: dict[str, Any]) -> bytes:
    return bytes.fromhex(submit["pdu"]["short_message"])


async def texts(services: Services) -> list[str]:
    return sorted(m.text for m in await services.store.list_recent_messages("alice", 100))


class Sending:
    """smsinbox's binds running in this process (services.smpp.run), Alice's account the
    one that sends."""

    def __init__(self, services: Services, account_id: int) -> None:
        self.services = services
        self.account_id = account_id

    async def send(self, text: str, recipient: str = FRIEND) -> int:
        return await self.services.mailbox.send_from(self.account_id, ALICE, recipient, text)

    async def status(self, message_id: int) -> MessageStatus:
        message = await self.services.store.get_message(self.account_id, message_id)
        assert message is not None
        return message.status

    async def reaches(self, message_id: int, status: MessageStatus) -> None:
        async def reached() -> bool:
            return await self.status(message_id) is status

        await eventually(reached)


@contextlib.asynccontextmanager
async def sending(services: Services, smsc: NodeSmsc, *binds: SmppBind) -> AsyncIterator[Sending]:
    """Run `binds` (by default one transceiver routing every number) until the block ends,
    once node-smpp has seen each of them bind."""
    account = await services.accounts.add("alice", "pw", msisdns=(ALICE,))
    for bind in binds or (SmppBind("node", "127.0.0.1", smsc.port, "esme", "secret", routes="*"),):
        await services.smpp.add(bind)
    services.smpp.refresh_s = 0.2
    stop = asyncio.Event()
    task = asyncio.create_task(services.smpp.run(stop))
    try:
        for _ in binds or (None,):
            await smsc.next_event("bound")
        yield Sending(services, account.id)
    finally:
        stop.set()
        await task


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


async def test_node_smpp_takes_a_message_and_its_receipt_marks_it_delivered(
    services: Services,
) -> None:
    async with NodeSmsc(free_port()) as smsc, sending(services, smsc) as alice:
        text = "Hello from smsinbox: €5 [ok] {~}"
        message_id = await alice.send(text)
        submit = await smsc.next_submit()
        pdu = submit["pdu"]
        assert submit["mode"] == "bind_transceiver"
        assert (pdu["source_addr"], pdu["destination_addr"]) == (ALICE, FRIEND)
        assert (pdu["source_addr_ton"], pdu["dest_addr_ton"]) == (1, 1)
        assert (pdu["esm_class"], pdu["data_coding"], pdu["registered_delivery"]) == (0, 0, 1)
        # GSM 7-bit, one septet to an octet: the extension characters escaped.
        assert short_message(submit) == gsm.encode(text)
        assert gsm.decode(short_message(submit)) == text
        assert submit["answer"] == {"status": 0, "message_id": "node-1"}
        await alice.reaches(message_id, MessageStatus.SENT)

        # node-smpp's receipt, in the text form, from the recipient to the sender.
        assert await smsc.receipt(submit=submit["id"], stat="DELIVRD") == 0
        # Answered once recorded: the message is delivered by then.
        assert await alice.status(message_id) is MessageStatus.DELIVERED

        # A second message, its receipt as TLVs only, saying it could not be delivered.
        second = await alice.send("Second one")
        submit = await smsc.next_submit()
        assert gsm.decode(short_message(submit)) == "Second one"
        await alice.reaches(second, MessageStatus.SENT)
        assert await smsc.receipt(submit=submit["id"], stat="UNDELIV", form="tlv") == 0
        assert await alice.status(second) is MessageStatus.UNDELIVERABLE
        assert await alice.status(message_id) is MessageStatus.DELIVERED


async def test_node_smpp_takes_a_long_message_in_parts_delivered_when_every_part_is(
    services: Services,
) -> None:
    text = "Привет! Сообщение из трёх частей. " * 5  # 170 UTF-16 units: three parts
    assert len(coding.segment(text).payloads) == 3
    async with NodeSmsc(free_port()) as smsc, sending(services, smsc) as alice:
        message_id = await alice.send(text)
        submits: dict[int, dict[str, Any]] = {}
        payloads: dict[int, bytes] = {}
        for _ in range(3):
            submit = await smsc.next_submit()
            pdu = submit["pdu"]
            assert (pdu["source_addr"], pdu["destination_addr"]) == (ALICE, FRIEND)
            assert pdu["esm_class"] & udh.UDHI and pdu["data_coding"] == 8
            assert pdu["registered_delivery"] == 1
            header, payload = udh.split(short_message(submit))
            part = udh.part(header)
            assert part is not None
            assert (part.reference, part.total) == (message_id % 256, 3)
            assert part.sequence not in submits
            submits[part.sequence] = submit
            payloads[part.sequence] = payload
        assert sorted(submits) == [1, 2, 3]
        assert b"".join(payloads[n] for n in (1, 2, 3)).decode("utf-16-be") == text
        await alice.reaches(message_id, MessageStatus.SENT)

        # Receipts for the parts out of order, each in another form.
        assert await smsc.receipt(submit=submits[3]["id"], form="text") == 0
        assert await alice.status(message_id) is MessageStatus.SENT
        assert await smsc.receipt(submit=submits[1]["id"], form="tlv") == 0
        assert await alice.status(message_id) is MessageStatus.SENT
        assert await smsc.receipt(submit=submits[2]["id"], form="both") == 0
        assert await alice.status(message_id) is MessageStatus.DELIVERED
        assert smsc.submits.empty()


async def test_node_smpp_sending_a_receipt_before_its_answer_still_delivers(
    services: Services,
) -> None:
    async with NodeSmsc(free_port()) as smsc, sending(services, smsc) as alice:
        # node-smpp sends each receipt before answering the submit_sm, and answers only once
        # smsinbox has answered the receipt: the receipt is recorded before its part is.
        await smsc.policy(receipt={"stat": "DELIVRD", "when": "before"})
        short = await alice.send("Receipt first")
        submit = await smsc.next_submit()
        assert await smsc.answer_of(("submit", submit["id"])) == 0
        await alice.reaches(short, MessageStatus.DELIVERED)

        # Every part of a long one likewise, as TLVs.
        await smsc.policy(receipt={"stat": "DELIVRD", "when": "before", "form": "tlv"})
        text = "A long message in GSM, each of its parts with an early receipt. " * 4
        assert len(coding.segment(text).payloads) == 2
        long = await alice.send(text)
        for _ in range(2):
            submit = await smsc.next_submit()
            assert await smsc.answer_of(("submit", submit["id"])) == 0
        await alice.reaches(long, MessageStatus.DELIVERED)


async def test_node_smpp_holding_its_answer_past_the_receipt_still_delivers(
    services: Services,
) -> None:
    async with NodeSmsc(free_port()) as smsc, sending(services, smsc) as alice:
        await smsc.policy(answer="hold")
        message_id = await alice.send("Held")
        submit = await smsc.next_submit()
        assert submit["answer"] is None
        assert await smsc.receipt(message_id="4d2", source_addr=FRIEND, destination_addr=ALICE,
                                  stat="DELIVRD") == 0  # fmt: skip
        # Recorded (answered), but its submit_sm is not answered yet: not even sent.
        assert await alice.status(message_id) is MessageStatus.PENDING
        # The answer names the id in decimal where the receipt gave it in hex.
        smsc.respond(submit["id"], message_id=str(0x4D2))
        await alice.reaches(message_id, MessageStatus.DELIVERED)


async def test_node_smpp_gets_submit_sm_over_the_transmitter_never_the_receiver(
    services: Services,
) -> None:
    port = free_port()
    transmitter = SmppBind("node-tx", "127.0.0.1", port, "esme", "secret",
                           mode="transmitter", routes="*")  # fmt: skip
    # The receiver routes the recipients' prefix too, more closely than the transmitter.
    receiver = SmppBind("node-rx", "127.0.0.1", port, "esme", "secret",
                        mode="receiver", routes="* 33")  # fmt: skip
    async with NodeSmsc(port) as smsc, sending(services, smsc, transmitter, receiver) as alice:
        sent = {f"Message {n}": await alice.send(f"Message {n}") for n in range(3)}
        submits = [await smsc.next_submit() for _ in sent]
        assert [submit["mode"] for submit in submits] == ["bind_transmitter"] * 3
        for submit in submits:
            message_id = sent[gsm.decode(short_message(submit))]
            await alice.reaches(message_id, MessageStatus.SENT)
            # The receipt comes over the receiver bind.
            assert await smsc.receipt(submit=submit["id"], mode="bind_receiver") == 0
            assert await alice.status(message_id) is MessageStatus.DELIVERED
        assert smsc.submits.empty()


async def test_node_smpp_refusing_a_message_rejects_it(services: Services) -> None:
    async with NodeSmsc(free_port()) as smsc, sending(services, smsc) as alice:
        await smsc.policy(answer="reject", status=0x0B)  # ESME_RINVDSTADR
        message_id = await alice.send("Nowhere")
        submit = await smsc.next_submit()
        assert submit["answer"] == {"status": 0x0B, "message_id": None}
        await alice.reaches(message_id, MessageStatus.REJECTED)


async def test_node_smpp_receipts_right_behind_their_answers_deliver(
    services: Services,
) -> None:
    """Receipts recorded before, while or after their parts are: on PostgreSQL the two
    transactions take turns on the SMSC's id (store/outbound.py _lock_ids), so none is
    kept as early after its part's transaction looked for early ones."""
    async with NodeSmsc(free_port()) as smsc, sending(services, smsc) as alice:
        # Each receipt written right behind its submit_sm_resp, after a little while:
        # recorded before, while or after its part is, as the two race.
        sent: list[int] = []
        for delay_ms in (0, 10, 20, 30, 40):
            await smsc.policy(receipt={"stat": "DELIVRD", "when": "after", "delay_ms": delay_ms})
            batch = [await alice.send(f"Right behind, {delay_ms} ms, {n}") for n in range(8)]
            for _ in batch:
                submit = await smsc.next_submit()
                assert await smsc.answer_of(("submit", submit["id"])) == 0
            sent += batch

        # Every receipt is recorded (answered); once its message is recorded sent too (in
        # the transaction that applies a receipt come early), it is delivered.
        async def recorded() -> bool:
            return all([await alice.status(m) is not MessageStatus.PENDING for m in sent])

        await eventually(recorded)
        assert [await alice.status(m) for m in sent] == [MessageStatus.DELIVERED] * len(sent)
