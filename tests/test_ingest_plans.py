"""A batch of incoming messages reads only the rows it writes to or looks up: each account's
counter, each number, each earlier copy by its index, however many rows the store holds.

A plan that reads a whole table costs every batch more as the store grows: on PostgreSQL
the batch's statements are planned once per connection for arrays of unknown length, and
such a plan read every account's counter and every number for each batch (at a thousand
accounts a sixth of PostgreSQL's time per message).
"""

from __future__ import annotations

import re
import time
from collections.abc import Sequence
from typing import Any

from sqlalchemy import insert, text

from smsinbox.models import Encoding, InboundMessage
from smsinbox.services import Services
from smsinbox.store import tables as t
from smsinbox.store.driver import Driver, Row
from smsinbox.store.ingest import Arrival, store_batch

ACCOUNTS = 2000
BATCH = 32
# Every table a batch reads or writes.
TABLES = (
    "account_counters",
    "accounts",
    "conversations",
    "deliveries",
    "messages",
    "numbers",
    "push_endpoints",
    "unrouted",
)


def number(account: int) -> str:
    return f"4477009{account:05d}"


class Recording:
    """A driver that notes each statement it runs, with its first row of parameters."""

    def __init__(self, driver: Driver) -> None:
        self.driver = driver
        self.remote = driver.remote
        self.statements: list[tuple[str, Sequence[Any]]] = []

    async def fetch(self, sql: str, parameters: Sequence[Any] = ()) -> list[Row]:
        self.statements.append((sql, parameters))
        return await self.driver.fetch(sql, parameters)

    async def fetchrow(self, sql: str, parameters: Sequence[Any] = ()) -> Row | None:
        self.statements.append((sql, parameters))
        return await self.driver.fetchrow(sql, parameters)

    async def fetchval(self, sql: str, parameters: Sequence[Any] = ()) -> Any:
        self.statements.append((sql, parameters))
        return await self.driver.fetchval(sql, parameters)

    async def execute(self, sql: str, parameters: Sequence[Any] = ()) -> None:
        self.statements.append((sql, parameters))
        await self.driver.execute(sql, parameters)

    async def executemany(self, sql: str, rows: Any) -> None:
        rows = list(rows)
        self.statements.append((sql, rows[0]))
        await self.driver.executemany(sql, rows)

    async def insert(self, sql: str, parameters: Sequence[Any] = ()) -> int:
        self.statements.append((sql, parameters))
        return await self.driver.insert(sql, parameters)


async def fill(services: Services) -> int:
    """ACCOUNTS accounts with a number each, half of them pushed, an upstream and as many
    messages kept for numbers nobody owns; statistics gathered. The upstream's id."""
    now = int(time.time() * 1000)
    async with services.store.db.transaction("test_fill") as connection:
        await connection.execute(
            insert(t.accounts),
            [
                {"id": i, "username": f"user{i}", "password_hash": "-", "status": "active",
                 "time_zone": "UTC", "created_at": now, "password_changed_at": now}
                for i in range(1, ACCOUNTS + 1)
            ],
        )  # fmt: skip
        await connection.execute(
            insert(t.account_counters), [{"account_id": i} for i in range(1, ACCOUNTS + 1)]
        )
        await connection.execute(
            insert(t.numbers),
            [
                {"msisdn": number(i), "account_id": i, "created_at": now}
                for i in range(1, ACCOUNTS + 1)
            ],
        )
        await connection.execute(
            insert(t.push_endpoints),
            [
                {"account_id": i, "url": "http://127.0.0.1:9/", "format": "standard",
                 "events": "mo", "enabled": i % 2 == 0, "created_at": now}
                for i in range(1, ACCOUNTS + 1)
            ],
        )  # fmt: skip
        upstream = (
            await connection.execute(
                insert(t.upstreams)
                .values(name="carrier", token_hash="-", created_at=now)
                .returning(t.upstreams.c.id)
            )
        ).scalar_one()
        await connection.execute(
            insert(t.unrouted),
            [
                {"sender": "447900000001", "recipient": f"1555{i:04d}", "text": "lost",
                 "encoding": "gsm7", "upstream_id": upstream, "upstream_message_id": f"lost-{i}",
                 "received_at": now}
                for i in range(ACCOUNTS)
            ],
        )  # fmt: skip
    async with services.store.db.transaction("test_analyze") as connection:
        await connection.execute(text("ANALYZE"))
    return int(upstream)


def arrivals(upstream: int) -> list[Arrival]:
    """A batch as a busy upstream sends it: to many accounts, a few for numbers nobody owns,
    one without an upstream (`smsinbox inject`)."""
    now = int(time.time() * 1000)
    batch = []
    for i in range(BATCH):
        recipient = "15559999" if i % 8 == 7 else number(1 + i * (ACCOUNTS // BATCH))
        inbound = InboundMessage(
            "447900000002", recipient, f"message {i}", Encoding.GSM7,
            upstream_id=None if i == 0 else upstream, upstream_message_id=f"new-{i}",
        )  # fmt: skip
        batch.append(Arrival(inbound, now, 3_600_000))
    return batch


async def sequential_scans(driver: Driver) -> dict[str, int]:
    """PostgreSQL's count of rows read by sequential scans, per table, in this transaction
    so far."""
    rows = await driver.fetch(
        "SELECT relname, seq_tup_read FROM pg_stat_xact_user_tables WHERE relname = ANY(?::text[])",
        (list(TABLES),),
    )
    return {name: int(count) for name, count in rows}


async def test_a_batch_reads_no_whole_table(services: Services) -> None:
    upstream = await fill(services)
    async with services.store.db.driver_write("test_batch", planned_once=True) as driver:
        recording = Recording(driver)
        if driver.remote:
            # The connection and plan mode ingest writes with, in a transaction of its own
            # so the statistics count this batch's scans.
            await driver.execute("BEGIN")
            before = await sequential_scans(driver)
            results, _ = await store_batch(recording, arrivals(upstream))
            after = await sequential_scans(driver)
            await driver.execute("COMMIT")
            scanned = {name for name in TABLES if after.get(name, 0) > before.get(name, 0)}
        else:
            results, _ = await store_batch(recording, arrivals(upstream))
            scanned = set()
            for sql, parameters in recording.statements:
                for row in await driver.fetch("EXPLAIN QUERY PLAN " + sql, parameters):
                    found = re.match(r"SCAN (\w+)", row[3])
                    if found and found.group(1) in TABLES:
                        scanned.add(found.group(1))
    assert len(results) == BATCH and recording.statements
    assert scanned == set()
