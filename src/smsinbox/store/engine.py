"""What a storage engine is: the one object that knows how SQLite or PostgreSQL differs.

Store modules speak SQLAlchemy Core (cold paths) or driver-level SQL (store/driver.py, hot
paths) that means the same on both engines. Where the engines differ (how a transaction
begins and commits, row locks, wake-ups of other processes, full-text search, the greatest
of two values, migrations run by several processes at once) store code calls a method of
its engine, never a test of which engine it is (in the spirit of Synapse's
`database_engine`). Database (store/database.py) picks the engine from the URL and adds
what both share: names, metrics, and "store unavailable" for a database that is down.
"""

from __future__ import annotations

import abc
from collections.abc import Awaitable, Callable, Sequence
from contextlib import AbstractAsyncContextManager
from typing import Any, Protocol, TypeVar

from sqlalchemy import Connection as SyncConnection
from sqlalchemy import Select
from sqlalchemy.engine import CursorResult, Dialect, ScalarResult
from sqlalchemy.sql import ColumnElement, Executable

from smsinbox.store.driver import Driver, Row

T = TypeVar("T")
SelectT = TypeVar("SelectT", bound=Select[Any])


class Connection(Protocol):
    """What store code does with a connection: SQLAlchemy's AsyncConnection has it, and
    SQLite's LoopConnection too."""

    @property
    def dialect(self) -> Dialect: ...

    async def execute(self, statement: Executable, parameters: Any = None) -> CursorResult[Any]: ...

    async def scalar(self, statement: Executable, parameters: Any = None) -> Any: ...

    async def scalars(self, statement: Executable, parameters: Any = None) -> ScalarResult[Any]: ...

    async def run_sync(self, fn: Callable[..., T], *args: Any) -> T: ...


class StorageEngine(abc.ABC):
    """SQLite or PostgreSQL: transactions, driver access and the SQL that differs."""

    name: str
    timeout: float
    # Appended to a driver-level SELECT that must lock the rows it reads (see for_update).
    lock_rows_clause: str
    # Write transactions worth running side by side (ingest batches, for one).
    concurrent_writes: int

    @abc.abstractmethod
    def transaction(self) -> AbstractAsyncContextManager[Connection]:
        """A write transaction that commits (durably) when the block ends without error."""

    @abc.abstractmethod
    def snapshot(self) -> AbstractAsyncContextManager[Connection]:
        """A read-only transaction: one consistent view of the store."""

    @abc.abstractmethod
    def driver_snapshot(self) -> AbstractAsyncContextManager[Driver]:
        """Reads on the driver alone, for the hot read paths: what `snapshot` gives (one
        snapshot for all on SQLite; a snapshot per statement under PostgreSQL's read
        committed, as in any of its transactions), with less around it."""

    @abc.abstractmethod
    async def read_row(self, sql: str, parameters: Sequence[Any] = ()) -> Row | None:
        """One driver-level statement read on its own (a snapshot of its own), for the
        look-ups nearly every request makes (tokens, accounts): no more around it than the
        engine needs."""

    @abc.abstractmethod
    async def read_rows(self, sql: str, parameters: Sequence[Any] = ()) -> list[Row]:
        """One driver-level statement's rows, read as read_row reads one (a poll's page,
        once the poll knows it needs nothing else)."""

    def stable_snapshot(self) -> AbstractAsyncContextManager[Connection]:
        """A read-only transaction whose every statement sees the same state, however long
        it lasts (an export reads an account's tables one after another)."""
        return self.snapshot()

    @abc.abstractmethod
    def driver_write(self, *, planned_once: bool = False) -> AbstractAsyncContextManager[Driver]:
        """A driver connection for a write done in one statement where the database is a
        server (`Driver.remote`): there each statement commits on its own, atomically, with
        no BEGIN and COMMIT round trips around it. SQLite runs the block in a write
        transaction of its one writer, where statements cost no round trip at all.

        `planned_once`: the statements' best plan does not depend on their parameters (an
        ingest batch's arrays of rows), so a server may plan them once per connection;
        otherwise it plans them for the values of each run (a push claim, whose best plan
        depends on how much is due)."""

    @abc.abstractmethod
    async def driver_notify(self, driver: Driver, channel: str) -> None:
        """`notify` on a `driver_write` connection: on its commit, or at once outside a
        transaction."""

    @abc.abstractmethod
    async def driver(self, connection: Connection) -> Driver:
        """The driver connection under `connection`, in the same transaction."""

    @abc.abstractmethod
    def each_with_its_rows(self, groups: str, table: str, per_group: str) -> str:
        """A FROM clause: each row of `groups` (a table and its alias) joined to the rows of
        `table`, as `d`, whose ids `per_group` selects for it (a SELECT correlated to the
        group's alias, usually ending in a LIMIT: the first few rows of each group)."""

    @abc.abstractmethod
    def for_update(self, statement: SelectT, *, skip_locked: bool = False) -> SelectT:
        """`statement` locking the rows it reads until the transaction ends, where the
        engine has row locks; with `skip_locked`, rows locked by another transaction are
        left out rather than waited for."""

    @abc.abstractmethod
    async def notify(self, connection: Connection, channel: str) -> None:
        """Wake other processes' listeners on `channel` once this transaction commits."""

    @abc.abstractmethod
    async def listen(
        self, channel: str, callback: Callable[[], None]
    ) -> Callable[[], Awaitable[None]] | None:
        """Call `callback` on each notification on `channel`; returns how to stop, or None
        where the engine has no notifications (one process wakes its own workers)."""

    @abc.abstractmethod
    def greatest(self, first: ColumnElement[Any], second: Any) -> ColumnElement[Any]:
        """The larger of two values."""

    @abc.abstractmethod
    async def search(
        self,
        driver: Driver,
        where: str,
        parameters: Sequence[Any],
        account_id: int,
        query: str,
        limit: int,
    ) -> list[Row]:
        """The account's messages that may be found (`where`: a condition on `messages`
        named `m`, written by the store, with `parameters` for its placeholders) whose text
        or counterpart contains `query`, case-insensitively: the newest `limit`, newest
        first, each a row of MESSAGE_FIELDS."""

    @abc.abstractmethod
    async def prepare_search(self) -> None:
        """Make `search` see every message committed before the call."""

    @abc.abstractmethod
    async def ids_given(self, driver: Driver, table: str) -> int:
        """The highest id `table` has given out (0 if none): every id of its rows, and of
        those since deleted, is at most this."""

    @abc.abstractmethod
    async def advance_ids(self, driver: Driver, table: str, past: int) -> None:
        """Make `table` give out only ids above `past` from now on (rows written with ids
        of their own, by an import); never moves it back."""

    @abc.abstractmethod
    async def index_imported(self, connection: Connection, account_id: int) -> None:
        """In the open transaction: make `search` find the account's messages, which were
        written with ids of their own (an import) rather than in the order ids are given."""

    @abc.abstractmethod
    def refuses_data(self, error: BaseException) -> bool:
        """Whether `error`, raised by a driver-level write, is the database refusing the
        rows (a constraint, a value it cannot hold) rather than failing itself."""

    @abc.abstractmethod
    def serialise_migrations(self, connection: SyncConnection) -> None:
        """Make concurrent migrations of several processes run one after another."""

    @abc.abstractmethod
    async def close(self) -> None: ...
