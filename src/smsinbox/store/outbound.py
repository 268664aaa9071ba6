"""The outbound queue: outgoing messages waiting for an SMSC, the parts it accepted, and the
receipts that say what became of them.

A message joins the queue in the transaction that marks it pending, so a queued message is
never lost and never queued twice. A sender claims due rows by moving them past the time
its attempt may take (a sender that dies leaves them due again), and records what each
attempt came to in one transaction per batch: the parts accepted with the SMSC's id for
each, and the message's status, or when to try again.

A message's status follows its parts' receipts: delivered once every part is, and the
worst a part met otherwise (rejected, then undeliverable, then expired).
"""

from __future__ import annotations

import zlib
from collections import defaultdict
from collections.abc import Iterable, Sequence

from sqlalchemy import (
    ARRAY,
    BigInteger,
    bindparam,
    case,
    delete,
    func,
    insert,
    select,
    text,
    update,
)

from smsinbox.models import UNSENT_STATUSES, Batched, MessageStatus, Outbound, Submission
from smsinbox.store import tables as t
from smsinbox.store.base import StoreBase
from smsinbox.store.database import Connection
from smsinbox.store.engine import StorageEngine
from smsinbox.store.messages import change_messages
from smsinbox.store.push import enqueue_many

# What a part's receipt says (smpp/messages.py MessageState, lower-cased) and what it makes
# of the message, worst first. A part with no final receipt is "sent".
_WORST_FIRST = [
    ("rejected", MessageStatus.REJECTED),
    ("undeliverable", MessageStatus.UNDELIVERABLE),
    ("deleted", MessageStatus.UNDELIVERABLE),
    ("expired", MessageStatus.EXPIRED),
]
FINAL_PART_STATES = frozenset({"delivered", *(state for state, _ in _WORST_FIRST)})

# The statuses a part's receipt may still change: sent, and the failures a worse one
# (rejected before undeliverable before expired) replaces.
_SETTLING = frozenset({MessageStatus.SENT, MessageStatus.UNDELIVERABLE, MessageStatus.EXPIRED})

_queue = t.outbound.c
_parts = t.sent_parts.c
_early = t.early_receipts.c
_messages = t.messages.c

_CLAIMED = (
    select(
        _queue.account_id, _queue.message_id, _messages.sender, _messages.recipient,
        _messages.text, _queue.registered_delivery, _queue.attempts, _queue.queued_at,
        _queue.expires_at, _messages.deleted,
    )
    .join(t.messages, _messages.id == _queue.message_id)
    .where(_queue.id.in_(bindparam("claimed", expanding=True)))
    .order_by(_queue.id)
)  # fmt: skip
_SUBMITTED = select(_parts.message_id, _parts.part).where(
    _parts.message_id.in_(bindparam("ids", expanding=True))
)
# A part recorded already (its message attempted twice at once, which leases make rare)
# keeps its first record: standard ON CONFLICT, the same on both engines.
_INSERT_PARTS = text(
    "INSERT INTO sent_parts (account_id, message_id, part, total, bind_id, smsc_message_id,"
    " state, error, submitted_at, state_at) VALUES (:account_id, :message_id, :part, :total,"
    " :bind_id, :smsc_message_id, :state, :error, :submitted_at, :state_at)"
    " ON CONFLICT (message_id, part) DO NOTHING"
)
_RETRY = (
    update(t.outbound)
    .where(_queue.message_id == bindparam("for_message"))
    .values(
        due_at=bindparam("retry_at"),
        attempts=_queue.attempts + 1,
        last_error=bindparam("error"),
    )
)
_ANY_EARLY = select(_early.id).limit(1)
_LEAVE_QUEUE = delete(t.outbound).where(_queue.message_id.in_(bindparam("ids", expanding=True)))


def status_of_parts(states: Sequence[str], total: int) -> MessageStatus:
    """A sent message's status from its parts' states (`total` parts in all)."""
    for state, status in _WORST_FIRST:
        if state in states:
            return status
    if len(states) == total and all(state == "delivered" for state in states):
        return MessageStatus.DELIVERED
    return MessageStatus.SENT


def stored_id(smsc_message_id: str) -> str:
    """An SMSC's message id as kept: without surrounding space or leading zeros, which SMSCs
    add in one place and not in another."""
    return smsc_message_id.strip().lstrip("0")[:65] or "0"


def receipt_id_forms(smsc_message_id: str) -> list[str]:
    """The kept forms (see stored_id) an id may have been recorded in: many SMSCs answer
    submit_sm with an id in hex and name it in decimal in the receipt, or the other way
    round, in either case of hex digits."""
    kept = stored_id(smsc_message_id)
    forms = {kept, kept.lower(), kept.upper()}
    # ASCII only: str.isdigit also admits "²", which int() refuses (a receipt that raised).
    if kept.isascii() and kept.isdigit() and len(kept) <= 20:
        number = int(kept)
        forms |= {f"{number:x}", f"{number:X}"}
    if len(kept) <= 16 and all(c in "0123456789abcdefABCDEF" for c in kept):
        forms.add(str(int(kept, 16)))
    return sorted(forms)


# Advisory locks (PostgreSQL) on the SMSC's message ids, under a namespace of their own.
_ID_LOCKS = 0x534D5050 << 32
_LOCK_IDS = text(
    "SELECT pg_advisory_xact_lock(k) FROM (SELECT unnest(:keys) AS k ORDER BY k) AS ids"
).bindparams(bindparam("keys", type_=ARRAY(BigInteger)))


async def _lock_ids(connection: Connection, engine: StorageEngine, ids: Iterable[str]) -> None:
    """Make the transactions that record parts and the ones that record receipts about the
    same SMSC ids take turns (PostgreSQL; SQLite has one writer at a time anyway).

    Without it, a receipt recorded while its part's transaction is open finds no part and
    is kept as early, while that transaction has already looked for early receipts and
    commits without it: neither sees the other, and the receipt is never applied. With it,
    whichever comes second starts its reads after the first committed. Every written form
    of an id is locked (see receipt_id_forms), so a receipt naming it in decimal and a part
    recorded in hex meet on a lock."""
    if engine.name != "postgresql":
        return
    keys = sorted({_ID_LOCKS | zlib.crc32(form.encode()) for found in ids
                   for form in receipt_id_forms(found)})  # fmt: skip
    if keys:
        await connection.execute(_LOCK_IDS, {"keys": keys})


class OutboundStore(StoreBase):
    async def queue_outgoing(
        self,
        account_id: int,
        message_id: int,
        *,
        registered_delivery: bool,
        expires_at: int,
        now: int,
    ) -> None:
        """Put an outgoing message in the queue for an SMSC and mark it pending (its status
        pushed); a message queued already stays as it is."""
        async with self.db.transaction("queue_outgoing") as connection:
            found = await _counterparts(connection, account_id, [message_id])
            queued = await connection.scalar(
                select(_queue.id).where(_queue.message_id == message_id)
            )
            if not found or queued is not None:
                return
            await connection.execute(
                insert(t.outbound).values(
                    account_id=account_id, message_id=message_id,
                    registered_delivery=registered_delivery, queued_at=now,
                    expires_at=expires_at, due_at=now, attempts=0, last_error="",
                )
            )  # fmt: skip
            pushed = await _set_statuses(
                connection, self.db.engine, account_id, found, MessageStatus.PENDING, now
            )
        if pushed:
            self.outbox_changed()
        self.outbound_changed()

    async def claim_outbound(
        self, *, now: int, until: int, limit: int, expired_only: bool = False
    ) -> list[Outbound]:
        """Up to `limit` queued messages due by `now` (only those out of time, if
        `expired_only`), each held until `until`. A message the account has deleted
        meanwhile leaves the queue unsent."""
        async with self.db.transaction("claim_outbound") as connection:
            due = (
                select(_queue.id)
                .where(_queue.due_at <= now)
                .order_by(_queue.due_at, _queue.id)
                .limit(limit)
                .with_for_update(skip_locked=True)
            )
            if expired_only:
                due = due.where(_queue.expires_at <= now)
            # Held in the same statement that finds them (PostgreSQL skips rows another
            # sender is claiming; SQLite has one writer).
            claimed = list(
                await connection.scalars(
                    update(t.outbound)
                    .where(_queue.id.in_(due.scalar_subquery()))
                    .values(due_at=until)
                    .returning(_queue.id)
                )
            )
            if not claimed:
                return []
            rows = (await connection.execute(_CLAIMED, {"claimed": claimed})).all()
            deleted = [row.message_id for row in rows if row.deleted]
            if deleted:
                await connection.execute(_LEAVE_QUEUE, {"ids": deleted})
            rows = [row for row in rows if not row.deleted]
            submitted: defaultdict[int, set[int]] = defaultdict(set)
            tried = [row.message_id for row in rows if row.attempts]
            if tried:  # a message never tried has no part accepted
                for message_id, part in await connection.execute(_SUBMITTED, {"ids": tried}):
                    submitted[message_id].add(part)
        return [
            Outbound(
                account_id=row.account_id, message_id=row.message_id, sender=row.sender,
                recipient=row.recipient, text=row.text,
                registered_delivery=row.registered_delivery, attempts=row.attempts,
                queued_at=row.queued_at, expires_at=row.expires_at,
                submitted=frozenset(submitted[row.message_id]),
            )
            for row in rows
        ]  # fmt: skip

    async def renew_outbound(self, message_ids: Sequence[int], *, until: int) -> None:
        """Hold claimed messages until `until` (a sender still at them)."""
        async with self.db.transaction("renew_outbound") as connection:
            await connection.execute(
                update(t.outbound).where(_queue.message_id.in_(message_ids)).values(due_at=until)
            )

    async def record_submissions(self, submissions: Iterable[Submission], *, now: int) -> None:
        """Record what attempts came to, all in one transaction: the parts accepted, the
        messages that leave the queue with their status, the ones to try again; and any
        receipt that came before its part was recorded."""
        submissions = list(submissions)
        if not submissions:
            return
        async with self.db.transaction("record_submissions") as connection:
            parts = [
                {
                    "account_id": done.account_id, "message_id": done.message_id,
                    "part": part.part, "total": part.total, "bind_id": part.bind_id,
                    "smsc_message_id": stored_id(part.smsc_message_id), "state": "sent",
                    "error": "", "submitted_at": now, "state_at": now,
                }
                for done in submissions
                for part in done.parts
            ]  # fmt: skip
            if parts:
                await _lock_ids(
                    connection, self.db.engine, [str(part["smsc_message_id"]) for part in parts]
                )
                await connection.execute(_INSERT_PARTS, parts)
            retries = [
                {"for_message": done.message_id, "retry_at": done.retry_at,
                 "error": done.error[:255]}
                for done in submissions
                if done.status is None
            ]  # fmt: skip
            if retries:
                await connection.execute(_RETRY, retries)
            finished = [done for done in submissions if done.status is not None]
            if finished:
                await connection.execute(
                    _LEAVE_QUEUE, {"ids": [done.message_id for done in finished]}
                )
            by_outcome: defaultdict[tuple[int, MessageStatus], list[int]] = defaultdict(list)
            for done in finished:
                assert done.status is not None
                by_outcome[(done.account_id, done.status)].append(done.message_id)
            pushed = False
            # In account order: two of these never wait for each other's counter rows.
            # A queued message is pending until its sender records it: its counterpart
            # (the recipient) and status are known without reading them.
            recipients = {done.message_id: done.recipient for done in finished}
            for (account_id, status), ids in sorted(by_outcome.items()):
                counterparts = {
                    found: (recipients[found], MessageStatus.PENDING.value) for found in ids
                }
                pushed |= await _set_statuses(
                    connection, self.db.engine, account_id, counterparts, status, now
                )
            now_sent = [
                done.message_id
                for done in finished
                if done.status is MessageStatus.SENT and done.resumed
            ]
            if now_sent:
                # Receipts of parts that came while the message was still being sent.
                reported = await connection.execute(
                    select(_parts.account_id, _parts.message_id)
                    .where(_parts.message_id.in_(now_sent))
                    .where(_parts.state != "sent")
                    .distinct()
                )
                pushed |= await self._settle(
                    connection, [(row[0], row[1]) for row in reported], now
                )
            if parts:
                pushed |= await self._apply_early_receipts(
                    connection, [str(part["smsc_message_id"]) for part in parts], now
                )
        if pushed:
            self.outbox_changed()

    async def record_receipt(
        self, smsc_message_id: str, state: str, error: str, *, now: int
    ) -> bool:
        """Record what a receipt says of the part the SMSC calls `smsc_message_id` (its
        newest, should two SMSCs use one id), and settle its message's status. A receipt
        about no part recorded yet is kept for it (its submit_sm_resp may still be on its
        way to the store). Whether a part was found."""
        async with self.db.transaction("record_receipt") as connection:
            await _lock_ids(connection, self.db.engine, [smsc_message_id])
            found = await self._mark_part(connection, smsc_message_id, state, error, now)
            if found is None:
                await connection.execute(
                    insert(t.early_receipts).values(
                        smsc_message_id=stored_id(smsc_message_id), state=state,
                        error=error[:32], received_at=now,
                    )
                )  # fmt: skip
                return False
            pushed = await self._settle(connection, [found], now)
        if pushed:
            self.outbox_changed()
        return True

    async def purge_early_receipts(self, *, received_before: int) -> int:
        """Forget receipts about parts never recorded (sent by another system, or whose
        record was lost): how many."""
        async with self.db.transaction("purge_early_receipts") as connection:
            purged = await connection.execute(
                delete(t.early_receipts).where(_early.received_at < received_before)
            )
        return int(purged.rowcount or 0)

    async def outbound_figures(self) -> tuple[int, int]:
        """How many messages wait in the outbound queue, and how many of them have been
        tried and wait to be tried again (for the metrics)."""
        async with self.db.snapshot("outbound_figures") as connection:
            row = (
                await connection.execute(
                    select(
                        func.count(),
                        func.coalesce(func.sum(case((_queue.attempts > 0, 1), else_=0)), 0),
                    ).select_from(t.outbound)
                )
            ).one()
        return int(row[0]), int(row[1])

    async def add_batch(self, account_id: int, message_ids: Sequence[int]) -> int:
        """Group messages sent together (an EAPI send_sms call) under the first one's id."""
        batch_id = min(message_ids)
        async with self.db.transaction("add_batch") as connection:
            await connection.execute(
                insert(t.batch_messages),
                [
                    {"message_id": message_id, "account_id": account_id, "batch_id": batch_id}
                    for message_id in message_ids
                ],
            )
        return batch_id

    async def list_batch(self, account_id: int, batch_id: int) -> list[Batched]:
        """The messages of an account's batch, in the order they were sent."""
        batches = t.batch_messages.c
        async with self.db.snapshot("list_batch") as connection:
            rows = (
                await connection.execute(
                    select(_messages.id, _messages.sender, _messages.recipient,
                           _messages.text, _messages.received_at, _messages.status,
                           _messages.status_at)
                    .join(t.batch_messages, batches.message_id == _messages.id)
                    .where(batches.account_id == account_id, batches.batch_id == batch_id)
                    .order_by(_messages.id)
                )
            ).all()  # fmt: skip
        return [
            Batched(row[0], row[1], row[2], row[3], row[4], MessageStatus(row[5]), row[6])
            for row in rows
        ]

    async def _mark_part(
        self, connection: Connection, smsc_message_id: str, state: str, error: str, now: int
    ) -> tuple[int, int] | None:
        """Set the state of the part the id names; its (account, message), or None."""
        row = (
            await connection.execute(
                select(_parts.id, _parts.account_id, _parts.message_id, _parts.state)
                .where(_parts.smsc_message_id.in_(receipt_id_forms(smsc_message_id)))
                .order_by(_parts.id.desc())
                .limit(1)
            )
        ).first()
        if row is None:
            return None
        if row.state not in FINAL_PART_STATES:  # a final state stays (late receipts)
            await connection.execute(
                update(t.sent_parts)
                .where(_parts.id == row.id)
                .values(state=state, error=error[:32], state_at=now)
            )
        return int(row.account_id), int(row.message_id)

    async def _apply_early_receipts(
        self, connection: Connection, smsc_message_ids: list[str], now: int
    ) -> bool:
        """Apply the receipts kept for these ids; whether a status push was queued."""
        if await connection.scalar(_ANY_EARLY) is None:
            return False  # the usual case: a receipt comes after its part is recorded
        forms = sorted({form for found in smsc_message_ids for form in receipt_id_forms(found)})
        early = (
            await connection.execute(
                select(_early.id, _early.smsc_message_id, _early.state, _early.error)
                .where(_early.smsc_message_id.in_(forms))
                .order_by(_early.id)
            )
        ).all()
        if not early:
            return False
        settled: list[tuple[int, int]] = []
        for receipt in early:
            found = await self._mark_part(
                connection, receipt.smsc_message_id, receipt.state, receipt.error, now
            )
            if found is not None:
                settled.append(found)
        await connection.execute(
            delete(t.early_receipts).where(_early.id.in_([receipt.id for receipt in early]))
        )
        return await self._settle(connection, settled, now)

    async def _settle(
        self, connection: Connection, messages: Iterable[tuple[int, int]], now: int
    ) -> bool:
        """Give each sent message the status its parts' states make; whether a status push
        was queued."""
        pushed = False
        for account_id, message_id in sorted(set(messages)):
            row = (
                await connection.execute(
                    select(_messages.status, _messages.counterpart).where(
                        _messages.id == message_id
                    )
                )
            ).first()
            if row is None or row.status not in _SETTLING:
                continue  # still being sent (settled when it is), or final for good
            parts = (
                await connection.execute(
                    select(_parts.state, _parts.total).where(_parts.message_id == message_id)
                )
            ).all()
            status = status_of_parts([part.state for part in parts], parts[0].total)
            if status.value != row.status:
                pushed |= await _set_statuses(
                    connection, self.db.engine, account_id,
                    {message_id: (row.counterpart, row.status)}, status, now,
                )  # fmt: skip
        return pushed


async def _counterparts(
    connection: Connection, account_id: int, message_ids: list[int]
) -> dict[int, tuple[str, str]]:
    """Each message's counterpart and status as they stand."""
    rows = await connection.execute(
        select(_messages.id, _messages.counterpart, _messages.status)
        .where(_messages.account_id == account_id)
        .where(_messages.id.in_(message_ids))
    )
    return {int(row[0]): (row[1], row[2]) for row in rows}


_UNSENT = frozenset(status.value for status in UNSENT_STATUSES)
_ADJUST_UNSENT = (
    update(t.conversations)
    .where(t.conversations.c.account_id == bindparam("for_account"))
    .where(t.conversations.c.counterpart == bindparam("for_counterpart"))
    .values(unsent_count=t.conversations.c.unsent_count + bindparam("delta"))
)


async def _set_statuses(
    connection: Connection,
    engine: StorageEngine,
    account_id: int,
    messages: dict[int, tuple[str, str]],
    status: MessageStatus,
    now: int,
) -> bool:
    """Give messages of one account (id -> counterpart, status before) a status: each with
    a modseq of its own (sync sees the change), their conversations' unsent figures moved
    by the change (a status change moves nothing else of a conversation), a status push
    queued. Whether any push was."""
    ids = sorted(messages)
    if not ids:
        return False
    await change_messages(connection, account_id, ids, {"status": status, "status_at": now})
    unsent_now = status.value in _UNSENT
    deltas: defaultdict[str, int] = defaultdict(int)
    for counterpart, before in messages.values():
        deltas[counterpart] += int(unsent_now) - int(before in _UNSENT)
    adjustments = [
        {"for_account": account_id, "for_counterpart": counterpart, "delta": delta}
        for counterpart, delta in sorted(deltas.items())
        if delta
    ]
    if adjustments:
        await connection.execute(_ADJUST_UNSENT, adjustments)
    return await enqueue_many(engine, connection, account_id, ids, "status", now)
