"""Sending over SMPP to an SMSC that misbehaves, on both engines.

The SMSC is a fault-injecting one of this file's own (raw PDUs on loopback, through
smsinbox.smpp.pdu's codec): it answers the server's bind_transceiver with ESME_ROK and each
submit_sm as the test's script says: throttled, queue full, generic_nack, no answer at all,
slowly, or by dropping the connection in the middle of a burst; the failure modes SMPP
gateways such as Jasmin are tested against. What is checked is what a user would notice:
each message's status (pending while it waits to be tried again, then sent, rejected or
failed), and what reached the SMSC: every part accepted once, none accepted twice, each
message's parts under one concatenation reference.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import dataclasses
import time
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest

from smsinbox.core import gsm
from smsinbox.models import MessageStatus, SmppBind
from smsinbox.services import Services
from smsinbox.smpp import pdu as smpp
from smsinbox.smpp import udh
from smsinbox.smpp.bind import State
from smsinbox.smpp.pdu import Command, Pdu, Status
from smsinbox.upstream import sender
from smsinbox.upstream import smpp as upstream_smpp
from tests.conftest import free_port
from tests.waiting import eventually

ALICE = "447700900001"
FRIEND = "33612345678"
LONG = "Привет! " * 20  # 160 UTF-16 units: three parts of at most 67


@dataclasses.dataclass(frozen=True)
class Submitted:
    """A submit_sm as the SMSC read it."""

    number: int  # its place among all the submit_sm the SMSC read, from 1
    connection: int  # the connection (one per bind made) it came on, from 1
    destination: str
    data_coding: int
    part: udh.Part | None  # its concatenation header's, for a part of a long message
    payload: bytes  # the short message without its user data header

    @property
    def key(self) -> tuple[str, int]:
        """Which part of which message: the recipient (one message each in these tests)
        and the part's number."""
        return self.destination, 1 if self.part is None else self.part.sequence

    @property
    def text(self) -> str:
        if self.data_coding == 0:
            return gsm.decode(self.payload)
        return self.payload.decode("utf-16-be")


@dataclasses.dataclass(frozen=True)
class Reply:
    """How the SMSC answers one submit_sm."""

    status: Status = Status.ESME_ROK
    nack: bool = False  # generic_nack carrying `status`, instead of submit_sm_resp
    delay: float = 0.0  # seconds the answer takes
    release: asyncio.Event | None = None  # the answer waits for the test to set this
    silent: bool = False  # never answered
    drop: bool = False  # not answered: the connection is closed instead (no unbind)


ACCEPT = Reply()
SILENCE = Reply(silent=True)
DROP = Reply(drop=True)

Script = Callable[[Submitted], Reply]


class FaultySmsc:
    """An SMSC on loopback that binds any transceiver (once `answer_bind` is set, if
    given) and answers each submit_sm as `script` says; it keeps every submit_sm it read,
    and those it accepted."""

    def __init__(
        self,
        script: Script = lambda submitted: ACCEPT,
        *,
        answer_bind: asyncio.Event | None = None,
    ) -> None:
        self.script = script
        self.answer_bind = answer_bind
        self.port = free_port()
        self.submitted: list[Submitted] = []
        self.accepted: list[Submitted] = []  # answered ESME_ROK (the answer written)
        self.binds = 0
        self.binding = asyncio.Event()  # a bind_transceiver has come
        # submit_sm read and not answered yet (none are counted that will never be)
        self.unanswered = 0
        self.most_unanswered = 0
        self._connections = 0
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._answering: set[asyncio.Task[None]] = set()

    async def __aenter__(self) -> FaultySmsc:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", self.port)
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        assert self._server is not None
        self._server.close()
        for writer in list(self._writers):
            writer.close()
        for task in list(self._answering):
            task.cancel()
        await self._server.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._connections += 1
        connection = self._connections
        self._writers.add(writer)
        try:
            while True:
                header = await reader.readexactly(smpp.HEADER.size)
                length = int.from_bytes(header[:4], "big")
                body = await reader.readexactly(length - smpp.HEADER.size)
                request = smpp.decode(header + body)
                if request.command is Command.BIND_TRANSCEIVER:
                    self.binding.set()
                    if self.answer_bind is not None:
                        await self.answer_bind.wait()
                    self.binds += 1
                    _write(writer, request.response(system_id="FAULTY"))
                elif request.command in (Command.ENQUIRE_LINK, Command.UNBIND):
                    _write(writer, request.response())
                elif request.command is Command.SUBMIT_SM:
                    if not self._submit(connection, writer, request):
                        return
                elif not request.command.is_response:
                    _write(
                        writer, Pdu(Command.GENERIC_NACK, request.sequence, Status.ESME_RINVCMDID)
                    )
        except (asyncio.IncompleteReadError, ConnectionError):
            return
        finally:
            writer.close()
            self._writers.discard(writer)

    def _submit(self, connection: int, writer: asyncio.StreamWriter, request: Pdu) -> bool:
        """Read a submit_sm and answer it as scripted; False when the connection is dropped."""
        payload = request.octets("short_message")
        part = None
        if request.number("esm_class") & udh.UDHI:
            header, payload = udh.split(payload)
            part = udh.part(header)
        submitted = Submitted(
            number=len(self.submitted) + 1,
            connection=connection,
            destination=request.text("destination_addr"),
            data_coding=request.number("data_coding"),
            part=part,
            payload=payload,
        )
        self.submitted.append(submitted)
        reply = self.script(submitted)
        if reply.drop:
            writer.close()  # what was answered before goes out first
            return False
        if reply.silent:
            return True
        self.unanswered += 1
        self.most_unanswered = max(self.most_unanswered, self.unanswered)
        if reply.delay or reply.release is not None:
            answering = asyncio.create_task(self._answer_later(writer, request, submitted, reply))
            self._answering.add(answering)
            answering.add_done_callback(self._answering.discard)
        else:
            self._answer(writer, request, submitted, reply)
        return True

    async def _answer_later(
        self, writer: asyncio.StreamWriter, request: Pdu, submitted: Submitted, reply: Reply
    ) -> None:
        if reply.delay:
            await asyncio.sleep(reply.delay)
        if reply.release is not None:
            await reply.release.wait()
        self._answer(writer, request, submitted, reply)

    def _answer(
        self, writer: asyncio.StreamWriter, request: Pdu, submitted: Submitted, reply: Reply
    ) -> None:
        self.unanswered -= 1
        if writer.is_closing():
            return  # the connection is gone: the answer never reaches the ESME
        if reply.nack:
            _write(writer, Pdu(Command.GENERIC_NACK, request.sequence, reply.status))
            return
        _write(writer, request.response(reply.status, message_id=f"sim-{submitted.number}"))
        if reply.status == Status.ESME_ROK:
            self.accepted.append(submitted)


def _write(writer: asyncio.StreamWriter, pdu: Pdu) -> None:
    writer.write(smpp.encode(pdu))


@contextlib.asynccontextmanager
async def running(
    services: Services, smsc: FaultySmsc, *, window: int = 10, throughput: int = 0
) -> AsyncIterator[None]:
    """The server's binds and sender running, with one bind routing every number to
    `smsc`, until the block ends. The block starts once the bind is made, or, where the
    SMSC holds its answer to the bind, once it is asked for."""
    await services.accounts.add("alice", "pw", msisdns=(ALICE,))
    await services.smpp.add(
        SmppBind(
            name="carrier", host="127.0.0.1", port=smsc.port, system_id="esme",
            password="secret", window=window, throughput=throughput, routes="*",
        )
    )  # fmt: skip
    services.smpp.refresh_s = 0.2
    stop = asyncio.Event()
    task = asyncio.create_task(services.smpp.run(stop))
    try:
        await asyncio.wait_for(smsc.binding.wait(), 15)
        if smsc.answer_bind is None:
            await eventually(lambda: services.smpp.states()["carrier"][0] is State.BOUND)
        yield
    finally:
        stop.set()
        await task


@pytest.fixture
def short_response_timeout(monkeypatch: pytest.MonkeyPatch) -> None:
    """Binds give up waiting for a submit_sm's answer after 1 s (30 s by default)."""
    configured = upstream_smpp.bind_settings
    monkeypatch.setattr(
        upstream_smpp,
        "bind_settings",
        lambda bind: dataclasses.replace(configured(bind), response_timeout_s=1.0),
    )


async def status_of(services: Services, message_id: int) -> MessageStatus:
    message = await services.store.get_message(1, message_id)
    assert message is not None
    return message.status


def all_are(
    services: Services, message_ids: list[int], status: MessageStatus
) -> Callable[[], Awaitable[bool]]:
    async def check() -> bool:
        return all([await status_of(services, found) is status for found in message_ids])

    return check


async def retried(services: Services) -> int:
    """How many queued messages wait to be tried again."""
    return (await services.store.outbound_figures())[1]


async def test_a_throttled_message_is_submitted_again_and_sent(services: Services) -> None:
    answer_again = asyncio.Event()

    def script(submitted: Submitted) -> Reply:
        if submitted.number == 1:
            return Reply(Status.ESME_RTHROTTLED)
        return Reply(release=answer_again)

    async with FaultySmsc(script) as smsc, running(services, smsc):
        message_id = await services.mailbox.send_from(1, ALICE, FRIEND, "later please")
        await eventually(lambda: _retried_once(services))
        # Waiting to be tried again, then tried again (its answer held): pending throughout.
        assert await status_of(services, message_id) is MessageStatus.PENDING
        await eventually(lambda: len(smsc.submitted) == 2)
        assert await status_of(services, message_id) is MessageStatus.PENDING
        answer_again.set()
        await eventually(all_are(services, [message_id], MessageStatus.SENT))
    first, again = smsc.submitted
    assert first.text == again.text == "later please"
    assert first.destination == again.destination == FRIEND
    assert smsc.accepted == [again]


async def test_a_generic_nack_rejects_the_message_without_trying_again(
    services: Services,
) -> None:
    # What an SMSC answers a submit_sm it cannot read.
    smsc = FaultySmsc(lambda submitted: Reply(Status.ESME_RINVCMDLEN, nack=True))
    async with smsc, running(services, smsc):
        message_id = await services.mailbox.send_from(1, ALICE, FRIEND, "unreadable")
        await eventually(all_are(services, [message_id], MessageStatus.REJECTED))
        # Out of the queue: nothing will submit it again.
        assert await services.store.outbound_figures() == (0, 0)
    assert [submitted.text for submitted in smsc.submitted] == ["unreadable"]


@pytest.mark.usefixtures("short_response_timeout")
async def test_a_submit_never_answered_is_made_again_and_sent_once_answered(
    services: Services,
) -> None:
    answer_again = asyncio.Event()

    def script(submitted: Submitted) -> Reply:
        return SILENCE if submitted.number == 1 else Reply(release=answer_again)

    async with FaultySmsc(script) as smsc, running(services, smsc):
        message_id = await services.mailbox.send_from(1, ALICE, FRIEND, "are you there?")
        await eventually(lambda: len(smsc.submitted) == 1)
        await eventually(lambda: _retried_once(services))
        assert await status_of(services, message_id) is MessageStatus.PENDING
        await eventually(lambda: len(smsc.submitted) == 2)
        assert await status_of(services, message_id) is MessageStatus.PENDING
        answer_again.set()
        await eventually(all_are(services, [message_id], MessageStatus.SENT))
    # The SMSC may have taken the first and lost only its answer: SMPP has no way to ask,
    # so the handset may get this message twice.
    assert [submitted.text for submitted in smsc.submitted] == ["are you there?"] * 2


async def test_slow_answers_to_a_burst_send_each_message_once_within_the_window(
    services: Services,
) -> None:
    # All queued before the bind is made: they come at once, not as each is sent.
    bound = asyncio.Event()
    smsc = FaultySmsc(lambda submitted: Reply(delay=0.5), answer_bind=bound)
    sent = {f"336123456{n:02d}": f"burst {n}" for n in range(20)}
    async with smsc, running(services, smsc, window=5):
        message_ids = [
            await services.mailbox.send_from(1, ALICE, recipient, text)
            for recipient, text in sent.items()
        ]
        bound.set()
        await eventually(all_are(services, message_ids, MessageStatus.SENT), timeout=40)
    submitted = collections.Counter((found.destination, found.text) for found in smsc.submitted)
    assert submitted == collections.Counter(sent.items())
    assert len(smsc.accepted) == 20
    assert smsc.most_unanswered <= 5  # never more in flight than the window


async def test_a_connection_lost_mid_burst_sends_every_part_accepted_once(
    services: Services,
) -> None:
    # The 7th submit_sm is read and never answered: the SMSC drops the connection instead.
    def script(submitted: Submitted) -> Reply:
        return DROP if submitted.number == 7 else ACCEPT

    # All queued before the bind is made, so they go at once, their parts interleaved:
    # when the connection drops, some messages have parts accepted and parts to send.
    bound = asyncio.Event()
    texts = {f"336123456{n:02d}": f"№{n} {LONG}" for n in range(10)}
    async with FaultySmsc(script, answer_bind=bound) as smsc, running(services, smsc, window=5):
        message_ids = [
            await services.mailbox.send_from(1, ALICE, recipient, text)
            for recipient, text in texts.items()
        ]
        bound.set()
        references = {
            recipient: message_id % 256
            for recipient, message_id in zip(texts, message_ids, strict=True)
        }
        await eventually(all_are(services, message_ids, MessageStatus.SENT), timeout=40)
    assert smsc.binds >= 2
    assert len(smsc.submitted) >= 30
    assert all(found.connection == 1 for found in smsc.submitted[:7])
    assert any(found.connection > 1 for found in smsc.accepted)  # sent after binding again
    # Every part of every message accepted exactly once, under its message's reference.
    accepted = {found.key: found for found in smsc.accepted}
    assert len(accepted) == len(smsc.accepted) == 30
    for recipient, text in texts.items():
        parts = [accepted[(recipient, number)] for number in (1, 2, 3)]
        assert [found.part for found in parts] == [
            udh.Part(references[recipient], 3, number) for number in (1, 2, 3)
        ]
        assert "".join(found.text for found in parts) == text
    # The drop cut messages in two: parts accepted before it, the rest after binding again.
    assert any(
        len({accepted[(recipient, number)].connection for number in (1, 2, 3)}) > 1
        for recipient in texts
    )
    # No part accepted is submitted again: a part submitted more than once was left
    # unanswered every time but the last, the one accepted. The 7th was read by the SMSC
    # and never answered: SMPP gives no way to learn whether the SMSC took it, so it is
    # submitted again (the handset may get that part twice); so may any the connection
    # lost before the SMSC read them.
    for found in smsc.submitted:
        if found is not accepted[found.key]:
            assert found.connection == 1 and found.number < accepted[found.key].number
    assert smsc.submitted[6].key in {found.key for found in smsc.submitted[7:]}


async def test_a_full_queue_on_part_two_sends_only_parts_two_and_three_again(
    services: Services,
) -> None:
    answer_again = asyncio.Event()

    def script(submitted: Submitted) -> Reply:
        if submitted.number == 2:
            return Reply(Status.ESME_RMSGQFUL)
        if submitted.number == 3:
            return Reply(release=answer_again)
        return ACCEPT

    async with FaultySmsc(script) as smsc, running(services, smsc):
        message_id = await services.mailbox.send_from(1, ALICE, FRIEND, LONG)
        await eventually(lambda: _retried_once(services))
        assert await status_of(services, message_id) is MessageStatus.PENDING
        await eventually(lambda: len(smsc.submitted) == 3)
        assert await status_of(services, message_id) is MessageStatus.PENDING
        answer_again.set()
        await eventually(all_are(services, [message_id], MessageStatus.SENT))
    assert [found.part for found in smsc.submitted] == [
        udh.Part(message_id % 256, 3, number) for number in (1, 2, 2, 3)
    ]
    assert smsc.submitted[1].payload == smsc.submitted[2].payload
    assert [found.number for found in smsc.accepted] == [1, 3, 4]
    assert "".join(found.text for found in smsc.accepted) == LONG


async def test_a_message_throttled_until_its_time_runs_out_fails(services: Services) -> None:
    # How many tries fit in the time depends on how busy the machine is; that it ends
    # failed, tried and never accepted, does not.
    services.mailbox.send_expiry_ms = 3_000
    smsc = FaultySmsc(lambda submitted: Reply(Status.ESME_RTHROTTLED))
    async with smsc, running(services, smsc):
        message_id = await services.mailbox.send_from(1, ALICE, FRIEND, "too late")
        await eventually(all_are(services, [message_id], MessageStatus.FAILED))
        assert await services.store.outbound_figures() == (0, 0)
    assert smsc.submitted and smsc.accepted == []


async def _retried_once(services: Services) -> bool:
    return await retried(services) >= 1


async def test_messages_waiting_for_the_bind_s_pace_are_sent_once_each(
    services: Services, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Held longer than a claim's lease while the bind's pace (four a second) comes round
    to them: no message is claimed again while it is in hand, and sending goes on after."""
    monkeypatch.setattr(sender, "LEASE_MS", 500)
    async with FaultySmsc() as smsc, running(services, smsc, throughput=4):
        sent = [
            await services.mailbox.send_from(1, ALICE, f"33612{n:06d}", f"m{n}") for n in range(5)
        ]
        await eventually(all_are(services, sent, MessageStatus.SENT), timeout=30)
        later = await services.mailbox.send_from(1, ALICE, FRIEND, "and another")
        await eventually(all_are(services, [later], MessageStatus.SENT))
    destinations = [found.destination for found in smsc.submitted]
    assert sorted(destinations) == sorted({*destinations}) and len(destinations) == 6


async def test_parts_accepted_before_the_server_stops_are_not_sent_again(
    services: Services, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Stopped while a long message's second part waits for its answer: the first part,
    accepted, is recorded, so a restart sends only the other two."""
    monkeypatch.setattr(sender, "STOP_GRACE_S", 0.3)  # how long a stop waits for answers
    smsc = FaultySmsc(lambda submitted: ACCEPT if submitted.number == 1 else SILENCE)
    async with smsc, running(services, smsc):
        message_id = await services.mailbox.send_from(1, ALICE, FRIEND, LONG)
        await eventually(lambda: len(smsc.submitted) == 2)
    now = time.time_ns() // 1_000_000 + 600_000  # past any lease or retry
    [queued] = await services.store.claim_outbound(now=now, until=now + 1, limit=10)
    assert queued.message_id == message_id and queued.submitted == frozenset({1})
    assert await status_of(services, message_id) is MessageStatus.PENDING
