"""Fill a fresh smsinbox database with accounts and stored messages, fast.

Rows go straight into the tables (bulk inserts on SQLite, COPY on PostgreSQL) with the same
invariants the ingest path keeps: per-account sequence numbers and non-decreasing receive
times, counters that match, conversations that add up. Every account has the same password,
hashed once (argon2 would otherwise dominate the set-up).
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import Callable, Iterator

import asyncpg
from argon2 import PasswordHasher
from sqlalchemy.engine import make_url

from smsinbox.config import Settings
from smsinbox.services import Services
from smsinbox.store import fts

PASSWORD = "bench-password"
NUMBER_BASE = 447_000_000_000
COUNTERPARTS = 20
BATCH = 20_000
# Messages of an account 10 ms apart from a whole second on: 100 in every second, so an
# MC5 page (100 messages, cut at whole seconds) is exactly one full second at every size.
# With spacing that leaves a second holding more than a page, whether a page hits that
# second (and the slower path that returns the whole of it) would depend on the
# milliseconds at which the data was generated.
SPACING_MS = 10

MESSAGE_COLUMNS = (
    "id", "account_id", "seq", "direction", "sender", "recipient", "counterpart", "text",
    "encoding", "body", "reply_to_id", "upstream_id", "upstream_message_id", "received_at",
    "sent_at", "status", "origin", "read", "locked", "deleted", "modseq", "created_modseq",
    "status_at",
)  # fmt: skip


def username(index: int) -> str:
    return f"user{index}@bench"


def number(index: int) -> str:
    return str(NUMBER_BASE + index)


def message_rows(accounts: int, per_account: int, start_ms: int) -> Iterator[tuple[object, ...]]:
    """Messages in id order: round-robin over accounts, SPACING_MS apart within an account."""
    message_id = 0
    for position in range(per_account):
        received_at = start_ms + position * SPACING_MS
        for account in range(1, accounts + 1):
            message_id += 1
            counterpart = str(447_900_000_000 + (position % COUNTERPARTS))
            yield (
                message_id, account, position + 1, "in", counterpart, number(account),
                counterpart, f"benchmark message {position} for account {account}", "7bit",
                None, None, None, None, received_at, None, "received", "platform", False,
                False, False, position + 1, position + 1, received_at,
            )  # fmt: skip


async def generate(
    database_url: str,
    *,
    accounts: int,
    per_account: int,
    progress: Callable[[int, int], None],
) -> None:
    """Create the schema and the data; `progress(done, total)` is called as rows land."""
    services = Services.build(Settings(database_url=database_url))
    await services.start()  # migrates
    await services.close()
    password_hash = PasswordHasher().hash(PASSWORD)
    now = int(time.time() * 1000)
    start_ms = (now - per_account * SPACING_MS - 60_000) // 1000 * 1000
    last_received = start_ms + (per_account - 1) * SPACING_MS
    account_rows = [
        (i, username(i), password_hash, "active", "UTC", None, now, now, None)  # no region
        for i in range(1, accounts + 1)
    ]
    counter_rows = [(i, per_account, last_received, per_account, 0) for i in range(1, accounts + 1)]
    number_rows = [(number(i), i, now) for i in range(1, accounts + 1)]
    messages = message_rows(accounts, per_account, start_ms)
    total = accounts * per_account
    url = make_url(database_url)
    if url.get_backend_name() == "sqlite":
        _fill_sqlite(url.database or "", account_rows, counter_rows, number_rows, messages,
                     total, progress)  # fmt: skip
    else:
        await _fill_postgres(database_url, account_rows, counter_rows, number_rows, messages,
                             total, progress)  # fmt: skip


CONVERSATIONS_FROM_MESSAGES = """
INSERT INTO conversations (account_id, counterpart, message_count, unread_count, unsent_count,
                           last_message_id, last_message_at, snippet)
SELECT account_id, counterpart, count(*), count(*), 0, max(id), max(received_at), ''
FROM messages GROUP BY account_id, counterpart
"""


def _fill_sqlite(path, account_rows, counter_rows, number_rows, messages, total, progress):  # type: ignore[no-untyped-def]
    connection = sqlite3.connect(path, isolation_level=None)
    connection.execute("PRAGMA synchronous=OFF")
    connection.execute("BEGIN")
    connection.executemany("INSERT INTO accounts VALUES (?,?,?,?,?,?,?,?,?)", account_rows)
    connection.executemany("INSERT INTO account_counters VALUES (?,?,?,?,?)", counter_rows)
    connection.executemany("INSERT INTO numbers VALUES (?,?,?)", number_rows)
    placeholders = ",".join("?" * len(MESSAGE_COLUMNS))
    insert = f"INSERT INTO messages ({','.join(MESSAGE_COLUMNS)}) VALUES ({placeholders})"
    done = 0
    while True:
        chunk = [row for _, row in zip(range(BATCH), messages, strict=False)]
        if not chunk:
            break
        connection.executemany(insert, chunk)
        done += len(chunk)
        progress(done, total)
    connection.execute(CONVERSATIONS_FROM_MESSAGES)
    # Indexed for search, all of it, and the index's segments merged: left as one bulk
    # insert writes them, every later commit to the index paid for merging them (measured
    # at 1M: 650-780 us of CPU per ingested message against 186-192 us after 'optimize').
    connection.execute(fts.INDEX_ALL)
    connection.execute("INSERT INTO messages_search (messages_search) VALUES ('optimize')")
    connection.execute(
        "UPDATE messages_search_progress SET indexed_through = (SELECT max(id) FROM messages)"
    )
    connection.execute("COMMIT")
    connection.execute("ANALYZE")
    connection.close()


async def _fill_postgres(url, account_rows, counter_rows, number_rows, messages, total, progress):  # type: ignore[no-untyped-def]
    dsn = make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)
    connection = await asyncpg.connect(dsn)
    try:
        # Build the trigram indexes once at the end instead of row by row.
        search_indexes = await connection.fetch(
            "SELECT indexname, indexdef FROM pg_indexes WHERE indexname LIKE '%\\_trgm'"
        )
        for index in search_indexes:
            await connection.execute(f"DROP INDEX {index['indexname']}")
        async with connection.transaction():
            await connection.copy_records_to_table("accounts", records=account_rows)
            await connection.copy_records_to_table("account_counters", records=counter_rows)
            await connection.copy_records_to_table("numbers", records=number_rows)
            done = 0
            while True:
                chunk = [row for _, row in zip(range(BATCH), messages, strict=False)]
                if not chunk:
                    break
                await connection.copy_records_to_table(
                    "messages", records=chunk, columns=MESSAGE_COLUMNS
                )
                done += len(chunk)
                progress(done, total)
            await connection.execute(CONVERSATIONS_FROM_MESSAGES)
            for table in ("accounts", "messages", "conversations"):
                await connection.execute(
                    f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), "
                    f"(SELECT coalesce(max(id), 1) FROM {table}))"
                )
        for index in search_indexes:
            await connection.execute(index["indexdef"])
        # Vacuumed as well as analysed, as autovacuum leaves a store that grew to this size
        # (docs/operations.md relies on it): the visibility map says which pages every
        # transaction sees, so a search's index-only read need not visit them. The machine
        # the benchmark runs on may have autovacuum off.
        await connection.execute("VACUUM (ANALYZE)")
    finally:
        await connection.close()


if __name__ == "__main__":
    import sys

    asyncio.run(
        generate(
            sys.argv[1],
            accounts=int(sys.argv[2]),
            per_account=int(sys.argv[3]),
            progress=lambda done, total: print(f"{done}/{total}", end="\r"),
        )
    )
