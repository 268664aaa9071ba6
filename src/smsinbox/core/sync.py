"""mysms device sync, modelled on JMAP `/changes`.

Every change to an account's messages gets the next number of the account's modification
sequence (modseq). A device's state is the modseq it has acknowledged: a sync returns the
changes after it, in order, at most `syncLimit` at a time, with the state to acknowledge
next. Deletes travel as tombstones, kept for `sync_tombstone_days`; a device whose state is
older than the oldest purged tombstone is told to resync from scratch. The device's own
changes are applied first and idempotently: the same `deviceMessageId` inserts once.
"""

from __future__ import annotations

import contextlib
import dataclasses
from typing import Any

from smsinbox.core.clock import Clock, now_ms
from smsinbox.core.mailbox import Mailbox
from smsinbox.core.sessions import Principal
from smsinbox.errors import InvalidInput, MissingParameter, NotFound, UnknownDevice
from smsinbox.models import Message
from smsinbox.store import Store

UPDATE, INSERT, DELETE = 0, 1, 2
DEFAULT_LIMIT = 100
MAX_LIMIT = 1000


@dataclasses.dataclass(frozen=True, slots=True)
class Change:
    operation: int
    message: Message


@dataclasses.dataclass(frozen=True, slots=True)
class SyncResult:
    changes: list[Change]
    acks: list[tuple[str, int]]  # (deviceMessageId, messageId) for the device's inserts
    state: int
    more: bool
    resync: bool


class Sync:
    def __init__(self, store: Store, mailbox: Mailbox, clock: Clock = now_ms) -> None:
        self.store = store
        self.mailbox = mailbox
        self.clock = clock

    async def sync(
        self,
        who: Principal,
        device_id: int | None,
        *,
        syncs: list[dict[str, Any]],
        acks: list[int],
        limit: int | None,
        initial: bool,
    ) -> SyncResult:
        if device_id is None:
            raise MissingParameter("deviceId")
        if not await self.store.device_exists(who.account_id, device_id):
            raise UnknownDevice("the device id is invalid")
        count = DEFAULT_LIMIT if not limit or limit <= 0 else min(limit, MAX_LIMIT)
        applied = [await self._apply(who, device_id, entry) for entry in syncs]
        device_acks = [ack for ack in applied if ack is not None]
        acknowledged = max(acks, default=0)
        if initial:
            # The current messages from scratch, page by page: the device keeps asking with
            # syncInitial and the state it got until syncMore is false. Everything arrives
            # as an insert; deletes before the listing are simply absent.
            after = acknowledged
        else:
            after = await self.store.acknowledge_sync(
                who.account_id, device_id, acknowledged, now=self.clock()
            )
        changed, purged, newest = await self.store.list_changes(
            who.account_id, after_modseq=after, limit=count + 1, include_deleted=not initial
        )
        if not initial and after < purged:
            return SyncResult([], device_acks, after, more=False, resync=True)
        more = len(changed) > count
        changed = changed[:count]
        changes = [
            Change(
                DELETE if m.deleted else INSERT if initial or m.created_modseq > after else UPDATE,
                m,
            )
            for m in changed
        ]
        if more:
            next_state = changed[-1].modseq
        else:
            # Nothing more to send: the device is now as current as the newest change.
            next_state = max(newest, changed[-1].modseq if changed else after)
        return SyncResult(changes, device_acks, next_state, more, resync=False)

    async def _apply(
        self, who: Principal, device_id: int, entry: dict[str, Any]
    ) -> tuple[str, int] | None:
        operation = entry.get("operation")
        device_message_id = entry.get("deviceMessageId")
        if operation == INSERT:
            if not device_message_id:
                raise MissingParameter("deviceMessageId")
            inserted, _ = await self.mailbox.insert(
                who,
                entry.get("address"),
                entry.get("message"),
                incoming=entry.get("incoming", True),
                date_sent=entry.get("dateSent"),
                read=entry.get("read", False),
                device_id=device_id,
                device_message_id=device_message_id,
            )
            return device_message_id, inserted
        message_id: int | None = entry.get("messageId")
        if message_id is None and device_message_id:
            message_id = await self.store.find_device_message(
                who.account_id, device_id, device_message_id
            )
        if message_id is None:
            raise MissingParameter("messageId")
        if operation == UPDATE:
            # Deleted meanwhile (perhaps by another device)? Then the delete wins.
            with contextlib.suppress(NotFound):
                await self.mailbox.update(
                    who, message_id, read=entry.get("read"), locked=entry.get("locked")
                )
        elif operation == DELETE:
            await self.mailbox.delete_messages(who, [message_id])
        else:
            raise InvalidInput("operation must be 0 (update), 1 (insert) or 2 (delete)")
        return None
