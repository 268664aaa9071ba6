"""The ingest path: routing, unrouted box, idempotency, threading, commit order."""

from __future__ import annotations

import asyncio
import dataclasses

import pytest
from sqlalchemy import delete

from smsinbox.core import records
from smsinbox.core.ingest import RawInbound
from smsinbox.errors import AlreadyExists, InvalidInput
from smsinbox.models import Direction, Encoding, IngestOutcome, MessageStatus
from smsinbox.services import Services
from smsinbox.store import tables as t

ALICE_NUMBER = "447700900001"


def sms(text: str | None = "hello", **fields: object) -> RawInbound:
    values: dict[str, object] = {
        "sender": "447700900123",
        "recipient": ALICE_NUMBER,
        "text": None if text is None else text.encode(),
    }
    values.update(fields)
    return RawInbound(**values)  # type: ignore[arg-type]


def failed_batches(services: Services) -> float:
    """Ingest transactions that failed (a deadlock, say) and were stored again one by one."""
    value = services.metrics.registry.get_sample_value(
        "smsinbox_db_transaction_duration_seconds_count",
        {"name": "ingest_incoming", "result": "error"},
    )
    return value or 0.0


@pytest.fixture
async def alice(services: Services) -> int:
    account = await services.accounts.add("alice", "pw", msisdns=(ALICE_NUMBER,))
    return account.id


async def test_message_is_routed_to_the_owner_of_the_number(services: Services, alice: int) -> None:
    await services.accounts.add("bob", "pw", msisdns=("447700900002",))
    result = await services.ingestor.accept(sms("for alice"), upstream_id=None)
    assert result.outcome is IngestOutcome.STORED
    message = await services.store.get_message(alice, result.id)
    assert message is not None
    assert (message.sender, message.recipient, message.text) == (
        "447700900123",
        ALICE_NUMBER,
        "for alice",
    )
    assert message.direction is Direction.INCOMING
    assert message.status == "received"
    assert message.counterpart == "447700900123"
    assert await services.store.list_recent_messages("bob", 10) == []


async def test_unrouted_message_is_kept_and_later_assigned(services: Services, alice: int) -> None:
    result = await services.ingestor.accept(
        sms("nobody owns this", recipient="15550001"), upstream_id=None
    )
    assert result.outcome is IngestOutcome.UNROUTED and result.unrouted
    [waiting] = await services.store.list_unrouted()
    assert (waiting.recipient, waiting.text) == ("15550001", "nobody owns this")
    assert await services.store.count_unrouted() == 1

    assert await services.ingestor.assign_unrouted("15550001", "alice") == 1
    assert await services.store.list_unrouted() == []
    [moved] = await services.store.list_recent_messages("alice", 10)
    assert (moved.recipient, moved.text) == ("15550001", "nobody owns this")
    # The number is alice's now: new messages go straight to her.
    again = await services.ingestor.accept(sms("direct", recipient="15550001"), upstream_id=None)
    assert again.outcome is IngestOutcome.STORED


async def test_assigning_a_number_owned_by_someone_else_is_refused(
    services: Services, alice: int
) -> None:
    await services.accounts.add("bob", "pw")
    await services.ingestor.accept(sms(recipient=ALICE_NUMBER), upstream_id=None)
    with pytest.raises(AlreadyExists):
        await services.ingestor.assign_unrouted(ALICE_NUMBER, "bob")


async def test_same_upstream_id_is_stored_once_and_acknowledged_twice(
    services: Services, alice: int
) -> None:
    upstream, _ = await services.upstreams.create("kannel")
    first = await services.ingestor.accept(
        sms(upstream_message_id="abc-1"), upstream_id=upstream.id
    )
    second = await services.ingestor.accept(
        sms("retried", upstream_message_id="abc-1"), upstream_id=upstream.id
    )
    assert first.outcome is IngestOutcome.STORED
    assert second.outcome is IngestOutcome.DUPLICATE
    assert second.id == first.id
    assert len(await services.store.list_recent_messages("alice", 10)) == 1
    # Another upstream may reuse the same id for a different message.
    other, _ = await services.upstreams.create("smsc-2")
    third = await services.ingestor.accept(sms(upstream_message_id="abc-1"), upstream_id=other.id)
    assert third.outcome is IngestOutcome.STORED


async def test_injected_messages_with_the_same_id_are_stored_once(
    services: Services, alice: int
) -> None:
    first = await services.ingestor.accept(sms(upstream_message_id="cli-1"), upstream_id=None)
    again = await services.ingestor.accept(sms(upstream_message_id="cli-1"), upstream_id=None)
    assert (again.outcome, again.id) == (IngestOutcome.DUPLICATE, first.id)


async def test_duplicate_of_an_unrouted_message_is_recognised_before_and_after_assignment(
    services: Services, alice: int
) -> None:
    upstream, _ = await services.upstreams.create("kannel")
    lost = sms(recipient="15550001", upstream_message_id="u-7")
    first = await services.ingestor.accept(lost, upstream_id=upstream.id)
    again = await services.ingestor.accept(lost, upstream_id=upstream.id)
    assert (again.outcome, again.id, again.unrouted) == (IngestOutcome.DUPLICATE, first.id, True)
    await services.ingestor.assign_unrouted("15550001", "alice")
    after = await services.ingestor.accept(lost, upstream_id=upstream.id)
    assert after.outcome is IngestOutcome.DUPLICATE and not after.unrouted
    assert len(await services.store.list_recent_messages("alice", 10)) == 1


async def test_concurrent_deliveries_of_one_upstream_id_store_one_message(
    services: Services, alice: int
) -> None:
    upstream, _ = await services.upstreams.create("kannel")
    results = await asyncio.gather(
        *(
            services.ingestor.accept(sms(upstream_message_id="race"), upstream_id=upstream.id)
            for _ in range(8)
        )
    )
    assert len({r.id for r in results}) == 1
    assert sum(r.outcome is IngestOutcome.STORED for r in results) == 1
    assert len(await services.store.list_recent_messages("alice", 20)) == 1


async def test_concurrent_writers_get_ids_sequence_and_time_in_commit_order(
    services: Services, alice: int
) -> None:
    await asyncio.gather(
        *(services.ingestor.accept(sms(f"m{i}"), upstream_id=None) for i in range(40))
    )
    stored = sorted(await services.store.list_recent_messages("alice", 100), key=lambda m: m.seq)
    assert [m.seq for m in stored] == list(range(1, 41))
    assert [m.id for m in stored] == sorted(m.id for m in stored)
    times = [m.received_at for m in stored]
    assert times == sorted(times)


async def test_a_burst_over_many_numbers_keeps_each_numbers_arrival_order(
    services: Services, alice: int
) -> None:
    # Eight numbers, so on PostgreSQL they spread over the ingest lanes; alice owns two of
    # them in different lanes (the first four and the last four share a lane each), so
    # batches of both lanes take her counter row at once: they must take turns, never
    # deadlock.
    numbers = [f"4477009005{n:02d}" for n in range(8)]
    await services.accounts.add_number(numbers[0], "alice")
    await services.accounts.add_number(numbers[4], "alice")
    others = [number for n, number in enumerate(numbers) if n not in (0, 4)]
    for n, number in enumerate(others):
        await services.accounts.add(f"user{n}", "pw", msisdns=(number,))
    burst = [sms(f"{i // 8}", recipient=numbers[i % 8]) for i in range(160)]
    results = await asyncio.gather(
        *(services.ingestor.accept(raw, upstream_id=None) for raw in burst)
    )
    assert failed_batches(services) == 0
    assert {r.outcome for r in results} == {IngestOutcome.STORED}
    for number in numbers:
        mine = [r.id for r, raw in zip(results, burst, strict=True) if raw.recipient == number]
        assert mine == sorted(mine), f"{number}: ids out of arrival order"
    for username, count in [("alice", 40), *((f"user{n}", 20) for n in range(6))]:
        stored = await services.store.list_recent_messages(username, 100)
        assert sorted(m.seq for m in stored) == list(range(1, count + 1)), username


async def test_one_burst_over_accounts_numbers_and_duplicates_counts_each_exactly(
    services: Services, alice: int
) -> None:
    bob = (await services.accounts.add("bob", "pw", msisdns=("447700900002",))).id
    upstream, _ = await services.upstreams.create("kannel")
    burst = [
        sms(f"a{i}", sender=f"4477009001{i % 3:02d}", upstream_message_id=f"a{i}")
        for i in range(30)
    ]
    burst += [
        sms(f"b{i}", recipient="447700900002", upstream_message_id=f"b{i}") for i in range(20)
    ]
    burst += [sms(f"n{i}", recipient="15550001", upstream_message_id=f"n{i}") for i in range(5)]
    burst += burst[:10]  # ten copies in the same burst
    results = await asyncio.gather(
        *(services.ingestor.accept(raw, upstream_id=upstream.id) for raw in burst)
    )
    outcomes = [r.outcome for r in results]
    assert outcomes.count(IngestOutcome.STORED) == 50
    assert outcomes.count(IngestOutcome.UNROUTED) == 5
    assert outcomes.count(IngestOutcome.DUPLICATE) == 10
    assert [r.id for r in results[-10:]] == [r.id for r in results[:10]]  # the copies' ids
    for account_id, username, count in ((alice, "alice", 30), (bob, "bob", 20)):
        stored = sorted(
            await services.store.list_recent_messages(username, 100), key=lambda m: m.id
        )
        assert [m.seq for m in stored] == list(range(1, count + 1))  # commit order, no gap
        conversations = await services.store.list_conversations(account_id)
        assert sum(c.message_count for c in conversations) == count
        assert sum(c.unread_count for c in conversations) == count
        for conversation in conversations:
            mine = [m for m in stored if m.counterpart == conversation.counterpart]
            assert conversation.message_count == len(mine)
            assert (conversation.last_message_id, conversation.snippet) == (
                mine[-1].id,
                mine[-1].text,
            )
    assert await services.store.count_unrouted() == 5
    # Each unrouted message's answer names its own row.
    kept = {m.id: m.text for m in await services.store.list_unrouted()}
    for raw, result in zip(burst[50:55], results[50:55], strict=True):
        assert result.unrouted and kept[result.id] == raw.text.decode()  # type: ignore[union-attr]


async def test_a_message_the_store_refuses_fails_alone(services: Services, alice: int) -> None:
    from smsinbox.models import InboundMessage

    def inbound(text: str, upstream_id: int | None = None) -> InboundMessage:
        return InboundMessage(
            "447700900123", ALICE_NUMBER, text, Encoding.GSM7, upstream_id=upstream_id
        )

    # No such upstream: the foreign key refuses the row, on both engines.
    refused = inbound("refused", upstream_id=987654)
    outcomes = await asyncio.gather(
        *(services.ingestor.ingest(inbound(f"fine {i}")) for i in range(5)),
        services.ingestor.ingest(refused),
        *(services.ingestor.ingest(inbound(f"fine {i}")) for i in range(5, 10)),
        return_exceptions=True,
    )
    failed = [o for o in outcomes if isinstance(o, BaseException)]
    assert len(failed) == 1 and outcomes[5] is failed[0]
    stored = await services.store.list_recent_messages("alice", 20)
    assert sorted(m.text for m in stored) == sorted(f"fine {i}" for i in range(10))
    assert sorted(m.seq for m in stored) == list(range(1, 11))


async def test_a_caller_that_goes_away_leaves_its_message_stored(
    services: Services, alice: int
) -> None:
    """A client that hangs up while its batch is written cancels its wait, not its
    message: the message is stored, the others' answers come, and a redelivery of it
    finds the copy."""
    callers = [
        asyncio.create_task(services.ingestor.accept(sms(f"m{i}", upstream_message_id=f"u{i}"),
                                                     upstream_id=None))
        for i in range(5)
    ]  # fmt: skip
    await asyncio.sleep(0)  # all five are in the lane; the writer has not committed them
    callers[2].cancel()
    outcomes = await asyncio.gather(*callers, return_exceptions=True)
    assert isinstance(outcomes[2], asyncio.CancelledError)
    assert all(o.outcome is IngestOutcome.STORED for i, o in enumerate(outcomes) if i != 2)  # type: ignore[union-attr]
    stored = await services.store.list_recent_messages("alice", 10)
    assert sorted(m.text for m in stored) == [f"m{i}" for i in range(5)]
    again = await services.ingestor.accept(sms("m2", upstream_message_id="u2"), upstream_id=None)
    assert again.outcome is IngestOutcome.DUPLICATE


async def test_receive_time_never_goes_backwards_within_an_account(
    services: Services, alice: int
) -> None:
    clock = iter([5_000_000, 4_000_000, 6_000_000])
    services.ingestor.clock = lambda: next(clock)
    ids = [(await services.ingestor.accept(sms(), upstream_id=None)).id for _ in range(3)]
    times = [(await services.store.get_message(alice, i)).received_at for i in ids]  # type: ignore[union-attr]
    assert times == [5_000_000, 5_000_000, 6_000_000]


async def test_sender_time_is_kept_beside_the_receive_time(services: Services, alice: int) -> None:
    result = await services.ingestor.accept(sms(time="2011-01-20 16:06:40"), upstream_id=None)
    message = await services.store.get_message(alice, result.id)
    assert message is not None and message.sent_at == 1295539600000
    assert message.received_at > message.sent_at


async def test_ids_are_never_reused(services: Services, alice: int) -> None:
    first = await services.ingestor.accept(sms(), upstream_id=None)
    async with services.store.db.transaction("test_delete") as connection:
        await connection.execute(delete(t.messages).where(t.messages.c.id == first.id))
    second = await services.ingestor.accept(sms(), upstream_id=None)
    assert second.id > first.id


async def _send(services: Services, account_id: int, to: str, *, now: int) -> int:
    return await services.store.add_message(
        account_id,
        records.outgoing(ALICE_NUMBER, to, "question?", status=MessageStatus.COMPLETE, now=now),
        now=now,
    )


async def test_reply_threads_onto_latest_outgoing_message_to_that_sender(
    services: Services, alice: int
) -> None:
    await _send(services, alice, "447700900123", now=services.ingestor.clock())
    latest = await _send(services, alice, "447700900123", now=services.ingestor.clock())
    await _send(services, alice, "447700900999", now=services.ingestor.clock())
    reply = await services.ingestor.accept(sms("answer"), upstream_id=None)
    message = await services.store.get_message(alice, reply.id)
    assert message is not None and message.reply_to_id == latest


async def test_reply_outside_the_window_answers_nothing(services: Services, alice: int) -> None:
    now = services.ingestor.clock()
    window = services.ingestor.reply_window_ms
    await _send(services, alice, "447700900123", now=now - window - 1000)
    reply = await services.ingestor.accept(sms("late answer"), upstream_id=None)
    message = await services.store.get_message(alice, reply.id)
    assert message is not None and message.reply_to_id is None


async def test_explicit_reference_wins_but_only_to_own_outgoing_messages(
    services: Services, alice: int
) -> None:
    now = services.ingestor.clock()
    older = await _send(services, alice, "447700900123", now=now)
    latest = await _send(services, alice, "447700900123", now=now)
    bob = await services.accounts.add("bob", "pw", msisdns=("447700900002",))
    bobs = await services.store.add_message(
        bob.id,
        records.outgoing(
            "447700900002", "447700900123", "x", status=MessageStatus.COMPLETE, now=now
        ),
        now=now,
    )
    explicit = await services.ingestor.accept(sms(ref=str(older)), upstream_id=None)
    foreign = await services.ingestor.accept(sms(ref=str(bobs)), upstream_id=None)
    incoming = await services.ingestor.accept(sms(ref=str(explicit.id)), upstream_id=None)
    replies = [
        (await services.store.get_message(alice, r.id)).reply_to_id  # type: ignore[union-attr]
        for r in (explicit, foreign, incoming)
    ]
    # Another account's message or an incoming one is not a valid reference:
    # the heuristic decides instead.
    assert replies == [older, latest, latest]


async def test_conversation_counts_follow_each_message(services: Services, alice: int) -> None:
    await services.ingestor.accept(sms("one"), upstream_id=None)
    await services.ingestor.accept(sms("two"), upstream_id=None)
    last = await services.store.add_message(
        alice,
        records.outgoing(
            ALICE_NUMBER,
            "447700900123",
            "three",
            status=MessageStatus.PENDING,
            now=services.ingestor.clock(),
        ),
        now=services.ingestor.clock(),
    )
    await services.ingestor.accept(sms("other", sender="447700900555"), upstream_id=None)
    conversations = {c.counterpart: c for c in await services.store.list_conversations(alice)}
    talk = conversations["447700900123"]
    assert (talk.message_count, talk.unread_count, talk.unsent_count) == (3, 2, 1)
    assert (talk.last_message_id, talk.snippet) == (last, "three")
    assert conversations["447700900555"].message_count == 1


async def test_8bit_hex_round_trip(services: Services, alice: int) -> None:
    payload = bytes(range(256))
    result = await services.ingestor.accept(
        sms(text=None, hex=payload.hex(), encoding="8bit"), upstream_id=None
    )
    message = await services.store.get_message(alice, result.id)
    assert message is not None
    assert message.encoding is Encoding.BINARY
    assert message.body == payload and message.body.hex() == payload.hex()


async def test_16bit_text_is_stored_as_unicode(services: Services, alice: int) -> None:
    text = "This is a Unicode message ☺ 😀"
    result = await services.ingestor.accept(
        sms(text=None, hex=text.encode("utf-16-be").hex(), encoding="16bit"), upstream_id=None
    )
    message = await services.store.get_message(alice, result.id)
    assert message is not None and (message.text, message.body) == (text, None)


async def test_nul_characters_keep_their_octets(services: Services, alice: int) -> None:
    text = "a\x00b"
    result = await services.ingestor.accept(
        sms(text=None, hex=text.encode("utf-16-be").hex(), encoding="16bit"), upstream_id=None
    )
    message = await services.store.get_message(alice, result.id)
    assert message is not None
    assert message.text == "a\ufffdb"
    assert message.body is not None and message.body.decode("utf-16-be") == text


@pytest.mark.parametrize(
    ("fields", "field"),
    [
        ({"recipient": "not-a-number"}, "to"),
        ({"sender": ""}, "from"),
        ({"ref": "-4"}, "ref"),
        ({"ref": "1e9"}, "ref"),
        ({"time": "yesterday"}, "time"),
        ({"upstream_message_id": "x" * 129}, "id"),
        ({"text": b"x" * 40_001}, "text"),
        ({"hex": "00"}, "hex"),
    ],
)
async def test_bad_input_is_refused_and_stores_nothing(
    services: Services, alice: int, fields: dict[str, object], field: str
) -> None:
    raw = dataclasses.replace(sms(), **fields)  # type: ignore[arg-type]
    with pytest.raises(InvalidInput) as refused:
        await services.ingestor.accept(raw, upstream_id=None)
    assert refused.value.field == field
    assert await services.store.list_recent_messages("alice", 10) == []
    assert await services.store.list_unrouted() == []
