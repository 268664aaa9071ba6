"""Messages delivered over SMPP, stored through the ingest path on both engines: whole
messages, long ones from parts in any order and more than once, parts that never all come,
and the answers the SMSC gets (ESME_ROK only for what is stored)."""

from __future__ import annotations

import asyncio
import collections
import itertools
import random

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from smsinbox.core import gsm
from smsinbox.models import Encoding, SmppBind
from smsinbox.services import Services
from smsinbox.smpp import coding, udh
from smsinbox.smpp.pdu import Command, Pdu, Status, Tag
from smsinbox.upstream.smpp import SmppInbound

ALICE = "447700900001"
# References no example has used: a message reusing one with the same text within the
# redelivery hold is taken for a redelivery (see store/smpp.py).
REFERENCES = itertools.count(1000)
SENDER = "447700900123"


class Clock:
    def __init__(self) -> None:
        self.now = 1_800_000_000_000

    def __call__(self) -> int:
        return self.now


@pytest.fixture
async def alice(services: Services) -> int:
    account = await services.accounts.add("alice", "pw", msisdns=(ALICE,))
    return account.id


@pytest.fixture
async def inbound(services: Services, alice: int) -> SmppInbound:
    receiver = SmppInbound(
        services.store, services.ingestor, reassembly_timeout_s=60, clock=Clock()
    )
    bind = await services.store.add_smpp_bind(
        SmppBind("carrier", "127.0.0.1", 2775, "esme", "secret"), token_hash="x" * 64, now=1
    )
    receiver.binds[bind.name] = bind
    return receiver


def deliver(short_message: bytes, **params: object) -> Pdu:
    values: dict[str, object] = {
        "source_addr": SENDER,
        "destination_addr": ALICE,
        "short_message": short_message,
    }
    values.update(params)
    return Pdu(Command.DELIVER_SM, 1, params=values)  # type: ignore[arg-type]


def parts_of(text: str, reference: int, sender: str = SENDER) -> list[Pdu]:
    segments = coding.segment(text)
    total = len(segments.payloads)
    return [
        deliver(
            udh.concatenation(reference, total, sequence) + payload,
            esm_class=udh.UDHI,
            data_coding=segments.data_coding,
            source_addr=sender,
        )
        for sequence, payload in enumerate(segments.payloads, 1)
    ]


async def texts(services: Services) -> list[str]:
    return [message.text for message in await services.store.list_recent_messages("alice", 1000)]


async def test_a_whole_message_is_stored_before_it_is_acknowledged(
    services: Services, inbound: SmppInbound
) -> None:
    status = await inbound.receive("carrier", deliver(gsm.encode("Price: 5€ [ok]")))
    assert status is Status.ESME_ROK
    [message] = await services.store.list_recent_messages("alice", 10)
    assert (message.sender, message.recipient, message.text) == (SENDER, ALICE, "Price: 5€ [ok]")
    assert message.encoding is Encoding.GSM7


async def test_each_alphabet_is_stored_as_its_text(
    services: Services, inbound: SmppInbound
) -> None:
    await inbound.receive("carrier", deliver("Grüße 😀".encode("utf-16-be"), data_coding=8))
    await inbound.receive("carrier", deliver("café".encode("latin-1"), data_coding=3))
    await inbound.receive("carrier", deliver(b"\x00\xffdata", data_coding=4))
    messages = await services.store.list_recent_messages("alice", 10)
    by_encoding = {message.encoding: message for message in messages}
    assert {message.text for message in messages} >= {"Grüße 😀", "café"}
    assert by_encoding[Encoding.UCS2].text == "Grüße 😀"
    assert by_encoding[Encoding.BINARY].body == b"\x00\xffdata"


async def test_a_long_message_is_stored_once_when_its_last_part_arrives(
    services: Services, inbound: SmppInbound
) -> None:
    characters = list("abcdefgh " * 42 + "€" * 10)  # 398 septets: three parts
    random.Random(5).shuffle(characters)
    text = "".join(characters)
    [first, second, third] = parts_of(text, 77)
    for part in (third, first):
        assert await inbound.receive("carrier", part) is Status.ESME_ROK
        assert await texts(services) == []  # nothing shown before it is whole
    assert await inbound.receive("carrier", second) is Status.ESME_ROK
    assert await texts(services) == [text]
    # A part delivered again (its answer lost) is acknowledged and stores nothing more.
    assert await inbound.receive("carrier", first) is Status.ESME_ROK
    assert await texts(services) == [text]


async def test_two_senders_with_the_same_reference_get_their_own_messages(
    services: Services, inbound: SmppInbound
) -> None:
    mine = parts_of("m" * 200, 5)
    theirs = parts_of("t" * 200, 5, sender="447700900999")
    for part in (mine[0], theirs[1], theirs[0], mine[1]):
        await inbound.receive("carrier", part)
    assert sorted(await texts(services)) == ["m" * 200, "t" * 200]


async def test_parts_numbered_by_sar_tlvs_are_joined(
    services: Services, inbound: SmppInbound
) -> None:
    for sequence, piece in ((2, b"world"), (1, b"hello ")):
        pdu = deliver(piece)
        pdu.tlvs = {
            Tag.SAR_MSG_REF_NUM: (300).to_bytes(2, "big"),
            Tag.SAR_TOTAL_SEGMENTS: b"\x02",
            Tag.SAR_SEGMENT_SEQNUM: bytes([sequence]),
        }
        await inbound.receive("carrier", pdu)
    assert await texts(services) == ["hello world"]


async def test_parts_that_never_all_come_are_stored_after_the_timeout(
    services: Services, inbound: SmppInbound
) -> None:
    [first, _, third] = parts_of("x" * 400, 9)
    await inbound.receive("carrier", first)
    await inbound.receive("carrier", third)
    await inbound.sweep()
    assert await texts(services) == []  # still within the wait for the rest
    clock = inbound.clock
    assert isinstance(clock, Clock)
    clock.now += 61_000
    await inbound.sweep()
    assert await texts(services) == ["x" * 153 + "[…]" + "x" * 94]  # marked incomplete
    # The missing part arriving late is recognised as this message's, not a new one.
    await inbound.receive("carrier", parts_of("x" * 400, 9)[1])
    assert len(await texts(services)) == 1
    # Kept as long again after the message was stored, then forgotten.
    clock.now += 61_000
    await inbound.sweep()
    assert await services.store.waiting_smpp_messages(received_before=clock.now) == []


async def test_bad_addresses_are_refused_with_their_own_status(
    services: Services, inbound: SmppInbound
) -> None:
    assert await inbound.receive("carrier", deliver(b"x", source_addr="")) is (
        Status.ESME_RINVSRCADR
    )
    assert await inbound.receive("carrier", deliver(b"x", destination_addr="abc")) is (
        Status.ESME_RINVDSTADR
    )
    assert await texts(services) == []


async def test_an_unreadable_header_keeps_the_message_as_8bit(
    services: Services, inbound: SmppInbound
) -> None:
    raw = b"\x09\x00\x03\x01"
    assert await inbound.receive("carrier", deliver(raw, esm_class=udh.UDHI)) is Status.ESME_ROK
    [message] = await services.store.list_recent_messages("alice", 10)
    assert message.encoding is Encoding.BINARY and message.body == raw


async def test_a_number_nobody_owns_is_kept_unrouted(
    services: Services, inbound: SmppInbound
) -> None:
    assert await inbound.receive("carrier", deliver(b"lost", destination_addr="15550001")) is (
        Status.ESME_ROK
    )
    [waiting] = await services.store.list_unrouted()
    assert (waiting.recipient, waiting.text) == ("15550001", "lost")


@settings(
    max_examples=15,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
@given(
    # No NUL (stored as U+FFFD, its octets kept) and no lone surrogates (not text).
    texts_=st.lists(
        st.text(
            st.characters(exclude_categories=("Cs",), exclude_characters="\x00"),
            min_size=161,
            max_size=500,
        ),
        min_size=1,
        max_size=3,
        unique=True,
    ),
    seed=st.integers(0, 2**32 - 1),
)
async def test_interleaved_parts_in_any_order_and_repeated_make_each_message_once(
    services: Services, inbound: SmppInbound, texts_: list[str], seed: int
) -> None:
    shuffler = random.Random(seed)
    before = collections.Counter(await texts(services))
    # Each message its own reference, some sent at once (as a window of deliveries).
    parts = [part for text in texts_ for part in parts_of(text, next(REFERENCES))]
    arrivals = parts + shuffler.sample(parts, k=min(3, len(parts)))
    shuffler.shuffle(arrivals)
    statuses = await asyncio.gather(*(inbound.receive("carrier", part) for part in arrivals))
    assert set(statuses) == {Status.ESME_ROK}
    assert collections.Counter(await texts(services)) - before == collections.Counter(texts_)


async def test_a_new_message_reusing_a_reference_is_not_taken_for_a_redelivery(
    services: Services, inbound: SmppInbound
) -> None:
    for text in ("a" * 200, "b" * 200):  # the same sender, recipient, reference and count
        for part in parts_of(text, 7):
            await inbound.receive("carrier", part)
    assert sorted(await texts(services)) == ["a" * 200, "b" * 200]
