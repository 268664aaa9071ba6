"""What a poll's page costs the database and its driver alone, with no server around it.

    python bench/pagecost.py [--engine sqlite|postgresql] [--seconds 5] [--ceiling N]
                             [--accounts 10] [--pragma NAME=VALUE ...]

Generates bench/run.py's 10k history (with `--accounts 1000`, its 1M one), then reads the
pages its polls answer with through smsinbox's own statements, for the same ten accounts,
and nothing else: the MC5 page (the watermark, then 101 rows of the ten rendered columns,
`mc5_poll`), the EAPI page (1,000 rows of those columns, `eapi_poll`), the mysms sync
page (1,000 changes as full rows, `sync_1000`) and, on SQLite, the mysms search for
"message 7" (`search`: at most 100 messages, newest first, as the store builds it; on
PostgreSQL it runs on SQLAlchemy's connections, whose plans a bare prepared statement
does not reproduce, and is left out). On SQLite each
page is one read transaction of Python's sqlite3 in this process; on PostgreSQL 32 tasks
read over four asyncpg connections (the server's reads), each statement prepared once.
Prints, for each page, pages per second, CPU per page here and (PostgreSQL) in
PostgreSQL's processes, and the most one server process could serve at that cost: its own
side on one core (the server is one process, one event loop, as is the ceiling's),
PostgreSQL's side sharing the machine's cores with it. With `--ceiling` (the
no-op requests per second of a `make bench` run) that most is given as a fraction of it,
beside the route's target. `--pragma` sets a PRAGMA on SQLite's reading connection
first (`--pragma mmap_size=1073741824`: pages read from a memory map of the file instead
of copied into the connection's page cache).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sqlite3
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from cpu import postgres_seconds
from datagen import generate
from smsinbox.store import inbox, sync
from smsinbox.store.driver import numbered

ACCOUNTS = range(1, 11)
CLIENTS = 32
CONNECTIONS = 4
# The search has no rate target (its target is a one-client p99): none is given for it.
TARGETS = {"mc5": (0.15, 0.10), "eapi": (0.03, 0.02), "sync": (0.01, 0.008)}


Statements = Callable[[int], list[tuple[str, tuple[Any, ...]]]]


def pages(now_ms: int, engine: str) -> dict[str, Statements]:
    """Each page's statements for an account, with their parameters, as the server reads
    them."""
    incoming = inbox._ONE_DIRECTION
    before = now_ms // 1000 * 1000
    mc5 = inbox._TIME_WINDOW + incoming + inbox._TIME_ORDER + " LIMIT ?"
    eapi = inbox._ID_WINDOW + incoming + " ORDER BY id LIMIT ?"
    searches = {account: search_statement(account) for account in ACCOUNTS}
    found: dict[str, Statements] = {
        "mc5": lambda account: [(inbox._WATERMARK, (account,)),
                                (mc5, (account, 1000, before, "in", 101))],
        "eapi": lambda account: [(eapi, (account, 0, "in", 1000))],
        "sync": lambda account: (
            [(sync._COUNTERS, (account,)), (sync.CHANGES_PADDED.kept, (account, 0, 1000))]
            if engine == "sqlite"
            else [(sync.CHANGES_JOINED.kept, (account, 0, 1000, account))]
        ),
    }  # fmt: skip
    if engine == "sqlite":
        found["search"] = lambda account: [searches[account]]
    return found


def search_statement(account: int) -> tuple[str, tuple[Any, ...]]:
    """The mysms search bench/run.py sends ("message 7", 100 at most) as smsinbox's store
    runs it on SQLite: the SQL and its parameters."""
    from smsinbox.store import fts, mailbox
    from smsinbox.store.sqlite import search_sql

    first, last = fts.account_keys(account)
    return search_sql(mailbox._SEARCHABLE), (first, account, first, last, '"message 7"', 100)


def report(name: str, done: int, elapsed: float, here_s: float, there_s: float,
           ceiling: float | None, engine: str) -> None:  # fmt: skip
    here_us, there_us = here_s * 1e6 / done, there_s * 1e6 / done
    cores = os.cpu_count() or 1
    most = min(1e6 / here_us, cores * 1e6 / (here_us + there_us))
    line = (f"{name:5} {done / elapsed:8,.0f} pages/s  CPU {here_us:6.0f} us here"
            f" + {there_us:6.0f} us in the database: at most {most:8,.0f}/s")  # fmt: skip
    if ceiling and name in TARGETS:
        target = TARGETS[name][engine == "postgresql"]
        line += f" = {most / ceiling:.4f} x ceiling (target {target})"
    print(line)


def sqlite_cost(
    path: Path, seconds: float, ceiling: float | None, pragmas: list[str] | None = None
) -> None:
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    for pragma in pragmas or []:
        db.execute(f"PRAGMA {pragma}")
    for name, statements in pages(int(time.time() * 1000), "sqlite").items():
        done, ends = 0, time.perf_counter() + seconds
        started, cpu = time.perf_counter(), time.process_time()
        while time.perf_counter() < ends:
            for account in ACCOUNTS:
                db.execute("BEGIN")
                for sql, parameters in statements(account):
                    db.execute(sql, parameters).fetchall()
                db.execute("COMMIT")
                done += 1
        report(name, done, time.perf_counter() - started, time.process_time() - cpu, 0.0,
               ceiling, "sqlite")  # fmt: skip


async def postgres_cost(url: str, seconds: float, ceiling: float | None) -> None:
    import asyncpg

    connections = [await asyncpg.connect(url) for _ in range(CONNECTIONS)]
    idle: asyncio.Queue[asyncpg.Connection] = asyncio.Queue()
    for connection in connections:
        idle.put_nowait(connection)
    for name, statements in pages(int(time.time() * 1000), "postgresql").items():
        done, ends = 0, time.perf_counter() + seconds

        async def client(first: int, statements: Statements, ends: float) -> None:
            nonlocal done
            turn = first
            while time.perf_counter() < ends:
                connection = await idle.get()
                try:
                    account = ACCOUNTS[turn % len(ACCOUNTS)]
                    for sql, parameters in statements(account):
                        await connection.fetch(numbered(sql), *parameters)
                finally:
                    idle.put_nowait(connection)
                turn += 1
                done += 1

        started, cpu, there = time.perf_counter(), time.process_time(), postgres_seconds()
        await asyncio.gather(*(client(i, statements, ends) for i in range(CLIENTS)))
        report(name, done, time.perf_counter() - started, time.process_time() - cpu,
               postgres_seconds() - there, ceiling, "postgresql")  # fmt: skip
    for connection in connections:
        await connection.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--engine", choices=("sqlite", "postgresql"), default="sqlite")
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--ceiling", type=float, default=None)
    parser.add_argument("--accounts", type=int, default=10, help="1000 for the 1M history")
    parser.add_argument("--pragma", action="append", default=[], metavar="NAME=VALUE",
                        help="SQLite: set on the reading connection first, e.g. "
                             "mmap_size=1073741824 or cache_size=-65536")  # fmt: skip
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="smsinbox-pagecost-") as tmp:
        if args.engine == "postgresql":
            from run import PG_URL, fresh_database

            url = fresh_database("postgresql", Path(tmp))
            asyncio.run(generate(url, accounts=args.accounts, per_account=1000,
                                 progress=lambda *_: None))  # fmt: skip
            asyncio.run(postgres_cost(PG_URL, args.seconds, args.ceiling))
            return
        path = Path(tmp) / "bench.db"
        asyncio.run(generate(f"sqlite:///{path}", accounts=args.accounts, per_account=1000,
                             progress=lambda *_: None))  # fmt: skip
        sqlite_cost(path, args.seconds, args.ceiling, args.pragma)


if __name__ == "__main__":
    main()
