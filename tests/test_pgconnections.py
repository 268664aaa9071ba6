"""PostgreSQL's connections for driver-level statements (store/pgconnections.py), against
the real database: lent one at a time up to the limit, a connection the database refused a
statement on kept, one that broke in use or was cancelled mid-statement replaced, and a
borrower that waits too long told so in bounded time."""

from __future__ import annotations

import asyncio
import os
import time

import asyncpg
import pytest

from smsinbox.store.pgconnections import DriverConnections

PG_URL = os.environ.get("SMSINBOX_TEST_DATABASE_URL", "")


@pytest.fixture
def dsn() -> str:
    if not PG_URL:
        if os.environ.get("SMSINBOX_TEST_REQUIRE_POSTGRES") == "1":
            pytest.fail("SMSINBOX_TEST_REQUIRE_POSTGRES=1 but SMSINBOX_TEST_DATABASE_URL is unset")
        pytest.skip("needs SMSINBOX_TEST_DATABASE_URL (see .ci/run)")
    return PG_URL


async def _backend(connections: DriverConnections) -> int:
    async with connections.lend() as connection:
        return int(await connection.fetchval("SELECT pg_backend_pid()"))


async def test_a_connection_comes_back_as_it_went_and_is_lent_again(dsn: str) -> None:
    connections = DriverConnections(dsn, size=2, timeout=2.0)
    try:
        first = await _backend(connections)
        assert await _backend(connections) == first
        # The database refusing a statement leaves the connection as it was.
        with pytest.raises(asyncpg.PostgresError):
            async with connections.lend() as connection:
                await connection.fetchval("SELECT 1 / 0")
        assert await _backend(connections) == first
    finally:
        await connections.close()


async def test_no_more_than_the_limit_and_a_waiter_gets_the_one_given_back(dsn: str) -> None:
    connections = DriverConnections(dsn, size=2, timeout=5.0)
    in_use = 0
    most = 0

    async def hold() -> None:
        nonlocal in_use, most
        async with connections.lend() as connection:
            in_use += 1
            most = max(most, in_use)
            await connection.fetchval("SELECT pg_sleep(0.05)")
            in_use -= 1

    try:
        await asyncio.gather(*(hold() for _ in range(8)))
        assert most == 2
        backends = await asyncio.gather(*(_backend(connections) for _ in range(2)))
        assert len(set(backends)) <= 2
    finally:
        await connections.close()


async def test_waiting_longer_than_the_timeout_fails_in_bounded_time(dsn: str) -> None:
    connections = DriverConnections(dsn, size=1, timeout=0.3)
    try:
        async with connections.lend():
            started = time.monotonic()
            with pytest.raises(TimeoutError):
                async with connections.lend():
                    pass
            assert time.monotonic() - started < 2.0
        await _backend(connections)  # and the one connection is still lent afterwards
    finally:
        await connections.close()


async def test_a_connection_lost_in_use_fails_as_lost_and_is_replaced(dsn: str) -> None:
    connections = DriverConnections(dsn, size=1, timeout=2.0)
    admin = await asyncpg.connect(dsn)
    try:
        victim = await _backend(connections)
        with pytest.raises(ConnectionError):
            async with connections.lend() as connection:
                await admin.execute("SELECT pg_terminate_backend($1)", victim)
                await connection.fetchval("SELECT 1")
        assert await _backend(connections) != victim
    finally:
        await admin.close()
        await connections.close()


async def test_one_cancelled_mid_statement_is_not_lent_again(dsn: str) -> None:
    connections = DriverConnections(dsn, size=1, timeout=2.0)
    try:
        first = await _backend(connections)

        async def slow() -> None:
            async with connections.lend() as connection:
                await connection.fetchval("SELECT pg_sleep(5)")

        task = asyncio.create_task(slow())
        await asyncio.sleep(0.2)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert await _backend(connections) != first
    finally:
        await connections.close()
