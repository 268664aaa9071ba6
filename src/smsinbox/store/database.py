"""The store's database: named transactions over one storage engine.

The engine (store/sqlite.py, store/postgres.py) holds everything that differs between
SQLite and PostgreSQL; this adds what both share: the URL forms, a name for every
transaction (for logs and metrics), and which failures mean "the store is unavailable"
rather than a bug.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any, TypeVar

from sqlalchemy import exc, text
from sqlalchemy.engine import URL, make_url

from smsinbox.errors import StoreUnavailable
from smsinbox.store.driver import Driver, Row
from smsinbox.store.engine import Connection, StorageEngine
from smsinbox.store.postgres import PostgresEngine
from smsinbox.store.sqlite import SqliteEngine

__all__ = ["Connection", "Database", "TransactionObserver"]

log = logging.getLogger("smsinbox.store")

# SQLSTATE classes of a server that cannot serve now: connection exception, insufficient
# resources (disk full, too many connections), operator intervention (shutdown, cancelled
# by timeout), system error (I/O).
UNAVAILABLE_SQLSTATE_CLASSES = ("08", "53", "57", "58")

T = TypeVar("T")

# (transaction name, seconds, succeeded) -> None; the app feeds it into metrics.
TransactionObserver = Callable[[str, float, bool], None]


def driver_url(database_url: str) -> URL:
    """Map the documented URL forms onto the drivers smsinbox uses (asyncpg; SQLite's own)."""
    url = make_url(database_url)
    backend = url.get_backend_name()
    if backend == "sqlite":
        if url.database in (None, "", ":memory:"):
            raise ValueError("SQLite needs a file path: sqlite:///path/to/smsinbox.db")
        return url.set(drivername="sqlite+pysqlite")
    if backend in ("postgresql", "postgres"):
        return url.set(drivername="postgresql+asyncpg")
    raise ValueError(f"unsupported database URL scheme {url.drivername!r}")


def _is_unavailable(error: BaseException) -> bool:
    """True for failures of the database itself (down, locked, full), not for bugs."""
    if isinstance(error, exc.IntegrityError | exc.ProgrammingError | exc.DataError):
        return False
    if isinstance(error, exc.DBAPIError):
        return True  # OperationalError, InterfaceError, invalidated connections
    if isinstance(error, exc.TimeoutError | OSError | TimeoutError | ConnectionError):
        return True
    # The drivers' own errors, which reach us unwrapped from driver-level statements and
    # while a pool connection is being opened: sqlite3's "database is locked" or "disk I/O
    # error", asyncpg's "the database system is shutting down" (57P03) and its kind.
    if type(error).__module__ == "sqlite3" and type(error).__name__ == "OperationalError":
        return True
    sqlstate = getattr(error, "sqlstate", None)
    if isinstance(sqlstate, str) and type(error).__module__.startswith("asyncpg"):
        return sqlstate[:2] in UNAVAILABLE_SQLSTATE_CLASSES
    return False


class Database:
    """A connection to the store: named write transactions and read snapshots."""

    def __init__(
        self,
        database_url: str,
        *,
        pool_size: int = 10,
        timeout: float = 5.0,
        observer: TransactionObserver | None = None,
    ) -> None:
        self.url = driver_url(database_url)
        self._observer = observer
        self.engine: StorageEngine
        if self.url.get_backend_name() == "sqlite":
            self.engine = SqliteEngine(self.url, pool_size=pool_size, timeout=timeout)
        else:
            self.engine = PostgresEngine(self.url, pool_size=pool_size, timeout=timeout)

    @property
    def timeout(self) -> float:
        """Seconds a statement, a connection or the writer's turn may take."""
        return self.engine.timeout

    @timeout.setter
    def timeout(self, seconds: float) -> None:
        self.engine.timeout = seconds

    @property
    def kind(self) -> str:
        """The engine's name: sqlite or postgresql."""
        return self.engine.name

    def transaction(self, name: str) -> AbstractAsyncContextManager[Connection]:
        """A named write transaction; it commits when the block ends without error, and the
        block's caller goes on only once the commit is durable."""
        return self._named("transaction", name, self.engine.transaction())

    def snapshot(self, name: str) -> AbstractAsyncContextManager[Connection]:
        """A named read-only transaction: one consistent view of the store."""
        return self._named("read", name, self.engine.snapshot())

    def driver_snapshot(self, name: str) -> AbstractAsyncContextManager[Driver]:
        """Named reads of driver-level statements (store/driver.py), seeing what `snapshot`
        sees."""
        return self._named("read", name, self.engine.driver_snapshot())

    async def read_row(self, name: str, sql: str, parameters: Sequence[Any] = ()) -> Row | None:
        """One named driver-level read (see StorageEngine.read_row), timed as `snapshot`
        is, without a context manager around it."""
        started = time.perf_counter()
        ok = False
        try:
            row = await self.engine.read_row(sql, parameters)
            ok = True
            return row
        except BaseException as error:
            _raise_if_unavailable("read", name, error)
            raise
        finally:
            self._observe(name, started, ok)

    def driver_write(
        self, name: str, *, planned_once: bool = False
    ) -> AbstractAsyncContextManager[Driver]:
        """A named write of one driver-level statement (see StorageEngine.driver_write)."""
        return self._named("transaction", name, self.engine.driver_write(planned_once=planned_once))

    @asynccontextmanager
    async def _named(
        self, what: str, name: str, opened: AbstractAsyncContextManager[T]
    ) -> AsyncIterator[T]:
        """`opened`, timed under `name`, with an outage of the database as StoreUnavailable."""
        started = time.perf_counter()
        ok = False
        try:
            async with opened as connection:
                yield connection
            ok = True
        except BaseException as error:
            _raise_if_unavailable(what, name, error)
            raise
        finally:
            self._observe(name, started, ok)

    def _observe(self, name: str, started: float, ok: bool) -> None:
        if self._observer is not None:
            self._observer(name, time.perf_counter() - started, ok)

    async def listen(
        self, channel: str, callback: Callable[[], None]
    ) -> Callable[[], Awaitable[None]] | None:
        """Call `callback` on each notification on `channel`; returns how to stop, or None
        where the engine has none (SQLite's single process wakes its workers directly)."""
        return await self.engine.listen(channel, callback)

    async def prepare_search(self) -> None:
        """Make searches see every message committed before the call (store/fts.py)."""
        async with self._named("transaction", "index_for_search", contextlib.nullcontext()):
            await self.engine.prepare_search()

    async def ping(self) -> None:
        """Raise StoreUnavailable unless the database answers a trivial query in time."""
        async with self.snapshot("ping") as connection:
            await asyncio.wait_for(connection.execute(text("SELECT 1")), self.timeout)

    async def close(self) -> None:
        await self.engine.close()


def _raise_if_unavailable(what: str, name: str, error: BaseException) -> None:
    """An outage of the database during `name` as StoreUnavailable; other errors go on."""
    if _is_unavailable(error):
        log.warning("%s %s: store unavailable: %s", what, name, _describe(error))
        raise StoreUnavailable(f"store unavailable during {name}") from error


def _describe(error: BaseException) -> str:
    """An error for the log: its message, or its kind when it has none (a timeout)."""
    return str(error) or type(error).__name__
