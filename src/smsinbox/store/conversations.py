"""Conversations: one per account and counterpart, with its counts and latest message.

Adding a message bumps its conversation in the same statement batch (store/ingest.py's
BUMP_CONVERSATION); anything that takes messages away or changes whether they are read or
unsent recounts the conversations it touched from the messages themselves.
"""

from __future__ import annotations

from collections.abc import Iterable

from sqlalchemy import and_, case, delete, func, select, update

from smsinbox.models import UNSENT_STATUSES, Conversation, Direction
from smsinbox.store import tables as t
from smsinbox.store.base import StoreBase
from smsinbox.store.database import Connection
from smsinbox.store.rows import conversation_from_row


class ConversationStore(StoreBase):
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
                snippet=last.text[: t.SNIPPET_CHARS],
            )
        )
