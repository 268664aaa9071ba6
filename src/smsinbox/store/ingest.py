"""Ingest: incoming messages stored in batches, each batch one transaction at driver level.

Every message waits for a durable commit before its upstream is acknowledged (DESIGN
invariant 1), and a commit waits for the disk. So messages that arrive while a batch is
being written queue for the next one, and a batch does once what would otherwise be done
per message: each account's counter row is updated once (taking the batch's positions in
the account's commit order), each recipient is routed once, each conversation counted
once, and the accounts without push endpoints skip the outbox. A poll never sees part of a
batch: it is one transaction.

A message's own failure must not fail the others queued with it: when a batch fails for
anything but an unavailable store, its messages are stored again one per transaction, and
only the one at fault gets the error.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import sqlite3
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from sqlalchemy import exc

from smsinbox.errors import StoreUnavailable
from smsinbox.models import InboundMessage, IngestOutcome, IngestResult, MessageStatus
from smsinbox.store.driver import Driver
from smsinbox.store.tables import NOTIFY_CHANNEL, SNIPPET_CHARS

if TYPE_CHECKING:
    from smsinbox.store.database import Database

log = logging.getLogger("smsinbox.store")

# Most messages one ingest transaction stores.
MAX_BATCH = 256

# The earlier copy of an upstream message, routed (0) or not (1). Ids given to `smsinbox
# inject` (no upstream) form their own scope: IS NULL, not `= NULL`.
_EARLIER_COPY = {
    "upstream_id = ?": "SELECT id, 0 FROM messages WHERE upstream_id = ?"
    " AND upstream_message_id = ? UNION ALL SELECT id, 1 FROM unrouted"
    " WHERE upstream_id = ? AND upstream_message_id = ?",
    "upstream_id IS NULL": "SELECT id, 0 FROM messages WHERE upstream_id IS NULL"
    " AND upstream_message_id = ? UNION ALL SELECT id, 1 FROM unrouted"
    " WHERE upstream_id IS NULL AND upstream_message_id = ?",
}
_OWNER = "SELECT account_id FROM numbers WHERE msisdn = ?"
_UNROUTED = (
    "INSERT INTO unrouted (sender, recipient, text, encoding, body, reply_ref, upstream_id,"
    " upstream_message_id, received_at, sent_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
    " RETURNING id"
)
# Takes `n` positions in the account's commit order: sequence numbers and modseqs
# last - n + 1 .. last, and a receive time that never goes backwards (DESIGN invariant 2).
# On PostgreSQL the row lock orders this account's writers until the batch commits.
_TAKE_POSITIONS = (
    "UPDATE account_counters SET last_seq = last_seq + ?, last_modseq = last_modseq + ?,"
    " last_received_at = CASE WHEN last_received_at > ? THEN last_received_at ELSE ? END"
    " WHERE account_id = ? RETURNING last_seq, last_modseq, last_received_at"
)
# The message, threaded onto the outgoing message it answers: the one its upstream named,
# if that is an outgoing message of this account; else the latest outgoing message from
# the number it was sent to, to its sender, within the reply window.
_INSERT_MESSAGE = (
    "INSERT INTO messages (account_id, seq, modseq, created_modseq, received_at, status_at,"
    " direction, sender, recipient, counterpart, text, encoding, body, reply_to_id,"
    " upstream_id, upstream_message_id, sent_at, status, origin, read, locked, deleted)"
    " VALUES (?, ?, ?, ?, ?, ?, 'in', ?, ?, ?, ?, ?, ?, COALESCE("
    "(SELECT id FROM messages WHERE account_id = ? AND direction = 'out' AND id = ?),"
    " (SELECT id FROM messages WHERE account_id = ? AND direction = 'out' AND counterpart = ?"
    " AND sender = ? AND received_at >= ? AND deleted = false ORDER BY id DESC LIMIT 1)),"
    " ?, ?, ?, ?, ?, false, false, false) RETURNING id"
)
_PUSHED = (
    "SELECT count(*) FROM push_endpoints WHERE account_id = ? AND enabled = true"
    " AND events LIKE '%mo%'"
)
_ENQUEUE = (
    "INSERT INTO deliveries (endpoint_id, account_id, message_id, event, state, attempts,"
    " next_attempt_at, created_at) SELECT id, account_id, CAST(? AS BIGINT), 'mo', 'pending',"
    " 0, CAST(? AS BIGINT), CAST(? AS BIGINT) FROM push_endpoints WHERE account_id = ?"
    " AND enabled = true AND events LIKE '%mo%'"
)
# A conversation's new messages (of a batch, or one): counted in, the last one shown. Every
# path that adds a message to a conversation uses it (store/messages.py too).
BUMP_CONVERSATION = (
    "INSERT INTO conversations (account_id, counterpart, message_count, unread_count,"
    " unsent_count, last_message_id, last_message_at, snippet)"
    " VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
    " ON CONFLICT (account_id, counterpart) DO UPDATE SET"
    " message_count = conversations.message_count + excluded.message_count,"
    " unread_count = conversations.unread_count + excluded.unread_count,"
    " unsent_count = conversations.unsent_count + excluded.unsent_count,"
    " last_message_id = excluded.last_message_id,"
    " last_message_at = excluded.last_message_at,"
    " snippet = excluded.snippet"
)


@dataclasses.dataclass(slots=True)
class _Conversation:
    count: int
    last_id: int
    last_at: int
    snippet: str


@dataclasses.dataclass(frozen=True, slots=True)
class Arrival:
    """One incoming message to store: received at `now`, threaded within the window."""

    inbound: InboundMessage
    now: int
    reply_window_ms: int


async def store_batch(
    driver: Driver, arrivals: Sequence[Arrival]
) -> tuple[list[IngestResult], bool]:
    """Store `arrivals` in the open transaction: their outcomes, in order, and whether any
    push delivery was queued (then the caller wakes the workers of other processes)."""
    results: list[IngestResult | None] = [None] * len(arrivals)
    queued = False
    seen: dict[tuple[int | None, str], IngestResult] = {}
    owners: dict[str, int | None] = {}
    routed: dict[int, list[int]] = {}  # account -> indexes of its messages, in order
    for index, arrival in enumerate(arrivals):
        inbound = arrival.inbound
        key = None
        if inbound.upstream_message_id is not None:
            key = (inbound.upstream_id, inbound.upstream_message_id)
            earlier = seen.get(key) or await _earlier_copy(driver, inbound)
            if earlier is not None:
                results[index] = dataclasses.replace(earlier, outcome=IngestOutcome.DUPLICATE)
                seen[key] = results[index]  # type: ignore[assignment]
                continue
        if inbound.recipient not in owners:
            owners[inbound.recipient] = await driver.fetchval(_OWNER, (inbound.recipient,))
        owner = owners[inbound.recipient]
        if owner is None:
            unrouted_id = await driver.fetchval(_UNROUTED, _unrouted_row(inbound, arrival.now))
            results[index] = IngestResult(IngestOutcome.UNROUTED, int(unrouted_id), unrouted=True)
            if key is not None:
                seen[key] = results[index]  # type: ignore[assignment]
            continue
        routed.setdefault(int(owner), []).append(index)
        if key is not None:
            # Its id is known once inserted; a later copy in this batch waits for it.
            seen[key] = IngestResult(IngestOutcome.STORED, -1 - index, unrouted=False)
    # Accounts in id order: concurrent batches on PostgreSQL take their counter locks in
    # one order and never deadlock.
    for account_id in sorted(routed):
        indexes = routed[account_id]
        stored, pushed = await _append_to_account(
            driver, account_id, [arrivals[i] for i in indexes]
        )
        queued = queued or pushed
        for index, message_id in zip(indexes, stored, strict=True):
            results[index] = IngestResult(IngestOutcome.STORED, message_id, unrouted=False)
    # Copies of a message stored in this very batch: the id it got.
    for index, result in enumerate(results):
        if result is not None and result.outcome is IngestOutcome.DUPLICATE and result.id < 0:
            first = results[-1 - result.id]
            assert first is not None
            results[index] = dataclasses.replace(first, outcome=IngestOutcome.DUPLICATE)
    assert all(result is not None for result in results)
    return results, queued  # type: ignore[return-value]


async def _earlier_copy(driver: Driver, inbound: InboundMessage) -> IngestResult | None:
    """The earlier copy of this upstream message, routed or not, if there is one."""
    if inbound.upstream_id is None:
        earlier = await driver.fetchrow(
            _EARLIER_COPY["upstream_id IS NULL"],
            (inbound.upstream_message_id, inbound.upstream_message_id),
        )
    else:
        scope = (inbound.upstream_id, inbound.upstream_message_id)
        earlier = await driver.fetchrow(_EARLIER_COPY["upstream_id = ?"], scope + scope)
    if earlier is None:
        return None
    return IngestResult(IngestOutcome.DUPLICATE, int(earlier[0]), unrouted=bool(earlier[1]))


def _unrouted_row(inbound: InboundMessage, now: int) -> tuple[Any, ...]:
    return (
        inbound.sender,
        inbound.recipient,
        inbound.text,
        inbound.encoding.value,
        inbound.body,
        inbound.reply_ref,
        inbound.upstream_id,
        inbound.upstream_message_id,
        now,
        inbound.sent_at,
    )


async def _append_to_account(
    driver: Driver, account_id: int, arrivals: Sequence[Arrival]
) -> tuple[list[int], bool]:
    """Insert the account's messages of this batch in its commit order: their ids, and
    whether push deliveries were queued for them."""
    count = len(arrivals)
    now = max(arrival.now for arrival in arrivals)
    position = await driver.fetchrow(_TAKE_POSITIONS, (count, count, now, now, account_id))
    assert position is not None
    last_seq, last_modseq, received_at = (int(value) for value in position)
    pushed = bool(await driver.fetchval(_PUSHED, (account_id,)))
    conversations: dict[str, _Conversation] = {}
    ids = []
    deliveries = []
    for offset, arrival in enumerate(arrivals):
        inbound = arrival.inbound
        seq = last_seq - count + 1 + offset
        modseq = last_modseq - count + 1 + offset
        window_start = arrival.now - arrival.reply_window_ms
        message_id = int(
            await driver.fetchval(
                _INSERT_MESSAGE,
                (
                    account_id, seq, modseq, modseq, received_at, received_at,
                    inbound.sender, inbound.recipient, inbound.sender, inbound.text,
                    inbound.encoding.value, inbound.body,
                    account_id, inbound.reply_ref,
                    account_id, inbound.sender, inbound.recipient, window_start,
                    inbound.upstream_id, inbound.upstream_message_id, inbound.sent_at,
                    MessageStatus.RECEIVED.value, inbound.origin,
                ),
            )
        )  # fmt: skip
        ids.append(message_id)
        if pushed and inbound.origin != "sim":
            # Messages the user's own device reported are theirs already; the rest is pushed.
            deliveries.append((message_id, arrival.now, arrival.now, account_id))
        snippet = inbound.text[:SNIPPET_CHARS]
        conversation = conversations.get(inbound.sender)
        if conversation is None:
            conversations[inbound.sender] = _Conversation(1, message_id, received_at, snippet)
        else:
            conversation.count += 1
            conversation.last_id, conversation.snippet = message_id, snippet
    await driver.executemany(
        BUMP_CONVERSATION,
        [
            # Incoming messages are unread (each counts towards the unread figure too), and
            # none is unsent.
            (account_id, counterpart, c.count, c.count, 0, c.last_id, c.last_at, c.snippet)
            for counterpart, c in conversations.items()
        ],
    )
    if deliveries:
        await driver.executemany(_ENQUEUE, deliveries)
    return ids, bool(deliveries)


def is_conflict(error: BaseException) -> bool:
    """A unique constraint refused a row: a concurrent copy of the same message won."""
    if isinstance(error, exc.IntegrityError | sqlite3.IntegrityError):
        return True
    sqlstate = getattr(error, "sqlstate", None)
    return isinstance(sqlstate, str) and sqlstate.startswith("23")


class IngestQueue:
    """Incoming messages waiting for the next batch, and the tasks that store batches.

    `submit` returns once the message's batch has committed. At most `concurrency` batches
    are written at once: one on SQLite (one writer), a few on PostgreSQL, where batches of
    different accounts commit side by side.
    """

    def __init__(
        self,
        db: Database,
        *,
        on_stored: Callable[[], None],  # after a commit that queued push deliveries
        concurrency: int,
    ) -> None:
        self.db = db
        self.on_stored = on_stored
        self.concurrency = concurrency
        self._waiting: list[tuple[Arrival, asyncio.Future[IngestResult]]] = []
        self._writers: set[asyncio.Task[None]] = set()

    async def submit(self, arrival: Arrival) -> IngestResult:
        outcome = asyncio.get_running_loop().create_future()
        self._waiting.append((arrival, outcome))
        if len(self._writers) < self.concurrency:
            writer = asyncio.create_task(self._write_while_waiting(), name="ingest batches")
            self._writers.add(writer)
            writer.add_done_callback(self._writers.discard)
        # A caller that goes away (a client that hangs up) does not take its message out of
        # the batch: it is stored anyway, and a redelivery finds it.
        return await asyncio.shield(outcome)

    async def _write_while_waiting(self) -> None:
        while self._waiting:
            batch = self._waiting[:MAX_BATCH]
            del self._waiting[:MAX_BATCH]
            await self._write(batch)

    async def _write(
        self, batch: list[tuple[Arrival, asyncio.Future[IngestResult]]], *, retry: bool = True
    ) -> None:
        arrivals = [arrival for arrival, _ in batch]
        try:
            results, queued = await self._store(arrivals)
        except StoreUnavailable as error:
            _fail(batch, error)
            return
        except asyncio.CancelledError:
            _fail(batch, StoreUnavailable("store unavailable: shutting down"))
            raise
        except Exception as error:
            if len(batch) > 1:
                # One message's fault (or a copy stored concurrently elsewhere) must not
                # fail the others: each again in a transaction of its own.
                for one in batch:
                    await self._write([one])
            elif retry and is_conflict(error):
                # A copy a concurrent delivery stored first: the retry finds it.
                await self._write(batch, retry=False)
            else:
                _fail(batch, error)
            return
        for (_, outcome), result in zip(batch, results, strict=True):
            if not outcome.done():
                outcome.set_result(result)
        if queued:
            self.on_stored()

    async def _store(self, arrivals: list[Arrival]) -> tuple[list[IngestResult], bool]:
        """Store a batch: the outcomes, and whether push deliveries were queued."""
        async with self.db.transaction("ingest_incoming") as connection:
            results, queued = await store_batch(await self.db.engine.driver(connection), arrivals)
            if queued:
                await self.db.engine.notify(connection, NOTIFY_CHANNEL)
        return results, queued


def _fail(batch: list[tuple[Arrival, asyncio.Future[IngestResult]]], error: BaseException) -> None:
    for _, outcome in batch:
        if not outcome.done():
            outcome.set_exception(error)
