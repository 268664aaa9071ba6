"""An account's rows read out in order, and written into another store with their ids: what
`smsinbox export` and `smsinbox import` move (the file's format is core/transfer.py's).

An account's data is what its clients would notice missing: the account with its counters
(the per-account sequence and modseq that MC5, EAPI and mysms sync cursors rest on), its
numbers, devices (with the state each has acknowledged), contacts, messages (tombstones
included), conversations, push endpoints with their outbox and attempt log, the outbound
queue, the parts SMSCs accepted and EAPI batches; and, shared with other accounts, the
upstreams its messages came through and the store's API keys, both matched by name (or
digest) in the target and created there when missing. Auth tokens and browser sessions
stay behind: clients sign in again.

Ids are kept, because clients hold them (EAPI's `last_retrieved_id` and MC5's message ids,
mysms message, contact and device ids), and ids are global: an id of the file that a row of
the target already has refuses the import. It is one transaction, so a refusal, whenever it
comes, leaves nothing behind. Before writing, the target's id sequences are moved past the
highest ids the source had given out, so that nothing the target stores later, meanwhile or
after, can take an id of the file (or of another account exported from the same source).

Rows are read in pages in key order and written in batches, so memory stays flat whatever
the account holds.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from typing import Any, NamedTuple

from smsinbox.errors import AlreadyExists, InvalidRecord, NotFound
from smsinbox.store.base import StoreBase
from smsinbox.store.driver import Driver, in_list
from smsinbox.store.engine import StorageEngine

# Rows a page reads and a batch writes: a statement's worth, and IN lists padded to it.
BATCH = 256


@dataclasses.dataclass(frozen=True)
class Section:
    """One kind of record: the rows of a table that belong to the account."""

    kind: str
    table: str
    # The record's fields, each a column of `table` unless `derived` says otherwise.
    fields: tuple[str, ...]
    # The account's rows (`t` is the table; each `?` takes the account's id).
    scope: str = "t.account_id = ?"
    # Read in this column's order, a page at a time.
    key: str = "id"
    # The table has an `account_id`, written on import.
    owned: bool = True
    # The rows keep their ids on import (refused when the target has them).
    kept_id: bool = True
    # (field, table): an id that must name a row of the account among those imported before.
    references: tuple[tuple[str, str], ...] = ()
    # Fields that are not a column as they are: (field, how it is read or None when read
    # apart, the column it is written to or None when written apart).
    derived: tuple[tuple[str, str | None, str | None], ...] = ()


ACCOUNT = Section(
    "account",
    "accounts",
    ("id", "username", "password_hash", "status", "time_zone", "reseller", "region",
     "created_at", "password_changed_at", "last_seq", "last_received_at", "last_modseq",
     "purged_modseq"),
    scope="t.id = ?",
    owned=False,
)  # fmt: skip
NUMBERS = Section("number", "numbers", ("msisdn", "created_at"), key="msisdn", kept_id=False)
# Only those the account's messages came through.
UPSTREAMS = Section(
    "upstream",
    "upstreams",
    ("name", "token_hash", "created_at", "revoked_at"),
    scope="EXISTS (SELECT 1 FROM messages m WHERE m.account_id = ? AND m.upstream_id = t.id)",
    owned=False,
    kept_id=False,
)
# The store's API keys: any may be the one the account's mysms clients use.
API_KEYS = Section(
    "api_key",
    "api_keys",
    ("name", "key_hash", "created_at"),
    scope="t.revoked_at IS NULL",
    owned=False,
    kept_id=False,
)
DEVICES = Section("device", "devices", ("id", "name", "created_at", "acked_modseq", "last_sync_at"))
CONTACTS = Section(
    "contact",
    "contacts",
    ("id", "name", "created_at", "modified_at", "msisdns"),
    derived=(("msisdns", None, None),),
)
MESSAGES = Section(
    "message",
    "messages",
    ("id", "seq", "direction", "sender", "recipient", "counterpart", "text", "encoding", "body",
     "reply_to_id", "upstream", "upstream_message_id", "received_at", "sent_at", "status",
     "status_at", "origin", "read", "locked", "deleted", "deleted_at", "modseq",
     "created_modseq", "send_at", "device_id", "device_message_id"),
    references=(("device_id", "devices"),),
    derived=(
        ("upstream", "(SELECT u.name FROM upstreams u WHERE u.id = t.upstream_id)", "upstream_id"),
    ),
)  # fmt: skip
CONVERSATIONS = Section(
    "conversation",
    "conversations",
    ("id", "counterpart", "message_count", "unread_count", "unsent_count", "last_message_id",
     "last_message_at", "snippet"),
)  # fmt: skip
PUSH_ENDPOINTS = Section(
    "push_endpoint",
    "push_endpoints",
    ("id", "url", "format", "events", "secret", "enabled", "disabled_reason", "failing_since",
     "created_at"),
)  # fmt: skip
DELIVERIES = Section(
    "delivery",
    "deliveries",
    ("id", "endpoint_id", "message_id", "event", "state", "attempts", "next_attempt_at",
     "created_at", "delivered_at", "last_status", "last_error"),
    references=(("endpoint_id", "push_endpoints"),),
)  # fmt: skip
DELIVERY_ATTEMPTS = Section(
    "delivery_attempt",
    "delivery_attempts",
    ("id", "delivery_id", "attempted_at", "http_status", "latency_ms", "error"),
    scope="t.delivery_id IN (SELECT d.id FROM deliveries d WHERE d.account_id = ?)",
    owned=False,
    references=(("delivery_id", "deliveries"),),
)
OUTBOUND = Section(
    "outbound",
    "outbound",
    ("id", "message_id", "registered_delivery", "queued_at", "expires_at", "due_at", "attempts",
     "last_error"),
    references=(("message_id", "messages"),),
)  # fmt: skip
SENT_PARTS = Section(
    "sent_part",
    "sent_parts",
    ("id", "message_id", "part", "total", "bind_id", "smsc_message_id", "state", "error",
     "submitted_at", "state_at"),
    references=(("message_id", "messages"),),
)  # fmt: skip
BATCH_MESSAGES = Section(
    "batch_message",
    "batch_messages",
    ("message_id", "batch_id"),
    key="message_id",
    kept_id=False,
    references=(("message_id", "messages"),),
)

# Every kind of record, in the order of the file: each after those its rows refer to.
SECTIONS = (
    ACCOUNT, NUMBERS, UPSTREAMS, API_KEYS, DEVICES, CONTACTS, MESSAGES, CONVERSATIONS,
    PUSH_ENDPOINTS, DELIVERIES, DELIVERY_ATTEMPTS, OUTBOUND, SENT_PARTS, BATCH_MESSAGES,
)  # fmt: skip
SECTION_OF = {section.kind: section for section in SECTIONS}


class ImportRecord(NamedTuple):
    """A record read from a file: its line, its kind, its fields as the store takes them."""

    line: int
    kind: str
    values: Mapping[str, Any]


# The account record's fields that are its counters; the others are its row's columns.
COUNTERS = ("last_seq", "last_received_at", "last_modseq", "purged_modseq")
_ACCOUNT_COLUMNS = tuple(field for field in ACCOUNT.fields if field not in COUNTERS)
# The account's row and counters (a LEFT JOIN: an account without counters has zeros).
_ACCOUNT_ROW = (
    f"SELECT {', '.join(f'a.{column}' for column in _ACCOUNT_COLUMNS)},"  # noqa: S608
    " COALESCE(c.last_seq, 0),"
    " COALESCE(c.last_received_at, 0), COALESCE(c.last_modseq, 0),"
    " COALESCE(c.purged_modseq, 0)"
    " FROM accounts a LEFT JOIN account_counters c ON c.account_id = a.id WHERE a.username = ?"
)
_INSERT_ACCOUNT = (
    f"INSERT INTO accounts ({', '.join(_ACCOUNT_COLUMNS)})"  # noqa: S608 (our names)
    f" VALUES ({', '.join('?' * len(_ACCOUNT_COLUMNS))})"
)
_INSERT_COUNTERS = (
    f"INSERT INTO account_counters (account_id, {', '.join(COUNTERS)})"  # noqa: S608
    f" VALUES (?, {', '.join('?' * len(COUNTERS))})"
)
_USERNAME_TAKEN = "SELECT id FROM accounts WHERE username = ?"
_CONTACT_NUMBERS = "SELECT contact_id, msisdn FROM contact_numbers WHERE contact_id IN ({})"
_INSERT_CONTACT_NUMBER = "INSERT INTO contact_numbers (contact_id, msisdn) VALUES (?, ?)"
_NUMBER_OWNERS = (
    "SELECT n.msisdn, a.username FROM numbers n JOIN accounts a ON a.id = n.account_id"
    " WHERE n.msisdn IN ({})"
)
# Upstreams and API keys already in the target, by name or by digest.
_SHARED = {
    "upstream": ("SELECT id, name, token_hash FROM upstreams WHERE name IN ({0})"
                 " OR token_hash IN ({0})"),
    "api_key": "SELECT id, name, key_hash FROM api_keys WHERE name IN ({0}) OR key_hash IN ({0})",
}  # fmt: skip


def _read_expression(section: Section, field: str) -> str:
    for name, read, _ in section.derived:
        if name == field:
            return "NULL" if read is None else read
    return f"t.{field}"


def _written_columns(section: Section) -> list[str]:
    written = {name: column for name, _, column in section.derived}
    columns = ["account_id"] if section.owned else []
    for field in section.fields:
        column = written.get(field, field)
        if column is not None:
            columns.append(column)
    return columns


@functools.cache
def _page_sql(section: Section) -> str:
    """The account's next page of rows: parameters the scope's, the key to go past, the
    page size. The key comes first in each row."""
    fields = ", ".join(_read_expression(section, field) for field in section.fields)
    return (
        f"SELECT t.{section.key}, {fields} FROM {section.table} t"  # noqa: S608 (our names)
        f" WHERE {section.scope} AND t.{section.key} > ? ORDER BY t.{section.key} LIMIT ?"
    )


@functools.cache
def _count_sql(section: Section) -> str:
    return f"SELECT count(*) FROM {section.table} t WHERE {section.scope}"  # noqa: S608


@functools.cache
def _insert_sql(section: Section) -> str:
    columns = _written_columns(section)
    marks = ", ".join("?" * len(columns))
    return f"INSERT INTO {section.table} ({', '.join(columns)}) VALUES ({marks})"  # noqa: S608


def _scope_parameters(section: Section, account_id: int) -> tuple[int, ...]:
    return (account_id,) * section.scope.count("?")


class AccountReader:
    """An account's records, read from one stable snapshot in the order of the file."""

    def __init__(self, driver: Driver, account: dict[str, Any], ids_given: dict[str, int]) -> None:
        self._driver = driver
        self.account = account
        self.account_id = int(account["id"])
        # For each kind that keeps its ids, the highest the source had given out.
        self.ids_given = ids_given

    async def count(self) -> int:
        """How many records `records` yields."""
        total = 1  # the account
        for section in SECTIONS[1:]:
            parameters = _scope_parameters(section, self.account_id)
            total += int(await self._driver.fetchval(_count_sql(section), parameters))
        return total

    async def records(self) -> AsyncIterator[tuple[str, dict[str, Any]]]:
        """(kind, fields) for every record, the account first; values as the driver gives
        them (SQLite's booleans as 0 and 1)."""
        yield ACCOUNT.kind, self.account
        for section in SECTIONS[1:]:
            async for values in self._rows(section):
                yield section.kind, values

    async def _rows(self, section: Section) -> AsyncIterator[dict[str, Any]]:
        scope = _scope_parameters(section, self.account_id)
        after: Any = "" if section is NUMBERS else 0  # numbers are keyed by msisdn
        while True:
            rows = await self._driver.fetch(_page_sql(section), (*scope, after, BATCH))
            if not rows:
                return
            page = [dict(zip(section.fields, row[1:], strict=True)) for row in rows]
            if section is CONTACTS:
                await self._add_contact_numbers(page)
            for values in page:
                yield values
            if len(rows) < BATCH:
                return
            after = rows[-1][0]

    async def _add_contact_numbers(self, contacts: list[dict[str, Any]]) -> None:
        numbers: dict[int, list[str]] = {int(contact["id"]): [] for contact in contacts}
        marks, ids = in_list(list(numbers))
        rows = await self._driver.fetch(_CONTACT_NUMBERS.format(marks), ids)
        for contact_id, msisdn in rows:
            numbers[int(contact_id)].append(msisdn)
        for contact in contacts:
            contact["msisdns"] = sorted(numbers[int(contact["id"])])


class _DryRun(Exception):
    """Rolls a dry run's transaction back, carrying what it found."""

    def __init__(self, added: dict[str, int]) -> None:
        super().__init__("dry run")
        self.added = added


class _Importer:
    """Writes one account's records, batch by batch, in the import's transaction."""

    def __init__(self, engine: StorageEngine, driver: Driver) -> None:
        self._engine = engine
        self._driver = driver
        self.account_id = 0
        # The target's id of each upstream named in the file.
        self._upstream_ids: dict[str, int] = {}
        # Upstreams and API keys the target did not have.
        self.added = {UPSTREAMS.kind: 0, API_KEYS.kind: 0}

    async def start(self, record: ImportRecord) -> None:
        """The account, refused (before anything is written) if the target has one of its
        name or its id."""
        values = record.values
        username = values["username"]
        if await self._driver.fetchval(_USERNAME_TAKEN, (username,)) is not None:
            raise AlreadyExists(f"an account named {username!r} already exists in this store")
        await self._check_ids_free(ACCOUNT, [record])
        self.account_id = int(values["id"])
        await self._insert([record], _INSERT_ACCOUNT, [[values[c] for c in _ACCOUNT_COLUMNS]])
        counters = [self.account_id, *(values[field] for field in COUNTERS)]
        await self._insert([record], _INSERT_COUNTERS, [counters])

    async def advance_ids(self, ids_given: Mapping[str, int]) -> None:
        for section in SECTIONS:
            if section.kept_id and ids_given.get(section.kind, 0) > 0:
                await self._engine.advance_ids(self._driver, section.table, ids_given[section.kind])

    async def write(self, batch: Sequence[ImportRecord]) -> None:
        """A batch of records of one kind."""
        section = SECTION_OF[batch[0].kind]
        if section is UPSTREAMS or section is API_KEYS:
            await self._adopt(section, batch)
            return
        if section is NUMBERS:
            await self._check_numbers_free(batch)
        for field, table in section.references:
            await self._check_references(batch, field, table)
        if section.kept_id:
            await self._check_ids_free(section, batch)
        rows = [self._row(section, record) for record in batch]
        await self._insert(batch, _insert_sql(section), rows)
        if section is CONTACTS:
            numbers = [
                (record.values["id"], msisdn)
                for record in batch
                for msisdn in sorted(set(record.values["msisdns"]))
            ]
            await self._insert(batch, _INSERT_CONTACT_NUMBER, numbers)

    def _row(self, section: Section, record: ImportRecord) -> list[Any]:
        values = record.values
        row: list[Any] = [self.account_id] if section.owned else []
        for field in section.fields:
            if field == "msisdns":
                continue  # written apart
            if field == "upstream":
                row.append(self._upstream_id(record))
            else:
                row.append(values[field])
        return row

    def _upstream_id(self, record: ImportRecord) -> int | None:
        name = record.values["upstream"]
        if name is None:
            return None
        if name not in self._upstream_ids:
            raise InvalidRecord(record.line, f"upstream {name!r} is not among the upstream records")
        return self._upstream_ids[name]

    async def _insert(
        self, batch: Sequence[ImportRecord], sql: str, rows: Sequence[Sequence[Any]]
    ) -> None:
        try:
            await self._driver.executemany(sql, rows)
        except Exception as error:
            if not self._engine.refuses_data(error):
                raise
            first, last = batch[0].line, batch[-1].line
            raise InvalidRecord(
                first,
                f"the {batch[0].kind} records of lines {first}-{last} cannot be stored: {error}",
            ) from error

    async def _check_ids_free(self, section: Section, batch: Sequence[ImportRecord]) -> None:
        marks, ids = in_list([record.values["id"] for record in batch])
        taken = await self._driver.fetch(
            f"SELECT id FROM {section.table} WHERE id IN ({marks})",  # noqa: S608 (our names)
            ids,
        )
        if taken:
            first = min(int(row[0]) for row in taken)
            line = next(record.line for record in batch if record.values["id"] == first)
            raise AlreadyExists(
                f"line {line}: {section.kind} id {first} is taken in this store: ids are kept, "
                "so import into a fresh store (or one whose ids the file does not use)"
            )

    async def _check_numbers_free(self, batch: Sequence[ImportRecord]) -> None:
        marks, msisdns = in_list([record.values["msisdn"] for record in batch])
        owned = await self._driver.fetch(_NUMBER_OWNERS.format(marks), msisdns)
        if owned:
            msisdn, owner = min((row[0], row[1]) for row in owned)
            line = next(record.line for record in batch if record.values["msisdn"] == msisdn)
            raise AlreadyExists(f"line {line}: number {msisdn} already belongs to {owner}")

    async def _check_references(
        self, batch: Sequence[ImportRecord], field: str, table: str
    ) -> None:
        named = sorted({record.values[field] for record in batch} - {None})
        if not named:
            return
        marks, ids = in_list(named)
        found = await self._driver.fetch(
            f"SELECT id FROM {table} WHERE account_id = ? AND id IN ({marks})",  # noqa: S608
            (self.account_id, *ids),
        )
        missing = set(named) - {int(row[0]) for row in found}
        if missing:
            record = next(record for record in batch if record.values[field] in missing)
            raise InvalidRecord(
                record.line,
                f"{field} {record.values[field]} names no {table} row of the account"
                " among the records before it",
            )

    async def _adopt(self, section: Section, batch: Sequence[ImportRecord]) -> None:
        """Upstreams and API keys: the target's own of the same name (or digest), or a new
        one with the file's digest, so the secret in use keeps working."""
        digest = section.fields[1]
        names = [record.values["name"] for record in batch]
        digests = [record.values[digest] for record in batch]
        marks, padded = in_list([*names, *digests])
        rows = await self._driver.fetch(_SHARED[section.kind].format(marks), [*padded, *padded])
        by_name = {row[1]: int(row[0]) for row in rows}
        by_digest = {row[2]: int(row[0]) for row in rows}
        columns = ", ".join(section.fields)
        sql = (
            f"INSERT INTO {section.table} ({columns})"  # noqa: S608 (our names)
            f" VALUES ({', '.join('?' * len(section.fields))})"
        )
        for record in batch:
            values = record.values
            found = by_name.get(values["name"], by_digest.get(values[digest]))
            if found is None:
                try:
                    found = await self._driver.insert(sql, [values[f] for f in section.fields])
                except Exception as error:
                    if not self._engine.refuses_data(error):
                        raise
                    raise InvalidRecord(record.line, f"cannot be stored: {error}") from error
                self.added[section.kind] += 1
            if section is UPSTREAMS:
                self._upstream_ids[values["name"]] = found


class TransferStore(StoreBase):
    @asynccontextmanager
    async def reading_account(self, username: str) -> AsyncIterator[AccountReader]:
        """The account's records, all read from one snapshot while the block runs."""
        engine = self.db.engine
        async with self.db.stable_snapshot("export_account") as connection:
            driver = await engine.driver(connection)
            row = await driver.fetchrow(_ACCOUNT_ROW, (username,))
            if row is None:
                raise NotFound(f"no account named {username!r}")
            ids_given = {
                section.kind: await engine.ids_given(driver, section.table)
                for section in SECTIONS
                if section.kept_id
            }
            yield AccountReader(driver, dict(zip(ACCOUNT.fields, row, strict=True)), ids_given)

    async def import_account(
        self,
        records: AsyncIterator[ImportRecord],
        *,
        ids_given: Mapping[str, int],
        dry_run: bool = False,
    ) -> dict[str, int]:
        """Write an account's records (the account first, then each kind in the order of
        SECTIONS) in one transaction, with their ids; returns how many upstreams and API keys
        the store did not have. With `dry_run`, everything is written and checked, and then
        rolled back. `ids_given`: the highest id of each kind the source had given out."""
        engine = self.db.engine
        try:
            async with self.db.transaction("import_account") as connection:
                driver = await engine.driver(connection)
                importer = _Importer(engine, driver)
                first = await anext(records, None)
                if first is None or first.kind != ACCOUNT.kind:
                    raise InvalidRecord(2, "the account's record must come first")
                await importer.start(first)
                if not dry_run:
                    await importer.advance_ids(ids_given)
                batch: list[ImportRecord] = []
                async for record in records:
                    if batch and (record.kind != batch[0].kind or len(batch) == BATCH):
                        await importer.write(batch)
                        batch = []
                    batch.append(record)
                if batch:
                    await importer.write(batch)
                if dry_run:
                    raise _DryRun(importer.added)
                await engine.index_imported(connection, importer.account_id)
        except _DryRun as rolled_back:
            return rolled_back.added
        return importer.added
