"""Write transactions under concurrency: one writer at a time, durable before acknowledged,
a failing writer rolls back alone, and SQLite waits for another process's lock without
holding the event loop."""

from __future__ import annotations

import asyncio
import sqlite3
import time

import pytest
from sqlalchemy import text

from smsinbox.errors import StoreUnavailable
from smsinbox.services import Services
from smsinbox.store import Database

WRITERS = 40


async def _names(db: Database) -> list[str]:
    async with db.snapshot("test_names") as connection:
        rows = await connection.execute(text("SELECT name FROM upstreams ORDER BY name"))
    return [row.name for row in rows]


async def _add_upstream(db: Database, name: str, *, suspend: bool = False) -> None:
    async with db.transaction("test_add_upstream") as connection:
        if suspend:
            await asyncio.sleep(0)  # a writer whose work yields to the event loop
        await connection.execute(
            text("INSERT INTO upstreams (name, token_hash, created_at) VALUES (:n, :h, 0)"),
            {"n": name, "h": f"hash-{name}"},
        )


async def test_writers_that_suspend_still_write_one_at_a_time(services: Services) -> None:
    db = services.store.db
    inside = 0
    most_inside = 0

    async def writer(i: int) -> None:
        nonlocal inside, most_inside
        async with db.transaction("test_exclusive") as connection:
            inside += 1
            most_inside = max(most_inside, inside)
            await asyncio.sleep(0)
            await connection.execute(
                text("INSERT INTO upstreams (name, token_hash, created_at) VALUES (:n, :h, 0)"),
                {"n": f"w{i:02}", "h": f"hash-{i}"},
            )
            await asyncio.sleep(0)
            inside -= 1

    await asyncio.gather(*(writer(i) for i in range(WRITERS)))
    # PostgreSQL runs transactions side by side; SQLite's share one writer connection.
    if db.kind == "sqlite":
        assert most_inside == 1
    assert await _names(db) == [f"w{i:02}" for i in range(WRITERS)]


async def _failing(db: Database) -> None:
    async with db.transaction("test_failing") as connection:
        await connection.execute(
            text("INSERT INTO upstreams (name, token_hash, created_at) VALUES ('bad', 'x', 0)")
        )
        raise RuntimeError("this writer fails after writing")


async def test_a_failing_writer_rolls_back_alone(services: Services) -> None:
    db = services.store.db
    outcomes = await asyncio.gather(
        *(_add_upstream(db, f"ok{i:02}", suspend=i % 2 == 0) for i in range(10)),
        _failing(db),
        *(_add_upstream(db, f"ok{i:02}") for i in range(10, 20)),
        return_exceptions=True,
    )
    assert [type(o).__name__ for o in outcomes if o is not None] == ["RuntimeError"]
    assert await _names(db) == [f"ok{i:02}" for i in range(20)]


async def test_a_failing_first_writer_rolls_back_alone(services: Services) -> None:
    # On SQLite the first writer of a group commit writes without a savepoint of its own,
    # and its failure rolls back the whole transaction: the writers queued behind it go
    # on in the next one.
    db = services.store.db
    outcomes = await asyncio.gather(
        _failing(db),
        *(_add_upstream(db, f"ok{i:02}", suspend=i % 3 == 0) for i in range(10)),
        return_exceptions=True,
    )
    assert [type(o).__name__ for o in outcomes if o is not None] == ["RuntimeError"]
    with pytest.raises(RuntimeError):
        await _failing(db)  # alone, with nobody waiting
    await _add_upstream(db, "after")
    assert await _names(db) == ["after", *(f"ok{i:02}" for i in range(10))]


def _locked_by_another_process(path: str) -> sqlite3.Connection:
    other = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    other.execute("BEGIN IMMEDIATE")
    return other


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
async def test_sqlite_waits_for_another_writer_without_holding_the_loop(
    services: Services, database_url: str
) -> None:
    db = services.store.db
    other = _locked_by_another_process(database_url.removeprefix("sqlite:///"))
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            ticks += 1
            await asyncio.sleep(0.01)

    ticking = asyncio.create_task(ticker())
    try:
        writing = asyncio.create_task(_add_upstream(db, "waited"))
        await asyncio.sleep(0.5)
        assert not writing.done()  # still waiting for the other process
        assert ticks >= 20  # and the loop went on meanwhile
        other.execute("COMMIT")
        await asyncio.wait_for(writing, 5)
    finally:
        ticking.cancel()
        other.close()
    assert await _names(db) == ["waited"]
    # The writer connection is free again: the next one does not wait.
    await asyncio.wait_for(_add_upstream(db, "after"), 1)


@pytest.mark.parametrize("database_url", ["sqlite"], indirect=True)
async def test_sqlite_writer_locked_out_for_too_long_is_unavailable(
    services: Services, database_url: str
) -> None:
    db = services.store.db
    db.timeout = 0.3
    other = _locked_by_another_process(database_url.removeprefix("sqlite:///"))
    try:
        started = time.monotonic()
        with pytest.raises(StoreUnavailable):
            await _add_upstream(db, "never")
        assert time.monotonic() - started < 3
    finally:
        other.execute("ROLLBACK")
        other.close()
    await asyncio.wait_for(_add_upstream(db, "later"), 1)
    assert await _names(db) == ["later"]
