"""An account as a file and back: the format behind `smsinbox export` and `smsinbox import`.

The file is JSON Lines (UTF-8, one JSON object a line). The first line is the header:

    {"format": "smsinbox-export", "version": 1, "account": "alice",
     "exported_at": 1767225600000, "source": "sqlite", "ids_given": {"message": 912, ...}}

`ids_given` holds, for each kind of record that keeps its ids, the highest id the source
store had given out when the export began; the import moves the target's id sequences past
them. Then one record a line, each with a "type" and exactly the fields RECORDS lists for
it, kinds in the order of RECORDS (the account first) and, within a kind, in ascending id
order; the last line is {"type": "end", "counts": {kind: records, ...}}, so a file cut
short is refused rather than imported in part. Times are epoch milliseconds, as the store
keeps them; `body` (the octets of an 8bit message) is base64. The store says what belongs
to an account and how it is written (store/transfer.py); this module says how it looks on
a line, and checks every line before the store sees it.
"""

from __future__ import annotations

import base64
import binascii
import dataclasses
from collections.abc import AsyncIterator, Callable, Iterable, Iterator
from typing import Any

import orjson

from smsinbox.core.accounts import validate_time_zone, validate_username
from smsinbox.core.clock import Clock, now_ms
from smsinbox.core.numbers import validate_region
from smsinbox.errors import InvalidInput, InvalidRecord
from smsinbox.models import AccountStatus, DeliveryState, Direction, Encoding, MessageStatus
from smsinbox.push.formats import EVENTS, FORMATS
from smsinbox.store import Store
from smsinbox.store.transfer import SECTIONS, ImportRecord

FORMAT = "smsinbox-export"
VERSION = 1
END = "end"
_INT64 = range(-(2**63), 2**63)


@dataclasses.dataclass(frozen=True, slots=True)
class Field:
    """A field of a record: its name, its JSON type, whether it may be null, and the values
    it may take when they are few."""

    name: str
    kind: str  # int | str | bool | bytes (base64) | strs (a list of strings)
    nullable: bool = False
    choices: tuple[str, ...] = ()

    def to_json(self, value: Any) -> Any:
        if value is None:
            return None
        if self.kind == "bool":
            return bool(value)  # SQLite's 0 and 1
        if self.kind == "bytes":
            return base64.b64encode(value).decode("ascii")
        return value

    def from_json(self, line: int, value: Any) -> Any:
        """The field's value as the store takes it, or InvalidRecord naming the line."""
        if value is None:
            if self.nullable:
                return None
            raise InvalidRecord(line, f"{self.name} must not be null")
        kind = self.kind
        if kind == "int" and type(value) is int and value in _INT64:
            return value
        if kind == "bool" and type(value) is bool:
            return value
        if kind == "str" and type(value) is str:
            if self.choices and value not in self.choices:
                raise InvalidRecord(
                    line, f"{self.name} must be one of {', '.join(self.choices)}, not {value!r}"
                )
            return value
        if kind == "strs" and type(value) is list and all(type(v) is str for v in value):
            return value
        if kind == "bytes" and type(value) is str:
            try:
                return base64.b64decode(value, validate=True)
            except binascii.Error:
                raise InvalidRecord(line, f"{self.name} must be base64") from None
        described = {"int": "an integer", "str": "a string", "bool": "true or false",
                     "strs": "a list of strings", "bytes": "a base64 string"}  # fmt: skip
        raise InvalidRecord(line, f"{self.name} must be {described[kind]}")


def _int(name: str, *, nullable: bool = False) -> Field:
    return Field(name, "int", nullable)


def _str(name: str, *, nullable: bool = False, choices: Iterable[str] = ()) -> Field:
    return Field(name, "str", nullable, tuple(str(choice) for choice in choices))


def _bool(name: str) -> Field:
    return Field(name, "bool")


# Every kind of record and its fields, in the order they come in a file (version 1).
RECORDS: dict[str, tuple[Field, ...]] = {
    "account": (
        _int("id"), _str("username"), _str("password_hash"),
        _str("status", choices=AccountStatus), _str("time_zone"),
        _str("reseller", nullable=True), _str("region", nullable=True), _int("created_at"),
        _int("password_changed_at"),
        _int("last_seq"), _int("last_received_at"), _int("last_modseq"), _int("purged_modseq"),
    ),
    "number": (_str("msisdn"), _int("created_at")),
    "upstream": (
        _str("name"), _str("token_hash"), _int("created_at"), _int("revoked_at", nullable=True),
    ),
    "api_key": (_str("name"), _str("key_hash"), _int("created_at")),
    "device": (
        _int("id"), _str("name"), _int("created_at"), _int("acked_modseq"),
        _int("last_sync_at", nullable=True),
    ),
    "contact": (
        _int("id"), _str("name"), _int("created_at"), _int("modified_at"),
        Field("msisdns", "strs"),
    ),
    "message": (
        _int("id"), _int("seq"), _str("direction", choices=Direction), _str("sender"),
        _str("recipient"), _str("counterpart"), _str("text"), _str("encoding", choices=Encoding),
        Field("body", "bytes", nullable=True), _int("reply_to_id", nullable=True),
        _str("upstream", nullable=True), _str("upstream_message_id", nullable=True),
        _int("received_at"), _int("sent_at", nullable=True),
        _str("status", choices=MessageStatus), _int("status_at", nullable=True),
        _str("origin"), _bool("read"), _bool("locked"), _bool("deleted"),
        _int("deleted_at", nullable=True), _int("modseq"), _int("created_modseq"),
        _int("send_at", nullable=True), _int("device_id", nullable=True),
        _str("device_message_id", nullable=True),
    ),
    "conversation": (
        _int("id"), _str("counterpart"), _int("message_count"), _int("unread_count"),
        _int("unsent_count"), _int("last_message_id"), _int("last_message_at"), _str("snippet"),
    ),
    "push_endpoint": (
        _int("id"), _str("url"), _str("format", choices=FORMATS), _str("events"),
        _str("secret", nullable=True), _bool("enabled"), _str("disabled_reason", nullable=True),
        _int("failing_since", nullable=True), _int("created_at"),
    ),
    "delivery": (
        _int("id"), _int("endpoint_id"), _int("message_id"), _str("event", choices=EVENTS),
        _str("state", choices=DeliveryState), _int("attempts"), _int("next_attempt_at"),
        _int("created_at"), _int("delivered_at", nullable=True),
        _int("last_status", nullable=True), _str("last_error", nullable=True),
    ),
    "delivery_attempt": (
        _int("id"), _int("delivery_id"), _int("attempted_at"), _int("http_status", nullable=True),
        _int("latency_ms"), _str("error", nullable=True),
    ),
    "outbound": (
        _int("id"), _int("message_id"), _bool("registered_delivery"), _int("queued_at"),
        _int("expires_at"), _int("due_at"), _int("attempts"), _str("last_error"),
    ),
    "sent_part": (
        _int("id"), _int("message_id"), _int("part"), _int("total"), _int("bind_id"),
        _str("smsc_message_id"), _str("state"), _str("error"), _int("submitted_at"),
        _int("state_at"),
    ),
    "batch_message": (_int("message_id"), _int("batch_id")),
}  # fmt: skip
_NAMES = {kind: frozenset(field.name for field in fields) for kind, fields in RECORDS.items()}
_ORDER = {kind: place for place, kind in enumerate(RECORDS)}
# The kinds whose records keep their ids, and the field their order is checked on.
KEPT_IDS = tuple(section.kind for section in SECTIONS if section.kept_id)
_ASCENDING = {
    section.kind: section.key
    for section in SECTIONS
    if section.key in section.fields and section.key != "msisdn"
}


@dataclasses.dataclass(frozen=True, slots=True)
class TransferSummary:
    """What an export wrote or an import read: records by kind, in the file's order."""

    account: str
    counts: dict[str, int]
    # Import only: the upstreams and API keys the target did not have and were created.
    added: dict[str, int] = dataclasses.field(default_factory=dict)
    dry_run: bool = False

    @property
    def records(self) -> int:
        return sum(self.counts.values())


def encode(kind: str, values: dict[str, Any]) -> bytes:
    """One record as its line."""
    record: dict[str, Any] = {"type": kind}
    for field in RECORDS[kind]:
        record[field.name] = field.to_json(values[field.name])
    return orjson.dumps(record) + b"\n"


def decode(line: int, text: bytes) -> tuple[str, dict[str, Any]]:
    """A record's kind and its fields as the store takes them, or InvalidRecord."""
    record = _object(line, text)
    kind = record.get("type")
    if kind == END:
        return END, record
    if not isinstance(kind, str) or kind not in RECORDS:
        raise InvalidRecord(line, f"unknown record type {kind!r}")
    unknown = record.keys() - _NAMES[kind] - {"type"}
    if unknown:
        raise InvalidRecord(
            line, f"unknown field(s) in a {kind} record: {', '.join(sorted(unknown))}"
        )
    values: dict[str, Any] = {}
    for field in RECORDS[kind]:
        if field.name not in record:
            raise InvalidRecord(line, f"a {kind} record needs {field.name!r}")
        values[field.name] = field.from_json(line, record[field.name])
    return kind, values


def _object(line: int, text: bytes) -> dict[str, Any]:
    try:
        value = orjson.loads(text)
    except orjson.JSONDecodeError as error:
        raise InvalidRecord(line, f"not JSON: {error}") from None
    if not isinstance(value, dict):
        raise InvalidRecord(line, "not a JSON object")
    return value


@dataclasses.dataclass(frozen=True, slots=True)
class Header:
    account: str
    exported_at: int
    source: str
    ids_given: dict[str, int]


def header_line(header: Header) -> bytes:
    return orjson.dumps({
        "format": FORMAT, "version": VERSION, "account": header.account,
        "exported_at": header.exported_at, "source": header.source,
        "ids_given": header.ids_given,
    }) + b"\n"  # fmt: skip


def read_header(text: bytes) -> Header:
    header = _object(1, text)
    if header.get("format") != FORMAT:
        raise InvalidRecord(1, f'not an smsinbox export (no "format": "{FORMAT}" header)')
    version = header.get("version")
    if version != VERSION:
        raise InvalidRecord(1, f"format version {version!r}: this smsinbox reads version {VERSION}")
    expected = {"format", "version", "account", "exported_at", "source", "ids_given"}
    if header.keys() != expected:
        wrong = sorted(header.keys() ^ expected)
        raise InvalidRecord(1, f"the header's fields must be {', '.join(sorted(expected))}; "
                               f"wrong: {', '.join(wrong)}")  # fmt: skip
    account, exported_at = header["account"], header["exported_at"]
    source, ids_given = header["source"], header["ids_given"]
    if type(account) is not str or type(exported_at) is not int or type(source) is not str:
        raise InvalidRecord(1, "account and source must be strings, exported_at an integer")
    if (
        not isinstance(ids_given, dict)
        or ids_given.keys() != set(KEPT_IDS)
        or any(type(v) is not int or v not in _INT64 or v < 0 for v in ids_given.values())
    ):
        raise InvalidRecord(
            1, f"ids_given must give a non-negative integer for each of {', '.join(KEPT_IDS)}"
        )
    return Header(account, exported_at, source, ids_given)


class AccountTransfer:
    """Writes an account out as a file, and reads one into the store."""

    def __init__(self, store: Store, *, clock: Clock = now_ms) -> None:
        self.store = store
        self.clock = clock

    async def export_account(
        self,
        username: str,
        write: Callable[[bytes], object],
        *,
        on_total: Callable[[int], None] | None = None,
        on_record: Callable[[], None] | None = None,
    ) -> TransferSummary:
        """Write the account's file a line at a time; NotFound if there is no such account."""
        counts = dict.fromkeys(RECORDS, 0)
        async with self.store.reading_account(username) as reader:
            if on_total is not None:
                on_total(await reader.count())
            header = Header(username, self.clock(), self.store.db.kind, reader.ids_given)
            write(header_line(header))
            async for kind, values in reader.records():
                write(encode(kind, values))
                counts[kind] += 1
                if on_record is not None:
                    on_record()
        write(orjson.dumps({"type": END, "counts": counts}) + b"\n")
        return TransferSummary(username, counts)

    async def import_account(
        self,
        lines: Iterable[bytes],
        *,
        dry_run: bool = False,
        on_line: Callable[[int], None] | None = None,
    ) -> TransferSummary:
        """Check every line and store the account it holds, all or nothing. InvalidRecord
        (naming the line) for a file that is not a whole, valid export; AlreadyExists when
        the store has the account, one of its numbers, or one of its ids."""
        numbered = _counted(lines, on_line)
        first = next(numbered, None)
        if first is None:
            raise InvalidRecord(1, "the file is empty")
        header = read_header(first[1])
        counts = dict.fromkeys(RECORDS, 0)
        records = _checked(numbered, header, counts)
        added = await self.store.import_account(
            records, ids_given=header.ids_given, dry_run=dry_run
        )
        return TransferSummary(header.account, counts, added, dry_run)


def _counted(
    lines: Iterable[bytes], on_line: Callable[[int], None] | None
) -> Iterator[tuple[int, bytes]]:
    for number, text in enumerate(lines, 1):
        if on_line is not None:
            on_line(len(text))
        yield number, text


async def _checked(
    lines: Iterator[tuple[int, bytes]], header: Header, counts: dict[str, int]
) -> AsyncIterator[ImportRecord]:
    """The records of the lines after the header, each checked on its own and against those
    before it (order, ids, the end record); counted into `counts` as they go."""
    place = -1
    last_key: dict[str, int] = {}
    ended = 0
    number = 1
    for number, text in lines:
        if ended:
            raise InvalidRecord(number, f"nothing may follow the end record (line {ended})")
        kind, values = decode(number, text)
        if kind == END:
            _check_end(number, values, counts)
            ended = number
            continue
        if _ORDER[kind] < place or (kind == "account" and place == 0):
            raise InvalidRecord(number, f"a {kind} record cannot come here: records come in "
                                        f"the order {', '.join(RECORDS)}, one account")  # fmt: skip
        if place == -1 and kind != "account":
            raise InvalidRecord(number, "the account's record must follow the header")
        place = _ORDER[kind]
        if kind == "account":
            _check_account(number, values, header)
        key = _ASCENDING.get(kind)
        if key is not None:
            _check_key(number, kind, key, values[key], last_key, header)
        counts[kind] += 1
        yield ImportRecord(number, kind, values)
    if not ended:
        raise InvalidRecord(number, "the file ends without its end record: it was cut short")


def _check_account(line: int, values: dict[str, Any], header: Header) -> None:
    if values["username"] != header.account:
        raise InvalidRecord(line, f"the account is {values['username']!r}, the header says "
                                  f"{header.account!r}")  # fmt: skip
    try:
        validate_username(values["username"])
        validate_time_zone(values["time_zone"])
        validate_region(values["region"])
    except InvalidInput as error:
        raise InvalidRecord(line, error.detail) from None


def _check_key(
    line: int, kind: str, key: str, value: int, last_key: dict[str, int], header: Header
) -> None:
    """Ids come in ascending order (so none is twice in a file) and within `ids_given`."""
    before = last_key.get(kind)
    if before is not None and value <= before:
        raise InvalidRecord(line, f"{kind} {key}s must ascend: {value} follows {before}")
    last_key[kind] = value
    if kind in header.ids_given and value > header.ids_given[kind]:
        raise InvalidRecord(
            line, f"{kind} id {value} is above the header's ids_given ({header.ids_given[kind]})"
        )
    if value <= 0:
        raise InvalidRecord(line, f"{kind} {key} must be positive")


def _check_end(line: int, record: dict[str, Any], counts: dict[str, int]) -> None:
    if record.keys() != {"type", "counts"} or not isinstance(record["counts"], dict):
        raise InvalidRecord(line, 'the end record is {"type": "end", "counts": {...}}')
    stated = record["counts"]
    for kind, found in counts.items():
        if stated.get(kind, 0) != found:
            raise InvalidRecord(
                line,
                f"the end record counts {stated.get(kind, 0)} {kind} record(s), the file has "
                f"{found}: it is not the file that was exported",
            )
    unknown = stated.keys() - counts.keys()
    if unknown:
        raise InvalidRecord(
            line, f"the end record counts unknown kinds: {', '.join(sorted(unknown))}"
        )
