"""Device sync: an account's changes in modseq order, device acknowledgements, tombstones."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NamedTuple

from sqlalchemy import func, select, text, update

from smsinbox.models import SyncedMessage
from smsinbox.store import tables as t
from smsinbox.store.base import StoreBase
from smsinbox.store.rows import synced_from_rows

# Only the columns a change shows: a sync of a thousand changes decoded every column of
# every row and built a 24-field Message of each.
_SYNCED_FIELDS = ", ".join(SyncedMessage._fields)  # names of our own columns, never input
_CHANGED = f"SELECT {_SYNCED_FIELDS} FROM messages WHERE account_id = ? AND modseq > ?"  # noqa: S608
_BY_MODSEQ = " ORDER BY modseq LIMIT ?"
# Two ways to read the changes and the account's counters in one snapshot: the newest modseq
# (modseqs are taken under the account's counter lock, so every change up to it has
# committed and the same snapshot sees it) and how far tombstones are purged (a purge
# committed later is not seen, and the deletes it forgets are still among the changes).
# PostgreSQL reads each statement in a snapshot of its own, and each is a round trip: the
# counters come in every row of the changes, one statement, a row of counters and nulls
# where nothing changed (three statements before, read newest first, purged last).
_JOINED = (
    "SELECT c.last_modseq, c.purged_modseq, "  # noqa: S608 (our own column names)
    + ", ".join(f"m.{name}" for name in SyncedMessage._fields)
    + " FROM account_counters c LEFT JOIN ({changed}) m ON true"
    " WHERE c.account_id = ? ORDER BY m.modseq"
)
# SQLite's read transaction is the snapshot and a statement costs no round trip, while the
# joined statement had it copy the thousand rows into a temporary table and sort them again
# (4.1 ms against 3.0 ms for a sync's statements over the 10k history): the counters first,
# then the changes with two empty columns, in the joined statement's shape.
_COUNTERS = "SELECT last_modseq, purged_modseq FROM account_counters WHERE account_id = ?"
_PADDED = f"SELECT NULL, NULL, {_SYNCED_FIELDS} FROM messages WHERE account_id = ? AND modseq > ?"  # noqa: S608


class ChangeStatements(NamedTuple):
    """An engine's statements of the changes: with deletes, and without (a first sync)."""

    all: str
    kept: str


_KEPT = " AND deleted = false"
CHANGES_JOINED = ChangeStatements(  # parameters: account, after, limit, account
    _JOINED.format(changed=_CHANGED + _BY_MODSEQ),
    _JOINED.format(changed=_CHANGED + _KEPT + _BY_MODSEQ),
)
CHANGES_PADDED = ChangeStatements(  # parameters: account, after, limit
    _PADDED + _BY_MODSEQ, _PADDED + _KEPT + _BY_MODSEQ
)

# The device's acknowledged modseq raised to the one it acknowledges, capped by the newest
# that exists (MAX: a row even for an account without counters), never lowered. CASE, not
# greatest()/max(), which the two engines spell differently.
_NEWEST_OR_ZERO = "COALESCE(MAX(last_modseq), 0)"
_KNOWN = "COALESCE(devices.acked_modseq, 0)"
_ACKNOWLEDGE = (
    "UPDATE devices SET last_sync_at = ?, acked_modseq = ("  # noqa: S608
    f"SELECT CASE WHEN {_KNOWN} >= capped THEN {_KNOWN} ELSE capped END FROM ("
    f"SELECT CASE WHEN CAST(? AS BIGINT) < {_NEWEST_OR_ZERO} THEN CAST(? AS BIGINT)"
    f" ELSE {_NEWEST_OR_ZERO} END AS capped FROM account_counters WHERE account_id = ?) newest)"
    " WHERE id = ? AND account_id = ? RETURNING acked_modseq"
)


class SyncStore(StoreBase):
    async def mailbox_versions(self, account_ids: list[int]) -> dict[int, int]:
        """Each account's newest modseq: it grows with every change to its messages."""
        if not account_ids:
            return {}
        marks = ", ".join("?" * len(account_ids))
        async with self.db.driver_snapshot("mailbox_versions") as driver:
            rows = await driver.fetch(
                f"SELECT account_id, last_modseq FROM account_counters"  # noqa: S608 (marks)
                f" WHERE account_id IN ({marks})",
                account_ids,
            )
        return {int(account_id): int(modseq) for account_id, modseq in rows}

    async def list_changes(
        self, account_id: int, *, after_modseq: int, limit: int, include_deleted: bool
    ) -> tuple[list[SyncedMessage], int, int]:
        """Up to `limit` messages changed after `after_modseq`, in modseq order; the modseq
        below which tombstones have been purged; and the newest modseq committed before the
        messages were read (every change up to it is among them or before them)."""
        # Driver level: a sync of a thousand changes spent most of its time in SQLAlchemy's
        # handling of the rows.
        counters: Sequence[Any] | None
        async with self.db.driver_snapshot("list_changes") as driver:
            if driver.remote:
                joined = CHANGES_JOINED.all if include_deleted else CHANGES_JOINED.kept
                rows = await driver.fetch(joined, (account_id, after_modseq, limit, account_id))
                counters = (rows[0][0], rows[0][1]) if rows else None
                if rows and rows[0][2] is None:
                    rows = []  # nothing changed: the counters' row alone
            else:
                counters = await driver.fetchrow(_COUNTERS, (account_id,))
                padded = CHANGES_PADDED.all if include_deleted else CHANGES_PADDED.kept
                rows = await driver.fetch(padded, (account_id, after_modseq, limit))
        if counters is None:  # every account has its counters from its creation on
            raise LookupError(f"account {account_id} has no counters")
        newest, purged = counters
        return synced_from_rows(rows), int(purged), int(newest)

    async def find_device_message(
        self, account_id: int, device_id: int, device_message_id: str
    ) -> int | None:
        messages = t.messages.c
        async with self.db.snapshot("find_device_message") as connection:
            found = await connection.scalar(
                select(messages.id)
                .where(messages.account_id == account_id)
                .where(messages.device_id == device_id)
                .where(messages.device_message_id == device_message_id)
            )
        return None if found is None else int(found)

    async def acknowledge_sync(
        self, account_id: int, device_id: int, modseq: int, *, now: int
    ) -> int | None:
        """Record that the device holds the account's state up to `modseq` (never lowers
        it, never beyond what exists); returns the device's acknowledged modseq, or None if
        the account has no such device."""
        # One statement, which on PostgreSQL commits on its own: every sync acknowledges,
        # and a transaction of three statements through SQLAlchemy cost more than the rest
        # of the sync's statements together.
        async with self.db.driver_write("acknowledge_sync") as driver:
            acked = await driver.fetchrow(
                _ACKNOWLEDGE, (now, modseq, modseq, account_id, device_id, account_id)
            )
        return None if acked is None else int(acked[0])

    async def accounts_with_tombstones(self, *, deleted_before: int) -> list[int]:
        """Accounts holding deletes older than `deleted_before` (read from the small index)."""
        messages = t.messages.c
        async with self.db.snapshot("find_tombstones") as connection:
            rows = await connection.scalars(
                select(messages.account_id)
                .where(text(t.TOMBSTONE))
                .where(messages.deleted_at < deleted_before)
                .distinct()
                .order_by(messages.account_id)
            )
            return [int(account_id) for account_id in rows]

    async def count_expired_tombstones(self, *, deleted_before: int) -> int:
        """How many deletes `purge_tombstones` would forget now, over every account."""
        messages = t.messages.c
        async with self.db.snapshot("count_tombstones") as connection:
            found = await connection.scalar(
                select(func.count())
                .select_from(t.messages)
                .where(text(t.TOMBSTONE))
                .where(messages.deleted_at < deleted_before)
            )
        return int(found or 0)

    async def purge_tombstones(self, account_id: int, *, deleted_before: int, batch: int) -> int:
        """Forget up to `batch` deletes older than `deleted_before`; devices that have not
        synced past them must resync (purged_modseq records how far that reaches)."""
        messages = t.messages.c
        counters = t.account_counters.c
        async with self.db.transaction("purge_tombstones") as connection:
            doomed = (
                await connection.execute(
                    select(messages.id, messages.modseq)
                    .where(messages.account_id == account_id)
                    .where(text(t.TOMBSTONE))  # literally the partial index's condition
                    .where(messages.deleted_at < deleted_before)
                    .order_by(messages.modseq)
                    .limit(batch)
                )
            ).all()
            if not doomed:
                return 0
            highest = max(row.modseq for row in doomed)
            await connection.execute(
                t.messages.delete().where(messages.id.in_([row.id for row in doomed]))
            )
            await connection.execute(
                update(t.account_counters)
                .where(counters.account_id == account_id)
                .values(purged_modseq=self.db.engine.greatest(counters.purged_modseq, highest))
            )
            return len(doomed)
