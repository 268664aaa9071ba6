"""Live mailboxes: a process tells its browsers of every change to an account's messages,
whichever process made it, on both engines."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

import pytest

from smsinbox.config import Settings
from smsinbox.core.ingest import RawInbound
from smsinbox.core.live import LiveMailboxes
from smsinbox.core.sessions import Principal
from smsinbox.services import Services

ALICE = "447700900001"
FRIEND = "4915112345"
NEVER = 3600.0  # a poll interval no test waits for


async def receive(services: Services, text: str) -> int:
    raw = RawInbound(FRIEND, ALICE, text=text.encode())
    return (await services.ingestor.accept(raw, upstream_id=None)).id


@pytest.fixture
async def alice(services: Services) -> int:
    account = await services.accounts.add("alice", "alice-password", msisdns=(ALICE,))
    return account.id


@contextlib.asynccontextmanager
async def running(live: LiveMailboxes) -> AsyncIterator[None]:
    stop = asyncio.Event()
    task = asyncio.create_task(live.run(stop))
    await asyncio.sleep(0.2)  # listening (PostgreSQL) before anything is committed
    try:
        yield
    finally:
        stop.set()
        await asyncio.wait_for(task, 10)


async def next_version(changes: AsyncIterator[int]) -> int:
    return await asyncio.wait_for(anext(changes), 5)


async def test_a_message_stored_in_this_process_is_told_at_once(
    services: Services, alice: int
) -> None:
    live = LiveMailboxes(services.store, poll_s=NEVER)
    async with running(live):
        changes = live.changes(alice, seen=await live.version(alice))
        waiting = asyncio.ensure_future(next_version(changes))
        await asyncio.sleep(0.05)
        await receive(services, "hello")
        assert await waiting == await live.version(alice)
        await changes.aclose()


async def test_a_returning_browser_is_told_of_what_it_missed_at_once(
    services: Services, alice: int
) -> None:
    live = LiveMailboxes(services.store, poll_s=NEVER)
    seen = await live.version(alice)
    await receive(services, "while away")
    changes = live.changes(alice, seen=seen)
    assert await next_version(changes) > seen
    await changes.aclose()
    # Up to date: nothing to tell until something changes.
    changes = live.changes(alice, seen=await live.version(alice))
    with pytest.raises(TimeoutError):
        await asyncio.wait_for(anext(changes), 0.3)
    await changes.aclose()


async def test_another_process_is_heard_by_notify_on_postgresql_else_by_looking(
    settings: Settings, services: Services, alice: int
) -> None:
    """On PostgreSQL the other process's commit NOTIFYs, so no poll is needed; SQLite's
    processes look every poll_s."""
    postgres = settings.database_url.startswith("postgresql")
    live = LiveMailboxes(services.store, poll_s=NEVER if postgres else 0.2)
    other = Services.build(settings)
    await other.start()
    try:
        async with running(live):
            changes = live.changes(alice, seen=await live.version(alice))
            waiting = asyncio.ensure_future(next_version(changes))
            await asyncio.sleep(0.05)
            await receive(other, "from another process")
            assert await waiting >= 1
            await changes.aclose()
    finally:
        await other.close()


async def test_reads_and_deletes_are_changes_too(services: Services, alice: int) -> None:
    live = LiveMailboxes(services.store, poll_s=0.1)
    message_id = await receive(services, "read me")
    who = Principal(alice, "alice", (ALICE,), None)
    async with running(live):
        changes = live.changes(alice, seen=await live.version(alice))
        await services.mailbox.read_conversation(who, FRIEND)
        after_read = await next_version(changes)
        await services.mailbox.delete_messages(who, [message_id])
        assert await next_version(changes) > after_read
        await changes.aclose()


async def test_an_account_unwatched_is_forgotten(services: Services, alice: int) -> None:
    live = LiveMailboxes(services.store, poll_s=NEVER)
    waiting = [asyncio.ensure_future(anext(live.changes(alice, seen=None))) for _ in range(2)]
    await asyncio.sleep(0.1)
    assert alice in live._watched  # two browsers wait for alice's changes
    for browser in waiting:  # and go away
        browser.cancel()
    await asyncio.gather(*waiting, return_exceptions=True)
    assert alice not in live._watched
