"""Messages: the one ingest transaction, outgoing records, unrouted messages."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

from sqlalchemy import (
    Row,
    and_,
    bindparam,
    case,
    delete,
    exc,
    func,
    insert,
    or_,
    select,
    text,
    update,
)

from smsinbox.errors import AlreadyExists
from smsinbox.models import (
    UNSENT_STATUSES,
    Conversation,
    Direction,
    Encoding,
    InboundMessage,
    IngestResult,
    Message,
    MessageStatus,
    UnroutedMessage,
)
from smsinbox.store import tables as t
from smsinbox.store.base import NUMBER_OWNER, StoreBase, account_id_for, claim_number
from smsinbox.store.database import Connection
from smsinbox.store.engine import StorageEngine
from smsinbox.store.ingest import BUMP_CONVERSATION, Arrival, store_batch
from smsinbox.store.push import enqueue_deliveries

SNIPPET_CHARS = t.SNIPPET_CHARS


class MessageStore(StoreBase):
    async def ingest_incoming(
        self, inbound: InboundMessage, *, now: int, reply_window_ms: int
    ) -> IngestResult:
        """Store one incoming message, routed by its recipient, exactly once per upstream id.

        It is committed when this returns (in a batch with others arriving meanwhile, see
        store/ingest.py): the caller may acknowledge it to its upstream then.
        """
        return await self.ingest_queue.submit(Arrival(inbound, now, reply_window_ms))

    async def record_outgoing(
        self,
        account_id: int,
        *,
        sender: str,
        recipient: str,
        text: str,
        encoding: Encoding,
        status: MessageStatus,
        now: int,
        send_at: int | None = None,
        origin: str = "platform",
        device_id: int | None = None,
    ) -> int:
        """Record a message the account sends; incoming answers thread onto it."""
        async with self.db.transaction("record_outgoing") as connection:
            return await _append_message(
                self.db.engine,
                connection,
                account_id,
                now,
                direction=Direction.OUTGOING,
                sender=sender,
                recipient=recipient,
                counterpart=recipient,
                text=text,
                encoding=encoding.value,
                body=None,
                reply_to_id=None,
                upstream_id=None,
                upstream_message_id=None,
                sent_at=send_at or now,
                send_at=send_at,
                status=status,
                origin=origin,
                read=True,
                device_id=device_id,
            )

    async def record_device_message(
        self,
        account_id: int,
        *,
        incoming: bool,
        own_number: str,
        address: str,
        text: str,
        encoding: Encoding,
        sent_at: int | None,
        read: bool,
        device_id: int | None,
        device_message_id: str | None,
        now: int,
    ) -> tuple[int, bool]:
        """Store a message the user's own device reports (SIM origin), once per device id.

        Returns the message id and whether it was new.
        """
        messages = t.messages.c
        for attempt in (1, 2):
            try:
                async with self.db.transaction("record_device_message") as connection:
                    if device_message_id is not None:
                        earlier = await connection.scalar(
                            select(messages.id)
                            .where(messages.account_id == account_id)
                            .where(messages.device_id == device_id)
                            .where(messages.device_message_id == device_message_id)
                        )
                        if earlier is not None:
                            return int(earlier), False
                    message_id = await _append_message(
                        self.db.engine,
                        connection,
                        account_id,
                        now,
                        direction=Direction.INCOMING if incoming else Direction.OUTGOING,
                        sender=address if incoming else own_number,
                        recipient=own_number if incoming else address,
                        counterpart=address,
                        text=text,
                        encoding=encoding.value,
                        body=None,
                        reply_to_id=None,
                        upstream_id=None,
                        upstream_message_id=None,
                        sent_at=sent_at,
                        status=MessageStatus.RECEIVED if incoming else MessageStatus.COMPLETE,
                        origin="sim",
                        read=read or not incoming,
                        device_id=device_id,
                        device_message_id=device_message_id,
                    )
                    return message_id, True
            except exc.IntegrityError:
                # The same report arrived twice at once; the second try finds the first.
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")

    async def claim_outgoing(self, seen: Message, *, now: int) -> bool:
        """Mark an outgoing message sending, if it is still as `seen`; False if another
        dispatcher changed it first."""
        messages = t.messages.c
        async with self.db.transaction("claim_outgoing") as connection:
            result = await connection.execute(
                update(t.messages)
                .where(messages.id == seen.id)
                .where(messages.status == seen.status)
                .where(messages.status_at == seen.status_at)
                .values(status=MessageStatus.SENDING.value, status_at=now)
            )
            return bool(result.rowcount)

    async def set_outgoing_status(
        self, account_id: int, message_id: int, status: MessageStatus, *, now: int
    ) -> None:
        messages = t.messages.c
        async with self.db.transaction("set_outgoing_status") as connection:
            counterpart = await connection.scalar(
                select(messages.counterpart)
                .where(messages.account_id == account_id)
                .where(messages.id == message_id)
            )
            if counterpart is None:
                return
            await change_messages(
                connection, account_id, [message_id], {"status": status, "status_at": now}
            )
            await recount_conversations(connection, account_id, [counterpart])
            await enqueue_deliveries(
                self.db.engine, connection, account_id, message_id, "status", now
            )
        self.outbox_changed()

    async def list_due_outgoing(self, *, now: int, stale_before: int, limit: int) -> list[Message]:
        """Scheduled messages now due, and deliveries left half-done (e.g. by a crash)."""
        messages = t.messages.c
        async with self.db.snapshot("list_due_outgoing") as connection:
            rows = await connection.execute(
                select(*MESSAGE_COLUMNS)
                # Written out as in the partial index ix_messages_outgoing_due: SQLite uses
                # a partial index only for a condition that matches it literally.
                .where(text(t.OUTGOING_DUE))
                .where(
                    or_(
                        and_(
                            messages.status == MessageStatus.SCHEDULED.value,
                            messages.send_at <= now,
                        ),
                        and_(
                            messages.status == MessageStatus.SENDING.value,
                            messages.status_at < stale_before,
                        ),
                    )
                )
                .where(messages.deleted.is_(False))
                .order_by(messages.id)
                .limit(limit)
            )
            return [message_from_row(row) for row in rows.all()]

    async def get_message(self, account_id: int, message_id: int) -> Message | None:
        async with self.db.snapshot("get_message") as connection:
            row = (
                await connection.execute(
                    select(*MESSAGE_COLUMNS)
                    .where(t.messages.c.account_id == account_id)
                    .where(t.messages.c.id == message_id)
                    .where(t.messages.c.deleted.is_(False))
                )
            ).first()
        return None if row is None else message_from_row(row)

    async def list_recent_messages(self, username: str, limit: int) -> list[Message]:
        """The account's newest messages, newest first (for the operator)."""
        async with self.db.snapshot("list_recent_messages") as connection:
            account_id = await account_id_for(connection, username)
            rows = (
                await connection.execute(
                    select(*MESSAGE_COLUMNS)
                    .where(t.messages.c.account_id == account_id)
                    .where(t.messages.c.deleted.is_(False))
                    .order_by(t.messages.c.seq.desc())
                    .limit(limit)
                )
            ).all()
        return [message_from_row(row) for row in rows]

    async def list_conversations(self, account_id: int) -> list[Conversation]:
        async with self.db.snapshot("list_conversations") as connection:
            rows = (
                await connection.execute(
                    select(t.conversations)
                    .where(t.conversations.c.account_id == account_id)
                    .order_by(t.conversations.c.last_message_at.desc())
                )
            ).all()
        return [conversation_from_row(row) for row in rows]

    async def list_unrouted(self, limit: int = 1000) -> list[UnroutedMessage]:
        async with self.db.snapshot("list_unrouted") as connection:
            rows = (
                await connection.execute(select(t.unrouted).order_by(t.unrouted.c.id).limit(limit))
            ).all()
        return [
            UnroutedMessage(
                id=row.id,
                sender=row.sender,
                recipient=row.recipient,
                text=row.text,
                encoding=Encoding(row.encoding),
                received_at=row.received_at,
            )
            for row in rows
        ]

    async def assign_unrouted(
        self, msisdn: str, username: str, *, now: int, reply_window_ms: int
    ) -> int:
        """Give `msisdn` to the account and move the messages waiting for it there.

        The moved messages get a receive time of now (the account's cursors have moved on
        since they first arrived); the sender's own time is kept. Returns how many moved.
        """
        async with self.db.transaction("assign_unrouted") as connection:
            account_id = await account_id_for(connection, username)
            owner = await connection.scalar(NUMBER_OWNER, {"msisdn": msisdn})
            if owner is None:
                await claim_number(connection, msisdn, account_id, now)
            elif owner != account_id:
                raise AlreadyExists(f"number {msisdn} already belongs to another account")
            waiting = (
                await connection.execute(
                    select(t.unrouted)
                    .where(t.unrouted.c.recipient == msisdn)
                    .order_by(t.unrouted.c.id)
                )
            ).all()
            # Free the upstream ids first: the moved rows take them over.
            await connection.execute(delete(t.unrouted).where(t.unrouted.c.recipient == msisdn))
            arrivals = [
                Arrival(
                    InboundMessage(
                        sender=row.sender,
                        recipient=row.recipient,
                        text=row.text,
                        encoding=Encoding(row.encoding),
                        body=row.body,
                        upstream_id=row.upstream_id,
                        upstream_message_id=row.upstream_message_id,
                        reply_ref=row.reply_ref,
                        sent_at=row.sent_at,
                    ),
                    now,
                    reply_window_ms,
                )
                for row in waiting
            ]
            # The same path as any incoming message: the number routes to its new owner now.
            _, queued = await store_batch(await self.db.engine.driver(connection), arrivals)
            if queued:
                await self.db.engine.notify(connection, t.NOTIFY_CHANNEL)
        self.outbox_changed()
        return len(waiting)

    async def count_unrouted(self) -> int:
        async with self.db.snapshot("count_unrouted") as connection:
            count = await connection.scalar(select(func.count()).select_from(t.unrouted))
        return int(count or 0)


# The statements every message runs, built once. Building a statement and computing its
# cache key costs several times what SQLite takes to run it, and a message runs about ten.


_counters = t.account_counters.c
# Takes the account's next position; see _append_message.
_NEXT_POSITION = (
    update(t.account_counters)
    .where(_counters.account_id == bindparam("owner"))
    .values(
        last_seq=_counters.last_seq + 1,
        last_modseq=_counters.last_modseq + 1,
        last_received_at=case(
            (_counters.last_received_at > bindparam("now"), _counters.last_received_at),
            else_=bindparam("now"),
        ),
    )
    .returning(_counters.last_seq, _counters.last_modseq, _counters.last_received_at)
)
_INSERT_MESSAGE = insert(t.messages).returning(t.messages.c.id)


async def _append_message(
    engine: StorageEngine, connection: Connection, account_id: int, now: int, **fields: Any
) -> int:
    """Insert a message in the account's commit order and update its conversation.

    The counter row is updated first: its lock orders this account's writers, so the
    sequence number, id and clamped timestamp all follow commit order (DESIGN invariant 2).
    """
    position = (await connection.execute(_NEXT_POSITION, {"owner": account_id, "now": now})).one()
    message_id = await connection.scalar(
        _INSERT_MESSAGE,
        {
            "account_id": account_id,
            "seq": position.last_seq,
            "modseq": position.last_modseq,
            "created_modseq": position.last_modseq,
            "received_at": position.last_received_at,
            "status_at": position.last_received_at,
            **fields,
        },
    )
    assert message_id is not None
    incoming = fields["direction"] == Direction.INCOMING
    if incoming and fields["origin"] != "sim":
        # Messages the user's own device reported are theirs already; the rest is pushed.
        await enqueue_deliveries(engine, connection, account_id, int(message_id), "mo", now)
    unread = incoming and not fields.get("read", False)
    unsent = not incoming and fields["status"] in UNSENT_STATUSES
    driver = await engine.driver(connection)
    await driver.execute(
        BUMP_CONVERSATION,
        (
            account_id, fields["counterpart"], 1, int(unread), int(unsent), int(message_id),
            position.last_received_at, fields["text"][:SNIPPET_CHARS],
        ),
    )  # fmt: skip
    return int(message_id)


# The columns of `messages` in Message's field order, so a row unpacks straight into one.
MESSAGE_COLUMNS = tuple(t.messages.c[name] for name in Message._fields)
_DIRECTIONS = {direction.value: direction for direction in Direction}
_ENCODINGS = {encoding.value: encoding for encoding in Encoding}
_STATUSES = {status.value: status for status in MessageStatus}
_STATUS_AT = Message._fields.index("status")
_DIRECTION_AT = Message._fields.index("direction")
_ENCODING_AT = Message._fields.index("encoding")


def conversation_from_row(row: Row[Any]) -> Conversation:
    return Conversation(
        counterpart=row.counterpart,
        message_count=row.message_count,
        unread_count=row.unread_count,
        unsent_count=row.unsent_count,
        last_message_id=row.last_message_id,
        last_message_at=row.last_message_at,
        snippet=row.snippet,
    )


def message_from_row(row: Row[Any]) -> Message:
    """A Message from a row selected with MESSAGE_COLUMNS."""
    fields = list(row)
    fields[_DIRECTION_AT] = _DIRECTIONS[fields[_DIRECTION_AT]]
    fields[_ENCODING_AT] = _ENCODINGS[fields[_ENCODING_AT]]
    fields[_STATUS_AT] = _STATUSES[fields[_STATUS_AT]]
    return Message._make(fields)


async def recount_conversations(
    connection: Connection, account_id: int, counterparts: Iterable[str]
) -> None:
    """Recount conversations after messages left them; drop the ones left empty."""
    messages = t.messages.c
    conversations = t.conversations.c
    incoming = messages.direction == Direction.INCOMING.value
    unsent = and_(
        ~incoming, messages.status.in_(sorted(status.value for status in UNSENT_STATUSES))
    )
    for counterpart in counterparts:
        in_conversation = and_(
            messages.account_id == account_id,
            messages.counterpart == counterpart,
            messages.deleted.is_(False),
        )
        totals = (
            await connection.execute(
                select(
                    func.count(),
                    func.coalesce(func.sum(case((and_(incoming, ~messages.read), 1), else_=0)), 0),
                    func.coalesce(func.sum(case((unsent, 1), else_=0)), 0),
                ).where(in_conversation)
            )
        ).one()
        which = and_(
            conversations.account_id == account_id, conversations.counterpart == counterpart
        )
        if totals[0] == 0:
            await connection.execute(delete(t.conversations).where(which))
            continue
        last = (
            await connection.execute(
                select(messages.id, messages.received_at, messages.text)
                .where(in_conversation)
                .order_by(messages.id.desc())
                .limit(1)
            )
        ).one()
        await connection.execute(
            update(t.conversations)
            .where(which)
            .values(
                message_count=totals[0],
                unread_count=totals[1],
                unsent_count=totals[2],
                last_message_id=last.id,
                last_message_at=last.received_at,
                snippet=last.text[:SNIPPET_CHARS],
            )
        )


async def change_messages(
    connection: Connection, account_id: int, message_ids: Sequence[int], values: dict[str, Any]
) -> None:
    """Apply `values` to the messages, each with a modseq of its own, in id order."""
    if not message_ids:
        return
    counters = t.account_counters.c
    last = await connection.scalar(
        update(t.account_counters)
        .where(counters.account_id == account_id)
        .values(last_modseq=counters.last_modseq + len(message_ids))
        .returning(counters.last_modseq)
    )
    assert last is not None
    first = int(last) - len(message_ids) + 1
    await connection.execute(
        update(t.messages)
        .where(t.messages.c.id == bindparam("changed_id"))
        .values(modseq=bindparam("new_modseq"), **values),
        [
            {"changed_id": message_id, "new_modseq": first + offset}
            for offset, message_id in enumerate(message_ids)
        ],
    )
