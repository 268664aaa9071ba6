"""SQLite: the embedded engine. One writer in turns with group commit, reads on the loop.

SQLite statements take microseconds and reads of a WAL database never wait for writers,
so statements run right on the event loop thread; only what waits (BEGIN IMMEDIATE for
another process's lock, COMMIT for the disk) goes to a thread. Writers take turns on the
one writer connection, each in a savepoint of a shared transaction, and one durable commit
covers them all (group commit).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import sqlite3
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, TypeVar

from sqlalchemy import Connection as SyncConnection
from sqlalchemy import RootTransaction, create_engine, event
from sqlalchemy.engine import URL, CursorResult, Dialect, Engine, ScalarResult
from sqlalchemy.sql import ColumnElement, Executable, func

from smsinbox.store import fts
from smsinbox.store.driver import Driver, Row, SqliteDriver
from smsinbox.store.engine import Connection, SelectT, StorageEngine
from smsinbox.store.rows import MESSAGE_FIELDS_OF_M

T = TypeVar("T")

log = logging.getLogger("smsinbox.store")

LOOP_READ_BUSY_MS = 250
# Most writers whose work one commit makes durable.
MAX_GROUP_COMMIT = 256
# Longest the event loop waits for the commit's thread to begin (see _Batch.commit).
COMMIT_HANDOFF_S = 0.001


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
        # Savepoints go to sqlite3 itself: through SQLAlchemy's execution (events, a result
        # object) each cost more than the statement, three times a writer.
        self.dbapi_connection: sqlite3.Connection = connection.connection.dbapi_connection  # type: ignore[assignment]
        self.members = 0
        self.committed: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    @classmethod
    async def open(cls, connection: SyncConnection, busy_ms: int) -> _Batch:
        try:
            transaction = connection.begin()
        except sqlite3.OperationalError:  # locked by another process, or not writable
            transaction = await asyncio.to_thread(_begin_waiting, connection, busy_ms)
        return cls(connection, transaction)

    async def commit(self, committer: ThreadPoolExecutor) -> bool:
        """Commit for every member in `committer`'s thread; whether it did (a failed commit
        leaves the connection in a state its owner should not reuse).

        A thread woken to run the COMMIT must take the interpreter lock before it can
        start, and a busy event loop thread holds that lock until it next waits or its
        switch interval (5 ms) runs out: the COMMIT began 1.2-1.4 ms (median) after it was
        handed over, and the writer, with the next batch's messages, waited all that time.
        So the loop thread waits, the lock released, until the thread has begun: at most a
        millisecond, 0.07-0.08 ms as measured, after which the COMMIT began within 0.13 ms.
        Ingest at 10k stored 16-29% more (docs/performance.md)."""
        try:
            await handed_over(committer, self.transaction.commit)
        except BaseException as error:
            self.committed.set_exception(error)
            if not self.members:
                self.committed.exception()  # nobody waits for it: don't warn
            return False
        self.committed.set_result(None)
        return True


async def handed_over(thread: ThreadPoolExecutor, work: Callable[[], T]) -> T:
    """`work` in `thread` (an executor of one thread), the event loop waiting, with the
    interpreter lock released and for at most COMMIT_HANDOFF_S, until the thread has begun
    it (see _Batch.commit)."""
    began = threading.Event()

    def begin() -> T:
        began.set()
        return work()

    running = asyncio.get_running_loop().run_in_executor(thread, begin)
    began.wait(COMMIT_HANDOFF_S)
    return await running


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


def _keep_search_index(connection: SyncConnection) -> None:
    """Index a chunk of messages for search if a chunk's worth is missing (store/fts.py),
    in the batch's transaction; a failure leaves it to the next commit or search."""
    dbapi_connection = connection.connection.dbapi_connection
    assert isinstance(dbapi_connection, sqlite3.Connection)
    try:
        # Most commits leave less than a chunk behind: no savepoint for them.
        newest, indexed = fts.newest_and_indexed(dbapi_connection)
        if newest - indexed < fts.CHUNK:
            return
        dbapi_connection.execute("SAVEPOINT search_index")
        try:
            fts.index_chunk(dbapi_connection, at_least=fts.CHUNK)
        except sqlite3.Error:
            dbapi_connection.execute("ROLLBACK TO search_index")
            raise
        finally:
            dbapi_connection.execute("RELEASE search_index")
    except sqlite3.Error as error:
        log.warning("search index not brought up to date: %s", error)


class LoopConnection:
    """A synchronous SQLite connection used right on the event loop thread.

    SQLite statements take microseconds, and reads of a WAL database never wait for
    writers; handing each statement to a worker thread costs far more than the statement
    in thread switches. Reads and writes both run here; only what waits (BEGIN IMMEDIATE for
    another process's lock, COMMIT for the disk) goes to a thread (see group commit).
    """

    __slots__ = ("_connection",)

    def __init__(self, connection: SyncConnection) -> None:
        self._connection = connection

    @property
    def dbapi_connection(self) -> Any:
        """The `sqlite3` connection under it (for driver-level statements)."""
        return self._connection.connection.dbapi_connection

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


class SqliteEngine(StorageEngine):
    name = "sqlite"
    lock_rows_clause = ""  # one writer at a time holds the whole database
    concurrent_writes = 1  # the one writer

    def __init__(self, url: URL, *, pool_size: int, timeout: float) -> None:
        self.url = url
        self.timeout = timeout
        path = Path(url.database or "")
        path.parent.mkdir(parents=True, exist_ok=True)
        # One writer connection, taken in turns in-process and serialised across processes
        # by BEGIN IMMEDIATE; reads run on their own pool and never wait for it. The writer
        # never waits on the loop thread: see _Batch.open.
        self._writer = self._loop_engine(1, begin="BEGIN IMMEDIATE", busy_ms=0, writer=True)
        self._reader = self._loop_engine(pool_size, begin="BEGIN", busy_ms=LOOP_READ_BUSY_MS)
        self._turn = _WriterTurn()
        self._batch: _Batch | None = None
        self._held_writer: SyncConnection | None = None
        # Commits, one at a time (there is one writer), in a thread of their own: always
        # idle when one is handed over, never behind other work. Started with the first.
        self._committer: ThreadPoolExecutor | None = None
        self._pool_size = pool_size
        self._idle_readers: list[sqlite3.Connection] = []

    def _loop_engine(
        self, pool_size: int, *, begin: str, busy_ms: int, writer: bool = False
    ) -> Engine:
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
            if writer:
                # Each writer of a shared transaction runs in a savepoint (see transaction),
                # and a page first changed in a savepoint is copied to its sub-journal: in a
                # temporary file by default, which doubled the cost of a message's INSERT
                # (18.6 -> 38.1 us; in memory 18.5). The copies last one savepoint: a
                # batch's pages, not the database's.
                cursor.execute("PRAGMA temp_store=MEMORY")
            cursor.close()

        @event.listens_for(engine, "begin")
        def on_begin(connection: Any) -> None:
            # Straight to sqlite3: SQLAlchemy's execution (events, a result object) cost
            # more than the statement. A locked database raises sqlite3's own error then.
            connection.connection.dbapi_connection.execute(begin)

        return engine

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[Connection]:
        """Several writers to one durable commit (group commit).

        A durable commit waits for the disk (an fsync of the WAL), and SQLite has one
        writer. So writers queue for the writer connection; each runs in a savepoint of a
        shared transaction, and the last one in the queue commits it for all. Every caller
        waits for that commit before it goes on, so nothing is acknowledged before it is
        durable, and a writer that fails rolls back only its own savepoint.

        The batch's first writer needs no savepoint: should it fail, nothing of anyone
        else's is in the transaction yet, and the whole of it is rolled back. A savepoint
        copies every page it is the first to change (its sub-journal), and under load the
        first writer is most often the only one (an ingest batch): its statements cost
        36-44 us a message without one, 46-53 with (bare sqlite3, batches of 16).
        """
        turn = self._turn
        async with asyncio.timeout(self.timeout):
            await turn.take()
        try:
            batch = self._batch
            first = batch is None
            if batch is None:
                batch = self._batch = await self._open_batch()
            else:
                # Written out rather than begin_nested(): SQLAlchemy compiles that anew
                # each time.
                batch.dbapi_connection.execute("SAVEPOINT writer")
        except BaseException:
            self._batch = None
            turn.release()
            raise
        try:
            yield LoopConnection(batch.connection)
            if not first:
                batch.dbapi_connection.execute("RELEASE writer")
        except BaseException:
            if first:
                self._abandon(batch)
                turn.release()
                raise
            with contextlib.suppress(Exception):
                batch.dbapi_connection.execute("ROLLBACK TO writer")
                batch.dbapi_connection.execute("RELEASE writer")
            await self._end_turn(batch)
            raise
        batch.members += 1
        await self._end_turn(batch)
        await asyncio.shield(batch.committed)

    async def _end_turn(self, batch: _Batch) -> None:
        """Pass the writer on; commit the batch when nobody else is waiting for it."""
        turn = self._turn
        if turn.waiting and batch.members < MAX_GROUP_COMMIT:
            turn.release()
            return
        self._batch = None
        committed = False
        try:
            _keep_search_index(batch.connection)
            if self._committer is None:
                self._committer = ThreadPoolExecutor(1, thread_name_prefix="sqlite-commit")
            committed = await batch.commit(self._committer)
        finally:
            if not committed:
                self._drop_writer_connection()
            turn.release()

    def _abandon(self, batch: _Batch) -> None:
        """Roll back a batch whose first writer failed (it holds nobody else's work)."""
        self._batch = None
        try:
            batch.transaction.rollback()
        except Exception:
            self._drop_writer_connection()  # in an unknown state

    async def _open_batch(self) -> _Batch:
        try:
            return await _Batch.open(self._writer_connection(), int(self.timeout * 1000))
        except BaseException:
            self._drop_writer_connection()
            raise

    def _writer_connection(self) -> SyncConnection:
        """The one writer connection, held from batch to batch. Taken from its pool and
        given back for each batch, the pool's checkout and return (events, a reset) cost
        more than a whole batch's transaction control."""
        if self._held_writer is None:
            self._held_writer = self._writer.connect()
        return self._held_writer

    def _drop_writer_connection(self) -> None:
        """Back to the pool, which resets it (rolls back whatever a failure left open)."""
        held, self._held_writer = self._held_writer, None
        if held is not None:
            held.close()

    async def prepare_search(self) -> None:
        async with self.driver_snapshot() as reader:
            newest, indexed = await reader.fetchrow(fts.BACKLOG) or (0, 0)
        while indexed < newest:  # the messages committed before the search began
            async with self.transaction() as connection:
                assert isinstance(connection, LoopConnection)
                if not fts.index_chunk(connection.dbapi_connection, at_least=1, up_to=newest):
                    return

    @asynccontextmanager
    async def snapshot(self) -> AsyncIterator[Connection]:
        with self._reader.connect() as connection, connection.begin():
            yield LoopConnection(connection)

    @asynccontextmanager
    async def driver_write(self, *, planned_once: bool = False) -> AsyncIterator[Driver]:
        # sqlite3 plans a statement when it prepares it, and keeps the plan.
        async with self.transaction() as connection:
            yield await self.driver(connection)

    async def driver_notify(self, driver: Driver, channel: str) -> None:
        return None  # as notify

    @asynccontextmanager
    async def driver_snapshot(self) -> AsyncIterator[Driver]:
        # Connections of its own, BEGIN and COMMIT on the driver too: SQLAlchemy's pool
        # checkout, begin event and transaction objects cost more than a short read.
        reader = self._borrow_reader()
        try:
            reader.execute("BEGIN")
            try:
                yield SqliteDriver(reader)
            finally:
                reader.execute("COMMIT")
        except BaseException:
            reader.close()  # in an unknown state
            raise
        self._return_reader(reader)

    async def read_row(self, sql: str, parameters: Sequence[Any] = ()) -> Row | None:
        rows = await self.read_rows(sql, parameters)
        return rows[0] if rows else None

    async def read_rows(self, sql: str, parameters: Sequence[Any] = ()) -> list[Row]:
        # One statement in autocommit mode is a read transaction of its own: no BEGIN and
        # COMMIT around it (two more statements), no context manager. Read to its end, so
        # the statement is done and its snapshot released at once.
        reader = self._borrow_reader()
        try:
            rows: list[Row] = reader.execute(sql, parameters).fetchall()
        except BaseException:
            reader.close()
            raise
        self._return_reader(reader)
        return rows

    def _borrow_reader(self) -> sqlite3.Connection:
        return self._idle_readers.pop() if self._idle_readers else self._open_reader()

    def _return_reader(self, reader: sqlite3.Connection) -> None:
        if len(self._idle_readers) < self._pool_size:
            self._idle_readers.append(reader)
        else:
            reader.close()

    def _open_reader(self) -> sqlite3.Connection:
        reader = sqlite3.connect(
            self.url.database or "", isolation_level=None, check_same_thread=False
        )
        reader.execute(f"PRAGMA busy_timeout={LOOP_READ_BUSY_MS}")
        return reader

    async def driver(self, connection: Connection) -> Driver:
        assert isinstance(connection, LoopConnection)
        return SqliteDriver(connection.dbapi_connection)

    def each_with_its_rows(self, groups: str, table: str, per_group: str) -> str:
        # No LATERAL; a correlated IN list runs `per_group` once per group, from its index.
        return f"{groups} JOIN {table} d ON d.id IN ({per_group})"

    def for_update(self, statement: SelectT, *, skip_locked: bool = False) -> SelectT:
        return statement  # one writer at a time: whoever writes holds the whole database

    async def notify(self, connection: Connection, channel: str) -> None:
        return None  # one process per database file wakes its own workers

    async def listen(
        self, channel: str, callback: Callable[[], None]
    ) -> Callable[[], Awaitable[None]] | None:
        return None

    def greatest(self, first: ColumnElement[Any], second: Any) -> ColumnElement[Any]:
        return func.max(first, second)  # SQLite's max() of several arguments

    async def search(
        self,
        driver: Driver,
        where: str,
        parameters: Sequence[Any],
        account_id: int,
        query: str,
        limit: int,
    ) -> list[Row]:
        # A phrase in double quotes matches literally (FTS5 syntax in the query means
        # nothing).
        phrase = '"' + query.replace('"', '""') + '"'
        first, last = fts.account_keys(account_id)
        parameters = (first, *parameters, first, last, phrase, limit)
        return await driver.fetch(search_sql(where), parameters)

    async def ids_given(self, driver: Driver, table: str) -> int:
        # AUTOINCREMENT keeps the highest id a table ever had in sqlite_sequence.
        given = await driver.fetchval(_IDS_GIVEN, (table,))
        return 0 if given is None else int(given)

    async def advance_ids(self, driver: Driver, table: str, past: int) -> None:
        # In the transaction: rolled back with it.
        await driver.execute(_ADVANCE_IDS, (past, table, past))
        await driver.execute(_FIRST_IDS, (table, past, table))

    async def index_imported(self, connection: Connection, account_id: int) -> None:
        assert isinstance(connection, LoopConnection)
        fts.index_imported(connection.dbapi_connection, account_id)

    def refuses_data(self, error: BaseException) -> bool:
        return isinstance(error, sqlite3.IntegrityError | sqlite3.DataError)

    def serialise_migrations(self, connection: SyncConnection) -> None:
        return None  # the migration's write transaction holds the database

    async def close(self) -> None:
        self._drop_writer_connection()
        committer, self._committer = self._committer, None
        if committer is not None:
            committer.shutdown()
        self._writer.dispose()
        self._reader.dispose()
        while self._idle_readers:
            self._idle_readers.pop().close()


_IDS_GIVEN = "SELECT seq FROM sqlite_sequence WHERE name = ?"
_ADVANCE_IDS = "UPDATE sqlite_sequence SET seq = ? WHERE name = ? AND seq < ?"
# A table that never had a row has no line in sqlite_sequence yet.
_FIRST_IDS = (
    "INSERT INTO sqlite_sequence (name, seq) SELECT ?, ?"
    " WHERE NOT EXISTS (SELECT 1 FROM sqlite_sequence WHERE name = ?)"
)


@functools.cache
def search_sql(where: str) -> str:
    """A search's statement (parameters: the account's first key, those of `where`, the
    account's first and last keys, the phrase, the limit): the account's stretch of the
    index (store/fts.py), joined to its messages by sequence."""
    return (
        f"SELECT {MESSAGE_FIELDS_OF_M} FROM messages m"  # noqa: S608 (our own condition)
        " JOIN messages_search ON m.seq = messages_search.rowid - ?"
        f" WHERE {where} AND messages_search.rowid BETWEEN ? AND ?"
        " AND messages_search MATCH ? ORDER BY m.id DESC LIMIT ?"
    )
