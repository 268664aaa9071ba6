"""What every part of the store shares: the database and row conversions."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from sqlalchemy import bindparam, insert, select

from smsinbox.errors import AlreadyExists, NotFound
from smsinbox.models import Account, AccountStatus
from smsinbox.store import tables as t
from smsinbox.store.database import Connection, Database
from smsinbox.store.ingest import IngestQueue

# The account that owns a number: every incoming message is routed by it. Built once.
NUMBER_OWNER = select(t.numbers.c.account_id).where(t.numbers.c.msisdn == bindparam("msisdn"))


class StoreBase:
    def __init__(self, db: Database) -> None:
        self.db = db
        # Called after a commit that may have queued push deliveries: wakes the worker in
        # this process without waiting for its next poll (PostgreSQL also NOTIFYs others).
        self.outbox_listeners: list[Callable[[], None]] = []
        # Called after a commit that queued outgoing messages for an SMSC: wakes the
        # sender in this process (others look every second).
        self.outbound_listeners: list[Callable[[], None]] = []
        # Called after a commit of incoming messages in this process: wakes the web inbox's
        # live pages (other processes hear of it from the store, or look every second).
        self.mailbox_listeners: list[Callable[[], None]] = []
        self.ingest_queue = IngestQueue(
            db, on_stored=self.outbox_changed, on_written=self.mailbox_changed,
            lanes=db.engine.concurrent_writes,
        )  # fmt: skip

    def outbox_changed(self) -> None:
        for listener in self.outbox_listeners:
            listener()

    def mailbox_changed(self) -> None:
        for listener in self.mailbox_listeners:
            listener()

    def outbound_changed(self) -> None:
        for listener in self.outbound_listeners:
            listener()


# An account's columns in Account's field order, for driver-level statements (the polls'
# and mysms sessions' look-ups).
ACCOUNT_FIELDS = (
    "id, username, password_hash, status, time_zone, reseller, created_at, password_changed_at,"
    " region"
)


def account_from_fields(row: Sequence[Any]) -> Account:
    """An Account from a driver row of ACCOUNT_FIELDS."""
    account_id, name, password_hash, status, time_zone, reseller, created, changed, region = row
    return Account(account_id, name, password_hash, AccountStatus(status), time_zone,
                   reseller, created, changed, region)  # fmt: skip


async def account_id_for(connection: Connection, username: str) -> int:
    """The id of the account called `username`, or NotFound."""
    account_id = await connection.scalar(
        select(t.accounts.c.id).where(t.accounts.c.username == username)
    )
    if account_id is None:
        raise NotFound(f"no account named {username!r}")
    return int(account_id)


async def claim_number(connection: Connection, msisdn: str, account_id: int, now: int) -> None:
    """Give `msisdn` to the account, unless another account already owns it."""
    owner = await connection.scalar(
        select(t.accounts.c.username)
        .join(t.numbers, t.numbers.c.account_id == t.accounts.c.id)
        .where(t.numbers.c.msisdn == msisdn)
    )
    if owner is not None:
        raise AlreadyExists(f"number {msisdn} already belongs to {owner}")
    await connection.execute(
        insert(t.numbers).values(msisdn=msisdn, account_id=account_id, created_at=now)
    )
