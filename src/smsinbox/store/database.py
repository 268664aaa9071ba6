"""The two storage engines behind one small interface.

Everything that differs between SQLite and PostgreSQL lives here: URLs and drivers,
pragmas, how a write transaction begins, upserts, and which failures mean "the store is
unavailable" rather than a bug.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, Protocol, TypeVar

from sqlalchemy import Connection as SyncConnection
from sqlalchemy import RootTransaction, Table, create_engine, event, exc, text
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import URL, CursorResult, Dialect, Engine, ScalarResult, make_url
from sqlalchemy.ext.asyncio import (
    create_async_engine,
)
from sqlalchemy.sql import Executable

from smsinbox.errors import StoreUnavailable

log = logging.getLogger("smsinbox.store")

LOOP_READ_BUSY_MS = 250
# How often an idle LISTEN connection is checked (a frozen server never closes it), and the
# longest pause between attempts to open it again.
LISTEN_CHECK_S = 10.0
MAX_LISTEN_BACKOFF_S = 30.0
# SQLSTATE classes of a server that cannot serve now: connection exception, insufficient
# resources (disk full, too many connections), operator intervention (shutdown, cancelled
# by timeout), system error (I/O).
UNAVAILABLE_SQLSTATE_CLASSES = ("08", "53", "57", "58")
# Most writers whose work one commit makes durable on SQLite.
MAX_GROUP_COMMIT = 256


class _Batch:
    """One SQLite write transaction that several writers share (see group commit).

    Everything but the wait for the disk runs on the event loop thread: its statements,
    like reads, and BEGIN IMMEDIATE, which fails at once while another process writes and
    only then is retried in a thread. A hop to a thread and back waits for the loop to come
    round, which on a busy server takes far longer than the work; COMMIT (an fsync) is the
    one hop a batch makes.
    """

    def __init__(self, connection: SyncConnection, transaction: RootTransaction) -> None:
        self.connection = connection
        self.transaction = transaction
        self.members = 0
        self.committed: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    @classmethod
    async def open(cls, engine: Engine, busy_ms: int) -> _Batch:
        # The writer's pool keeps its one connection open: taking it does no I/O.
        connection = engine.connect()
        try:
            try:
                transaction = connection.begin()
            except exc.OperationalError:  # locked by another process, or not writable
                transaction = await asyncio.to_thread(_begin_waiting, connection, busy_ms)
            return cls(connection, transaction)
        except BaseException:
            connection.close()
            raise

    async def commit(self) -> None:
        try:
            await asyncio.to_thread(self.transaction.commit)
        except BaseException as error:
            self.committed.set_exception(error)
            if not self.members:
                self.committed.exception()  # nobody waits for it: don't warn
        else:
            self.committed.set_result(None)
        finally:
            self.connection.close()


def _begin_waiting(connection: SyncConnection, busy_ms: int) -> RootTransaction:
    """BEGIN IMMEDIATE, waiting up to `busy_ms` for another process's write lock."""
    dbapi_connection = connection.connection.dbapi_connection
    assert dbapi_connection is not None
    dbapi_connection.execute(f"PRAGMA busy_timeout={busy_ms}")
    try:
        return connection.begin()
    finally:
        dbapi_connection.execute("PRAGMA busy_timeout=0")


class _WriterTurn:
    """Whose turn it is to use SQLite's one writer connection.

    Like asyncio.Lock, but a release wakes every waiting writer at once rather than the
    first alone. A woken task runs only on the event loop's next round, and on a busy server
    a round is long (every poll in flight does its share of work in it): handing the
    writer to one waiter per round would make 32 queued writers take 32 rounds. Woken
    together, they run in one round, one after another, since a writer's statements never
    suspend on SQLite; one that finds the writer taken (a writer that did suspend) waits
    again.
    """

    def __init__(self) -> None:
        self.taken = False
        self.waiting = 0
        self._released: asyncio.Future[None] | None = None

    async def take(self) -> None:
        while self.taken:
            if self._released is None:
                self._released = asyncio.get_running_loop().create_future()
            self.waiting += 1
            try:
                await asyncio.shield(self._released)
            finally:
                self.waiting -= 1
        self.taken = True

    def release(self) -> None:
        self.taken = False
        released, self._released = self._released, None
        if released is not None:
            released.set_result(None)


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

    SQLite statements take microseconds, and reads of a WAL database never wait for
    writers; handing each statement to a worker thread costs far more than the statement
    in thread switches. Reads and writes both run here; only what waits (BEGIN IMMEDIATE for
    another process's lock, COMMIT for the disk) goes to a thread (see group commit).
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
    if isinstance(error, exc.TimeoutError | OSError | TimeoutError | ConnectionError):
        return True
    # The driver's own errors, which SQLAlchemy leaves unwrapped while a pool connection is
    # being opened: "the database system is shutting down" (57P03) and its kind.
    sqlstate = getattr(error, "sqlstate", None)
    if isinstance(sqlstate, str) and type(error).__module__.startswith("asyncpg"):
        return sqlstate[:2] in UNAVAILABLE_SQLSTATE_CLASSES
    return False


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
        self.url = driver_url(database_url)
        self.kind = "sqlite" if self.url.get_backend_name() == "sqlite" else "postgresql"
        self.timeout = timeout
        self._observer = observer
        if self.kind == "sqlite":
            path = Path(self.url.database or "")
            path.parent.mkdir(parents=True, exist_ok=True)
            # One writer connection, taken in turns in-process and serialised across
            # processes by BEGIN IMMEDIATE; reads run on their own pool and never wait for it.
            # The writer never waits on the loop thread: see _Batch.open.
            self._loop_writer = self._sqlite_loop_engine(1, begin="BEGIN IMMEDIATE", busy_ms=0)
            self._loop_reader: Engine | None = self._sqlite_loop_engine(
                pool_size, begin="BEGIN", busy_ms=LOOP_READ_BUSY_MS
            )
            self._writer_turn: _WriterTurn | None = _WriterTurn()
            self._batch: _Batch | None = None
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
            self._writer_turn = None

    def _sqlite_loop_engine(self, pool_size: int, *, begin: str, busy_ms: int) -> Engine:
        engine = create_engine(
            self.url.set(drivername="sqlite+pysqlite"),
            pool_size=pool_size,
            max_overflow=0,
            pool_timeout=self.timeout,
            # BEGIN and COMMIT of the writer run on a helper thread, the rest on the loop:
            # one user at a time, never two threads at once.
            connect_args={"check_same_thread": False},
        )

        @event.listens_for(engine, "connect")
        def on_connect(dbapi_connection: Any, _record: Any) -> None:
            dbapi_connection.isolation_level = None
            cursor = dbapi_connection.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            # FULL syncs the WAL on every commit: acknowledged means durable, even on
            # power loss, not only on a process crash.
            cursor.execute("PRAGMA synchronous=FULL")
            # Readers of a WAL database wait only in rare moments (recovery after a crash)
            # and must not hold the event loop for long then; the writer waits in a thread.
            cursor.execute(f"PRAGMA busy_timeout={busy_ms}")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.close()

        @event.listens_for(engine, "begin")
        def on_begin(connection: Any) -> None:
            connection.exec_driver_sql(begin)

        return engine

    @asynccontextmanager
    async def transaction(self, name: str) -> AsyncIterator[Connection]:
        """A named write transaction; it commits when the block ends without error, and the
        block's caller goes on only once the commit is durable."""
        started = time.perf_counter()
        ok = False
        try:
            if self._writer_turn is None:
                async with self._writer.begin() as connection:
                    yield connection
            else:
                async with self._group_commit() as connection:
                    yield connection
            ok = True
        except BaseException as error:
            if _is_unavailable(error):
                log.warning("transaction %s: store unavailable: %s", name, _describe(error))
                raise StoreUnavailable(f"store unavailable during {name}") from error
            raise
        finally:
            self._observe(name, started, ok)

    @asynccontextmanager
    async def _group_commit(self) -> AsyncIterator[Connection]:
        """SQLite's write transactions, several to one durable commit.

        A durable commit waits for the disk (an fsync of the WAL), and SQLite has one
        writer. So writers queue for the writer connection; each runs in a savepoint of a
        shared transaction, and the last one in the queue commits it for all. Every caller
        waits for that commit before it goes on, so nothing is acknowledged before it is
        durable, and a writer that fails rolls back only its own savepoint.
        """
        turn = self._writer_turn
        assert turn is not None
        async with asyncio.timeout(self.timeout):
            await turn.take()
        try:
            batch = self._batch
            if batch is None:
                batch = self._batch = await _Batch.open(self._loop_writer, int(self.timeout * 1000))
            # Written out rather than begin_nested(): SQLAlchemy compiles that anew each time.
            batch.connection.exec_driver_sql("SAVEPOINT writer")
        except BaseException:
            self._batch = None
            turn.release()
            raise
        try:
            yield LoopConnection(batch.connection)
            batch.connection.exec_driver_sql("RELEASE writer")
        except BaseException:
            with contextlib.suppress(Exception):
                batch.connection.exec_driver_sql("ROLLBACK TO writer")
                batch.connection.exec_driver_sql("RELEASE writer")
            await self._end_turn(batch)
            raise
        batch.members += 1
        await self._end_turn(batch)
        await asyncio.shield(batch.committed)

    async def _end_turn(self, batch: _Batch) -> None:
        """Pass the writer on; commit the batch when nobody else is waiting for it."""
        turn = self._writer_turn
        assert turn is not None
        if turn.waiting and batch.members < MAX_GROUP_COMMIT:
            turn.release()
            return
        self._batch = None
        try:
            await batch.commit()
        finally:
            turn.release()

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
                log.warning("read %s: store unavailable: %s", name, _describe(error))
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

        The listening connection is kept open across database outages: when it drops (or
        stops answering) it is opened again, with capped backoff, and `callback` is called
        once it listens again, since notifications sent meanwhile were lost.
        SQLite has no notifications (its single process wakes its worker directly): None.
        """
        if self.kind != "postgresql":
            return None
        stopping = asyncio.Event()
        task = asyncio.create_task(
            self._keep_listening(channel, callback, stopping), name=f"listen {channel}"
        )

        async def stop() -> None:
            stopping.set()
            with contextlib.suppress(asyncio.TimeoutError, asyncio.CancelledError):
                await asyncio.wait_for(task, self.timeout + 1)

        return stop

    async def _keep_listening(
        self, channel: str, callback: Callable[[], None], stopping: asyncio.Event
    ) -> None:
        import asyncpg

        dsn = self.url.set(drivername="postgresql").render_as_string(hide_password=False)
        failures = 0
        while not stopping.is_set():
            connection: asyncpg.Connection | None = None
            lost = asyncio.Event()
            try:
                connection = await asyncpg.connect(dsn, timeout=self.timeout)
                connection.add_termination_listener(_setter(lost))
                await connection.add_listener(channel, lambda *_: callback())
                if failures:
                    log.warning("listening for %s notifications again", channel)
                failures = 0
                callback()  # whatever was committed while nobody listened is due now
                while not stopping.is_set() and not lost.is_set():
                    await _first_of(stopping, lost, seconds=LISTEN_CHECK_S)
                    if not stopping.is_set() and not lost.is_set():
                        # A frozen server or a dead network never closes the connection.
                        await connection.fetchval("SELECT 1", timeout=self.timeout)
            except Exception as error:  # any failure means: connect again
                failures += 1
                if failures == 1:
                    log.warning("not listening for %s notifications: %s", channel, _describe(error))
            finally:
                if connection is not None:
                    connection.terminate()
            if not stopping.is_set() and failures:
                delay = min(2.0**failures, MAX_LISTEN_BACKOFF_S) * random.uniform(0.5, 1.0)
                await _first_of(stopping, seconds=delay)

    async def ping(self) -> None:
        """Raise StoreUnavailable unless the database answers a trivial query in time."""
        async with self.snapshot("ping") as connection:
            await asyncio.wait_for(connection.execute(text("SELECT 1")), self.timeout)

    async def close(self) -> None:
        if self.kind == "sqlite":
            self._loop_writer.dispose()
            if self._loop_reader is not None:
                self._loop_reader.dispose()
        else:
            await self._writer.dispose()


def _describe(error: BaseException) -> str:
    """An error for the log: its message, or its kind when it has none (a timeout)."""
    return str(error) or type(error).__name__


def _setter(event: asyncio.Event) -> Callable[[Any], None]:
    return lambda _: event.set()


async def _first_of(*events: asyncio.Event, seconds: float) -> None:
    """Wait until one of `events` is set, or `seconds`."""
    waiters = [asyncio.ensure_future(event.wait()) for event in events]
    try:
        await asyncio.wait(waiters, timeout=seconds, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for waiter in waiters:
            waiter.cancel()
