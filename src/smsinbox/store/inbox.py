"""Reading an account's messages in commit order, by time cursor or by id cursor."""

from __future__ import annotations

import dataclasses
import functools
import operator
from collections.abc import Awaitable, Callable, Sequence

from sqlalchemy import select, update

from smsinbox.models import Direction, MessageStatus, PolledMessage
from smsinbox.store import tables as t
from smsinbox.store.base import StoreBase
from smsinbox.store.database import Connection
from smsinbox.store.driver import Row
from smsinbox.store.rows import polled_from_rows


@dataclasses.dataclass(frozen=True, slots=True)
class TimePage:
    """Messages of whole, closed seconds after a time cursor."""

    messages: list[PolledMessage]
    has_more: bool
    # The account's receive-time watermark as the read found it (or raised it): at least
    # the start of the second open when it read. Watermarks only rise.
    watermark: int


def whole_seconds(
    rows: Sequence[PolledMessage], limit: int
) -> tuple[list[PolledMessage], int | None]:
    """Trim `rows` (at most limit + 1, in commit order) so no second is split.

    Returns the page and, when a single second holds more than `limit` messages, that second
    (in epoch seconds): the caller must then return the whole second instead.
    """
    if len(rows) <= limit:
        return list(rows), None
    first_left_out = rows[limit].received_at // 1000
    # Rows are in receive-time order: drop, from the end, those of the second left out.
    end = limit
    while end and rows[end - 1].received_at // 1000 >= first_left_out:
        end -= 1
    if not end:
        return [], first_left_out
    return list(rows[:end]), None


# The page statements, written out for the driver: a poll's page is its one real query.
_COLUMNS = ", ".join(PolledMessage._fields)  # names of our own columns, never input
_counters = t.account_counters.c
_WATERMARK = "SELECT last_received_at FROM account_counters WHERE account_id = ?"
# A direction filter: all of them (no condition), or one (a parameter after the others).
_ONE_DIRECTION = " AND direction = ?"
_TIME_WINDOW = (
    f"SELECT {_COLUMNS} FROM messages WHERE account_id = ? AND deleted = false"  # noqa: S608
    " AND received_at >= ? AND received_at < ?"
)
_ID_WINDOW = (
    f"SELECT {_COLUMNS} FROM messages WHERE account_id = ?"  # noqa: S608
    " AND deleted = false AND id > ?"
)
_TIME_ORDER = " ORDER BY received_at, id"
_STATUS = operator.attrgetter("status")


def _filtered(window: str, directions: tuple[Direction, ...]) -> tuple[str, tuple[str, ...]]:
    """`window` narrowed to `directions`: the SQL and the parameters it adds."""
    if len(directions) == 1:
        return window + _ONE_DIRECTION, (directions[0].value,)
    return window, ()


class InboxStore(StoreBase):
    async def page_by_time(
        self,
        account_id: int,
        *,
        after_ms: int,
        limit: int,
        directions: tuple[Direction, ...],
        clock: Callable[[], int],
        mark_retrieved: bool,
        watermark_at_least: int = 0,
    ) -> TimePage:
        """Messages received at or after `after_ms`, in whole seconds that have closed.

        Only seconds before the one now open are returned, and the account's receive-time
        watermark is at the open second first. Writers clamp their receive time to that
        watermark, so a message committed after this page always lands in a second no client
        has been given yet, whatever the writer's clock said when it started: cursors never
        skip it. Raising the watermark waits for the account's counter lock (PostgreSQL) or
        the single writer (SQLite), so every writer that started earlier has committed.

        `watermark_at_least`: a watermark the caller saw committed for this account. Since
        watermarks only rise, one at the open second already spares reading it again.
        """
        open_second_starts = clock() // 1000 * 1000
        if watermark_at_least >= open_second_starts:
            # Seen raised already (most polls): the page is the one statement to read.
            messages, has_more = await _time_page(
                functools.partial(self.db.read_rows, "page_by_time"),
                account_id,
                after_ms,
                open_second_starts,
                limit,
                directions,
            )
            page = TimePage(messages, has_more, watermark_at_least)
            if not (mark_retrieved and _unretrieved(page)):
                return page
        else:
            async with self.db.driver_snapshot("page_by_time") as driver:
                watermark = await driver.fetchval(_WATERMARK, (account_id,))
                if watermark is not None and watermark >= open_second_starts:
                    # Raised: everything before it is committed and in this snapshot.
                    messages, has_more = await _time_page(
                        driver.fetch, account_id, after_ms, open_second_starts, limit, directions
                    )
                    page = TimePage(messages, has_more, watermark)
                    if not (mark_retrieved and _unretrieved(page)):
                        return page
        async with self.db.transaction("page_by_time_raising") as connection:
            # The counter row first: this account's writers wait (PostgreSQL's row lock).
            await self._lock_counters(connection, [account_id])
            open_second_starts = clock() // 1000 * 1000
            await _raise_watermarks(connection, [account_id], open_second_starts)
            messages, has_more = await _time_page(
                (await self.db.engine.driver(connection)).fetch,
                account_id,
                after_ms,
                open_second_starts,
                limit,
                directions,
            )
            page = TimePage(messages, has_more, open_second_starts)
            fresh = _unretrieved(page) if mark_retrieved else []
            if fresh:
                await connection.execute(
                    update(t.messages)
                    .where(t.messages.c.id.in_(fresh))
                    .values(status=MessageStatus.RETRIEVED.value)
                )
        return page

    async def raise_watermarks(self, account_ids: Sequence[int], *, to_ms: int) -> None:
        """Raise these accounts' receive-time watermarks to `to_ms` (a second's start), as a
        poll in that second would (see page_by_time), so that their polls in it read the
        page without a write transaction of their own and its durable commit."""
        ordered = sorted(set(account_ids))
        async with self.db.transaction("raise_watermarks") as connection:
            await self._lock_counters(connection, ordered)
            await _raise_watermarks(connection, ordered, to_ms)

    async def _lock_counters(self, connection: Connection, account_ids: Sequence[int]) -> None:
        """Lock these accounts' counter rows, in account order as ingest batches take them
        (so neither waits for the other in a cycle)."""
        await connection.execute(
            self.db.engine.for_update(
                select(_counters.account_id)
                .where(_counters.account_id.in_(account_ids))
                .order_by(_counters.account_id)
            )
        )

    async def page_by_id(
        self,
        account_id: int,
        *,
        after_id: int,
        limit: int,
        directions: tuple[Direction, ...],
    ) -> list[PolledMessage]:
        """Messages with an id above `after_id`, ascending.

        Ids follow commit order within an account (they are taken under the account's
        counter lock), so no message can later appear below an id already returned.
        """
        sql, narrowing = _filtered(_ID_WINDOW, directions)
        rows = await self.db.read_rows(
            "page_by_id", sql + " ORDER BY id LIMIT ?", (account_id, after_id, *narrowing, limit)
        )
        return polled_from_rows(rows)


async def _raise_watermarks(connection: Connection, account_ids: Sequence[int], to_ms: int) -> None:
    """Receive-time watermarks of these accounts (their counter rows locked) up to `to_ms`."""
    await connection.execute(
        update(t.account_counters)
        .where(_counters.account_id.in_(account_ids))
        .where(_counters.last_received_at < to_ms)
        .values(last_received_at=to_ms)
    )


def _unretrieved(page: TimePage) -> list[int]:
    received = MessageStatus.RECEIVED
    # Most pages have none left: one scan in C says so before any list is built.
    if received not in map(_STATUS, page.messages):
        return []
    return [m.id for m in page.messages if m.status is received]


async def _time_page(
    fetch: Callable[[str, Sequence[object]], Awaitable[list[Row]]],
    account_id: int,
    after_ms: int,
    before_ms: int,
    limit: int,
    directions: tuple[Direction, ...],
) -> tuple[list[PolledMessage], bool]:
    """Up to `limit` messages in [after_ms, before_ms), cut at a second boundary, and
    whether more follow. `fetch` reads a statement's rows: statements of one snapshot, or
    each its own (they read only closed seconds, which no writer changes)."""
    window, narrowing = _filtered(_TIME_WINDOW, directions)
    bounds = (account_id, after_ms, before_ms, *narrowing)
    found = await fetch(window + _TIME_ORDER + " LIMIT ?", (*bounds, limit + 1))
    rows = polled_from_rows(found)
    page, crowded_second = whole_seconds(rows, limit)
    if crowded_second is None:
        return page, len(rows) > limit
    # One second alone holds more than a page: return all of it, never half.
    second_end = (crowded_second + 1) * 1000
    whole = await fetch(window + " AND received_at < ?" + _TIME_ORDER, (*bounds, second_end))
    later = await fetch(
        window + " AND received_at >= ?" + _TIME_ORDER + " LIMIT 1", (*bounds, second_end)
    )
    return polled_from_rows(whole), bool(later)
