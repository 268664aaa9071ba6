"""Cursor rules of the polling APIs: whole seconds, closed seconds, commit order."""

from __future__ import annotations

from contextlib import AbstractAsyncContextManager
from typing import Any

import pytest

from smsinbox.core import inbox
from smsinbox.core.ingest import RawInbound
from smsinbox.services import Services

NUMBER = "447700900001"
SECOND = 1_700_000_000  # an arbitrary closed second, in epoch seconds


@pytest.fixture
async def alice(services: Services) -> None:
    await services.accounts.add("alice", "pw", msisdns=(NUMBER,))


async def ingest_at(services: Services, epoch_ms: int, count: int = 1) -> list[int]:
    services.ingestor.clock = lambda: epoch_ms
    return [
        (await services.ingestor.accept(RawInbound("1", NUMBER, text=b"x"), upstream_id=None)).id
        for _ in range(count)
    ]


def now_is(services: Services, epoch_ms: int) -> None:
    services.inbox.clock = lambda: epoch_ms


async def since(services: Services, cursor: int) -> tuple[list[int], int, bool]:
    page = await services.inbox.messages_since("alice", "pw", cursor, outgoing=False)
    return [m.id for m in page.messages], page.newest_timestamp, page.has_more


async def test_a_page_never_splits_a_second(services: Services, alice: None) -> None:
    first = await ingest_at(services, SECOND * 1000 + 100, 99)
    second = await ingest_at(services, (SECOND + 1) * 1000 + 100, 3)
    now_is(services, (SECOND + 5) * 1000)
    assert await since(services, SECOND - 1) == (first, SECOND, True)
    assert await since(services, SECOND) == (second, SECOND + 1, False)


async def test_one_crowded_second_is_returned_whole(services: Services, alice: None) -> None:
    crowd = await ingest_at(services, SECOND * 1000 + 500, 150)
    after = await ingest_at(services, (SECOND + 2) * 1000, 1)
    now_is(services, (SECOND + 5) * 1000)
    assert await since(services, 0) == (crowd, SECOND, True)
    # Again, now that the poll knows the watermark raised: read without a write of its own.
    assert await since(services, 0) == (crowd, SECOND, True)
    assert await since(services, SECOND) == (after, SECOND + 2, False)


async def test_crowded_second_at_the_end_has_nothing_more(services: Services, alice: None) -> None:
    crowd = await ingest_at(services, SECOND * 1000, 101)
    now_is(services, (SECOND + 1) * 1000)
    assert await since(services, 0) == (crowd, SECOND, False)


async def test_the_open_second_is_never_returned(services: Services, alice: None) -> None:
    closed = await ingest_at(services, SECOND * 1000 + 999)
    still_open = await ingest_at(services, (SECOND + 1) * 1000)
    now_is(services, (SECOND + 1) * 1000 + 999)
    assert await since(services, 0) == (closed, SECOND, False)
    # A message committed later in the open second is not skipped by the cursor.
    late = await ingest_at(services, (SECOND + 1) * 1000 + 999)
    now_is(services, (SECOND + 2) * 1000)
    assert await since(services, SECOND) == (still_open + late, SECOND + 1, False)


async def test_since_is_exclusive(services: Services, alice: None) -> None:
    ids = await ingest_at(services, SECOND * 1000)
    now_is(services, (SECOND + 1) * 1000)
    assert (await since(services, SECOND - 1))[0] == ids
    assert await since(services, SECOND) == ([], SECOND, False)


async def test_id_cursor_returns_pages_in_id_order(services: Services, alice: None) -> None:
    ids = await ingest_at(services, SECOND * 1000, 5)
    services.inbox.id_page_size = 2
    page = await services.inbox.messages_after_id("alice", "pw", 0)
    assert [m.id for m in page.messages] == ids[:2]
    page = await services.inbox.messages_after_id("alice", "pw", ids[1])
    assert [m.id for m in page.messages] == ids[2:4]
    page = await services.inbox.messages_after_id("alice", "pw", ids[-1])
    assert page.messages == []


async def test_other_accounts_messages_never_appear(services: Services, alice: None) -> None:
    await services.accounts.add("bob", "pw", msisdns=("447700900002",))
    services.ingestor.clock = lambda: SECOND * 1000
    await services.ingestor.accept(RawInbound("1", "447700900002", text=b"bob's"), upstream_id=None)
    now_is(services, (SECOND + 1) * 1000)
    assert await since(services, 0) == ([], 0, False)
    assert (await services.inbox.messages_after_id("alice", "pw", 0)).messages == []


async def test_a_writer_with_a_stale_clock_lands_after_the_cursor(
    services: Services, alice: None
) -> None:
    """A writer may read the time before it gets the account's lock (or run on a server
    whose clock lags); its message must still appear after every cursor already handed out."""
    first = await ingest_at(services, SECOND * 1000 + 500)
    now_is(services, (SECOND + 1) * 1000 + 10)
    assert await since(services, 0) == (first, SECOND, False)
    stale = await ingest_at(services, SECOND * 1000 + 600)  # the clock it read was old
    now_is(services, (SECOND + 2) * 1000)
    assert await since(services, SECOND) == (stale, SECOND + 1, False)


class TransactionNames:
    """The names of the write transactions the store opens while it is watched."""

    def __init__(self, services: Services, monkeypatch: pytest.MonkeyPatch) -> None:
        self.names: list[str] = []
        database = services.store.db
        opened = database.transaction

        def named(name: str) -> AbstractAsyncContextManager[Any]:
            self.names.append(name)
            return opened(name)

        monkeypatch.setattr(database, "transaction", named)


async def test_watermarks_raised_ahead_spare_the_polls_a_write_and_lose_nothing(
    services: Services, alice: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    first = await ingest_at(services, SECOND * 1000 + 500)
    now_is(services, (SECOND + 1) * 1000 + 10)
    assert await since(services, 0) == (first, SECOND, False)
    # Just before the next second opens, the account polled lately is raised to it.
    now_is(services, (SECOND + 2) * 1000 - inbox.RAISE_AHEAD_MS + 5)
    await services.inbox.raise_watermarks_ahead()
    # A message received within the lead is given the next second's start.
    late = await ingest_at(services, (SECOND + 2) * 1000 - 3)
    writes = TransactionNames(services, monkeypatch)
    now_is(services, (SECOND + 2) * 1000 + 10)
    assert await since(services, SECOND) == ([], SECOND, False)
    assert writes.names == []  # read without raising the watermark itself
    now_is(services, (SECOND + 3) * 1000 + 10)  # nothing raised ahead of this second
    assert await since(services, SECOND) == (late, SECOND + 2, False)
    assert writes.names == ["page_by_time_raising"]
    account = await services.store.get_account("alice")
    assert account is not None
    message = await services.store.get_message(account.id, late[0])
    assert message is not None and message.received_at == (SECOND + 2) * 1000


async def test_accounts_not_polled_lately_are_not_raised(
    services: Services, alice: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    now_is(services, (SECOND + 1) * 1000)
    await since(services, 0)
    account = await services.store.get_account("alice")
    assert account is not None
    services.inbox._polled_by_time[account.id] -= inbox.KEEP_RAISED_S + 1
    writes = TransactionNames(services, monkeypatch)
    await services.inbox.raise_watermarks_ahead()
    assert writes.names == []
    assert services.inbox._polled_by_time == {}


async def test_a_poll_of_a_raised_second_reads_the_same_pages_without_writing(
    services: Services, alice: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Once the watermark is at the open second, a poll only reads; its pages are those
    the raising poll got, a crowded second whole."""
    crowd = await ingest_at(services, SECOND * 1000 + 500, 150)
    full = await ingest_at(services, (SECOND + 1) * 1000 + 500, 99)
    rest = await ingest_at(services, (SECOND + 2) * 1000 + 500, 3)
    now_is(services, (SECOND + 5) * 1000)
    pages = [(crowd, SECOND, True), (full, SECOND + 1, True), (rest, SECOND + 2, False)]
    cursors = [0, SECOND, SECOND + 1]
    assert [await since(services, cursor) for cursor in cursors] == pages  # marks them
    writes = TransactionNames(services, monkeypatch)
    assert [await since(services, cursor) for cursor in cursors] == pages
    assert await since(services, SECOND + 2) == ([], SECOND + 2, False)
    assert writes.names == []
