"""Sending over SMPP, against smpp34's server (an independent SMSC implementation on
loopback): a message an account sends to a number outside the server is queued, submitted
to the bind its recipient routes to, cut into parts where it is long, and its status
follows the SMSC's answers and receipts; on both engines."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import pytest
import smpp34

from smsinbox.core import gsm
from smsinbox.models import MessageStatus, SmppBind
from smsinbox.services import Services
from smsinbox.smpp import udh
from smsinbox.store import outbound
from smsinbox.store.conversations import recount_conversations
from smsinbox.upstream import sender
from tests.conftest import free_port
from tests.waiting import eventually

ALICE = "447700900001"
FRIEND = "33612345678"


class Smsc:
    """smpp34's server, with the ESME that binds to it and the submit_sm it receives."""

    def __init__(self) -> None:
        self.port = free_port()
        self.server = smpp34.Server("127.0.0.1", self.port, system_id="SMSC")
        self.esme: smpp34.Esme | None = None
        self.submitted: asyncio.Queue[smpp34.SubmitSmEvent] = asyncio.Queue()
        self._reading: asyncio.Task[None] | None = None
        self.bound = asyncio.Event()

    async def __aenter__(self) -> Smsc:
        await self.server.start()
        self._reading = asyncio.create_task(self._read())
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        assert self._reading is not None
        self._reading.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._reading
        await self.server.stop()

    async def _read(self) -> None:
        while True:
            event = await self.server.next()
            if isinstance(event, smpp34.Esme):
                self.esme = event
                self.bound.set()
            elif isinstance(event, smpp34.SubmitSmEvent):
                await self.submitted.put(event)

    async def next_submit(self, timeout: float = 15) -> smpp34.SubmitSmEvent:
        return await asyncio.wait_for(self.submitted.get(), timeout)

    async def receipt(self, message_id: str, stat: str = "DELIVRD") -> None:
        """A delivery receipt in the text form, as most SMSCs send it."""
        assert self.esme is not None
        text = (
            f"id:{message_id} sub:001 dlvrd:001 submit date:2612061200"
            f" done date:2612061201 stat:{stat} err:000 text:"
        )
        answer = await self.esme.deliver_sm(
            ALICE, text.encode(), source_addr=FRIEND, esm_class=0x04
        )
        assert answer.is_success


@contextlib.asynccontextmanager
async def running(services: Services, smsc: Smsc, **bind: object) -> AsyncIterator[None]:
    await services.accounts.add("alice", "pw", msisdns=(ALICE,))
    await services.smpp.add(
        SmppBind(
            name="carrier", host="127.0.0.1", port=smsc.port, system_id="esme",
            password="secret", routes=str(bind.pop("routes", "*")), **bind,  # type: ignore[arg-type]
        )
    )  # fmt: skip
    services.smpp.refresh_s = 0.2
    stop = asyncio.Event()
    task = asyncio.create_task(services.smpp.run(stop))
    try:
        await asyncio.wait_for(smsc.bound.wait(), 15)
        yield
    finally:
        stop.set()
        await task


async def status_of(services: Services, message_id: int) -> MessageStatus:
    message = await services.store.get_message(1, message_id)
    assert message is not None
    return message.status


@pytest.fixture
async def smsc() -> AsyncIterator[Smsc]:
    async with Smsc() as peer:
        yield peer


async def test_a_message_is_submitted_and_its_receipt_marks_it_delivered(
    services: Services, smsc: Smsc
) -> None:
    async with running(services, smsc):
        message_id = await services.mailbox.send_from(1, ALICE, FRIEND, "Hello €5 [ok]")
        submit = await smsc.next_submit()
        assert (submit.source_addr, submit.destination_addr) == (ALICE, FRIEND)
        assert (submit.source_addr_ton, submit.dest_addr_ton) == (1, 1)
        assert submit.data_coding == 0 and submit.registered_delivery == 1
        assert gsm.decode(submit.short_message) == "Hello €5 [ok]"
        submit.accept("5f1a")
        await eventually(lambda: _is(services, message_id, MessageStatus.SENT))
        # The receipt names the id in decimal where the answer gave it in hex.
        await smsc.receipt(str(0x5F1A))
        await eventually(lambda: _is(services, message_id, MessageStatus.DELIVERED))


async def test_a_long_message_goes_in_parts_and_is_delivered_when_every_part_is(
    services: Services, smsc: Smsc
) -> None:
    text = "Привет! " * 20  # 160 UTF-16 units: three parts of at most 67
    async with running(services, smsc):
        message_id = await services.mailbox.send_from(1, ALICE, FRIEND, text)
        parts = []
        for number in range(1, 4):
            submit = await smsc.next_submit()
            header, payload = udh.split(submit.short_message)
            assert submit.esm_class & udh.UDHI and submit.data_coding == 8
            assert udh.part(header) == udh.Part(message_id % 256, 3, number)
            parts.append(payload)
            submit.accept(f"part-{number}")
        assert b"".join(parts).decode("utf-16-be") == text
        await eventually(lambda: _is(services, message_id, MessageStatus.SENT))
        for number in (3, 1):
            await smsc.receipt(f"part-{number}")
        await asyncio.sleep(0.3)
        assert await status_of(services, message_id) is MessageStatus.SENT
        await smsc.receipt("part-2")
        await eventually(lambda: _is(services, message_id, MessageStatus.DELIVERED))


async def test_a_receipt_saying_undeliverable_marks_the_message_so(
    services: Services, smsc: Smsc
) -> None:
    async with running(services, smsc):
        message_id = await services.mailbox.send_from(1, ALICE, FRIEND, "to nowhere")
        (await smsc.next_submit()).accept("x1")
        await eventually(lambda: _is(services, message_id, MessageStatus.SENT))
        await smsc.receipt("x1", "UNDELIV")
        await eventually(lambda: _is(services, message_id, MessageStatus.UNDELIVERABLE))


async def test_a_throttled_message_is_tried_again_and_a_refused_one_is_rejected(
    services: Services, smsc: Smsc
) -> None:
    async with running(services, smsc):
        throttled = await services.mailbox.send_from(1, ALICE, FRIEND, "later please")
        (await smsc.next_submit()).reject(smpp34.ESME_RTHROTTLED)
        again = await smsc.next_submit(timeout=10)
        assert gsm.decode(again.short_message) == "later please"
        again.accept("t1")
        await eventually(lambda: _is(services, throttled, MessageStatus.SENT))

        refused = await services.mailbox.send_from(1, ALICE, FRIEND, "bad number")
        (await smsc.next_submit()).reject(smpp34.ESME_RINVDSTADR)
        await eventually(lambda: _is(services, refused, MessageStatus.REJECTED))
    # The conversation counts the rejected message as unsent, the sent one not; as a
    # recount from the messages themselves finds.
    [conversation] = await services.store.list_conversations(1)
    assert (conversation.message_count, conversation.unsent_count) == (2, 1)
    async with services.store.db.transaction("test_recount") as connection:
        await recount_conversations(connection, 1, [FRIEND])
    assert await services.store.list_conversations(1) == [conversation]


async def test_a_message_no_bind_routes_fails_when_its_time_runs_out(
    services: Services, smsc: Smsc
) -> None:
    services.mailbox.send_expiry_ms = 3000
    async with running(services, smsc, routes="44"):
        message_id = await services.mailbox.send_from(1, ALICE, FRIEND, "to France")
        await asyncio.sleep(0.3)
        assert await status_of(services, message_id) is MessageStatus.PENDING
        await eventually(lambda: _is(services, message_id, MessageStatus.FAILED), timeout=20)
        assert smsc.submitted.empty()


async def _is(services: Services, message_id: int, status: MessageStatus) -> bool:
    return await status_of(services, message_id) is status


def test_receipt_ids_are_matched_in_any_written_form() -> None:
    kept = outbound.stored_id(" 001a2b")
    assert kept == "1a2b"
    for named in ("6699", "0006699", "1A2B", "001a2b"):
        assert kept in outbound.receipt_id_forms(named), named
    assert outbound.stored_id("000") == "0"
    # Digits that are not ASCII are an id like any other text, not a number to convert.
    assert outbound.receipt_id_forms("²") == ["²"]
    assert outbound.receipt_id_forms("١٢") == ["١٢"]


async def test_a_receipt_naming_the_id_without_its_zeros_and_in_decimal_delivers(
    services: Services, smsc: Smsc
) -> None:
    async with running(services, smsc):
        message_id = await services.mailbox.send_from(1, ALICE, FRIEND, "zeros")
        (await smsc.next_submit()).accept("001a2b")
        await eventually(lambda: _is(services, message_id, MessageStatus.SENT))
        await smsc.receipt(str(0x1A2B))
        await eventually(lambda: _is(services, message_id, MessageStatus.DELIVERED))


async def test_the_worst_receipt_of_a_message_s_parts_is_its_status(
    services: Services, smsc: Smsc
) -> None:
    text = "Привет! " * 20  # three parts
    async with running(services, smsc):
        message_id = await services.mailbox.send_from(1, ALICE, FRIEND, text)
        for number in range(1, 4):
            (await smsc.next_submit()).accept(f"w-{number}")
        await eventually(lambda: _is(services, message_id, MessageStatus.SENT))
        await smsc.receipt("w-1", "EXPIRED")
        await eventually(lambda: _is(services, message_id, MessageStatus.EXPIRED))
        await smsc.receipt("w-2", "UNDELIV")
        await eventually(lambda: _is(services, message_id, MessageStatus.UNDELIVERABLE))
        await smsc.receipt("w-3", "DELIVRD")
        await asyncio.sleep(0.3)
        assert await status_of(services, message_id) is MessageStatus.UNDELIVERABLE


async def test_a_receipt_that_came_while_parts_were_still_being_sent_counts_once_sent(
    services: Services, smsc: Smsc
) -> None:
    text = "Привет! " * 10  # two parts
    async with running(services, smsc):
        message_id = await services.mailbox.send_from(1, ALICE, FRIEND, text)
        (await smsc.next_submit()).accept("p-1")
        (await smsc.next_submit()).reject(smpp34.ESME_RMSGQFUL)
        # Part one's receipt while part two waits to be tried again.
        await smsc.receipt("p-1", "UNDELIV")
        assert await status_of(services, message_id) is MessageStatus.PENDING
        (await smsc.next_submit(timeout=10)).accept("p-2")
        await eventually(lambda: _is(services, message_id, MessageStatus.UNDELIVERABLE))


async def test_a_message_taking_too_many_parts_in_the_bind_s_alphabet_is_rejected(
    services: Services, smsc: Smsc
) -> None:
    # 225 parts in GSM 7-bit; a Latin-1 SMSC cannot take '€', so UCS-2: 256 parts.
    text = "€" * (67 * 256)
    async with running(services, smsc, default_alphabet="latin1"):
        message_id = await services.mailbox.send_from(1, ALICE, FRIEND, text)
        await eventually(lambda: _is(services, message_id, MessageStatus.REJECTED))
    assert smsc.submitted.empty()


async def test_the_sender_rests_once_what_it_sent_is_recorded(
    services: Services, smsc: Smsc
) -> None:
    """With nothing to send, the sender looks at the queue when woken or once a
    second: an outcome recorded earlier must not keep it claiming in a loop."""
    claims = 0
    claim = services.store.claim_outbound

    async def counted(**arguments: Any) -> Any:
        nonlocal claims
        claims += 1
        return await claim(**arguments)

    services.store.claim_outbound = counted  # type: ignore[method-assign]
    async with running(services, smsc):
        message_id = await services.mailbox.send_from(1, ALICE, FRIEND, "one")
        (await smsc.next_submit()).accept("1")
        await eventually(lambda: _is(services, message_id, MessageStatus.SENT))
        claims = 0
        await asyncio.sleep(2.5)
        assert claims <= 5, f"{claims} claims in 2.5 s with nothing to send"


async def test_an_attempt_ending_while_the_sender_looks_at_the_queue_is_recorded_at_once(
    services: Services, smsc: Smsc, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The SMSC answers while the sender is in the middle of claiming: that answer's wake
    must not be lost, or the outcome waits for the sender's next look at the queue. That
    look is an hour away here, so a lost wake leaves the message unrecorded."""
    monkeypatch.setattr(sender, "POLL_S", 3600.0)
    answered = asyncio.Event()
    claim = services.store.claim_outbound
    handed_out = held = False

    async def claim_while_answered(**arguments: Any) -> Any:
        nonlocal handed_out, held
        found = await claim(**arguments)
        handed_out = handed_out or bool(found)
        if handed_out and not found and not held:
            # The first look after the message was claimed finds nothing (it is in hand):
            # the SMSC's answer arrives and the attempt ends before this look returns.
            held = True
            await answered.wait()
            await eventually(lambda: submits(services) == 1)
        return found

    services.store.claim_outbound = claim_while_answered  # type: ignore[method-assign]
    async with running(services, smsc):
        message_id = await services.mailbox.send_from(1, ALICE, FRIEND, "one")
        (await smsc.next_submit()).accept("1")
        answered.set()
        await eventually(lambda: _is(services, message_id, MessageStatus.SENT))
    assert held


def submits(services: Services) -> float:
    """submit_sm the SMSC accepted, as /metrics counts them (the attempt ends in the same
    step of the event loop as it counts)."""
    labels = {"bind": "carrier", "status": "ESME_ROK"}
    return services.metrics.registry.get_sample_value("smsinbox_smpp_submits_total", labels) or 0
