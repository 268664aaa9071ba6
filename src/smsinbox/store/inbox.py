"""Reading an account's messages in commit order, by time cursor or by id cursor."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import Any

from sqlalchemy import Select, bindparam, select, update

from smsinbox.models import Direction, Message
from smsinbox.store import tables as t
from smsinbox.store.base import StoreBase
from smsinbox.store.database import Connection
from smsinbox.store.messages import MESSAGE_COLUMNS, message_from_row


@dataclasses.dataclass(frozen=True, slots=True)
class TimePage:
    """Messages of whole, closed seconds after a time cursor."""

    messages: list[Message]
    has_more: bool


def whole_seconds(rows: Sequence[Message], limit: int) -> tuple[list[Message], int | None]:
    """Trim `rows` (at most limit + 1, in commit order) so no second is split.

    Returns the page and, when a single second holds more than `limit` messages, that second
    (in epoch seconds): the caller must then return the whole second instead.
    """
    if len(rows) <= limit:
        return list(rows), None
    first_left_out = rows[limit].received_at // 1000
    page = [m for m in rows[:limit] if m.received_at // 1000 < first_left_out]
    if not page:
        return [], first_left_out
    return page, None


def _directions(query: Select[Any], directions: tuple[Direction, ...]) -> Select[Any]:
    if len(directions) == 1:
        return query.where(t.messages.c.direction == directions[0].value)
    return query


def _by_direction(
    build: Callable[[tuple[Direction, ...]], Select[Any]],
) -> dict[frozenset[Direction], Select[Any]]:
    """A statement for each direction filter a page may ask for, by the set of directions."""
    return {frozenset(directions): build(directions) for directions in DIRECTION_FILTERS}


# The page statements, built once: a poll's page is its one real query, and building it
# anew cost more than SQLite takes to run it.
DIRECTION_FILTERS = ((Direction.INCOMING,), (Direction.OUTGOING,), tuple(Direction))
_messages = t.messages.c
_counters = t.account_counters.c
_WATERMARK = select(_counters.last_received_at).where(
    _counters.account_id == bindparam("account_id")
)
_TIME_WINDOW = _by_direction(
    lambda directions: _directions(
        select(*MESSAGE_COLUMNS)
        .where(_messages.account_id == bindparam("account_id"))
        .where(_messages.deleted.is_(False))
        .where(_messages.received_at >= bindparam("after_ms"))
        .where(_messages.received_at < bindparam("before_ms")),
        directions,
    )
)
_TIME_PAGE = {
    directions: window.order_by(_messages.received_at, _messages.id).limit(bindparam("rows"))
    for directions, window in _TIME_WINDOW.items()
}
_ID_PAGE = _by_direction(
    lambda directions: (
        _directions(
            select(*MESSAGE_COLUMNS)
            .where(_messages.account_id == bindparam("account_id"))
            .where(_messages.deleted.is_(False))
            .where(_messages.id > bindparam("after_id")),
            directions,
        )
        .order_by(_messages.id)
        .limit(bindparam("rows"))
    )
)


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
    ) -> TimePage:
        """Messages received at or after `after_ms`, in whole seconds that have closed.

        Only seconds before the one now open are returned, and the account's receive-time
        watermark is at the open second first. Writers clamp their receive time to that
        watermark, so a message committed after this page always lands in a second no client
        has been given yet, whatever the writer's clock said when it started: cursors never
        skip it. Raising the watermark waits for the account's counter lock (PostgreSQL) or
        the single writer (SQLite), so every writer that started earlier has committed.
        """
        open_second_starts = clock() // 1000 * 1000
        async with self.db.snapshot("page_by_time") as connection:
            watermark = await connection.scalar(_WATERMARK, {"account_id": account_id})
            if watermark is not None and watermark >= open_second_starts:
                # Raised already: everything before it is committed and in this snapshot.
                page = await _time_page(
                    connection, account_id, after_ms, open_second_starts, limit, directions
                )
                if not (mark_retrieved and _unretrieved(page)):
                    return page
        async with self.db.transaction("page_by_time_raising") as connection:
            # The counter row first: this account's writers wait (PostgreSQL's row lock).
            await connection.execute(
                self.db.engine.for_update(
                    select(_counters.account_id).where(_counters.account_id == account_id)
                )
            )
            open_second_starts = clock() // 1000 * 1000
            await connection.execute(
                update(t.account_counters)
                .where(_counters.account_id == account_id)
                .where(_counters.last_received_at < open_second_starts)
                .values(last_received_at=open_second_starts)
            )
            page = await _time_page(
                connection, account_id, after_ms, open_second_starts, limit, directions
            )
            fresh = _unretrieved(page) if mark_retrieved else []
            if fresh:
                await connection.execute(
                    update(t.messages).where(t.messages.c.id.in_(fresh)).values(status="retrieved")
                )
        return page

    async def page_by_id(
        self,
        account_id: int,
        *,
        after_id: int,
        limit: int,
        directions: tuple[Direction, ...],
    ) -> list[Message]:
        """Messages with an id above `after_id`, ascending.

        Ids follow commit order within an account (they are taken under the account's
        counter lock), so no message can later appear below an id already returned.
        """
        async with self.db.snapshot("page_by_id") as connection:
            rows = (
                await connection.execute(
                    _ID_PAGE[frozenset(directions)],
                    {"account_id": account_id, "after_id": after_id, "rows": limit},
                )
            ).all()
        return [message_from_row(row) for row in rows]


def _unretrieved(page: TimePage) -> list[int]:
    return [m.id for m in page.messages if m.status == "received"]


async def _time_page(
    connection: Connection,
    account_id: int,
    after_ms: int,
    before_ms: int,
    limit: int,
    directions: tuple[Direction, ...],
) -> TimePage:
    """Up to `limit` messages in [after_ms, before_ms), cut at a second boundary."""
    bounds = {"account_id": account_id, "after_ms": after_ms, "before_ms": before_ms}
    found = await connection.execute(
        _TIME_PAGE[frozenset(directions)], {**bounds, "rows": limit + 1}
    )
    rows = [message_from_row(row) for row in found.all()]
    page, crowded_second = whole_seconds(rows, limit)
    if crowded_second is None:
        return TimePage(page, has_more=len(rows) > limit)
    # One second alone holds more than a page: return all of it, never half.
    second_end = (crowded_second + 1) * 1000
    window = _TIME_WINDOW[frozenset(directions)]
    ordered = window.order_by(_messages.received_at, _messages.id)
    whole = await connection.execute(ordered.where(_messages.received_at < second_end), bounds)
    later = await connection.scalar(
        window.with_only_columns(_messages.id).where(_messages.received_at >= second_end).limit(1),
        bounds,
    )
    return TimePage([message_from_row(row) for row in whole.all()], has_more=later is not None)
