"""Outgoing messages after they are recorded: the dispatcher's due list, its claim, and the
status each reaches (with the status push it queues)."""

from __future__ import annotations

from sqlalchemy import and_, or_, select, text, update

from smsinbox.models import Message, MessageStatus
from smsinbox.store import tables as t
from smsinbox.store.base import StoreBase
from smsinbox.store.conversations import recount_conversations
from smsinbox.store.messages import change_messages
from smsinbox.store.push import enqueue_deliveries
from smsinbox.store.rows import MESSAGE_COLUMNS, message_from_row


class OutgoingStore(StoreBase):
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
