"""PostgreSQL: the production engine. A pool of asyncpg connections, row locks, NOTIFY."""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import random
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from typing import Any, NamedTuple

import asyncpg
from sqlalchemy import Connection as SyncConnection
from sqlalchemy import event, exc, text
from sqlalchemy.engine import URL
from sqlalchemy.ext.asyncio import AsyncConnection, create_async_engine
from sqlalchemy.sql import ColumnElement, func

from smsinbox.store.driver import AsyncpgDriver, Driver, Row, numbered
from smsinbox.store.engine import Connection, SelectT, StorageEngine
from smsinbox.store.pgconnections import DriverConnections
from smsinbox.store.rows import MESSAGE_FIELDS_OF_M

log = logging.getLogger("smsinbox.store")

# How often an idle LISTEN connection is checked (a frozen server never closes it), and the
# longest pause between attempts to open it again.
LISTEN_CHECK_S = 10.0
MAX_LISTEN_BACKOFF_S = 30.0
# A pooled connection idle longer than this is checked before use (see _check_when_idle).
IDLE_CHECK_S = 1.0
# A search reads up to this many of the account's newest messages in order before it asks
# the trigram indexes for older ones (see search).
SEARCH_RECENT = 1000
# Any constant works; it only has to be the same in every process.
_MIGRATION_LOCK = 0x5D51B0C5


def listener_name(channel: str) -> str:
    """The application_name of the connection that listens on `channel`."""
    return f"smsinbox listen {channel}"


class PostgresEngine(StorageEngine):
    name = "postgresql"
    lock_rows_clause = " FOR UPDATE"
    # Ingest batches of different recipients commit side by side (store/ingest.py). Two,
    # not more: each batch costs both sides a share of CPU whatever its size, so more lanes
    # mean more, smaller batches; on the benchmark machine (two cores shared with the
    # database) two lanes stored as much as one with a shorter tail, and four a quarter
    # less, with twice PostgreSQL's CPU per message.
    concurrent_writes = 2

    def __init__(self, url: URL, *, pool_size: int, timeout: float) -> None:
        self.url = url
        self._timeout = timeout
        # All of the pool kept open once opened: connections opened "for bursts" and closed
        # as soon as they are returned (SQLAlchemy's overflow) meant, under steady load, a
        # new connection (a TLS handshake and a login) for many requests.
        self._engine = create_async_engine(
            url,
            pool_size=pool_size,
            max_overflow=0,
            pool_timeout=timeout,
            connect_args={"timeout": timeout, "command_timeout": timeout},
        )
        _check_when_idle(self._engine.sync_engine.pool)
        # asyncpg's own connection string, for connections opened outside SQLAlchemy.
        self._dsn = url.set(drivername="postgresql").render_as_string(hide_password=False)
        # As many again for driver-level statements outside transactions (the hot reads),
        # and sets of their own for the writes among them: a write holds its connection
        # until the disk has its commit, and sharing would make the token look-up of every
        # request wait behind the writes. asyncpg prepares each statement once per
        # connection, and PostgreSQL then plans it either anew for every run's values or,
        # after a few runs, once for any values (a generic plan) when that looks as cheap.
        # A push claim must be planned for its values: a generic plan chosen while the
        # outbox was nearly empty took a core for seconds a claim once a backlog of
        # thousands was due. An ingest batch's statement (arrays of rows) plans the same
        # for any values and took longer to plan than to run: planned once.
        self._driver_connections = DriverConnections(self._dsn, size=pool_size, timeout=timeout)
        self._writes = DriverConnections(
            self._dsn,
            size=pool_size,
            timeout=timeout,
            server_settings={"plan_cache_mode": "force_custom_plan"},
        )
        self._batch_writes = DriverConnections(
            self._dsn,
            size=self.concurrent_writes,
            timeout=timeout,
            server_settings={"plan_cache_mode": "force_generic_plan"},
        )
        self._driver_sets = (self._driver_connections, self._writes, self._batch_writes)

    @property
    def timeout(self) -> float:
        return self._timeout

    @timeout.setter
    def timeout(self, seconds: float) -> None:
        self._timeout = seconds
        for connections in self._driver_sets:
            connections.timeout = seconds

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[Connection]:
        async with (
            self._engine.connect() as connection,
            _replaced_when_lost(connection),
            connection.begin(),
        ):
            yield connection

    @asynccontextmanager
    async def snapshot(self) -> AsyncIterator[Connection]:
        async with (
            self._engine.connect() as connection,
            _replaced_when_lost(connection),
            connection.begin(),
        ):
            yield connection

    @asynccontextmanager
    async def driver_snapshot(self) -> AsyncIterator[Driver]:
        # No BEGIN and COMMIT: under READ COMMITTED each statement reads a snapshot of its
        # own whether or not a transaction is open, and on the hot read paths the two extra
        # round trips cost more than the read.
        async with self._driver_connections.lend() as connection:
            yield AsyncpgDriver(connection)

    async def read_row(self, sql: str, parameters: Sequence[Any] = ()) -> Row | None:
        row: Row | None = await self._read_alone(asyncpg.Connection.fetchrow, sql, parameters)
        return row

    async def read_rows(self, sql: str, parameters: Sequence[Any] = ()) -> list[Row]:
        rows: list[Row] = await self._read_alone(asyncpg.Connection.fetch, sql, parameters)
        return rows

    async def _read_alone(
        self, read: Callable[..., Awaitable[Any]], sql: str, parameters: Sequence[Any]
    ) -> Any:
        """`read` (an asyncpg Connection method) of one statement, on a connection taken and
        given back around it: no context manager's generator (see DriverConnections)."""
        connections = self._driver_connections
        connection = await connections.acquire()
        try:
            found = await read(connection, numbered(sql), *parameters)
        except BaseException as error:
            raise connections.release_failed(connection, error)  # noqa: B904 (chained there)
        connections.release(connection)
        return found

    @asynccontextmanager
    async def driver_write(self, *, planned_once: bool = False) -> AsyncIterator[Driver]:
        # Outside a transaction, as driver_snapshot: each statement commits on its own.
        connections = self._batch_writes if planned_once else self._writes
        async with connections.lend() as connection:
            yield AsyncpgDriver(connection)

    async def driver_notify(self, driver: Driver, channel: str) -> None:
        # Delivered to listeners when its transaction commits, as NOTIFY is; outside one,
        # at once.
        await driver.execute("SELECT pg_notify(?, '')", (channel,))

    async def driver(self, connection: Connection) -> Driver:
        assert isinstance(connection, AsyncConnection)
        adapted: Any = (await connection.get_raw_connection()).dbapi_connection
        # SQLAlchemy's asyncpg adapter sends BEGIN only before its own first statement;
        # driver-level statements before that would each commit on their own.
        if not adapted._started:
            await adapted._start_transaction()
        return AsyncpgDriver(adapted.driver_connection)

    def each_with_its_rows(self, groups: str, table: str, per_group: str) -> str:
        # A correlated IN list here is planned as a filter over the whole of `table`.
        return f"{groups} CROSS JOIN LATERAL ({per_group}) AS due JOIN {table} d ON d.id = due.id"

    def for_update(self, statement: SelectT, *, skip_locked: bool = False) -> SelectT:
        return statement.with_for_update(skip_locked=skip_locked)

    async def notify(self, connection: Connection, channel: str) -> None:
        # Delivered to listeners when this transaction commits.
        await connection.execute(text(f"NOTIFY {channel}"))

    async def listen(
        self, channel: str, callback: Callable[[], None]
    ) -> Callable[[], Awaitable[None]] | None:
        """The listening connection is kept open across database outages: when it drops (or
        stops answering) it is opened again, with capped backoff, and `callback` is called
        once it listens again, since notifications sent meanwhile were lost."""
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
        failures = 0
        while not stopping.is_set():
            connection: asyncpg.Connection | None = None
            lost = asyncio.Event()
            try:
                connection = await asyncpg.connect(
                    self._dsn,
                    timeout=self.timeout,
                    # Named, so an operator (or a test) finds it in pg_stat_activity, whose
                    # `query` shows the last check, not the LISTEN.
                    server_settings={"application_name": listener_name(channel)},
                )
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

    def greatest(self, first: ColumnElement[Any], second: Any) -> ColumnElement[Any]:
        return func.greatest(first, second)

    async def prepare_search(self) -> None:
        return None  # GIN indexes are written with the rows they index

    async def search(
        self,
        driver: Driver,
        where: str,
        parameters: Sequence[Any],
        account_id: int,
        query: str,
        limit: int,
    ) -> list[Row]:
        # The account's newest messages first, read in id order from its index: a search
        # for a common word fills its page there. Left to choose, the planner took the
        # pg_trgm indexes, which hold every account's messages, and over a million
        # messages intersected 200,000 rows for one account's "message 7" (50 ms, against
        # 2 ms for the account's newest few hundred read in order). The index carries the
        # searched columns (tables.SEARCHED_COLUMNS), so the match runs on its entries and
        # only the page found is read from the table: the account's messages lie one to a
        # page among everyone else's, and reading each candidate's page cost 8-10 ms at
        # p99 over a million messages, against 1.3-2.4 ms (migration 0010). Beyond the
        # newest SEARCH_RECENT, what is still missing is left to the planner and the
        # trigram indexes: a rare word in a large account.
        pattern = like_pattern(query)
        statements = _search_statements(where)
        rows = await driver.fetch(
            statements.recent, (*parameters, SEARCH_RECENT, pattern, pattern, limit)
        )
        if len(rows) == limit:
            return rows
        boundary = await driver.fetchval(statements.boundary, (*parameters, SEARCH_RECENT - 1))
        if boundary is None:
            return rows  # the account has no more messages than were read
        older = await driver.fetch(
            statements.older, (*parameters, boundary, pattern, pattern, limit)
        )
        # Each statement reads a snapshot of its own: a message stored between the two
        # moves the boundary up, and a row of both answers is kept once.
        seen = {row[0] for row in rows}
        rows += [row for row in older if row[0] not in seen]
        rows.sort(key=lambda row: row[0], reverse=True)
        return rows[:limit]

    @asynccontextmanager
    async def stable_snapshot(self) -> AsyncIterator[Connection]:
        # Read committed gives each statement a snapshot of its own: an export's tables
        # read one after another would disagree (a message newer than its account's
        # counters). Repeatable read keeps the first statement's snapshot to the end.
        async with (
            self._engine.connect() as connection,
            _replaced_when_lost(connection),
            connection.begin(),
        ):
            await connection.execute(_REPEATABLE_READ)
            yield connection

    async def ids_given(self, driver: Driver, table: str) -> int:
        return int(await driver.fetchval(_IDS_GIVEN, (table,)))

    async def advance_ids(self, driver: Driver, table: str, past: int) -> None:
        # setval is not transactional: the sequence stays advanced if the transaction rolls
        # back, which only leaves a gap (ids are never reused either way).
        await driver.execute(_ADVANCE_IDS, (table, past, past, table))

    async def index_imported(self, connection: Connection, account_id: int) -> None:
        return None  # GIN indexes are written with the rows they index

    def refuses_data(self, error: BaseException) -> bool:
        refused = asyncpg.IntegrityConstraintViolationError | asyncpg.DataError
        if isinstance(error, refused):
            return True
        # asyncpg's own refusal of a value a column cannot hold (an int4 out of range),
        # before the statement is sent.
        return isinstance(error, ValueError) and type(error).__module__.startswith("asyncpg")

    def serialise_migrations(self, connection: SyncConnection) -> None:
        # The lock ends with the transaction.
        connection.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _MIGRATION_LOCK})

    async def close(self) -> None:
        for connections in self._driver_sets:
            await connections.close()
        await self._engine.dispose()


@asynccontextmanager
async def _replaced_when_lost(connection: AsyncConnection) -> AsyncIterator[Any]:
    """The asyncpg connection under `connection`, dropped from the pool if it is lost while
    in use. A statement run on the driver itself bypasses SQLAlchemy, which would otherwise
    notice a lost connection and drop it: without this, a connection closed by a restart of
    the database went back to the pool and failed every request it was lent to."""
    driver_connection: Any = (await connection.get_raw_connection()).driver_connection
    try:
        yield driver_connection
    except Exception as error:
        if not driver_connection.is_closed():
            raise
        await connection.invalidate()
        raise ConnectionError(f"connection to the database lost: {_describe(error)}") from error


def _check_when_idle(pool: Any) -> None:
    """A connection that sat in the pool is checked (a round trip) before it is handed out,
    so one left broken by a restart of the database is replaced unseen; one in steady use
    is not: checking every request's connection cost a sixth of an ingest under load. A
    connection that breaks while in use fails its request as unavailable, and SQLAlchemy
    then replaces every connection of the pool."""

    @event.listens_for(pool, "checkin")
    def returned(dbapi_connection: Any, record: Any) -> None:
        record.info["returned_at"] = time.monotonic()

    @event.listens_for(pool, "checkout")
    def handed_out(dbapi_connection: Any, record: Any, proxy: Any) -> None:
        if dbapi_connection.driver_connection.is_closed():
            raise exc.DisconnectionError()  # the driver saw it close: no round trip needed
        returned_at = record.info.get("returned_at")
        if returned_at is None or time.monotonic() - returned_at < IDLE_CHECK_S:
            return
        try:
            dbapi_connection.ping()
        except Exception as error:
            # The pool opens another connection in its place.
            raise exc.DisconnectionError() from error


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


_REPEATABLE_READ = text("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
_SEQUENCE = "CAST(pg_get_serial_sequence(?, 'id') AS regclass)"
_IDS_GIVEN = f"SELECT COALESCE(pg_sequence_last_value({_SEQUENCE}), 0)"
# Only ever forward: a sequence that has gone past `past` is left as it is.
_ADVANCE_IDS = (
    f"SELECT setval({_SEQUENCE}, CAST(? AS BIGINT))"
    f" WHERE CAST(? AS BIGINT) > COALESCE(pg_sequence_last_value({_SEQUENCE}), 0)"
)


def like_pattern(query: str) -> str:
    """A LIKE pattern that matches `query` literally anywhere (escape character `\\`)."""
    escaped = query.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"


class _SearchStatements(NamedTuple):
    recent: str  # the match among the newest messages, read in order from the index
    boundary: str  # the oldest of those
    older: str  # the match among the messages before it


def _matches(alias: str) -> str:
    return f"({alias}.text ILIKE ? ESCAPE '\\' OR {alias}.counterpart ILIKE ? ESCAPE '\\')"


@functools.cache
def _search_statements(where: str) -> _SearchStatements:
    """A search's statements for the store's condition `where` (see search)."""
    # A LIMIT in the innermost query keeps the match out of it: the planner cannot push it
    # down to an index and reads the newest entries in order, stopping at a full page.
    newest = (
        f"SELECT m.id, m.text, m.counterpart FROM messages m WHERE {where}"  # noqa: S608
        " ORDER BY m.id DESC LIMIT ?"
    )
    found = (
        f"SELECT id FROM ({newest}) recent WHERE {_matches('recent')}"  # noqa: S608
        " ORDER BY id DESC LIMIT ?"
    )
    return _SearchStatements(
        recent=f"SELECT {MESSAGE_FIELDS_OF_M} FROM messages m JOIN ({found}) found"  # noqa: S608
        " ON m.id = found.id ORDER BY m.id DESC",
        boundary=f"SELECT m.id FROM messages m WHERE {where}"  # noqa: S608
        " ORDER BY m.id DESC LIMIT 1 OFFSET ?",
        older=f"SELECT {MESSAGE_FIELDS_OF_M} FROM messages m WHERE {where} AND m.id < ?"  # noqa: S608
        f" AND {_matches('m')} ORDER BY m.id DESC LIMIT ?",
    )
