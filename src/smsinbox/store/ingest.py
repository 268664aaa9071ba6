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
from smsinbox.store.driver import Driver, in_list
from smsinbox.store.tables import MAILBOX_CHANNEL, NOTIFY_CHANNEL, SNIPPET_CHARS

if TYPE_CHECKING:
    from smsinbox.store.database import Database

log = logging.getLogger("smsinbox.store")

# Most messages one ingest transaction stores.
MAX_BATCH = 256

# SQLite's (_RowByRow) look-ups and counters: a statement for all of a batch's ids of an
# upstream, numbers or accounts (an IN list, see in_list), each value an index probe; a
# statement for each cost more in calling sqlite3 than in SQLite.
# The earlier copies of an upstream's messages: (its id for the message, routed (0) or not
# (1), the id here). Ids given to `smsinbox inject` (no upstream) form their own scope:
# IS NULL, not `= NULL`.
_EARLIER_COPIES = {
    "upstream_id = ?": "SELECT upstream_message_id, 0, id FROM messages WHERE upstream_id = ?"
    " AND upstream_message_id IN ({0}) UNION ALL SELECT upstream_message_id, 1, id"
    " FROM unrouted WHERE upstream_id = ? AND upstream_message_id IN ({0})",
    "upstream_id IS NULL": "SELECT upstream_message_id, 0, id FROM messages"
    " WHERE upstream_id IS NULL AND upstream_message_id IN ({0}) UNION ALL"
    " SELECT upstream_message_id, 1, id FROM unrouted WHERE upstream_id IS NULL"
    " AND upstream_message_id IN ({0})",
}
_OWNERS = "SELECT msisdn, account_id FROM numbers WHERE msisdn IN ({})"
# Positions in an account's commit order (sequence numbers and modseqs, a receive time
# that never goes backwards: DESIGN invariant 2) are taken by reading the counters and
# writing them back: the batch's writer is SQLite's only one. An UPDATE with RETURNING
# runs through a table of its results (see SqliteDriver.insert): 8 us an account.
_COUNTERS_OF = (
    "SELECT account_id, last_seq, last_modseq, last_received_at FROM account_counters"
    " WHERE account_id IN ({})"
)
_SET_COUNTERS = (
    "UPDATE account_counters SET last_seq = ?, last_modseq = ?, last_received_at = ?"
    " WHERE account_id = ?"
)
_PUSHED = (
    "SELECT DISTINCT account_id FROM push_endpoints WHERE account_id IN ({})"
    " AND enabled = true AND events LIKE '%mo%'"
)
_UNROUTED = (
    "INSERT INTO unrouted (sender, recipient, text, encoding, body, reply_ref, upstream_id,"
    " upstream_message_id, received_at, sent_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
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
    " ?, ?, ?, ?, ?, false, false, false)"
)
_ENQUEUE = (
    "INSERT INTO deliveries (endpoint_id, account_id, message_id, event, state, attempts,"
    " next_attempt_at, created_at) SELECT id, account_id, CAST(? AS BIGINT), 'mo', 'pending',"
    " 0, CAST(? AS BIGINT), CAST(? AS BIGINT) FROM push_endpoints WHERE account_id = ?"
    " AND enabled = true AND events LIKE '%mo%'"
)
# A conversation's new messages (of a batch, or one): counted in, the last one shown. Every
# path that adds a message to a conversation uses it (store/messages.py too).
_CONVERSATION_COLUMNS = (
    "INSERT INTO conversations (account_id, counterpart, message_count, unread_count,"
    " unsent_count, last_message_id, last_message_at, snippet)"
)
_CONVERSATION_BUMPED = (
    " ON CONFLICT (account_id, counterpart) DO UPDATE SET"
    " message_count = conversations.message_count + excluded.message_count,"
    " unread_count = conversations.unread_count + excluded.unread_count,"
    " unsent_count = conversations.unsent_count + excluded.unsent_count,"
    " last_message_id = excluded.last_message_id,"
    " last_message_at = excluded.last_message_at,"
    " snippet = excluded.snippet"
)
BUMP_CONVERSATION = (
    _CONVERSATION_COLUMNS + " VALUES (?, ?, ?, ?, ?, ?, ?, ?)" + _CONVERSATION_BUMPED
)


@dataclasses.dataclass(slots=True)
class _Conversation:
    count: int
    last_id: int
    last_at: int
    snippet: str


# The batch's value types are not frozen: built per message or per batch, and a frozen
# dataclass's __init__ sets each field through object.__setattr__ (see InboundMessage).
@dataclasses.dataclass(slots=True)
class Arrival:
    """One incoming message to store: received at `now`, threaded within the window."""

    inbound: InboundMessage
    now: int
    reply_window_ms: int


UpstreamKey = tuple[int | None, str]  # (upstream, its id for the message)


@dataclasses.dataclass(slots=True)
class _Position:
    """Where an account's messages of a batch go: the last of the sequence numbers and
    modseqs the batch took, and their receive time."""

    last_seq: int
    last_modseq: int
    received_at: int


@dataclasses.dataclass(slots=True)
class _Written:
    """What a batch's write gave: the ids of its routed and unrouted messages by index in
    the batch, and whether any push delivery was queued."""

    stored: dict[int, int]
    unrouted: dict[int, int]
    queued: bool


async def store_batch(
    driver: Driver, arrivals: Sequence[Arrival]
) -> tuple[list[IngestResult], bool]:
    """Store `arrivals`: their outcomes, in order, and whether any push delivery was
    queued (then the caller wakes the workers of other processes).

    On SQLite this runs in the caller's write transaction. On PostgreSQL (`driver.remote`)
    it needs none: a look-up, then one statement that writes the whole batch and commits
    on its own. A copy of a message written by someone else between the two fails the
    statement on a unique constraint (is_conflict), and the batch is stored again."""
    statements: _BatchStatements = _SetBased() if driver.remote else _RowByRow()
    results: list[IngestResult | None] = [None] * len(arrivals)
    keys = {
        (a.inbound.upstream_id, a.inbound.upstream_message_id)
        for a in arrivals
        if a.inbound.upstream_message_id is not None
    }
    earlier, owners = await statements.look_up(
        driver, sorted(keys, key=_key_order), sorted({a.inbound.recipient for a in arrivals})
    )
    firsts: dict[UpstreamKey, int] = {}  # a message's first copy in this batch: its index
    unrouted: list[int] = []  # indexes of messages to numbers nobody owns, in order
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
            unrouted.append(index)
        else:
            routed.setdefault(owner, []).append(index)
    written = await statements.write(driver, arrivals, unrouted, routed)
    for index, message_id in written.stored.items():
        results[index] = IngestResult(IngestOutcome.STORED, message_id, unrouted=False)
    for index, unrouted_id in written.unrouted.items():
        results[index] = IngestResult(IngestOutcome.UNROUTED, unrouted_id, unrouted=True)
    # Copies of a message stored in this very batch: the id its first copy got.
    for index, arrival in enumerate(arrivals):
        if results[index] is None:
            inbound = arrival.inbound
            first = results[firsts[(inbound.upstream_id, inbound.upstream_message_id)]]  # type: ignore[index]
            assert first is not None
            results[index] = dataclasses.replace(first, outcome=IngestOutcome.DUPLICATE)
    return results, written.queued  # type: ignore[return-value]


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


class _BatchStatements(Protocol):
    """The statements of a batch."""

    async def look_up(
        self, driver: Driver, keys: list[UpstreamKey], recipients: list[str]
    ) -> tuple[dict[UpstreamKey, IngestResult], dict[str, int]]:
        """The earlier copies of the batch's upstream messages, and the owners of its
        recipients (numbers nobody owns left out)."""
        ...

    async def write(
        self,
        driver: Driver,
        arrivals: Sequence[Arrival],
        unrouted: list[int],
        routed: dict[int, list[int]],
    ) -> _Written:
        """Keep the `unrouted` messages (indexes in `arrivals`); append the `routed` ones
        to each account's messages in its commit order (positions taken from the account's
        counter, in account order: concurrent batches on PostgreSQL take the counter locks
        in one order and never deadlock), count them into their conversations and queue
        their push deliveries."""
        ...


class _RowByRow:
    """SQLite's, in process, where a statement costs microseconds and the simple ones are
    the fast ones: a message's insert a statement of its own (a threading look-up in it),
    the look-ups and counters of the batch's upstreams, numbers and accounts a statement
    each over an IN list (a statement a value cost more in calling sqlite3 than in SQLite:
    store_batch took 40-46 us a message so, 28-37 now, batches of 16 on bare sqlite3)."""

    async def look_up(
        self, driver: Driver, keys: list[UpstreamKey], recipients: list[str]
    ) -> tuple[dict[UpstreamKey, IngestResult], dict[str, int]]:
        by_upstream: dict[int | None, list[str]] = {}
        for upstream_id, upstream_message_id in keys:
            by_upstream.setdefault(upstream_id, []).append(upstream_message_id)
        earlier: dict[UpstreamKey, IngestResult] = {}
        for upstream_id, message_ids in by_upstream.items():
            marks, values = in_list(message_ids)
            if upstream_id is None:
                sql = _EARLIER_COPIES["upstream_id IS NULL"].format(marks)
                found = await driver.fetch(sql, [*values, *values])
            else:
                sql = _EARLIER_COPIES["upstream_id = ?"].format(marks)
                found = await driver.fetch(sql, [upstream_id, *values, upstream_id, *values])
            # The routed copy before the unrouted one, the first stored of several.
            for upstream_message_id, unrouted, id_ in sorted(found, key=lambda r: (r[1], r[2])):
                earlier.setdefault(
                    (upstream_id, upstream_message_id),
                    IngestResult(IngestOutcome.DUPLICATE, int(id_), unrouted=bool(unrouted)),
                )
        marks, numbers = in_list(recipients)
        owned = await driver.fetch(_OWNERS.format(marks), numbers)
        return earlier, {msisdn: int(owner) for msisdn, owner in owned}

    async def write(
        self,
        driver: Driver,
        arrivals: Sequence[Arrival],
        unrouted: list[int],
        routed: dict[int, list[int]],
    ) -> _Written:
        unrouted_ids = {}
        for index in unrouted:
            row = _unrouted_row(arrivals[index].inbound, arrivals[index].now)
            unrouted_ids[index] = await driver.insert(_UNROUTED, row)
        rows: list[_MessageRow] = []
        positions = await self._take_positions(
            driver,
            {
                account: (len(indexes), max(arrivals[i].now for i in indexes))
                for account, indexes in sorted(routed.items())
            },
        )
        for account, position in positions.items():
            indexes = routed[account]
            first_seq = position.last_seq - len(indexes) + 1
            first_modseq = position.last_modseq - len(indexes) + 1
            for offset, index in enumerate(indexes):
                arrival = arrivals[index]
                rows.append(
                    _MessageRow(
                        index, account, first_seq + offset, first_modseq + offset,
                        position.received_at, arrival.now - arrival.reply_window_ms,
                        arrival.now, arrival.inbound,
                    )
                )  # fmt: skip
        ids = [await self._insert(driver, row) for row in rows]
        await self._bump_conversations(driver, rows, ids)
        queued = await self._enqueue(driver, rows, ids)
        return _Written(
            {row.index: message_id for row, message_id in zip(rows, ids, strict=True)},
            unrouted_ids,
            queued,
        )

    async def _take_positions(
        self, driver: Driver, wanted: dict[int, tuple[int, int]]
    ) -> dict[int, _Position]:
        """Each account's positions for its (count of messages, latest arrival), in the
        order of `wanted`."""
        if not wanted:
            return {}
        marks, accounts = in_list(list(wanted))
        counters = {row[0]: row for row in await driver.fetch(_COUNTERS_OF.format(marks), accounts)}
        positions = {}
        for account, (count, now) in wanted.items():
            _, last_seq, last_modseq, last_received_at = counters[account]
            positions[account] = _Position(
                int(last_seq) + count, int(last_modseq) + count, max(int(last_received_at), now)
            )
        await driver.executemany(
            _SET_COUNTERS,
            [(p.last_seq, p.last_modseq, p.received_at, a) for a, p in positions.items()],
        )
        return positions

    async def _insert(self, driver: Driver, row: _MessageRow) -> int:
        inbound = row.inbound
        return await driver.insert(
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
        )  # fmt: skip

    async def _bump_conversations(
        self, driver: Driver, rows: list[_MessageRow], ids: list[int]
    ) -> None:
        conversations: dict[tuple[int, str], _Conversation] = {}
        for row, message_id in zip(rows, ids, strict=True):
            inbound = row.inbound
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
                # Incoming messages are unread (each counts towards the unread figure too),
                # and none is unsent.
                (account, counterpart, c.count, c.count, 0, c.last_id, c.last_at, c.snippet)
                for (account, counterpart), c in conversations.items()
            ],
        )

    async def _enqueue(self, driver: Driver, rows: list[_MessageRow], ids: list[int]) -> bool:
        if not rows:
            return False
        marks, accounts = in_list(sorted({row.account_id for row in rows}))
        pushed = {row[0] for row in await driver.fetch(_PUSHED.format(marks), accounts)}
        deliveries = [
            (message_id, row.now, row.now, row.account_id)
            for row, message_id in zip(rows, ids, strict=True)
            # Messages the user's own device reported are theirs already; the rest is pushed.
            if row.account_id in pushed and row.inbound.origin != "sim"
        ]
        if deliveries:
            await driver.executemany(_ENQUEUE, deliveries)
        return bool(deliveries)


@dataclasses.dataclass(slots=True)
class _MessageRow:
    index: int  # in the batch's arrivals
    account_id: int
    seq: int
    modseq: int
    received_at: int
    window_start: int  # the oldest outgoing message it may answer
    now: int  # when it arrived: when its push deliveries are due
    inbound: InboundMessage


class _SetBased:
    """Two statements a batch over arrays of its rows: where each statement is a round trip
    to a server (PostgreSQL), and under load a turn of the event loop before its answer is
    read, a batch costs a look-up and a write, not several statements per message, nor a
    BEGIN and a COMMIT. PostgreSQL's own SQL (`unnest`, `ANY`, array casts, data-modifying
    WITH)."""

    async def look_up(
        self, driver: Driver, keys: list[UpstreamKey], recipients: list[str]
    ) -> tuple[dict[UpstreamKey, IngestResult], dict[str, int]]:
        earlier, owners = {}, {}
        found = await driver.fetch(
            _SET_LOOK_UP, ([key[0] for key in keys], [key[1] for key in keys], recipients)
        )
        for kind, upstream_id, name, id_, unrouted_id in found:
            if kind == 1:
                if id_ is not None:  # else nobody owns the number
                    owners[name] = int(id_)
            elif id_ is not None:
                earlier[upstream_id, name] = IngestResult(
                    IngestOutcome.DUPLICATE, int(id_), unrouted=False
                )
            elif unrouted_id is not None:
                earlier[upstream_id, name] = IngestResult(
                    IngestOutcome.DUPLICATE, int(unrouted_id), unrouted=True
                )
        return earlier, owners

    async def write(
        self,
        driver: Driver,
        arrivals: Sequence[Arrival],
        unrouted: list[int],
        routed: dict[int, list[int]],
    ) -> _Written:
        accounts = sorted(routed)
        wants = [
            (account, len(routed[account]), max(arrivals[i].now for i in routed[account]))
            for account in accounts
        ]
        messages = []
        for account in accounts:
            for ordinal, index in enumerate(routed[account], 1):
                arrival = arrivals[index]
                inbound = arrival.inbound
                messages.append(
                    (
                        account, ordinal, inbound.sender, inbound.recipient, inbound.text,
                        inbound.encoding.value, inbound.body, inbound.reply_ref,
                        arrival.now - arrival.reply_window_ms, inbound.upstream_id,
                        inbound.upstream_message_id, inbound.sent_at, inbound.origin,
                        arrival.now,
                    )
                )  # fmt: skip
        waiting = [_unrouted_row(arrivals[i].inbound, arrivals[i].now) for i in unrouted]
        found = await driver.fetch(
            _SET_WRITE,
            [
                *_as_columns(wants, 3),
                *_as_columns(messages, 14),
                *_as_columns(waiting, 10),
                MessageStatus.RECEIVED.value,
                SNIPPET_CHARS,
            ],
        )
        stored: dict[int, int] = {}
        unrouted_ids: list[int] = []
        queued = False
        for kind, id_, account, ordinal in found:
            if kind == 0:
                stored[routed[account][ordinal - 1]] = int(id_)
            elif kind == 1:
                unrouted_ids.append(int(id_))
            elif kind == 2:
                queued = int(id_) > 0
        # Inserted in the batch's order, so numbered in it by their ids.
        return _Written(stored, dict(zip(unrouted, sorted(unrouted_ids), strict=True)), queued)


def _as_columns(rows: list[tuple[Any, ...]], width: int) -> list[list[Any]]:
    """`rows` as the arrays `unnest` takes: one per column, empty ones for no rows."""
    if not rows:
        return [[] for _ in range(width)]
    return [list(column) for column in zip(*rows, strict=True)]


# The earlier copies of a batch's upstream messages (kind 0: the routed copy's id, the
# unrouted copy's id, either NULL), and the owners of its recipients (kind 1: NULL where
# nobody owns the number), in one round trip. Messages given to `smsinbox inject` (no
# upstream) form their own scope, matched by IS NULL.
# Each key and each recipient is one index probe (a correlated sub-select runs once per
# row, as a scan of its unique index): as joins, a plan made once for arrays of unknown
# length read the whole of a small table (numbers, unrouted) for every batch, and the
# cost of that grows with the store, not with the batch.
_SET_LOOK_UP = (
    "SELECT 0, k.upstream_id, k.upstream_message_id, COALESCE("
    "(SELECT m.id FROM messages m WHERE m.upstream_id = k.upstream_id"
    " AND m.upstream_message_id = k.upstream_message_id),"
    " (SELECT m.id FROM messages m WHERE k.upstream_id IS NULL AND m.upstream_id IS NULL"
    " AND m.upstream_message_id = k.upstream_message_id ORDER BY m.id LIMIT 1)), COALESCE("
    "(SELECT u.id FROM unrouted u WHERE u.upstream_id = k.upstream_id"
    " AND u.upstream_message_id = k.upstream_message_id),"
    " (SELECT u.id FROM unrouted u WHERE k.upstream_id IS NULL AND u.upstream_id IS NULL"
    " AND u.upstream_message_id = k.upstream_message_id ORDER BY u.id LIMIT 1))"
    " FROM unnest(?::bigint[], ?::text[]) AS k(upstream_id, upstream_message_id)"
    " UNION ALL SELECT 1, NULL, r.msisdn,"
    " (SELECT n.account_id FROM numbers n WHERE n.msisdn = r.msisdn), NULL"
    " FROM unnest(?::text[]) AS r(msisdn)"
)
# A whole batch in one statement, which commits on its own (one transaction: a poll sees
# all of it or none):
# - `w`: each account's count of new messages and their latest arrival;
# - `locked`: the accounts' counter rows locked in account order first (evaluated once
#   before `pos` reads a row: an uncorrelated sub-select is a one-time filter), so two
#   batches with accounts in common never deadlock; the update alone would lock them in
#   whatever order its join reads them;
# - `pos`: the positions taken from each counter (sequence numbers and modseqs, a receive
#   time that never goes backwards: DESIGN invariant 2);
# - `ins`: the messages, numbered in each account's order (`r.ordinal`) and threaded as
#   _INSERT_MESSAGE threads one, inserted in the accounts' commit order;
# - `bumped`: each conversation counted once, as BUMP_CONVERSATION counts (incoming
#   messages are unread, none is unsent, the last one shown);
# - `queued`: the push deliveries (none for messages the user's own device reported);
# - `kept`: the messages to numbers nobody owns, in the batch's order.
# Rows returned: (0, message id, account, ordinal), (1, unrouted id, -, -), and
# (2, deliveries queued, -, -).
_SET_WRITE = (
    "WITH w AS (SELECT * FROM unnest(?::bigint[], ?::bigint[], ?::bigint[])"  # noqa: S608 (constants)
    " AS w(account_id, n, now)),"
    " r AS (SELECT * FROM unnest(?::bigint[], ?::bigint[], ?::text[], ?::text[], ?::text[],"
    " ?::text[], ?::bytea[], ?::bigint[], ?::bigint[], ?::bigint[], ?::text[], ?::bigint[],"
    " ?::text[], ?::bigint[]) AS r(account_id, ordinal, sender, recipient, text, encoding,"
    " body, reply_ref, window_start, upstream_id, upstream_message_id, sent_at, origin, now)),"
    " u AS (SELECT * FROM unnest(?::text[], ?::text[], ?::text[], ?::text[], ?::bytea[],"
    " ?::bigint[], ?::bigint[], ?::text[], ?::bigint[], ?::bigint[]) WITH ORDINALITY"
    " AS u(sender, recipient, text, encoding, body, reply_ref, upstream_id,"
    " upstream_message_id, received_at, sent_at, ordinal)),"
    " fixed AS (SELECT ?::text AS received, ?::int AS snippet_chars),"
    " locked AS MATERIALIZED (SELECT account_id FROM account_counters"
    " WHERE account_id = ANY(ARRAY(SELECT account_id FROM w)) ORDER BY account_id"
    " FOR UPDATE),"
    " pos AS (UPDATE account_counters c SET last_seq = c.last_seq + w.n,"
    " last_modseq = c.last_modseq + w.n,"
    " last_received_at = GREATEST(c.last_received_at, w.now)"
    " FROM w WHERE c.account_id = w.account_id"
    " AND c.account_id = ANY(ARRAY(SELECT account_id FROM w))"
    " AND (SELECT count(*) FROM locked) >= 0"
    " RETURNING c.account_id, c.last_seq - w.n AS seq_before,"
    " c.last_modseq - w.n AS modseq_before, c.last_received_at AS received_at),"
    " ins AS (INSERT INTO messages (account_id, seq, modseq, created_modseq, received_at,"
    " status_at, direction, sender, recipient, counterpart, text, encoding, body,"
    " reply_to_id, upstream_id, upstream_message_id, sent_at, status, origin, read, locked,"
    " deleted)"
    " SELECT r.account_id, p.seq_before + r.ordinal, p.modseq_before + r.ordinal,"
    " p.modseq_before + r.ordinal, p.received_at, p.received_at, 'in',"
    " r.sender, r.recipient, r.sender, r.text, r.encoding, r.body, COALESCE("
    "(SELECT o.id FROM messages o WHERE o.account_id = r.account_id AND o.direction = 'out'"
    " AND o.id = r.reply_ref),"
    " (SELECT o.id FROM messages o WHERE o.account_id = r.account_id AND o.direction = 'out'"
    " AND o.counterpart = r.sender AND o.sender = r.recipient"
    " AND o.received_at >= r.window_start"
    " AND o.deleted = false ORDER BY o.id DESC LIMIT 1)),"
    " r.upstream_id, r.upstream_message_id, r.sent_at, fixed.received,"
    " r.origin, false, false, false"
    " FROM r JOIN pos p ON p.account_id = r.account_id CROSS JOIN fixed"
    " ORDER BY r.account_id, r.ordinal"
    " RETURNING id, account_id, seq, counterpart, received_at, text, origin),"
    " numbered AS (SELECT i.*, i.seq - p.seq_before AS ordinal FROM ins i"
    " JOIN pos p ON p.account_id = i.account_id),"
    " bumped AS (" + _CONVERSATION_COLUMNS + " SELECT i.account_id, i.counterpart,"
    " count(*), count(*), 0, max(i.id), max(i.received_at),"
    " (array_agg(left(i.text, fixed.snippet_chars) ORDER BY i.id DESC))[1]"
    " FROM ins i CROSS JOIN fixed GROUP BY i.account_id, i.counterpart"
    " ORDER BY i.account_id, i.counterpart" + _CONVERSATION_BUMPED + "),"
    " queued AS (INSERT INTO deliveries (endpoint_id, account_id, message_id, event, state,"
    " attempts, next_attempt_at, created_at) SELECT e.id, e.account_id, i.id, 'mo', 'pending',"
    " 0, r.now, r.now FROM numbered i"
    " JOIN r ON r.account_id = i.account_id AND r.ordinal = i.ordinal"
    " JOIN push_endpoints e ON e.account_id = i.account_id"
    " WHERE i.origin <> 'sim' AND e.enabled = true AND e.events LIKE '%mo%'"
    " ORDER BY i.id, e.id RETURNING 1),"
    " kept AS (INSERT INTO unrouted (sender, recipient, text, encoding, body, reply_ref,"
    " upstream_id, upstream_message_id, received_at, sent_at) SELECT sender, recipient, text,"
    " encoding, body, reply_ref, upstream_id, upstream_message_id, received_at, sent_at"
    " FROM u ORDER BY ordinal RETURNING id)"
    " SELECT 0, id, account_id, ordinal FROM numbered"
    " UNION ALL SELECT 1, id, NULL, NULL FROM kept"
    " UNION ALL SELECT 2, count(*), NULL, NULL FROM queued"
    # The web inbox's live pages of other processes: told when the batch commits, in the
    # same round trip (a NOTIFY of its own would be one more per batch).
    " UNION ALL SELECT 3, NULL, NULL, NULL FROM (SELECT pg_notify('" + MAILBOX_CHANNEL + "', ''))"
    " AS notified WHERE EXISTS (SELECT FROM numbered)"
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
        on_written: Callable[[], None],  # after every commit
        lanes: int,
    ) -> None:
        self.db = db
        self.on_stored = on_stored
        self.on_written = on_written
        self._lanes: list[list[tuple[Arrival, asyncio.Future[IngestResult]]]] = [
            [] for _ in range(lanes)
        ]
        # Each lane's writer task while it runs (held here, so none is collected early).
        self._writers: dict[int, asyncio.Task[None]] = {}

    def busy(self) -> bool:
        """Whether messages wait for a batch or are being written."""
        return bool(self._writers)

    async def submit(self, arrival: Arrival) -> IngestResult:
        outcome: asyncio.Future[IngestResult] = asyncio.get_running_loop().create_future()
        lane = zlib.crc32(arrival.inbound.recipient.encode()) % len(self._lanes)
        self._lanes[lane].append((arrival, outcome))
        if lane not in self._writers:
            self._writers[lane] = asyncio.create_task(
                self._write_while_waiting(lane), name="ingest batches"
            )
        # A caller that goes away (a client that hangs up) cancels only its wait for the
        # outcome, not its message: the message stays in the lane, is stored anyway, and a
        # redelivery finds it. Awaited as it is: a shield's second future put another round
        # of the event loop between a commit and its callers' answers, and on SQLite the
        # next batch's statements, which hold the loop, often ran first.
        return await outcome

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
        self.on_written()
        if queued:
            self.on_stored()

    async def _store(self, arrivals: list[Arrival]) -> tuple[list[IngestResult], bool]:
        """Store a batch: the outcomes, and whether push deliveries were queued."""
        # A write transaction on SQLite; statements that commit on their own on PostgreSQL,
        # where store_batch writes in one (see there).
        async with self.db.driver_write("ingest_incoming", planned_once=True) as driver:
            results, queued = await store_batch(driver, arrivals)
            if queued:
                await self.db.engine.driver_notify(driver, NOTIFY_CHANNEL)
        return results, queued


def _fail(batch: list[tuple[Arrival, asyncio.Future[IngestResult]]], error: BaseException) -> None:
    for _, outcome in batch:
        if not outcome.done():
            outcome.set_exception(error)
