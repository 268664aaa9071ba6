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
from pathlib import Path
from typing import Any, TypeVar

from sqlalchemy import exc, text
from sqlalchemy.engine import URL, make_url

from smsinbox.errors import StoreMissing, StoreUnavailable
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
# PostgreSQL's "database ... does not exist": no store there, which waiting will not mend.
INVALID_CATALOG_NAME = "3D000"

T = TypeVar("T")

# (transaction name, seconds, succeeded) -> None; the app feeds it into metrics.
TransactionObserver = Callable[[str, float, bool], None]


URL_FORMS = "sqlite:///relative/path.db, sqlite:////absolute/path.db or postgresql://user@host:port/database"


def driver_url(database_url: str) -> URL:
    """Map the documented URL forms onto the drivers smsinbox uses (asyncpg; SQLite's own)."""
    try:
        url = make_url(database_url)
        url.port  # noqa: B018 -- a port that is not a number fails here, not at connect
    except (exc.ArgumentError, ValueError):
        raise ValueError(
            f"database_url {_without_password(database_url)!r} is not a database URL; "
            f"expected {URL_FORMS}"
        ) from None
    backend = url.get_backend_name()
    if backend == "sqlite":
        if url.database in (None, "", ":memory:"):
            raise ValueError("SQLite needs a file path: sqlite:///path/to/smsinbox.db")
        return url.set(drivername="sqlite+pysqlite")
    if backend in ("postgresql", "postgres"):
        return url.set(drivername="postgresql+asyncpg")
    raise ValueError(
        f"database_url scheme {url.drivername!r} is not supported; expected {URL_FORMS}"
    )


def _without_password(database_url: str) -> str:
    """The URL as an operator may see it in an error: any password masked."""
    scheme, separator, rest = database_url.partition("://")
    credentials, at, location = rest.rpartition("@")
    if not separator or not at or ":" not in credentials:
        return database_url
    return f"{scheme}://{credentials.split(':', 1)[0]}:***@{location}"


def describe_url(url: URL) -> str:
    """Where a store is, for messages to the operator: a SQLite file's absolute path, or a
    PostgreSQL URL without its password."""
    if url.get_backend_name() == "sqlite":
        return str(Path(url.database or "").resolve())
    return url.set(drivername="postgresql").render_as_string(hide_password=True)


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
        create: bool = True,
    ) -> None:
        """`create` False: a SQLite file that does not exist is StoreMissing instead of a new,
        empty store (only the commands that make a store may make one)."""
        self.url = driver_url(database_url)
        self._observer = observer
        self.engine: StorageEngine
        if self.url.get_backend_name() == "sqlite":
            path = Path(self.url.database or "")
            if not create and not path.is_file():
                raise StoreMissing(
                    f"no smsinbox database at {path.resolve()}: `smsinbox db upgrade` creates one"
                )
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
    def where(self) -> str:
        """Where the store is, for the operator (see describe_url)."""
        return describe_url(self.url)

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

    def stable_snapshot(self, name: str) -> AbstractAsyncContextManager[Connection]:
        """A named read-only transaction whose statements all see one state, however long it
        lasts (see StorageEngine.stable_snapshot)."""
        return self._named("read", name, self.engine.stable_snapshot())

    def driver_snapshot(self, name: str) -> AbstractAsyncContextManager[Driver]:
        """Named reads of driver-level statements (store/driver.py), seeing what `snapshot`
        sees."""
        return self._named("read", name, self.engine.driver_snapshot())

    async def read_row(self, name: str, sql: str, parameters: Sequence[Any] = ()) -> Row | None:
        """One named driver-level read (see StorageEngine.read_row), timed as `snapshot`
        is, without a context manager around it."""
        return await self._read(name, self.engine.read_row, sql, parameters)

    async def read_rows(self, name: str, sql: str, parameters: Sequence[Any] = ()) -> list[Row]:
        """The rows of one named driver-level read (see StorageEngine.read_rows), as
        read_row reads one."""
        return await self._read(name, self.engine.read_rows, sql, parameters)

    async def _read(
        self,
        name: str,
        read: Callable[[str, Sequence[Any]], Awaitable[T]],
        sql: str,
        parameters: Sequence[Any],
    ) -> T:
        started = time.perf_counter()
        ok = False
        try:
            found = await read(sql, parameters)
            ok = True
            return found
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
    if _sqlstate(error) == INVALID_CATALOG_NAME:
        raise StoreMissing(f"{_describe(error)}: create it, then run `smsinbox db upgrade`")
    if _is_unavailable(error):
        log.warning("%s %s: store unavailable: %s", what, name, _describe(error))
        raise StoreUnavailable(f"store unavailable during {name}") from error


def _sqlstate(error: BaseException) -> str | None:
    """PostgreSQL's SQLSTATE of an error, raw from asyncpg or wrapped by SQLAlchemy."""
    for candidate in (error, getattr(error, "orig", None), error.__cause__):
        sqlstate = getattr(candidate, "sqlstate", None)
        if isinstance(sqlstate, str):
            return sqlstate
    return None


def unavailable_cause(error: StoreUnavailable) -> str:
    """What the database's outage was (the driver's words), for an operator's console; an
    API client is told only that the store is unavailable."""
    cause = error.__cause__
    while cause is not None and cause.__cause__ is not None and not str(cause):
        cause = cause.__cause__
    return _describe(cause) if cause is not None else error.detail


def _describe(error: BaseException) -> str:
    """An error for the log: its message, or its kind when it has none (a timeout)."""
    return str(error) or type(error).__name__
