"""Statements straight on the database driver, for the paths that run thousands of times a
second.

SQLAlchemy Core builds, caches and executes a statement and wraps every row; measured on
ingest, that was three quarters of a message's CPU, several times what SQLite itself spent.
The hot paths write their SQL out once, with `?` placeholders, and run it on the driver
inside the same transaction their store method opened: `sqlite3` as is, and asyncpg with
the placeholders numbered (`$1`, `$2`, ...) once per statement text and its statements
prepared and cached by asyncpg per connection. Rows are read by position: sqlite3's tuples,
asyncpg's Records.

SQL written here must mean the same on both engines: standard SQL, `CAST(? AS BIGINT)`
where PostgreSQL cannot infer a parameter's type, `RETURNING`, `ON CONFLICT`.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable, Sequence
from typing import Any, Protocol

Row = Sequence[Any]


class Driver(Protocol):
    """The driver connection of an open transaction or snapshot."""

    # Each statement is a round trip to a database server: worth sending a batch's rows as
    # arrays in one statement rather than a statement per row.
    remote: bool

    async def fetch(self, sql: str, parameters: Sequence[Any] = ()) -> list[Row]: ...

    async def fetchrow(self, sql: str, parameters: Sequence[Any] = ()) -> Row | None: ...

    async def fetchval(self, sql: str, parameters: Sequence[Any] = ()) -> Any: ...

    async def execute(self, sql: str, parameters: Sequence[Any] = ()) -> None: ...

    async def executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> None: ...

    async def insert(self, sql: str, parameters: Sequence[Any] = ()) -> int:
        """Run `sql`, an INSERT of one row into a table keyed by `id` (written without
        RETURNING), and give the new row's id."""
        ...


class SqliteDriver:
    """`sqlite3` on the event loop thread (see LoopConnection: statements take microseconds
    and reads never wait for writers)."""

    __slots__ = ("_connection",)
    remote = False

    def __init__(self, connection: sqlite3.Connection) -> None:
        self._connection = connection

    async def fetch(self, sql: str, parameters: Sequence[Any] = ()) -> list[Row]:
        return self._connection.execute(sql, parameters).fetchall()

    async def fetchrow(self, sql: str, parameters: Sequence[Any] = ()) -> Row | None:
        row: Row | None = self._connection.execute(sql, parameters).fetchone()
        return row

    async def fetchval(self, sql: str, parameters: Sequence[Any] = ()) -> Any:
        row = self._connection.execute(sql, parameters).fetchone()
        return None if row is None else row[0]

    async def execute(self, sql: str, parameters: Sequence[Any] = ()) -> None:
        self._connection.execute(sql, parameters)

    async def executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> None:
        self._connection.executemany(sql, rows)

    async def insert(self, sql: str, parameters: Sequence[Any] = ()) -> int:
        # The cursor's lastrowid, not RETURNING: SQLite (3.40) runs a RETURNING statement
        # through a table of its results: a message's INSERT cost 43 us with it, 28 without,
        # and the ingest batch 139-156 against 103-111 us a message (docs/performance.md).
        row_id = self._connection.execute(sql, parameters).lastrowid
        assert row_id is not None
        return row_id


def in_list(values: Sequence[Any]) -> tuple[str, list[Any]]:
    """The `?, ?, ...` of an IN list of `values` (at least one) and what to bind to it.

    The list is padded to a power of two with its last value, which changes nothing an IN
    list means: so a statement has a few texts, not one per length, and PostgreSQL's
    connections prepare and keep a few statements rather than evict the hot ones.
    """
    size = 1 << (len(values) - 1).bit_length()
    return ", ".join("?" * size), [*values, *[values[-1]] * (size - len(values))]


_NUMBERED: dict[str, str] = {}


def numbered(sql: str) -> str:
    """`sql` with its `?` placeholders as PostgreSQL's `$1`, `$2`, ... (remembered)."""
    found = _NUMBERED.get(sql)
    if found is None:
        parts = sql.split("?")
        found = parts[0] + "".join(f"${n}{part}" for n, part in enumerate(parts[1:], 1))
        _NUMBERED[sql] = found
    return found


class AsyncpgDriver:
    """An asyncpg connection; asyncpg prepares each statement once per connection."""

    __slots__ = ("_connection",)
    remote = True

    def __init__(self, connection: Any) -> None:
        self._connection = connection

    # asyncpg's Records as they are: they index and unpack as tuples do, and copying a
    # thousand of them into tuples cost a sync a tenth of its time.
    async def fetch(self, sql: str, parameters: Sequence[Any] = ()) -> list[Row]:
        rows: list[Row] = await self._connection.fetch(numbered(sql), *parameters)
        return rows

    async def fetchrow(self, sql: str, parameters: Sequence[Any] = ()) -> Row | None:
        row: Row | None = await self._connection.fetchrow(numbered(sql), *parameters)
        return row

    async def fetchval(self, sql: str, parameters: Sequence[Any] = ()) -> Any:
        return await self._connection.fetchval(numbered(sql), *parameters)

    async def execute(self, sql: str, parameters: Sequence[Any] = ()) -> None:
        await self._connection.execute(numbered(sql), *parameters)

    async def executemany(self, sql: str, rows: Iterable[Sequence[Any]]) -> None:
        await self._connection.executemany(numbered(sql), list(rows))

    async def insert(self, sql: str, parameters: Sequence[Any] = ()) -> int:
        return int(await self._connection.fetchval(numbered(sql + " RETURNING id"), *parameters))
