"""Rows of `messages` and `conversations` as the model's values: the full Message, and the
narrower rows the polls (PolledMessage) and device syncs (SyncedMessage) read."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import Row

from smsinbox.models import (
    Conversation,
    Direction,
    Encoding,
    Message,
    MessageStatus,
    PolledMessage,
    SyncedMessage,
)
from smsinbox.store import tables as t

# The columns of `messages` in Message's field order, so a row unpacks straight into one.
MESSAGE_COLUMNS = tuple(t.messages.c[name] for name in Message._fields)
_DIRECTIONS = {direction.value: direction for direction in Direction}
_ENCODINGS = {encoding.value: encoding for encoding in Encoding}
_STATUSES = {status.value: status for status in MessageStatus}
_STATUS_AT = Message._fields.index("status")
_DIRECTION_AT = Message._fields.index("direction")
_ENCODING_AT = Message._fields.index("encoding")
# The same columns written out, for driver-level statements (our own names, never input).
MESSAGE_FIELDS = ", ".join(Message._fields)
# And of `messages` named `m`, as a statement that joins it names it.
MESSAGE_FIELDS_OF_M = ", ".join(f"m.{name}" for name in Message._fields)
_FLAGS_AT = tuple(Message._fields.index(name) for name in ("read", "locked", "deleted"))


def conversation_from_row(row: Row[Any]) -> Conversation:
    return Conversation(
        counterpart=row.counterpart,
        message_count=row.message_count,
        unread_count=row.unread_count,
        unsent_count=row.unsent_count,
        last_message_id=row.last_message_id,
        last_message_at=row.last_message_at,
        snippet=row.snippet,
    )


def message_from_row(row: Sequence[Any]) -> Message:
    """A Message from a row selected with MESSAGE_COLUMNS (SQLAlchemy) or MESSAGE_FIELDS (a
    driver row, where SQLite gives its booleans as 0 and 1)."""
    fields = list(row)
    fields[_DIRECTION_AT] = _DIRECTIONS[fields[_DIRECTION_AT]]
    fields[_ENCODING_AT] = _ENCODINGS[fields[_ENCODING_AT]]
    fields[_STATUS_AT] = _STATUSES[fields[_STATUS_AT]]
    for at in _FLAGS_AT:
        fields[at] = bool(fields[at])
    return Message._make(fields)


def polled_from_rows(rows: Sequence[Sequence[Any]]) -> list[PolledMessage]:
    """PolledMessages from driver rows of their columns in field order, built as
    synced_from_rows builds its rows (an EAPI page reads a thousand)."""
    directions, encodings, statuses = _DIRECTIONS, _ENCODINGS, _STATUSES
    new, polled = tuple.__new__, PolledMessage
    return [
        new(polled, (message_id, directions[direction], sender, recipient, text,
                     encodings[encoding], body, reply_to_id, received_at, statuses[status]))
        for (message_id, direction, sender, recipient, text, encoding, body, reply_to_id,
             received_at, status) in rows
    ]  # fmt: skip


def synced_from_rows(rows: Sequence[Sequence[Any]]) -> list[SyncedMessage]:
    """SyncedMessages from driver rows of two leading columns, then theirs in field order
    (SQLite gives its booleans as 0 and 1). The leading two are the account's counters on
    PostgreSQL and empty on SQLite (store/sync.py's two statement shapes); they are skipped.
    Built with tuple.__new__ in one comprehension: a sync reads a thousand, and the named
    tuple's own constructor, a call per row, cost twice as much."""
    directions, statuses, new, synced = _DIRECTIONS, _STATUSES, tuple.__new__, SyncedMessage
    return [
        new(synced, (message_id, directions[direction], counterpart, text, received_at, sent_at,
                     statuses[status], status_at, origin, bool(read), bool(locked),
                     bool(deleted), modseq, created_modseq, device_message_id))
        for (_, _, message_id, direction, counterpart, text, received_at, sent_at, status,
             status_at, origin, read, locked, deleted, modseq, created_modseq,
             device_message_id) in rows
    ]  # fmt: skip
