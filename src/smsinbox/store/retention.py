"""Pruning old messages: the per-account "capped collection". Locked messages stay."""

from __future__ import annotations

from sqlalchemy import ColumnElement, delete, func, select

from smsinbox.store import tables as t
from smsinbox.store.base import StoreBase
from smsinbox.store.conversations import recount_conversations
from smsinbox.store.database import Connection


class RetentionStore(StoreBase):
    async def list_account_ids(self, *, min_messages_ever: int = 0) -> list[int]:
        """Accounts that have ever stored more than `min_messages_ever` messages."""
        counters = t.account_counters.c
        async with self.db.snapshot("list_account_ids") as connection:
            rows = await connection.scalars(
                select(counters.account_id)
                .where(counters.last_seq > min_messages_ever)
                .order_by(counters.account_id)
            )
            return [int(account_id) for account_id in rows]

    async def prune_beyond_count(self, account_id: int, *, keep: int, batch: int) -> int:
        """Delete up to `batch` unlocked messages older than the account's `keep` newest."""
        messages = t.messages.c
        async with self.db.transaction("prune_beyond_count") as connection:
            oldest_kept = await _oldest_kept(connection, account_id, keep)
            if oldest_kept is None:
                return 0
            return await _prune(connection, account_id, messages.seq < oldest_kept, batch)

    async def count_prunable(
        self, account_id: int, *, keep: int, before_ms: int | None
    ) -> tuple[int, int]:
        """How many messages `prune_beyond_count` (keep > 0) and then `prune_older_than`
        (before_ms not None) would delete now: the same conditions, counted."""
        messages = t.messages.c
        prunable = (
            select(func.count())
            .select_from(t.messages)
            .where(messages.account_id == account_id)
            .where(messages.locked.is_(False))
            .where(messages.deleted.is_(False))
        )
        async with self.db.snapshot("count_prunable") as connection:
            oldest_kept = await _oldest_kept(connection, account_id, keep) if keep > 0 else None
            by_count = 0
            if oldest_kept is not None:
                by_count = int(
                    await connection.scalar(prunable.where(messages.seq < oldest_kept)) or 0
                )
            by_age = 0
            if before_ms is not None:
                expired = prunable.where(messages.received_at < before_ms)
                if oldest_kept is not None:
                    expired = expired.where(messages.seq >= oldest_kept)  # counted above
                by_age = int(await connection.scalar(expired) or 0)
        return by_count, by_age

    async def prune_older_than(self, account_id: int, *, before_ms: int, batch: int) -> int:
        """Delete up to `batch` unlocked messages received before `before_ms`."""
        messages = t.messages.c
        async with self.db.snapshot("find_expired") as connection:
            # Most accounts have nothing due: find that out without taking the writer.
            due = await connection.scalar(
                select(messages.id)
                .where(messages.account_id == account_id)
                .where(messages.received_at < before_ms)
                .where(messages.locked.is_(False))
                .limit(1)
            )
        if due is None:
            return 0
        async with self.db.transaction("prune_older_than") as connection:
            return await _prune(connection, account_id, t.messages.c.received_at < before_ms, batch)


async def _oldest_kept(connection: Connection, account_id: int, keep: int) -> int | None:
    """The seq of the oldest of the account's `keep` newest messages; None if it has fewer."""
    messages = t.messages.c
    found = await connection.scalar(
        select(messages.seq)
        .where(messages.account_id == account_id)
        .order_by(messages.seq.desc())
        .offset(keep - 1)
        .limit(1)
    )
    return None if found is None else int(found)


async def _prune(
    connection: Connection, account_id: int, condition: ColumnElement[bool], batch: int
) -> int:
    messages = t.messages.c
    doomed = (
        await connection.execute(
            select(messages.id, messages.counterpart)
            .where(messages.account_id == account_id)
            .where(condition)
            .where(messages.locked.is_(False))
            # Tombstones go only through purge_tombstones, which tells devices to resync.
            .where(messages.deleted.is_(False))
            .order_by(messages.seq)
            .limit(batch)
        )
    ).all()
    if not doomed:
        return 0
    await connection.execute(delete(t.messages).where(messages.id.in_([row.id for row in doomed])))
    await recount_conversations(connection, account_id, {row.counterpart for row in doomed})
    return len(doomed)
