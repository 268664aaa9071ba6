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
import zlib
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, Protocol

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
# the number it was sent to, to its sender, within the reply window. SQLite's (_RowByRow);
# PostgreSQL threads a whole batch in _SET_INSERT_MESSAGES.
_INSERT_MESSAGE = (
    "INSERT INTO messages (account_id, seq, modseq, created_modseq, received_at, status_at,"
    " direction, sender, recipient, counterpart, text, encoding, body, reply_to_id,"
    " upstream_id, upstream_message_id, sent_at, status, origin, read, locked, deleted)"
    " VALUES (?, ?, ?, ?, ?, ?, 'in', ?, ?, ?, ?, ?, ?, COALESCE("
    "(SELECT id FROM messages WHERE account_id = ? AND direction = 'out' AND id = ?),"
    # Named: with statistics from ANALYZE (which leave an empty partial index out), SQLite
    # walked the account's messages by time, or the whole conversation, instead.
    " (SELECT id FROM messages INDEXED BY ix_messages_outgoing_by_counterpart"
    " WHERE account_id = ? AND direction = 'out' AND counterpart = ?"
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


UpstreamKey = tuple[int | None, str]  # (upstream, its id for the message)


@dataclasses.dataclass(frozen=True, slots=True)
class _Position:
    """Where an account's messages of a batch go: the last of the sequence numbers and
    modseqs the batch took, and their receive time."""

    last_seq: int
    last_modseq: int
    received_at: int


async def store_batch(
    driver: Driver, arrivals: Sequence[Arrival]
) -> tuple[list[IngestResult], bool]:
    """Store `arrivals` in the open transaction: their outcomes, in order, and whether any
    push delivery was queued (then the caller wakes the workers of other processes)."""
    statements: _BatchStatements = _SetBased() if driver.remote else _RowByRow()
    results: list[IngestResult | None] = [None] * len(arrivals)
    keys = {
        (a.inbound.upstream_id, a.inbound.upstream_message_id)
        for a in arrivals
        if a.inbound.upstream_message_id is not None
    }
    earlier = await statements.earlier_copies(driver, sorted(keys, key=_key_order)) if keys else {}
    owners = await statements.owners(driver, sorted({a.inbound.recipient for a in arrivals}))
    firsts: dict[UpstreamKey, int] = {}  # a message's first copy in this batch: its index
    routed: dict[int, list[int]] = {}  # account -> indexes of its messages, in order
    for index, arrival in enumerate(arrivals):
        inbound = arrival.inbound
        key = None
        if inbound.upstream_message_id is not None:
            key = (inbound.upstream_id, inbound.upstream_message_id)
            if key in earlier:
                results[index] = dataclasses.replace(earlier[key], outcome=IngestOutcome.DUPLICATE)
                continue
            if key in firsts:
                continue  # given its first copy's id below
            firsts[key] = index
        owner = owners.get(inbound.recipient)
        if owner is None:
            unrouted_id = await driver.fetchval(_UNROUTED, _unrouted_row(inbound, arrival.now))
            results[index] = IngestResult(IngestOutcome.UNROUTED, int(unrouted_id), unrouted=True)
        else:
            routed.setdefault(owner, []).append(index)
    queued = False
    if routed:
        ids, queued = await _append(driver, statements, arrivals, routed)
        for index, message_id in ids.items():
            results[index] = IngestResult(IngestOutcome.STORED, message_id, unrouted=False)
    # Copies of a message stored in this very batch: the id its first copy got.
    for index, arrival in enumerate(arrivals):
        if results[index] is None:
            inbound = arrival.inbound
            first = results[firsts[(inbound.upstream_id, inbound.upstream_message_id)]]  # type: ignore[index]
            assert first is not None
            results[index] = dataclasses.replace(first, outcome=IngestOutcome.DUPLICATE)
    return results, queued  # type: ignore[return-value]


def _key_order(key: UpstreamKey) -> tuple[int, str]:
    return (-1 if key[0] is None else key[0], key[1])


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


async def _append(
    driver: Driver,
    statements: _BatchStatements,
    arrivals: Sequence[Arrival],
    routed: dict[int, list[int]],
) -> tuple[dict[int, int], bool]:
    """Insert the routed messages, each account's in its commit order: their ids by index
    in `arrivals`, and whether push deliveries were queued for them."""
    # Accounts in id order: concurrent batches on PostgreSQL take their counter locks in
    # one order and never deadlock.
    accounts = sorted(routed)
    positions = await statements.take_positions(
        driver,
        [
            (account, len(routed[account]), max(arrivals[i].now for i in routed[account]))
            for account in accounts
        ],
    )
    pushed = await statements.pushed_accounts(driver, accounts)
    rows: list[_MessageRow] = []
    for account in accounts:
        indexes = routed[account]
        position = positions[account]
        first_seq = position.last_seq - len(indexes) + 1
        first_modseq = position.last_modseq - len(indexes) + 1
        for offset, index in enumerate(indexes):
            arrival = arrivals[index]
            inbound = arrival.inbound
            rows.append(
                _MessageRow(
                    index, account, first_seq + offset, first_modseq + offset,
                    position.received_at, arrival.now - arrival.reply_window_ms, inbound,
                )
            )  # fmt: skip
    ids = await statements.insert_messages(driver, rows)
    conversations: dict[tuple[int, str], _Conversation] = {}
    deliveries = []
    for row, message_id in zip(rows, ids, strict=True):
        inbound = row.inbound
        if row.account_id in pushed and inbound.origin != "sim":
            # Messages the user's own device reported are theirs already; the rest is pushed.
            deliveries.append((row.account_id, message_id, arrivals[row.index].now))
        snippet = inbound.text[:SNIPPET_CHARS]
        conversation = conversations.get((row.account_id, inbound.sender))
        if conversation is None:
            conversations[row.account_id, inbound.sender] = _Conversation(
                1, message_id, row.received_at, snippet
            )
        else:
            conversation.count += 1
            conversation.last_id, conversation.snippet = message_id, snippet
    await driver.executemany(
        BUMP_CONVERSATION,
        [
            # Incoming messages are unread (each counts towards the unread figure too), and
            # none is unsent.
            (account, counterpart, c.count, c.count, 0, c.last_id, c.last_at, c.snippet)
            for (account, counterpart), c in conversations.items()
        ],
    )
    if deliveries:
        await statements.enqueue(driver, deliveries)
    return {row.index: message_id for row, message_id in zip(rows, ids, strict=True)}, bool(
        deliveries
    )


@dataclasses.dataclass(frozen=True, slots=True)
class _MessageRow:
    index: int  # in the batch's arrivals
    account_id: int
    seq: int
    modseq: int
    received_at: int
    window_start: int  # the oldest outgoing message it may answer
    inbound: InboundMessage


class _BatchStatements(Protocol):
    """The statements of a batch, each over all of the batch's rows at once."""

    async def earlier_copies(
        self, driver: Driver, keys: list[UpstreamKey]
    ) -> dict[UpstreamKey, IngestResult]: ...

    async def owners(self, driver: Driver, recipients: list[str]) -> dict[str, int]: ...

    async def take_positions(
        self,
        driver: Driver,
        wants: list[tuple[int, int, int]],  # (account, count, now)
    ) -> dict[int, _Position]: ...

    async def pushed_accounts(self, driver: Driver, accounts: list[int]) -> set[int]: ...

    async def insert_messages(self, driver: Driver, rows: list[_MessageRow]) -> list[int]: ...

    async def enqueue(
        self,
        driver: Driver,
        deliveries: list[tuple[int, int, int]],  # (account, message, now)
    ) -> None: ...


class _RowByRow:
    """One statement per row: where a statement costs microseconds (SQLite, in process),
    the simple statements are the fast ones."""

    async def earlier_copies(
        self, driver: Driver, keys: list[UpstreamKey]
    ) -> dict[UpstreamKey, IngestResult]:
        found = {}
        for upstream_id, upstream_message_id in keys:
            if upstream_id is None:
                sql = _EARLIER_COPY["upstream_id IS NULL"]
                row = await driver.fetchrow(sql, (upstream_message_id, upstream_message_id))
            else:
                scope = (upstream_id, upstream_message_id)
                row = await driver.fetchrow(_EARLIER_COPY["upstream_id = ?"], scope + scope)
            if row is not None:
                found[upstream_id, upstream_message_id] = IngestResult(
                    IngestOutcome.DUPLICATE, int(row[0]), unrouted=bool(row[1])
                )
        return found

    async def owners(self, driver: Driver, recipients: list[str]) -> dict[str, int]:
        found = {}
        for recipient in recipients:
            owner = await driver.fetchval(_OWNER, (recipient,))
            if owner is not None:
                found[recipient] = int(owner)
        return found

    async def take_positions(
        self, driver: Driver, wants: list[tuple[int, int, int]]
    ) -> dict[int, _Position]:
        positions = {}
        for account, count, now in wants:
            row = await driver.fetchrow(_TAKE_POSITIONS, (count, count, now, now, account))
            assert row is not None
            positions[account] = _Position(int(row[0]), int(row[1]), int(row[2]))
        return positions

    async def pushed_accounts(self, driver: Driver, accounts: list[int]) -> set[int]:
        return {account for account in accounts if await driver.fetchval(_PUSHED, (account,))}

    async def insert_messages(self, driver: Driver, rows: list[_MessageRow]) -> list[int]:
        ids = []
        for row in rows:
            inbound = row.inbound
            ids.append(
                int(
                    await driver.fetchval(
                        _INSERT_MESSAGE,
                        (
                            row.account_id, row.seq, row.modseq, row.modseq, row.received_at,
                            row.received_at, inbound.sender, inbound.recipient, inbound.sender,
                            inbound.text, inbound.encoding.value, inbound.body,
                            row.account_id, inbound.reply_ref,
                            row.account_id, inbound.sender, inbound.recipient, row.window_start,
                            inbound.upstream_id, inbound.upstream_message_id, inbound.sent_at,
                            MessageStatus.RECEIVED.value, inbound.origin,
                        ),
                    )
                )
            )  # fmt: skip
        return ids

    async def enqueue(self, driver: Driver, deliveries: list[tuple[int, int, int]]) -> None:
        await driver.executemany(
            _ENQUEUE,
            [(message, now, now, account) for account, message, now in deliveries],
        )


class _SetBased:
    """One statement per step over arrays of the batch's rows: where each statement is a
    round trip to a server (PostgreSQL), a batch costs a handful of them, not several per
    message. PostgreSQL's own SQL (`unnest`, `ANY`, array casts)."""

    async def earlier_copies(
        self, driver: Driver, keys: list[UpstreamKey]
    ) -> dict[UpstreamKey, IngestResult]:
        rows = await driver.fetch(
            _SET_EARLIER_COPIES, ([key[0] for key in keys], [key[1] for key in keys])
        )
        return {
            (row[0], row[1]): IngestResult(IngestOutcome.DUPLICATE, int(row[2]), bool(row[3]))
            for row in rows
        }

    async def owners(self, driver: Driver, recipients: list[str]) -> dict[str, int]:
        return {row[0]: int(row[1]) for row in await driver.fetch(_SET_OWNERS, (recipients,))}

    async def take_positions(
        self, driver: Driver, wants: list[tuple[int, int, int]]
    ) -> dict[int, _Position]:
        accounts = [want[0] for want in wants]
        if len(accounts) > 1:
            # The counter rows locked in account order first (the update alone would lock
            # them in whatever order its join reads them, and two batches could deadlock).
            await driver.fetch(_SET_LOCK_COUNTERS, (accounts,))
        rows = await driver.fetch(
            _SET_TAKE_POSITIONS, (accounts, [w[1] for w in wants], [w[2] for w in wants])
        )
        return {int(row[0]): _Position(int(row[1]), int(row[2]), int(row[3])) for row in rows}

    async def pushed_accounts(self, driver: Driver, accounts: list[int]) -> set[int]:
        return {int(row[0]) for row in await driver.fetch(_SET_PUSHED, (accounts,))}

    async def insert_messages(self, driver: Driver, rows: list[_MessageRow]) -> list[int]:
        columns: list[list[Any]] = [[] for _ in range(15)]
        for row in rows:
            inbound = row.inbound
            for column, value in zip(
                columns,
                (
                    row.account_id, row.seq, row.modseq, row.received_at, inbound.sender,
                    inbound.recipient, inbound.text, inbound.encoding.value, inbound.body,
                    inbound.reply_ref, row.window_start, inbound.upstream_id,
                    inbound.upstream_message_id, inbound.sent_at, inbound.origin,
                ),
                strict=True,
            ):  # fmt: skip
                column.append(value)
        inserted = await driver.fetch(
            _SET_INSERT_MESSAGES, [MessageStatus.RECEIVED.value, *columns]
        )
        ids = {(int(account), int(seq)): int(id_) for id_, account, seq in inserted}
        return [ids[row.account_id, row.seq] for row in rows]

    async def enqueue(self, driver: Driver, deliveries: list[tuple[int, int, int]]) -> None:
        await driver.execute(
            _SET_ENQUEUE,
            (
                [d[0] for d in deliveries],
                [d[1] for d in deliveries],
                [d[2] for d in deliveries],
            ),
        )


# The earlier copies, routed (0) or not (1), of a batch's upstream messages. Messages given
# to `smsinbox inject` (no upstream) form their own scope, matched by IS NULL.
_SET_EARLIER_COPIES = (
    "WITH k AS (SELECT * FROM unnest(?::bigint[], ?::text[])"
    " AS k(upstream_id, upstream_message_id))"
    " SELECT k.upstream_id, k.upstream_message_id, m.id, 0 FROM k JOIN messages m"
    " ON m.upstream_id = k.upstream_id AND m.upstream_message_id = k.upstream_message_id"
    " UNION ALL SELECT k.upstream_id, k.upstream_message_id, m.id, 0 FROM k JOIN messages m"
    " ON m.upstream_id IS NULL AND m.upstream_message_id = k.upstream_message_id"
    " WHERE k.upstream_id IS NULL"
    " UNION ALL SELECT k.upstream_id, k.upstream_message_id, u.id, 1 FROM k JOIN unrouted u"
    " ON u.upstream_id = k.upstream_id AND u.upstream_message_id = k.upstream_message_id"
    " UNION ALL SELECT k.upstream_id, k.upstream_message_id, u.id, 1 FROM k JOIN unrouted u"
    " ON u.upstream_id IS NULL AND u.upstream_message_id = k.upstream_message_id"
    " WHERE k.upstream_id IS NULL"
)
_SET_OWNERS = "SELECT msisdn, account_id FROM numbers WHERE msisdn = ANY(?::text[])"
_SET_LOCK_COUNTERS = (
    "SELECT account_id FROM account_counters WHERE account_id = ANY(?::bigint[])"
    " ORDER BY account_id FOR UPDATE"
)
_SET_TAKE_POSITIONS = (
    "UPDATE account_counters c SET last_seq = c.last_seq + w.n, last_modseq = c.last_modseq + w.n,"
    " last_received_at = GREATEST(c.last_received_at, w.now)"
    " FROM unnest(?::bigint[], ?::bigint[], ?::bigint[]) AS w(account_id, n, now)"
    " WHERE c.account_id = w.account_id"
    " RETURNING c.account_id, c.last_seq, c.last_modseq, c.last_received_at"
)
_SET_PUSHED = (
    "SELECT DISTINCT account_id FROM push_endpoints WHERE account_id = ANY(?::bigint[])"
    " AND enabled = true AND events LIKE '%mo%'"
)
# Threaded as _INSERT_MESSAGE threads one; rows go in in the accounts' commit order.
_SET_INSERT_MESSAGES = (
    "INSERT INTO messages (account_id, seq, modseq, created_modseq, received_at, status_at,"
    " direction, sender, recipient, counterpart, text, encoding, body, reply_to_id,"
    " upstream_id, upstream_message_id, sent_at, status, origin, read, locked, deleted)"
    " SELECT r.account_id, r.seq, r.modseq, r.modseq, r.received_at, r.received_at, 'in',"
    " r.sender, r.recipient, r.sender, r.text, r.encoding, r.body, COALESCE("
    "(SELECT o.id FROM messages o WHERE o.account_id = r.account_id AND o.direction = 'out'"
    " AND o.id = r.reply_ref),"
    " (SELECT o.id FROM messages o WHERE o.account_id = r.account_id AND o.direction = 'out'"
    " AND o.counterpart = r.sender AND o.sender = r.recipient"
    " AND o.received_at >= r.window_start"
    " AND o.deleted = false ORDER BY o.id DESC LIMIT 1)),"
    " r.upstream_id, r.upstream_message_id, r.sent_at, ?::text,"
    " r.origin, false, false, false"
    " FROM unnest(?::bigint[], ?::bigint[], ?::bigint[], ?::bigint[], ?::text[], ?::text[],"
    " ?::text[], ?::text[], ?::bytea[], ?::bigint[], ?::bigint[], ?::bigint[], ?::text[],"
    " ?::bigint[], ?::text[]) AS r(account_id, seq, modseq, received_at, sender, recipient,"
    " text, encoding, body, reply_ref, window_start, upstream_id, upstream_message_id,"
    " sent_at, origin)"
    " ORDER BY r.account_id, r.seq RETURNING id, account_id, seq"
)
_SET_ENQUEUE = (
    "INSERT INTO deliveries (endpoint_id, account_id, message_id, event, state, attempts,"
    " next_attempt_at, created_at) SELECT e.id, e.account_id, m.message_id, 'mo', 'pending',"
    " 0, m.now, m.now FROM unnest(?::bigint[], ?::bigint[], ?::bigint[])"
    " AS m(account_id, message_id, now) JOIN push_endpoints e ON e.account_id = m.account_id"
    " WHERE e.enabled = true AND e.events LIKE '%mo%' ORDER BY m.message_id, e.id"
)


def is_conflict(error: BaseException) -> bool:
    """A unique constraint refused a row: a concurrent copy of the same message won."""
    if isinstance(error, exc.IntegrityError | sqlite3.IntegrityError):
        return True
    sqlstate = getattr(error, "sqlstate", None)
    return isinstance(sqlstate, str) and sqlstate.startswith("23")


class IngestQueue:
    """Incoming messages waiting for the next batch, and the tasks that store batches.

    `submit` returns once the message's batch has committed. Messages wait in `lanes` by
    recipient, each lane written by one task a batch at a time: one lane on SQLite (one
    writer), two on PostgreSQL, where batches commit side by side. A batch locks the
    counter rows of the accounts it writes to until it commits, so two batches with the
    same accounts take turns however many are open at once: batches of whatever was
    waiting would each hold most of the busy accounts and run one after another, each a
    fraction of the messages. By recipient, the messages of one number always share a lane
    (in their arrival order), and batches of different lanes seldom wait for each other.
    """

    def __init__(
        self,
        db: Database,
        *,
        on_stored: Callable[[], None],  # after a commit that queued push deliveries
        lanes: int,
    ) -> None:
        self.db = db
        self.on_stored = on_stored
        self._lanes: list[list[tuple[Arrival, asyncio.Future[IngestResult]]]] = [
            [] for _ in range(lanes)
        ]
        # Each lane's writer task while it runs (held here, so none is collected early).
        self._writers: dict[int, asyncio.Task[None]] = {}

    async def submit(self, arrival: Arrival) -> IngestResult:
        outcome = asyncio.get_running_loop().create_future()
        lane = zlib.crc32(arrival.inbound.recipient.encode()) % len(self._lanes)
        self._lanes[lane].append((arrival, outcome))
        if lane not in self._writers:
            self._writers[lane] = asyncio.create_task(
                self._write_while_waiting(lane), name="ingest batches"
            )
        # A caller that goes away (a client that hangs up) does not take its message out of
        # the batch: it is stored anyway, and a redelivery finds it.
        return await asyncio.shield(outcome)

    async def _write_while_waiting(self, lane: int) -> None:
        waiting = self._lanes[lane]
        try:
            while waiting:
                batch = waiting[:MAX_BATCH]
                del waiting[:MAX_BATCH]
                await self._write(batch)
        finally:
            # Here, not in a done callback: one runs a loop round later, and a message
            # submitted meanwhile would find the lane "being written" and wait for good.
            del self._writers[lane]

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
