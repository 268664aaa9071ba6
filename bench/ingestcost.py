"""What the database itself spends on one ingested message, with no server around it.

    python bench/ingestcost.py [--messages 3000] [--accounts 10 --per-account 1000] [--batch 32]
    python bench/ingestcost.py --engine postgresql [--messages 20000]

Generates bench/run.py's 10k SQLite history (with `--accounts 1000`, its 1M one), then
stores messages through smsinbox's own batch statements (`store_batch`) on a bare
`sqlite3` connection: 32 messages to a durable commit, as the server's group commit takes
them under load (`--batch 100`: as an SMPP bind with 100 in flight gives them), each
batch the transaction's first writer (no savepoint), and the full-text index's chunks
(store/fts.py) as the server's commits take them; the messages go to every account in
turn, as bench/run.py's ingest does. Prints messages per second and CPU per message: the
most one core could ingest with this schema if every other cost were zero.

With `--engine postgresql` it generates the same history (10k or 1M) in the benchmark database
(bench/run.py's, dropped and recreated) and stores batches of 32 messages through
smsinbox's own batch statements (`store_batch`: one statement per step over arrays of the
batch's rows) on bare asyncpg connections, four batches at a time as the server writes
them, each batch one transaction committed durably. Prints messages per second, this
process's CPU per message, and PostgreSQL's (all of its processes, from /proc): two cores
at the sum of both carry at most the figure it prints, whatever the server in front did.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sqlite3
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from cpu import postgres_seconds
from datagen import generate, number
from smsinbox.models import Encoding, InboundMessage
from smsinbox.store import fts
from smsinbox.store.driver import AsyncpgDriver, SqliteDriver
from smsinbox.store.ingest import Arrival, store_batch

SENDER = "447900000001"
BATCH = 32
WRITERS = 4  # batches written at once on PostgreSQL, as the server does


def arrivals(numbers: range, accounts: int, now: int) -> list[Arrival]:
    return [
        Arrival(InboundMessage(SENDER, number(i % accounts + 1), "bench message", Encoding.GSM7,
                               upstream_id=None, upstream_message_id=f"cost-{i}"),
                now, 3_600_000)
        for i in numbers
    ]  # fmt: skip


async def sqlite_cost(
    path: Path, messages: int, accounts: int, batch: int = BATCH
) -> tuple[float, float]:
    """Seconds and CPU seconds to store `messages` as the server's writer would."""
    db = sqlite3.connect(path, isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=FULL")  # as the server: durable at each commit
    db.execute("PRAGMA foreign_keys=ON")
    driver = SqliteDriver(db)
    started, cpu = time.perf_counter(), time.process_time()
    for first in range(0, messages, batch):
        db.execute("BEGIN IMMEDIATE")
        numbers = range(first, min(messages, first + batch))
        await store_batch(driver, arrivals(numbers, accounts, int(time.time() * 1000)))
        fts.index_chunk(db, at_least=fts.CHUNK)
        db.execute("COMMIT")
    elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu
    db.close()
    return elapsed, cpu


async def postgres_cost(messages: int, accounts: int, per_account: int) -> None:
    import asyncpg

    from run import PG_URL, fresh_database

    with tempfile.TemporaryDirectory(prefix="smsinbox-ingestcost-") as tmp:
        url = fresh_database("postgresql", Path(tmp))
    await generate(url, accounts=accounts, per_account=per_account, progress=lambda *_: None)
    connections = [await asyncpg.connect(PG_URL) for _ in range(WRITERS)]
    batches = [range(first, min(messages, first + BATCH)) for first in range(0, messages, BATCH)]

    async def write(connection: asyncpg.Connection) -> None:
        driver = AsyncpgDriver(connection)
        while batches:
            batch = arrivals(batches.pop(0), accounts, int(time.time() * 1000))
            async with connection.transaction():
                await store_batch(driver, batch)

    started, cpu, server = time.perf_counter(), time.process_time(), postgres_seconds()
    await asyncio.gather(*(write(connection) for connection in connections))
    elapsed = time.perf_counter() - started
    cpu, server = time.process_time() - cpu, postgres_seconds() - server
    for connection in connections:
        await connection.close()
    client_us, server_us = cpu * 1e6 / messages, server * 1e6 / messages
    cores = os.cpu_count() or 1
    print(f"asyncpg and PostgreSQL alone, {accounts * per_account:,} stored over {accounts:,} "
          f"accounts: {messages / elapsed:,.0f} messages/s; CPU per message "
          f"{client_us:.0f} us here, {server_us:.0f} us in PostgreSQL; {cores} cores at that "
          f"cost carry at most {cores * 1e6 / (client_us + server_us):,.0f}/s")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=None)
    parser.add_argument("--engine", choices=("sqlite", "postgresql"), default="sqlite")
    parser.add_argument("--accounts", type=int, default=10, help="1000 for the 1M history")
    parser.add_argument("--per-account", type=int, default=1000)
    parser.add_argument("--batch", type=int, default=BATCH, help="messages a commit (SQLite)")
    args = parser.parse_args()
    if args.engine == "postgresql":
        asyncio.run(postgres_cost(args.messages or 20_000, args.accounts, args.per_account))
        return
    args.messages = args.messages or 3000
    with tempfile.TemporaryDirectory(prefix="smsinbox-ingestcost-") as tmp:
        path = Path(tmp) / "bench.db"
        asyncio.run(generate(f"sqlite:///{path}", accounts=args.accounts,
                             per_account=args.per_account, progress=lambda *_: None))  # fmt: skip
        elapsed, cpu = asyncio.run(sqlite_cost(path, args.messages, args.accounts, args.batch))
    print(f"sqlite3 alone, {args.accounts * args.per_account:,} stored over {args.accounts:,} "
          f"accounts, {args.batch} a commit: {args.messages / elapsed:,.0f} messages/s, "
          f"{cpu * 1e6 / args.messages:.0f} us CPU per message")  # fmt: skip


if __name__ == "__main__":
    main()
