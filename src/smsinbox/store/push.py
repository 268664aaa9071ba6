"""Push endpoints, the delivery outbox, and the attempt log."""

from __future__ import annotations

import dataclasses
from collections.abc import Collection, Sequence
from typing import Any

from sqlalchemy import (
    BigInteger,
    String,
    and_,
    bindparam,
    delete,
    func,
    insert,
    literal,
    select,
    text,
    update,
)

from smsinbox.errors import NotFound
from smsinbox.models import DeliveryState, Direction, Encoding, MessageStatus
from smsinbox.store import tables as t
from smsinbox.store.base import StoreBase, account_id_for
from smsinbox.store.database import Connection
from smsinbox.store.driver import in_list
from smsinbox.store.engine import StorageEngine

NOTIFY_CHANNEL = t.NOTIFY_CHANNEL
# Messages a replay re-queues per transaction.
REPLAY_BATCH = 1000


@dataclasses.dataclass(frozen=True, slots=True)
class ReplayStep:
    """One batch of a replay: deliveries queued, messages looked at, the last one's id."""

    queued: int
    messages: int
    last_id: int


# The columns a new delivery is inserted with, in the order the selects below produce them.
_DELIVERY_COLUMNS = [
    "endpoint_id", "account_id", "message_id", "event", "state", "attempts",
    "next_attempt_at", "created_at",
]  # fmt: skip


@dataclasses.dataclass(frozen=True, slots=True)
class Endpoint:
    id: int
    username: str
    url: str
    format: str
    events: tuple[str, ...]
    enabled: bool
    disabled_reason: str | None
    secret: str | None


@dataclasses.dataclass(frozen=True, slots=True)
class DueDelivery:
    """A delivery claimed for one attempt, with all a push format needs."""

    id: int
    attempts: int
    event: str
    endpoint_id: int
    url: str
    format: str
    secret: str | None
    account_id: int
    username: str
    time_zone: str
    message_id: int
    seq: int
    direction: Direction
    sender: str
    recipient: str
    text: str
    encoding: Encoding
    body: bytes | None
    reply_to_id: int | None
    received_at: int
    status: MessageStatus
    status_at: int | None


@dataclasses.dataclass(frozen=True, slots=True)
class AttemptOutcome:
    """What one attempt came to, and what becomes of its delivery."""

    delivery_id: int
    endpoint_id: int
    state: DeliveryState  # pending: a retry at next_attempt_at
    next_attempt_at: int
    http_status: int | None
    latency_ms: int
    error: str | None
    disable_reason: str | None  # the receiver asked to be disabled (410 Gone)


@dataclasses.dataclass(frozen=True, slots=True)
class AttemptRecord:
    delivery_id: int
    message_id: int
    url: str
    state: str
    attempted_at: int
    http_status: int | None
    latency_ms: int
    error: str | None


_endpoints = t.push_endpoints.c
# Recording attempts: a worker records several at once, written out for the driver.
_LOG_ATTEMPT = (
    "INSERT INTO delivery_attempts (delivery_id, attempted_at, http_status, latency_ms, error)"
    " VALUES (?, ?, ?, ?, ?)"
)
_MOVE_ON = (
    "UPDATE deliveries SET state = ?, attempts = attempts + 1, next_attempt_at = ?,"
    " last_status = ?, last_error = ?, delivered_at = ? WHERE id = ?"
)
_SET_FAILING_SINCE = "UPDATE push_endpoints SET failing_since = ? WHERE id = ?"
_DISABLE = "UPDATE push_endpoints SET enabled = false, disabled_reason = ? WHERE id = ?"
_DEAD_LETTER_PENDING = (
    "UPDATE deliveries SET state = 'dead', last_error = 'endpoint disabled'"
    " WHERE endpoint_id = ? AND state = 'pending'"
)
# Built once: it runs in every ingest transaction.
_ENQUEUE = insert(t.deliveries).from_select(
    _DELIVERY_COLUMNS,
    select(
        _endpoints.id,
        _endpoints.account_id,
        # Typed: PostgreSQL cannot infer a parameter's type in a select list.
        bindparam("for_message", type_=BigInteger),
        bindparam("for_event", type_=String),
        literal(DeliveryState.PENDING.value),
        literal(0),
        bindparam("at", type_=BigInteger),
        bindparam("at", type_=BigInteger),
    )
    .where(_endpoints.account_id == bindparam("for_account"))
    .where(_endpoints.enabled.is_(True))
    .where(_endpoints.events.like(bindparam("events_like"))),
)


async def enqueue_deliveries(
    engine: StorageEngine,
    connection: Connection,
    account_id: int,
    message_id: int,
    event: str,
    now: int,
) -> None:
    """Queue the message for every enabled endpoint of the account that wants `event`.

    Runs inside the message's own transaction: the message and its deliveries commit
    together or not at all.
    """
    result = await connection.execute(
        _ENQUEUE,
        {
            "for_account": account_id,
            "for_message": message_id,
            "for_event": event,
            "events_like": f"%{event}%",
            "at": now,
        },
    )
    if result.rowcount:
        # Workers of other processes wake as this transaction commits.
        await engine.notify(connection, NOTIFY_CHANNEL)


_WANTED = (
    select(_endpoints.id)
    .where(_endpoints.account_id == bindparam("for_account"))
    .where(_endpoints.enabled.is_(True))
    .where(_endpoints.events.like(bindparam("events_like")))
    .limit(1)
)


async def enqueue_many(
    engine: StorageEngine,
    connection: Connection,
    account_id: int,
    message_ids: Sequence[int],
    event: str,
    now: int,
) -> bool:
    """enqueue_deliveries for several messages of one account: one look at its endpoints,
    and nothing more when none wants `event`. Whether any delivery was queued."""
    wanted = {"for_account": account_id, "events_like": f"%{event}%"}
    if not message_ids or await connection.scalar(_WANTED, wanted) is None:
        return False
    await connection.execute(
        _ENQUEUE,
        [{**wanted, "for_message": found, "for_event": event, "at": now} for found in message_ids],
    )
    await engine.notify(connection, NOTIFY_CHANNEL)
    return True


class PushStore(StoreBase):
    async def add_endpoint(
        self,
        username: str,
        *,
        url: str,
        format: str,
        events: tuple[str, ...],
        secret: str | None,
        now: int,
    ) -> Endpoint:
        async with self.db.transaction("add_endpoint") as connection:
            account_id = await account_id_for(connection, username)
            endpoint_id = await connection.scalar(
                insert(t.push_endpoints)
                .values(
                    account_id=account_id,
                    url=url,
                    format=format,
                    events=",".join(events),
                    secret=secret,
                    created_at=now,
                )
                .returning(t.push_endpoints.c.id)
            )
        return Endpoint(int(endpoint_id or 0), username, url, format, events, True, None, secret)

    async def list_endpoints(self, username: str) -> list[Endpoint]:
        endpoints = t.push_endpoints.c
        async with self.db.snapshot("list_endpoints") as connection:
            account_id = await account_id_for(connection, username)
            rows = (
                await connection.execute(
                    select(t.push_endpoints)
                    .where(endpoints.account_id == account_id)
                    .order_by(endpoints.id)
                )
            ).all()
        return [
            Endpoint(
                r.id,
                username,
                r.url,
                r.format,
                tuple(r.events.split(",")),
                r.enabled,
                r.disabled_reason,
                r.secret,
            )
            for r in rows
        ]

    async def remove_endpoint(self, endpoint_id: int) -> None:
        async with self.db.transaction("remove_endpoint") as connection:
            result = await connection.execute(
                delete(t.push_endpoints).where(t.push_endpoints.c.id == endpoint_id)
            )
            if not result.rowcount:
                raise NotFound(f"no push endpoint {endpoint_id}")

    async def claim_due_deliveries(
        self,
        *,
        now: int,
        lease_ms: int,
        limit: int,
        per_endpoint: int,
        skip_endpoints: Collection[int] = (),
    ) -> list[DueDelivery]:
        """Take up to `limit` due deliveries, at most `per_endpoint` of any one endpoint and
        none of `skip_endpoints` (whose lanes are full), earliest due first.

        Each endpoint's due deliveries are read from its own end of an index, so an endpoint
        with a backlog and a full lane costs a claim nothing. Claiming moves their next
        attempt `lease_ms` ahead, so no other worker (another process on PostgreSQL, which
        skips rows locked by a concurrent claim) sends them meanwhile; the attempt's
        outcome then sets the real next time.
        """
        skipped, leave_out = in_list(sorted(skip_endpoints)) if skip_endpoints else ("", [])
        claim = _claim_statement(self.db.engine, skipped)
        parameters = (now, per_endpoint, *leave_out, limit)
        async with self.db.driver_write("claim_due_deliveries") as driver:
            if driver.remote:
                # One statement, so one round trip: claim, lease, and read what to send.
                rows = await driver.fetch(
                    _CLAIM_AND_READ.format(claim=claim), (*parameters, now + lease_ms)
                )
            else:
                leased = await driver.fetch(
                    _LEASE.format(claim=claim), (now + lease_ms, *parameters)
                )
                rows = []
                if leased:
                    marks, ids = in_list([row[0] for row in leased])
                    rows = await driver.fetch(_DUE_DETAILS.format(ids=marks), ids)
            gone = [row[0] for row in rows if row[10] is None]
            if gone:
                # Retention pruned the message meanwhile: nothing is left to push.
                marks, ids = in_list(gone)
                await driver.execute(_DEAD_LETTER.format(ids=marks), ids)
        return [_due_from_row(row) for row in rows if row[10] is not None]

    async def release_deliveries(self, delivery_ids: list[int], *, now: int) -> None:
        """Hand claimed deliveries back unattempted: due again at once, for any worker."""
        if not delivery_ids:
            return
        deliveries = t.deliveries.c
        async with self.db.transaction("release_deliveries") as connection:
            await connection.execute(
                update(t.deliveries)
                .where(deliveries.id.in_(sorted(delivery_ids)))
                .where(text(t.PENDING))
                .values(next_attempt_at=now)
            )

    async def renew_leases(self, delivery_ids: list[int], *, until: int) -> None:
        """Keep deliveries a live worker still holds claimed until `until`.

        Their attempts may be waiting their turn or in flight; a worker that dies stops
        renewing, and its deliveries are due again soon after, not after a long lease.
        """
        if not delivery_ids:
            return
        deliveries = t.deliveries.c
        async with self.db.transaction("renew_leases") as connection:
            await connection.execute(
                update(t.deliveries)
                .where(deliveries.id.in_(sorted(delivery_ids)))
                .where(text(t.PENDING))
                .where(deliveries.next_attempt_at < until)
                .values(next_attempt_at=until)
            )

    async def next_due_at(self, *, after: int) -> int | None:
        """When the next pending delivery falls due after `after` (epoch ms), if any.

        Those due already are left out: a worker asks once its claim has taken all it
        could, and what it could not take is held by another worker's claim. Read from
        `after` on in ix_deliveries_pending, so the entries a drained backlog leaves at the
        index's front until a vacuum are never walked."""
        deliveries = t.deliveries.c
        async with self.db.snapshot("next_due_at") as connection:
            found = await connection.scalar(
                select(func.min(deliveries.next_attempt_at))
                .where(text(t.PENDING))
                .where(deliveries.next_attempt_at > after)
            )
        return None if found is None else int(found)

    async def record_attempts(
        self, outcomes: Sequence[AttemptOutcome], *, disable_after_ms: int, now: int
    ) -> dict[int, str]:
        """Log the attempts and move their deliveries on, in one transaction; returns the
        endpoints disabled by them (a 410, or failing for longer than `disable_after_ms`),
        each with its reason.

        The attempts of one endpoint count in the order given: a success ends its run of
        failures, a failure starts one, and a run older than `disable_after_ms` disables it.
        """
        if not outcomes:
            return {}
        endpoint_ids = sorted({o.endpoint_id for o in outcomes})
        async with self.db.transaction("record_attempts") as connection:
            driver = await self.db.engine.driver(connection)
            lock = self.db.engine.lock_rows_clause
            # The endpoint rows first, in id order (locked as the sorted rows come out), in
            # every recording transaction: those of several workers take their locks in one
            # order and never deadlock. One statement: one round trip to a server.
            marks, ids = in_list(endpoint_ids)
            rows = await driver.fetch(_FAILING_SINCE.format(ids=marks) + lock, ids)
            failing_since: dict[int, int | None] = {
                int(row[0]): None if row[1] is None else int(row[1]) for row in rows
            }
            # An endpoint removed meanwhile took its deliveries with it: nothing to record.
            outcomes = [o for o in outcomes if o.endpoint_id in failing_since]
            disabled: dict[int, str] = {}
            for outcome in outcomes:
                endpoint = outcome.endpoint_id
                if endpoint in disabled:
                    continue
                if outcome.state is DeliveryState.DELIVERED:
                    failing_since[endpoint] = None
                elif outcome.disable_reason is not None:
                    disabled[endpoint] = outcome.disable_reason
                elif failing_since[endpoint] is None:
                    failing_since[endpoint] = now
                elif now - (failing_since[endpoint] or now) > disable_after_ms:
                    disabled[endpoint] = (
                        f"failing since {failing_since[endpoint]} (epoch ms): {outcome.error}"
                    )
            await driver.executemany(
                _LOG_ATTEMPT,
                [(o.delivery_id, now, o.http_status, o.latency_ms, o.error) for o in outcomes],
            )
            await driver.executemany(
                _MOVE_ON,
                [
                    (o.state, o.next_attempt_at, o.http_status, o.error,
                     now if o.state is DeliveryState.DELIVERED else None, o.delivery_id)
                    for o in outcomes
                ],
            )  # fmt: skip
            await driver.executemany(
                _SET_FAILING_SINCE,
                [(since, e) for e, since in failing_since.items() if e not in disabled],
            )
            for endpoint, reason in disabled.items():
                await driver.execute(_DISABLE, (reason[:255], endpoint))
                await driver.execute(_DEAD_LETTER_PENDING, (endpoint,))
        return disabled

    async def list_attempts(
        self, username: str, *, failed_only: bool, limit: int
    ) -> list[AttemptRecord]:
        """The attempt log of the account's deliveries, newest first."""
        attempts = t.delivery_attempts.c
        deliveries = t.deliveries.c
        query = (
            select(
                attempts.delivery_id,
                deliveries.message_id,
                t.push_endpoints.c.url,
                deliveries.state,
                attempts.attempted_at,
                attempts.http_status,
                attempts.latency_ms,
                attempts.error,
            )
            .join(t.deliveries, deliveries.id == attempts.delivery_id)
            .join(t.push_endpoints, t.push_endpoints.c.id == deliveries.endpoint_id)
        )
        if failed_only:
            query = query.where(
                (attempts.http_status.is_(None))
                | (attempts.http_status < 200)
                | (attempts.http_status >= 300)
                | (attempts.error.is_not(None))
            )
        async with self.db.snapshot("list_attempts") as connection:
            account_id = await account_id_for(connection, username)
            rows = (
                await connection.execute(
                    query.where(deliveries.account_id == account_id)
                    .order_by(attempts.id.desc())
                    .limit(limit)
                )
            ).all()
        return [AttemptRecord(*row) for row in rows]

    async def replay_deliveries(
        self,
        username: str,
        *,
        since_ms: int,
        now: int,
        after_id: int = 0,
        batch: int = REPLAY_BATCH,
        dry_run: bool = False,
    ) -> ReplayStep:
        """Queue again every push of the next `batch` of the account's messages received
        since `since_ms` with ids above `after_id`, to every enabled endpoint, including
        messages that never had a delivery. One short transaction a batch: a replay of a
        large history never holds the writer long. `dry_run`: count, change nothing."""
        deliveries = t.deliveries.c
        messages = t.messages.c
        endpoints = t.push_endpoints.c
        opened = self.db.snapshot if dry_run else self.db.transaction
        async with opened("replay_deliveries") as connection:
            account_id = await account_id_for(connection, username)
            ids = list(
                await connection.scalars(
                    select(messages.id)
                    .where(messages.account_id == account_id)
                    .where(messages.received_at >= since_ms)
                    .where(messages.id > after_id)
                    .order_by(messages.id)
                    .limit(batch)
                )
            )
            if not ids:
                return ReplayStep(queued=0, messages=0, last_id=after_id)
            enabled = (
                select(endpoints.id)
                .where(endpoints.account_id == account_id)
                .where(endpoints.enabled.is_(True))
            )
            again = (
                (deliveries.account_id == account_id)
                & deliveries.endpoint_id.in_(enabled)
                & deliveries.message_id.in_(ids)
            )
            missing = (
                select(
                    endpoints.id,
                    literal(account_id),
                    messages.id,
                    literal("mo"),
                    literal(DeliveryState.PENDING.value),
                    literal(0),
                    literal(now),
                    literal(now),
                )
                .select_from(
                    t.messages.join(t.push_endpoints, endpoints.account_id == messages.account_id)
                )
                .where(messages.id.in_(ids))
                .where(messages.direction == Direction.INCOMING.value)
                .where(messages.origin != "sim")
                .where(messages.deleted.is_(False))
                .where(endpoints.enabled.is_(True))
                .where(endpoints.events.like("%mo%"))
                .where(
                    ~select(deliveries.id)
                    .where(
                        and_(
                            deliveries.endpoint_id == endpoints.id,
                            deliveries.message_id == messages.id,
                        )
                    )
                    .exists()
                )
            )
            if dry_run:
                requeued = await connection.scalar(
                    select(func.count()).select_from(t.deliveries).where(again)
                )
                added = await connection.scalar(
                    select(func.count()).select_from(missing.subquery())
                )
                total = int(requeued or 0) + int(added or 0)
                return ReplayStep(queued=total, messages=len(ids), last_id=ids[-1])
            requeued_rows = await connection.execute(
                update(t.deliveries)
                .where(again)
                .values(state=DeliveryState.PENDING, attempts=0, next_attempt_at=now)
            )
            added_rows = await connection.execute(
                insert(t.deliveries).from_select(_DELIVERY_COLUMNS, missing)
            )
            total = int(requeued_rows.rowcount or 0) + int(added_rows.rowcount or 0)
            if total:
                await self.db.engine.notify(connection, NOTIFY_CHANNEL)
        if total:
            self.outbox_changed()
        return ReplayStep(queued=total, messages=len(ids), last_id=ids[-1])

    async def count_messages_since(self, username: str, *, since_ms: int) -> int:
        """How many of the account's messages were received since `since_ms`."""
        messages = t.messages.c
        async with self.db.snapshot("count_messages_since") as connection:
            account_id = await account_id_for(connection, username)
            found = await connection.scalar(
                select(func.count())
                .select_from(t.messages)
                .where(messages.account_id == account_id)
                .where(messages.received_at >= since_ms)
            )
        return int(found or 0)

    async def queue_figures(self) -> tuple[int, int | None]:
        """How many deliveries are pending, and when the oldest of them was created."""
        deliveries = t.deliveries.c
        async with self.db.snapshot("queue_figures") as connection:
            row = (
                await connection.execute(
                    select(func.count(), func.min(deliveries.created_at)).where(text(t.PENDING))
                )
            ).one()
        return int(row[0]), None if row[1] is None else int(row[1])


# The statements below are put together from constants and placeholders only: every value
# travels as a parameter.
_CLAIMS: dict[tuple[str, str], str] = {}


def _claim_statement(engine: StorageEngine, skipped: str) -> str:
    """The due deliveries of every endpoint but the `skipped` ones (the marks of an IN list),
    each endpoint's from its end of ix_deliveries_pending_by_endpoint (the condition written
    as in the index, which SQLite needs to use a partial index); rows another worker's claim
    holds are skipped."""
    key = (skipped, engine.name)
    found = _CLAIMS.get(key)
    if found is None:
        lock = f"{engine.lock_rows_clause} SKIP LOCKED" if engine.lock_rows_clause else ""
        per_endpoint = (
            f"SELECT x.id FROM deliveries x WHERE {t.PENDING.replace('state', 'x.state')}"  # noqa: S608
            " AND x.endpoint_id = e.id AND x.next_attempt_at <= ?"
            f" ORDER BY x.next_attempt_at, x.id LIMIT ?{lock}"
        )
        leave_out = f" WHERE e.id NOT IN ({skipped})" if skipped else ""
        found = (
            "SELECT d.id FROM "  # noqa: S608
            + engine.each_with_its_rows("push_endpoints e", "deliveries", per_endpoint)
            + f"{leave_out} ORDER BY d.next_attempt_at, d.id LIMIT ?"
        )
        _CLAIMS[key] = found
    return found


# What a format needs of a claimed delivery, in DueDelivery's order; the message is missing
# (NULL) if retention pruned it after the delivery was queued.
_DETAILS = (
    "SELECT d.id, d.attempts, d.event, e.id, e.url, e.format, e.secret, a.id, a.username,"
    " a.time_zone, m.id, m.seq, m.direction, m.sender, m.recipient, m.text, m.encoding,"
    " m.body, m.reply_to_id, m.received_at, m.status, m.status_at"
    " FROM {deliveries} d JOIN push_endpoints e ON e.id = d.endpoint_id"
    " JOIN accounts a ON a.id = d.account_id LEFT JOIN messages m ON m.id = d.message_id"
)
# The claimed deliveries leased until a time (the last parameter), then read.
_CLAIM_AND_READ = (
    "WITH due AS ({claim}), leased AS (UPDATE deliveries SET next_attempt_at = ?"  # noqa: S608
    " FROM due WHERE deliveries.id = due.id RETURNING deliveries.*) "
    + _DETAILS.format(deliveries="leased")
    + " ORDER BY d.id"
)
_LEASE = "UPDATE deliveries SET next_attempt_at = ? WHERE id IN ({claim}) RETURNING id"
_DUE_DETAILS = _DETAILS.format(deliveries="deliveries") + " WHERE d.id IN ({ids}) ORDER BY d.id"
_DEAD_LETTER = (
    "UPDATE deliveries SET state = 'dead', last_error = 'message no longer stored'"
    " WHERE id IN ({ids})"
)
_FAILING_SINCE = "SELECT id, failing_since FROM push_endpoints WHERE id IN ({ids}) ORDER BY id"


def _due_from_row(row: Any) -> DueDelivery:
    values = list(row)
    values[12] = Direction(values[12])
    values[16] = Encoding(values[16])
    values[20] = MessageStatus(values[20])
    return DueDelivery(*values)
