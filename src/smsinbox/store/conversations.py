"""Conversations: one per account and counterpart, with its counts and latest message.

Adding a message bumps its conversation in the same statement batch (store/ingest.py's
BUMP_CONVERSATION); anything that takes messages away or changes whether they are read or
unsent recounts the conversations it touched from the messages themselves.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable

from sqlalchemy import and_, case, delete, func, insert, select, update

from smsinbox.models import UNSENT_STATUSES, Conversation, Direction
from smsinbox.store import tables as t
from smsinbox.store.base import StoreBase, account_id_for
from smsinbox.store.database import Connection
from smsinbox.store.rows import conversation_from_row


@dataclasses.dataclass(frozen=True, slots=True)
class Recount:
    """One account's conversations checked against its messages: how many there should be,
    and how many rows were (or, in a dry run, would be) added, corrected or removed."""

    conversations: int
    added: int
    corrected: int
    removed: int


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

    async def recount_account(
        self, username: str, *, dry_run: bool = False, snippet_chars: int = t.SNIPPET_CHARS
    ) -> Recount:
        """Rebuild the account's conversations from its messages: counts, latest message,
        snippet; a conversation missing is added, one without messages removed. One
        transaction; its conversation rows are locked first, so a message stored meanwhile
        bumps its conversation after the recount, never under it."""
        messages = t.messages.c
        conversations = t.conversations.c
        incoming = messages.direction == Direction.INCOMING.value
        unsent = and_(
            ~incoming, messages.status.in_(sorted(status.value for status in UNSENT_STATUSES))
        )
        opened = self.db.snapshot if dry_run else self.db.transaction
        async with opened("recount_conversations") as connection:
            account_id = await account_id_for(connection, username)
            existing = {
                row.counterpart: row
                for row in await connection.execute(
                    select(t.conversations)
                    .where(conversations.account_id == account_id)
                    .with_for_update()
                )
            }
            totals = (
                select(
                    messages.counterpart,
                    func.count().label("message_count"),
                    func.sum(case((and_(incoming, ~messages.read), 1), else_=0)).label("unread"),
                    func.sum(case((unsent, 1), else_=0)).label("unsent"),
                    func.max(messages.id).label("last_id"),
                )
                .where(messages.account_id == account_id)
                .where(messages.deleted.is_(False))
                .group_by(messages.counterpart)
                .subquery()
            )
            latest = t.messages.alias("latest")
            rows = await connection.execute(
                select(totals, latest.c.received_at, latest.c.text).join(
                    latest, latest.c.id == totals.c.last_id
                )
            )
            expected = {
                row.counterpart: {
                    "message_count": int(row.message_count),
                    "unread_count": int(row.unread or 0),
                    "unsent_count": int(row.unsent or 0),
                    "last_message_id": int(row.last_id),
                    "last_message_at": int(row.received_at),
                    "snippet": row.text[:snippet_chars],
                }
                for row in rows
            }
            added = [c for c in expected if c not in existing]
            corrected = [
                c
                for c, values in expected.items()
                if c in existing
                and any(getattr(existing[c], name) != value for name, value in values.items())
            ]
            removed = [c for c in existing if c not in expected]
            if not dry_run:
                for counterpart in added:
                    await connection.execute(
                        insert(t.conversations).values(
                            account_id=account_id, counterpart=counterpart, **expected[counterpart]
                        )
                    )
                for counterpart in corrected:
                    await connection.execute(
                        update(t.conversations)
                        .where(conversations.id == existing[counterpart].id)
                        .values(**expected[counterpart])
                    )
                if removed:
                    await connection.execute(
                        delete(t.conversations)
                        .where(conversations.account_id == account_id)
                        .where(conversations.counterpart.in_(removed))
                    )
        return Recount(len(expected), len(added), len(corrected), len(removed))


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
