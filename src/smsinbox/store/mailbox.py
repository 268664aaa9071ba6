"""An account's own view of its messages: conversations, reading, locking, deleting, search.

Every method takes the account id of the authenticated principal and touches nothing
outside that account, whatever ids it is given (DESIGN invariant 5). Every change bumps the
changed messages' modseq, so devices can sync it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import ColumnElement, or_, select

from smsinbox.models import Conversation, Direction, Message
from smsinbox.store import tables as t
from smsinbox.store.base import StoreBase
from smsinbox.store.conversations import recount_conversations
from smsinbox.store.database import Connection
from smsinbox.store.messages import change_messages
from smsinbox.store.rows import MESSAGE_COLUMNS, conversation_from_row, message_from_row

# The messages a search may find, before the caller's own conditions: the account's, not
# deleted (a condition on `messages` named `m`; parameter: the account).
_SEARCHABLE = "m.account_id = ? AND m.deleted = false"


_UNREAD = "SELECT COALESCE(SUM(unread_count), 0) FROM conversations WHERE account_id = ?"


class MailboxStore(StoreBase):
    async def count_unread(self, account_id: int) -> int:
        """Unread messages in all of the account's conversations."""
        row = await self.db.read_row("count_unread", _UNREAD, (account_id,))
        return 0 if row is None else int(row[0])

    async def list_conversations_with_names(
        self, account_id: int, *, offset: int, limit: int
    ) -> list[tuple[Conversation, str | None]]:
        """Conversations, most recent first, each with the name of a matching contact."""
        conversations = t.conversations.c
        # The page first, the names for its rows after: a sub-select in the page's own
        # select list runs for every row OFFSET skips too (PostgreSQL computes a row before
        # it skips it), and the last page of 10,000 conversations took 13-19 ms so.
        newest_first = (conversations.last_message_at.desc(), conversations.id.desc())
        page = (
            select(t.conversations)
            .where(conversations.account_id == account_id)
            .order_by(*newest_first)
            .offset(offset)
            .limit(limit)
            .subquery("page")
        )
        contact_name = (
            select(t.contacts.c.name)
            .join(t.contact_numbers, t.contact_numbers.c.contact_id == t.contacts.c.id)
            .where(t.contacts.c.account_id == account_id)
            .where(t.contact_numbers.c.msisdn == page.c.counterpart)
            .order_by(t.contacts.c.id)
            .limit(1)
            .scalar_subquery()
        )
        async with self.db.snapshot("list_conversations_with_names") as connection:
            rows = (
                await connection.execute(
                    select(page, contact_name.label("contact_name")).order_by(
                        page.c.last_message_at.desc(), page.c.id.desc()
                    )
                )
            ).all()
        return [(conversation_from_row(row), row.contact_name) for row in rows]

    async def list_conversation_messages(
        self, account_id: int, counterpart: str, *, offset: int, limit: int
    ) -> list[Message]:
        """A conversation's messages, newest first."""
        messages = t.messages.c
        async with self.db.snapshot("list_conversation_messages") as connection:
            rows = await connection.execute(
                select(*MESSAGE_COLUMNS)
                .where(messages.account_id == account_id)
                .where(messages.counterpart == counterpart)
                .where(messages.deleted.is_(False))
                .order_by(messages.id.desc())
                .offset(offset)
                .limit(limit)
            )
            return [message_from_row(row) for row in rows.all()]

    async def get_messages(self, account_id: int, message_ids: Sequence[int]) -> list[Message]:
        messages = t.messages.c
        async with self.db.snapshot("get_messages") as connection:
            rows = await connection.execute(
                select(*MESSAGE_COLUMNS)
                .where(messages.account_id == account_id)
                .where(messages.id.in_(list(message_ids)))
                .where(messages.deleted.is_(False))
                .order_by(messages.id)
            )
            return [message_from_row(row) for row in rows.all()]

    async def mark_conversations_read(
        self, account_id: int, counterparts: Sequence[str], *, now: int
    ) -> int:
        """Mark every incoming message of the conversations read; returns how many changed."""
        messages = t.messages.c
        async with self.db.transaction("mark_conversations_read") as connection:
            changed = await _select_ids(
                connection,
                account_id,
                messages.counterpart.in_(list(counterparts)),
                messages.direction == Direction.INCOMING.value,
                messages.read.is_(False),
            )
            await change_messages(connection, account_id, changed, {"read": True})
            await recount_conversations(connection, account_id, counterparts)
            return len(changed)

    async def delete_messages(
        self,
        account_id: int,
        *,
        message_ids: Sequence[int] = (),
        counterparts: Sequence[str] = (),
        now: int,
    ) -> tuple[int, list[int]]:
        """Delete the unlocked ones among the given messages and conversations.

        Deleted messages stay as tombstones until retention purges them, so devices learn of
        the delete. Returns how many were deleted and the ids of the locked ones kept.
        """
        messages = t.messages.c
        async with self.db.transaction("delete_messages") as connection:
            rows = (
                await connection.execute(
                    select(messages.id, messages.locked, messages.counterpart)
                    .where(messages.account_id == account_id)
                    .where(messages.deleted.is_(False))
                    .where(
                        or_(
                            messages.id.in_(list(message_ids)),
                            messages.counterpart.in_(list(counterparts)),
                        )
                    )
                    .order_by(messages.id)
                )
            ).all()
            doomed = [row.id for row in rows if not row.locked]
            kept = [row.id for row in rows if row.locked]
            await change_messages(
                connection, account_id, doomed, {"deleted": True, "deleted_at": now}
            )
            await recount_conversations(connection, account_id, {row.counterpart for row in rows})
            return len(doomed), kept

    async def set_locked(self, account_id: int, message_ids: Sequence[int], locked: bool) -> int:
        messages = t.messages.c
        async with self.db.transaction("set_locked") as connection:
            changed = await _select_ids(
                connection,
                account_id,
                messages.id.in_(list(message_ids)),
                messages.locked != locked,
            )
            await change_messages(connection, account_id, changed, {"locked": locked})
            return len(changed)

    async def update_message(
        self, account_id: int, message_id: int, values: dict[str, Any], *, now: int
    ) -> Message | None:
        """Change read, locked or status of one message; None if it is not the account's."""
        messages = t.messages.c
        async with self.db.transaction("update_message") as connection:
            row = (
                await connection.execute(
                    select(*MESSAGE_COLUMNS)
                    .where(messages.account_id == account_id)
                    .where(messages.id == message_id)
                    .where(messages.deleted.is_(False))
                )
            ).first()
            if row is None:
                return None
            current = message_from_row(row)
            wanted = {k: v for k, v in values.items() if getattr(current, k) != v}
            if "status" in wanted:
                wanted["status_at"] = now
            if wanted:
                await change_messages(connection, account_id, [message_id], wanted)
                await recount_conversations(connection, account_id, [current.counterpart])
            updated = (
                await connection.execute(
                    select(*MESSAGE_COLUMNS)
                    .where(messages.account_id == account_id)
                    .where(messages.id == message_id)
                )
            ).one()
            return message_from_row(updated)

    async def search_messages(
        self,
        account_id: int,
        query: str,
        *,
        counterpart: str | None,
        locked: bool | None,
        limit: int,
    ) -> list[Message]:
        """Messages whose text or address contains `query` (3+ characters), newest first."""
        # Driver level: a search of a hundred rows spent more of its time building,
        # compiling and unwrapping SQLAlchemy's statement and rows than in the database.
        where = _SEARCHABLE
        parameters: list[Any] = [account_id]
        if counterpart is not None:
            where += " AND m.counterpart = ?"
            parameters.append(counterpart)
        if locked is not None:
            where += " AND m.locked = ?"
            parameters.append(locked)
        await self.db.prepare_search()
        async with self.db.driver_snapshot("search_messages") as driver:
            rows = await self.db.engine.search(driver, where, parameters, account_id, query, limit)
        return [message_from_row(row) for row in rows]


async def _select_ids(
    connection: Connection, account_id: int, *conditions: ColumnElement[bool]
) -> list[int]:
    messages = t.messages.c
    rows = await connection.scalars(
        select(messages.id)
        .where(messages.account_id == account_id)
        .where(messages.deleted.is_(False))
        .where(*conditions)
        .order_by(messages.id)
    )
    return [int(message_id) for message_id in rows]
