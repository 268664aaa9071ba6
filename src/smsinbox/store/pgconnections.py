"""asyncpg connections of PostgreSQL's driver-level reads and one-statement writes.

Those run outside transactions (each statement commits on its own) on the hot paths: the
token or account look-up of nearly every request, poll and sync pages. Borrowing one from
SQLAlchemy's pool cost about 150 us of CPU a request (its checkout and return events, the
reset on return), asyncpg's own pool as much (its reset is a round trip): more than the
look-up itself. These statements leave no session state behind (no transaction, no SET,
no LISTEN), so a connection goes back as it came, with nothing done to it.

A connection that sat idle for a while is checked with a round trip before it is lent,
as SQLAlchemy's pool is checked (store/postgres.py), so one broken by a restart of the
database is replaced unseen. One that fails in use is dropped, unless the failure was the
database refusing a statement (a constraint, say), which leaves the connection as it was.
"""

from __future__ import annotations

import asyncio
import collections
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import asyncpg

# A connection idle longer than this is checked before it is lent.
IDLE_CHECK_S = 1.0


class DriverConnections:
    """At most `size` asyncpg connections, lent one at a time; waiting for one, or opening
    one, gives up after `timeout` seconds (a TimeoutError: the store is unavailable)."""

    def __init__(
        self,
        dsn: str,
        *,
        size: int,
        timeout: float,
        server_settings: dict[str, str] | None = None,  # of each connection's session
    ) -> None:
        self._dsn = dsn
        self._server_settings = server_settings
        self._size = size
        self.timeout = timeout
        self._idle: list[tuple[asyncpg.Connection, float]] = []  # with when it came back
        self._open = 0
        self._waiting: collections.deque[asyncio.Future[None]] = collections.deque()
        self._closed = False

    @asynccontextmanager
    async def lend(self) -> AsyncIterator[asyncpg.Connection]:
        connection = await self.acquire()
        try:
            yield connection
        except BaseException as error:
            raise self.release_failed(connection, error)  # noqa: B904 (chained where it is made)
        self.release(connection)

    def release(self, connection: asyncpg.Connection) -> None:
        """Give back `connection` after its use succeeded (dropped if it was left unfit)."""
        if connection.is_closed() or connection.is_in_transaction():
            self._drop(connection)
        else:
            self._give_back(connection)

    def release_failed(self, connection: asyncpg.Connection, error: BaseException) -> BaseException:
        """Give back, or drop, `connection` whose use raised `error`; returns what to raise:
        ConnectionError if the connection was lost, otherwise `error` itself."""
        if connection.is_closed():
            self._drop(connection)
            lost = ConnectionError(f"connection to the database lost: {error}")
            lost.__cause__ = error
            return lost
        if isinstance(error, asyncpg.PostgresError):
            self._give_back(connection)  # the statement failed, the connection did not
        else:
            self._drop(connection)  # cancelled mid-statement or timed out: unknown state
        return error

    async def acquire(self) -> asyncpg.Connection:
        """A connection of the set, given back with `release` or `release_failed`: lend
        does both around a block, and a one-statement read calls them itself, sparing the
        context manager's generator on every request."""
        deadline = time.monotonic() + self.timeout
        while True:
            if self._closed:
                raise ConnectionError("the store is closing")
            while self._idle:
                connection, returned_at = self._idle.pop()
                if await self._usable(connection, returned_at):
                    return connection
            if self._open < self._size:
                self._open += 1
                try:
                    return await asyncpg.connect(
                        self._dsn,
                        timeout=self.timeout,
                        command_timeout=self.timeout,
                        server_settings=self._server_settings,
                    )
                except BaseException:
                    self._open -= 1
                    self._wake_one()
                    raise
            waiter = asyncio.get_running_loop().create_future()
            self._waiting.append(waiter)
            try:
                await asyncio.wait_for(waiter, max(0.0, deadline - time.monotonic()))
            except BaseException:
                if waiter in self._waiting:
                    self._waiting.remove(waiter)
                elif waiter.done() and not waiter.cancelled():
                    self._wake_one()  # woken, but going away: the next one may go on
                raise

    async def _usable(self, connection: asyncpg.Connection, returned_at: float) -> bool:
        if not connection.is_closed():
            if time.monotonic() - returned_at < IDLE_CHECK_S:
                return True
            try:
                await connection.fetchval("SELECT 1", timeout=self.timeout)
                return True
            except (asyncpg.PostgresError, asyncpg.InterfaceError, OSError, TimeoutError):
                pass
        self._drop(connection)
        return False

    def _give_back(self, connection: asyncpg.Connection) -> None:
        if self._closed:
            self._drop(connection)
            return
        self._idle.append((connection, time.monotonic()))
        self._wake_one()

    def _drop(self, connection: asyncpg.Connection) -> None:
        self._open -= 1
        connection.terminate()
        self._wake_one()  # a waiter may open one in its place

    def _wake_one(self) -> None:
        while self._waiting:
            waiter = self._waiting.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return

    async def close(self) -> None:
        self._closed = True
        idle, self._idle = self._idle, []
        for connection, _ in idle:
            self._open -= 1
            await _close(connection)
        for waiter in self._waiting:
            if not waiter.done():
                waiter.set_result(None)


async def _close(connection: Any) -> None:
    try:
        await asyncio.wait_for(connection.close(), 1.0)
    except Exception:
        connection.terminate()
