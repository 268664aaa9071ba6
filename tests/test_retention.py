"""Retention caps each account's history by count and age; locked messages stay."""

from __future__ import annotations

import asyncio

import pytest
from sqlalchemy import update

from smsinbox.core.ingest import RawInbound
from smsinbox.core.retention import DAY_MS, PruneReport, Retention
from smsinbox.services import Services
from smsinbox.store import tables as t

NUMBER = "447700900001"
NOW = 1_700_000_000_000


@pytest.fixture
async def alice(services: Services) -> int:
    return (await services.accounts.add("alice", "pw", msisdns=(NUMBER,))).id


async def ingest(services: Services, count: int, *, at: int, sender: str = "1") -> list[int]:
    services.ingestor.clock = lambda: at
    raw = RawInbound(sender, NUMBER, text=b"x")
    return [(await services.ingestor.accept(raw, upstream_id=None)).id for _ in range(count)]


async def lock(services: Services, message_id: int) -> None:
    async with services.store.db.transaction("test_lock") as connection:
        await connection.execute(
            update(t.messages).where(t.messages.c.id == message_id).values(locked=True)
        )


def retention(services: Services, **limits: int) -> Retention:
    return Retention(
        services.store,
        max_messages=limits.get("max_messages", 0),
        max_age_days=limits.get("max_age_days", 0),
        interval_s=0.01,
        batch=limits.get("batch", 500),
        clock=lambda: NOW,
        on_pruned=services.metrics.count_pruned,
    )


async def kept(services: Services) -> list[int]:
    return sorted(m.id for m in await services.store.list_recent_messages("alice", 1000))


async def test_oldest_unlocked_messages_beyond_the_cap_are_pruned(
    services: Services, alice: int
) -> None:
    ids = await ingest(services, 10, at=NOW)
    await lock(services, ids[1])
    report = await retention(services, max_messages=5, batch=2).prune_once()
    assert (report.by_count, report.by_age) == (4, 0)
    assert await kept(services) == [ids[1], *ids[5:]]
    assert services.metrics.messages_pruned.labels("count")._value.get() == 4


async def test_messages_older_than_the_age_limit_are_pruned(services: Services, alice: int) -> None:
    old = await ingest(services, 3, at=NOW - 31 * DAY_MS)
    recent = await ingest(services, 2, at=NOW - 29 * DAY_MS)
    await lock(services, old[0])
    report = await retention(services, max_age_days=30).prune_once()
    assert (report.by_count, report.by_age) == (0, 2)
    assert await kept(services) == [old[0], *recent]


async def test_count_and_age_limits_leave_deletes_to_the_tombstone_purge(
    services: Services, alice: int
) -> None:
    ids = await ingest(services, 4, at=NOW - 400 * DAY_MS)
    await services.store.delete_messages(alice, message_ids=[ids[0]], now=NOW - 400 * DAY_MS)
    report = await retention(services, max_age_days=30).prune_once()
    assert (report.by_age, report.tombstones) == (3, 1)
    counters = await services.store.list_changes(
        alice, after_modseq=0, limit=10, include_deleted=True
    )
    assert counters[0] == [] and counters[1] > 0  # devices behind the purge must resync


async def test_conversations_are_recounted_and_emptied(services: Services, alice: int) -> None:
    await ingest(services, 3, at=NOW - 40 * DAY_MS, sender="111")
    await ingest(services, 2, at=NOW - 40 * DAY_MS, sender="222")
    newest = await ingest(services, 1, at=NOW, sender="222")
    await retention(services, max_age_days=30).prune_once()
    conversations = await services.store.list_conversations(alice)
    assert [(c.counterpart, c.message_count, c.unread_count) for c in conversations] == [
        ("222", 1, 1)
    ]
    assert conversations[0].last_message_id == newest[0]


async def test_nothing_is_pruned_within_limits_or_when_disabled(
    services: Services, alice: int
) -> None:
    ids = await ingest(services, 5, at=NOW - 400 * DAY_MS)
    assert await retention(services, max_messages=5).prune_once() == PruneReport(0, 0)
    assert await retention(services).prune_once() == PruneReport(0, 0)
    assert await kept(services) == ids


async def test_a_pass_stops_after_the_current_batch_when_asked(
    services: Services, alice: int
) -> None:
    await ingest(services, 6, at=NOW)
    keeper = retention(services, max_messages=1, batch=2)
    stop = asyncio.Event()
    keeper._stop = stop
    stop.set()
    report = await keeper.prune_once()
    assert report.by_count == 2  # one batch, then it noticed the stop
    assert len(await kept(services)) == 4


async def test_the_background_pruner_runs_until_stopped(services: Services, alice: int) -> None:
    await ingest(services, 6, at=NOW)
    stop = asyncio.Event()
    task = asyncio.create_task(retention(services, max_messages=2).run(stop))
    for _ in range(200):
        if len(await kept(services)) == 2:
            break
        await asyncio.sleep(0.01)
    stop.set()
    await asyncio.wait_for(task, 5)
    assert len(await kept(services)) == 2
