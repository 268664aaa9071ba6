"""Messages: adding them (incoming through the ingest queue, the account's own one by one),
reading one, and changing them in the account's modification order."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from sqlalchemy import bindparam, case, exc, insert, select, update

from smsinbox.models import (
    UNSENT_STATUSES,
    Direction,
    InboundMessage,
    IngestResult,
    Message,
    NewMessage,
)
from smsinbox.store import tables as t
from smsinbox.store.base import StoreBase, account_id_for
from smsinbox.store.database import Connection
from smsinbox.store.engine import StorageEngine
from smsinbox.store.ingest import BUMP_CONVERSATION, Arrival
from smsinbox.store.rows import MESSAGE_COLUMNS, message_from_row


class MessageStore(StoreBase):
    async def ingest_incoming(
        self, inbound: InboundMessage, *, now: int, reply_window_ms: int
    ) -> IngestResult:
        """Store one incoming message, routed by its recipient, exactly once per upstream id.

        It is committed when this returns (in a batch with others arriving meanwhile, see
        store/ingest.py): the caller may acknowledge it to its upstream then.
        """
        return await self.ingest_queue.submit(Arrival(inbound, now, reply_window_ms))

    async def add_message(self, account_id: int, message: NewMessage, *, now: int) -> int:
        """Store a message the account adds itself (a send); incoming answers thread onto
        an outgoing one."""
        async with self.db.transaction("add_message") as connection:
            return await _append_message(self.db.engine, connection, account_id, message, now)

    async def add_device_message(
        self, account_id: int, message: NewMessage, *, now: int
    ) -> tuple[int, bool]:
        """Store a message the account's device reports, once per device message id.

        Returns the message id and whether it was new.
        """
        messages = t.messages.c
        engine = self.db.engine
        for attempt in (1, 2):
            try:
                async with self.db.transaction("add_device_message") as connection:
                    if message.device_message_id is not None:
                        earlier = await connection.scalar(
                            select(messages.id)
                            .where(messages.account_id == account_id)
                            .where(messages.device_id == message.device_id)
                            .where(messages.device_message_id == message.device_message_id)
                        )
                        if earlier is not None:
                            return int(earlier), False
                    return await _append_message(engine, connection, account_id, message, now), True
            except exc.IntegrityError:
                # The same report arrived twice at once; the second try finds the first.
                if attempt == 2:
                    raise
        raise AssertionError("unreachable")

    async def get_message(self, account_id: int, message_id: int) -> Message | None:
        async with self.db.snapshot("get_message") as connection:
            row = (
                await connection.execute(
                    select(*MESSAGE_COLUMNS)
                    .where(t.messages.c.account_id == account_id)
                    .where(t.messages.c.id == message_id)
                    .where(t.messages.c.deleted.is_(False))
                )
            ).first()
        return None if row is None else message_from_row(row)

    async def list_recent_messages(self, username: str, limit: int) -> list[Message]:
        """The account's newest messages, newest first (for the operator)."""
        async with self.db.snapshot("list_recent_messages") as connection:
            account_id = await account_id_for(connection, username)
            rows = (
                await connection.execute(
                    select(*MESSAGE_COLUMNS)
                    .where(t.messages.c.account_id == account_id)
                    .where(t.messages.c.deleted.is_(False))
                    .order_by(t.messages.c.seq.desc())
                    .limit(limit)
                )
            ).all()
        return [message_from_row(row) for row in rows]


# The statements every message runs, built once. Building a statement and computing its
# cache key costs several times what SQLite takes to run it, and a message runs about ten.


_counters = t.account_counters.c
# Takes the account's next position; see _append_message.
_NEXT_POSITION = (
    update(t.account_counters)
    .where(_counters.account_id == bindparam("owner"))
    .values(
        last_seq=_counters.last_seq + 1,
        last_modseq=_counters.last_modseq + 1,
        last_received_at=case(
            (_counters.last_received_at > bindparam("now"), _counters.last_received_at),
            else_=bindparam("now"),
        ),
    )
    .returning(_counters.last_seq, _counters.last_modseq, _counters.last_received_at)
)
_INSERT_MESSAGE = insert(t.messages).returning(t.messages.c.id)


async def _append_message(
    engine: StorageEngine, connection: Connection, account_id: int, message: NewMessage, now: int
) -> int:
    """Insert a message in the account's commit order and update its conversation.

    The counter row is updated first: its lock orders this account's writers, so the
    sequence number, id and clamped timestamp all follow commit order (DESIGN invariant 2).
    The account's own messages are not pushed (see core/records.py).
    """
    position = (await connection.execute(_NEXT_POSITION, {"owner": account_id, "now": now})).one()
    message_id = await connection.scalar(
        _INSERT_MESSAGE,
        {
            "account_id": account_id,
            "seq": position.last_seq,
            "modseq": position.last_modseq,
            "created_modseq": position.last_modseq,
            "received_at": position.last_received_at,
            "status_at": position.last_received_at,
            "direction": message.direction.value,
            "sender": message.sender,
            "recipient": message.recipient,
            "counterpart": message.counterpart,
            "text": message.text,
            "encoding": message.encoding.value,
            "status": message.status.value,
            "origin": message.origin,
            "read": message.read,
            "sent_at": message.sent_at,
            "send_at": message.send_at,
            "device_id": message.device_id,
            "device_message_id": message.device_message_id,
        },
    )
    assert message_id is not None
    incoming = message.direction is Direction.INCOMING
    unread = incoming and not message.read
    unsent = not incoming and message.status in UNSENT_STATUSES
    driver = await engine.driver(connection)
    await driver.execute(
        BUMP_CONVERSATION,
        (
            account_id, message.counterpart, 1, int(unread), int(unsent), int(message_id),
            position.last_received_at, message.text[: t.SNIPPET_CHARS],
        ),
    )  # fmt: skip
    return int(message_id)


async def change_messages(
    connection: Connection, account_id: int, message_ids: Sequence[int], values: dict[str, Any]
) -> None:
    """Apply `values` to the messages, each with a modseq of its own, in id order."""
    if not message_ids:
        return
    counters = t.account_counters.c
    last = await connection.scalar(
        update(t.account_counters)
        .where(counters.account_id == account_id)
        .values(last_modseq=counters.last_modseq + len(message_ids))
        .returning(counters.last_modseq)
    )
    assert last is not None
    first = int(last) - len(message_ids) + 1
    await connection.execute(
        update(t.messages)
        .where(t.messages.c.id == bindparam("changed_id"))
        .values(modseq=bindparam("new_modseq"), **values),
        [
            {"changed_id": message_id, "new_modseq": first + offset}
            for offset, message_id in enumerate(message_ids)
        ],
    )
