"""The two storage engines behind one small interface.

Everything that differs between SQLite and PostgreSQL lives here: URLs and drivers,
pragmas, how a write transaction begins, upserts, and which failures mean "the store is
unavailable" rather than a bug.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, Protocol, TypeVar

from sqlalchemy import Connection as SyncConnection
from sqlalchemy import Table, create_engine, event, exc, text
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import URL, CursorResult, Dialect, Engine, ScalarResult, make_url
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlalchemy.sql import Executable

from smsinbox.errors import StoreUnavailable

log = logging.getLogger("smsinbox.store")

LOOP_READ_BUSY_MS = 250

# (transaction name, seconds, succeeded) -> None; the app feeds it into metrics.
TransactionObserver = Callable[[str, float, bool], None]
T = TypeVar("T")


class Connection(Protocol):
    """What store code does with a connection: Connection has it, LoopConnection too."""

    @property
    def dialect(self) -> Dialect: ...

    async def execute(self, statement: Executable, parameters: Any = None) -> CursorResult[Any]: ...

    async def scalar(self, statement: Executable, parameters: Any = None) -> Any: ...

    async def scalars(self, statement: Executable, parameters: Any = None) -> ScalarResult[Any]: ...

    async def run_sync(self, fn: Callable[..., T], *args: Any) -> T: ...


class LoopConnection:
    """A synchronous SQLite connection used right on the event loop thread.

    SQLite reads of a WAL database take microseconds and never wait for writers; handing
    each statement to a worker thread (as aiosqlite does) costs far more than the read itself
    in thread switches. Only snapshots use this; writes keep their own thread, since a
    durable commit waits for the disk.
    """

    def __init__(self, connection: SyncConnection) -> None:
        self._connection = connection

    @property
    def dialect(self) -> Dialect:
        return self._connection.dialect

    async def execute(self, statement: Executable, parameters: Any = None) -> CursorResult[Any]:
        return self._connection.execute(statement, parameters)

    async def scalar(self, statement: Executable, parameters: Any = None) -> Any:
        return self._connection.scalar(statement, parameters)

    async def scalars(self, statement: Executable, parameters: Any = None) -> ScalarResult[Any]:
        return self._connection.scalars(statement, parameters)

    async def run_sync(self, fn: Callable[..., T], *args: Any) -> T:
        return fn(self._connection, *args)


def async_url(database_url: str) -> URL:
    """Map the documented URL forms onto the async drivers smsinbox uses."""
    url = make_url(database_url)
    backend = url.get_backend_name()
    if backend == "sqlite":
        if url.database in (None, "", ":memory:"):
            raise ValueError("SQLite needs a file path: sqlite:///path/to/smsinbox.db")
        return url.set(drivername="sqlite+aiosqlite")
    if backend in ("postgresql", "postgres"):
        return url.set(drivername="postgresql+asyncpg")
    raise ValueError(f"unsupported database URL scheme {url.drivername!r}")


def upsert_into(engine_kind: str, table: Table) -> sqlite.Insert | postgresql.Insert:
    """An INSERT with ON CONFLICT support for the engine named `engine_kind`."""
    if engine_kind == "postgresql":
        return postgresql.insert(table)
    return sqlite.insert(table)


def _is_unavailable(error: BaseException) -> bool:
    """True for failures of the database itself (down, locked, full), not for bugs."""
    if isinstance(error, exc.IntegrityError | exc.ProgrammingError | exc.DataError):
        return False
    if isinstance(error, exc.DBAPIError):
        return True  # OperationalError, InterfaceError, invalidated connections
    return isinstance(error, exc.TimeoutError | OSError | TimeoutError | ConnectionError)


class Database:
    """A connection to the store: write transactions, read snapshots, engine quirks."""

    def __init__(
        self,
        database_url: str,
        *,
        pool_size: int = 10,
        timeout: float = 5.0,
        observer: TransactionObserver | None = None,
    ) -> None:
        self.url = async_url(database_url)
        self.kind = "sqlite" if self.url.get_backend_name() == "sqlite" else "postgresql"
        self.timeout = timeout
        self._observer = observer
        if self.kind == "sqlite":
            path = Path(self.url.database or "")
            path.parent.mkdir(parents=True, exist_ok=True)
            # One writer connection, serialised in-process by a lock and across processes
            # by BEGIN IMMEDIATE; reads run on their own pool and never wait for it.
            self._writer = self._sqlite_engine(begin="BEGIN IMMEDIATE", pool_size=1)
            self._reader = self._writer
            self._loop_reader: Engine | None = self._sqlite_loop_engine(pool_size)
            self._write_lock: asyncio.Lock | None = asyncio.Lock()
        else:
            engine = create_async_engine(
                self.url,
                pool_size=pool_size,
                max_overflow=pool_size,
                pool_timeout=timeout,
                pool_pre_ping=True,
                connect_args={"timeout": timeout, "command_timeout": timeout},
            )
            self._writer = self._reader = engine
            self._loop_reader = None
            self._write_lock = None

    def _sqlite_engine(self, *, begin: str, pool_size: int) -> AsyncEngine:
        engine = create_async_engine(
            self.url, pool_size=pool_size, max_overflow=0, pool_timeout=self.timeout
        )
        busy_ms = int(self.timeout * 1000)

        @event.listens_for(engine.sync_engine, "connect")
        def on_connect(dbapi_connection: Any, _record: Any) -> None:
            # Take transaction control away from the driver so BEGIN is ours to choose.
            dbapi_connection.isolation_level = None
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            # FULL syncs the WAL on every commit: acknowledged means durable, even on
            # power loss, not only on a process crash.
            cursor.execute("PRAGMA synchronous=FULL")
            cursor.execute(f"PRAGMA busy_timeout={busy_ms}")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.close()

        @event.listens_for(engine.sync_engine, "begin")
        def on_begin(connection: Any) -> None:
            connection.exec_driver_sql(begin)

        return engine

    def _sqlite_loop_engine(self, pool_size: int) -> Engine:
        engine = create_engine(
            self.url.set(drivername="sqlite+pysqlite"),
            pool_size=pool_size,
            max_overflow=0,
            pool_timeout=self.timeout,
        )

        @event.listens_for(engine, "connect")
        def on_connect(dbapi_connection: Any, _record: Any) -> None:
            dbapi_connection.isolation_level = None
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            # A WAL reader waits only in rare moments (recovery after a crash); it must not
            # hold the event loop for long when it does.
            cursor.execute(f"PRAGMA busy_timeout={LOOP_READ_BUSY_MS}")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.close()

        @event.listens_for(engine, "begin")
        def on_begin(connection: Any) -> None:
            connection.exec_driver_sql("BEGIN")

        return engine

    @property
    def engine(self) -> AsyncEngine:
        """The engine that writes (for migrations)."""
        return self._writer

    @asynccontextmanager
    async def transaction(self, name: str) -> AsyncIterator[Connection]:
        """A named write transaction; it commits when the block ends without error."""
        started = time.perf_counter()
        ok = False
        try:
            if self._write_lock is not None:
                await asyncio.wait_for(self._write_lock.acquire(), self.timeout)
            try:
                async with self._writer.begin() as connection:
                    yield connection
                ok = True
            finally:
                if self._write_lock is not None:
                    self._write_lock.release()
        except BaseException as error:
            if _is_unavailable(error):
                log.warning("transaction %s: store unavailable: %s", name, error)
                raise StoreUnavailable(f"store unavailable during {name}") from error
            raise
        finally:
            self._observe(name, started, ok)

    @asynccontextmanager
    async def snapshot(self, name: str) -> AsyncIterator[Connection]:
        """A named read-only transaction: one consistent view of the store."""
        started = time.perf_counter()
        ok = False
        try:
            if self._loop_reader is not None:
                with self._loop_reader.connect() as sync_connection, sync_connection.begin():
                    yield LoopConnection(sync_connection)
            else:
                async with self._reader.connect() as connection, connection.begin():
                    yield connection
            ok = True
        except BaseException as error:
            if _is_unavailable(error):
                log.warning("read %s: store unavailable: %s", name, error)
                raise StoreUnavailable(f"store unavailable during {name}") from error
            raise
        finally:
            self._observe(name, started, ok)

    def _observe(self, name: str, started: float, ok: bool) -> None:
        if self._observer is not None:
            self._observer(name, time.perf_counter() - started, ok)

    def insert(self, table: Table) -> sqlite.Insert | postgresql.Insert:
        """An INSERT that supports ON CONFLICT on this engine."""
        return upsert_into(self.kind, table)

    async def listen(
        self, channel: str, callback: Callable[[], None]
    ) -> Callable[[], Awaitable[None]] | None:
        """Call `callback` on each PostgreSQL NOTIFY on `channel`; returns how to stop.

        SQLite has no notifications (its single process wakes its worker directly): None.
        """
        if self.kind != "postgresql":
            return None
        import asyncpg

        dsn = self.url.set(drivername="postgresql").render_as_string(hide_password=False)
        connection = await asyncpg.connect(dsn, timeout=self.timeout)
        await connection.add_listener(channel, lambda *_: callback())

        async def stop() -> None:
            await connection.close()

        return stop

    async def ping(self) -> None:
        """Raise StoreUnavailable unless the database answers a trivial query in time."""
        async with self.snapshot("ping") as connection:
            await asyncio.wait_for(connection.execute(text("SELECT 1")), self.timeout)

    async def close(self) -> None:
        await self._writer.dispose()
        if self._reader is not self._writer:
            await self._reader.dispose()
        if self._loop_reader is not None:
            self._loop_reader.dispose()
