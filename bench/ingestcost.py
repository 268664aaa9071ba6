"""What the database itself spends on one ingested message, with no server around it.

    python bench/ingestcost.py [--messages 3000]
    python bench/ingestcost.py --engine postgresql [--messages 20000]

Generates bench/run.py's 10k SQLite history, then runs the statements of smsinbox's ingest
transaction straight through Python's sqlite3 (the two duplicate checks, routing, the reply
lookup, the counter update, the message insert, delivery queueing and the conversation
upsert), each message in a savepoint and 32 to a durable commit, as the server's group
commit does, and the full-text index's chunks (store/fts.py) as the server's commits take
them. Prints messages per second and CPU per message:
the most one core could ingest with this schema if every other cost were zero.

With `--engine postgresql` it generates the same history in the benchmark database
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

from datagen import generate, number
from smsinbox.store import fts

SENDER = "447900000001"
BATCH = 32
WRITERS = 4  # batches written at once on PostgreSQL, as the server does
COLUMNS = (
    "account_id, seq, modseq, created_modseq, received_at, status_at, direction, sender,"
    " recipient, counterpart, text, encoding, body, reply_to_id, upstream_id,"
    " upstream_message_id, sent_at, status, origin"
)


def ingest_one(db: sqlite3.Connection, upstream_message_id: str, to: str, now: int) -> None:
    one = db.execute
    for table in ("messages", "unrouted"):
        one(
            f"SELECT id FROM {table} WHERE upstream_id IS NULL AND upstream_message_id = ?",
            (upstream_message_id,),
        ).fetchone()
    account = one("SELECT account_id FROM numbers WHERE msisdn = ?", (to,)).fetchone()[0]
    one(
        "SELECT id FROM messages INDEXED BY ix_messages_outgoing_by_counterpart"
        " WHERE account_id = ? AND direction = 'out'"
        " AND counterpart = ? AND sender = ? AND received_at >= ? AND deleted IS 0"
        " ORDER BY id DESC LIMIT 1",
        (account, SENDER, to, now - 3_600_000),
    ).fetchone()
    seq, modseq, at = one(
        "UPDATE account_counters SET last_seq = last_seq + 1, last_modseq = last_modseq + 1,"
        " last_received_at = CASE WHEN last_received_at > ? THEN last_received_at ELSE ? END"
        " WHERE account_id = ? RETURNING last_seq, last_modseq, last_received_at",
        (now, now, account),
    ).fetchone()
    values = (
        account, seq, modseq, modseq, at, at, "in", SENDER, to, SENDER, "bench message",
        "7bit", None, None, None, upstream_message_id, None, "received", "platform",
    )  # fmt: skip
    message_id = one(
        f"INSERT INTO messages ({COLUMNS}) VALUES ({', '.join('?' * len(values))}) RETURNING id",
        values,
    ).fetchone()[0]
    one(
        "INSERT INTO deliveries (endpoint_id, account_id, message_id, event, state, attempts,"
        " next_attempt_at, created_at) SELECT id, account_id, ?, 'mo', 'pending', 0, ?, ?"
        " FROM push_endpoints WHERE account_id = ? AND enabled IS 1 AND events LIKE '%mo%'",
        (message_id, now, now, account),
    )
    one(
        "INSERT INTO conversations (account_id, counterpart, message_count, unread_count,"
        " unsent_count, last_message_id, last_message_at, snippet)"
        " VALUES (?, ?, 1, 1, 0, ?, ?, ?) ON CONFLICT (account_id, counterpart) DO UPDATE SET"
        " message_count = conversations.message_count + 1,"
        " unread_count = conversations.unread_count + excluded.unread_count,"
        " unsent_count = conversations.unsent_count + excluded.unsent_count,"
        " last_message_id = excluded.last_message_id,"
        " last_message_at = excluded.last_message_at, snippet = excluded.snippet",
        (account, SENDER, message_id, at, "bench message"),
    )


def postgres_cpu_s() -> float:
    """CPU seconds used so far by every PostgreSQL process (its backends and workers)."""
    total = 0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            head, _, tail = stat.read_text().rpartition(")")
        except OSError:
            continue  # gone meanwhile
        if head.endswith(("(postgres", "(postmaster")):
            fields = tail.split()
            total += int(fields[11]) + int(fields[12])
    return total / os.sysconf("SC_CLK_TCK")


async def postgres_cost(messages: int) -> None:
    import asyncpg

    from run import PG_URL, fresh_database
    from smsinbox.models import Encoding, InboundMessage
    from smsinbox.store.driver import AsyncpgDriver
    from smsinbox.store.ingest import Arrival, store_batch

    with tempfile.TemporaryDirectory(prefix="smsinbox-ingestcost-") as tmp:
        url = fresh_database("postgresql", Path(tmp))
    await generate(url, accounts=10, per_account=1000, progress=lambda *_: None)
    connections = [await asyncpg.connect(PG_URL) for _ in range(WRITERS)]
    batches = [range(first, min(messages, first + BATCH)) for first in range(0, messages, BATCH)]

    async def write(connection: asyncpg.Connection) -> None:
        driver = AsyncpgDriver(connection)
        while batches:
            now = int(time.time() * 1000)
            arrivals = [
                Arrival(InboundMessage(SENDER, number(i % 10 + 1), "bench message",
                                       Encoding.GSM7, upstream_id=None,
                                       upstream_message_id=f"cost-{i}"), now, 3_600_000)
                for i in batches.pop(0)
            ]  # fmt: skip
            async with connection.transaction():
                await store_batch(driver, arrivals)

    started, cpu, server = time.perf_counter(), time.process_time(), postgres_cpu_s()
    await asyncio.gather(*(write(connection) for connection in connections))
    elapsed = time.perf_counter() - started
    cpu, server = time.process_time() - cpu, postgres_cpu_s() - server
    for connection in connections:
        await connection.close()
    client_us, server_us = cpu * 1e6 / messages, server * 1e6 / messages
    cores = os.cpu_count() or 1
    print(f"asyncpg and PostgreSQL alone: {messages / elapsed:,.0f} messages/s; CPU per message "
          f"{client_us:.0f} us here, {server_us:.0f} us in PostgreSQL; {cores} cores at that "
          f"cost carry at most {cores * 1e6 / (client_us + server_us):,.0f}/s")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=None)
    parser.add_argument("--engine", choices=("sqlite", "postgresql"), default="sqlite")
    args = parser.parse_args()
    if args.engine == "postgresql":
        asyncio.run(postgres_cost(args.messages or 20_000))
        return
    args.messages = args.messages or 3000
    with tempfile.TemporaryDirectory(prefix="smsinbox-ingestcost-") as tmp:
        path = Path(tmp) / "bench.db"
        asyncio.run(generate(f"sqlite:///{path}", accounts=10, per_account=1000,
                             progress=lambda *_: None))  # fmt: skip
        db = sqlite3.connect(path, isolation_level=None)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute("PRAGMA synchronous=FULL")  # as the server: durable at each commit
        started, cpu = time.perf_counter(), time.process_time()
        for first in range(0, args.messages, BATCH):
            db.execute("BEGIN IMMEDIATE")
            for i in range(first, min(args.messages, first + BATCH)):
                db.execute("SAVEPOINT writer")
                ingest_one(db, f"cost-{i}", number(i % 10 + 1), int(time.time() * 1000))
                db.execute("RELEASE writer")
            fts.index_chunk(db, at_least=fts.CHUNK)
            db.execute("COMMIT")
        elapsed, cpu = time.perf_counter() - started, time.process_time() - cpu
        db.close()
    print(f"sqlite3 alone: {args.messages / elapsed:,.0f} messages/s, "
          f"{cpu * 1000 / args.messages:.3f} ms CPU per message")  # fmt: skip


if __name__ == "__main__":
    main()
