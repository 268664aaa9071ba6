"""Device sync (mysms `sync` in its dialect), modelled on JMAP `/changes`.

Every change to an account's messages gets the next number of the account's modification
sequence (modseq). A device's state is the modseq it has acknowledged: a sync returns the
changes after it, in order, at most a limit at a time, with the state to acknowledge
next. Deletes travel as tombstones, kept for `sync_tombstone_days`; a device whose state is
older than the oldest purged tombstone is told to resync from scratch. The device's own
changes are applied first and idempotently: the same device message id inserts once.
"""

from __future__ import annotations

import contextlib
import dataclasses
import enum

from smsinbox.core.clock import Clock, now_ms
from smsinbox.core.mailbox import Mailbox
from smsinbox.core.sessions import Principal
from smsinbox.errors import MissingParameter, NotFound, UnknownDevice
from smsinbox.models import SyncedMessage
from smsinbox.store import Store

DEFAULT_LIMIT = 100
MAX_LIMIT = 1000


class ChangeKind(enum.Enum):
    """What happened to a message since the device's state."""

    UPDATED = "updated"
    CREATED = "created"
    DELETED = "deleted"


# The device's own changes, applied before its changes are listed. A message the device
# stored itself is named by the device's id for it where the server's is not known yet.


@dataclasses.dataclass(frozen=True, slots=True)
class DeviceInsert:
    device_message_id: str | None
    counterpart: str | None
    text: str | None
    incoming: bool = True
    sent_at: int | None = None
    read: bool = False


@dataclasses.dataclass(frozen=True, slots=True)
class DeviceUpdate:
    message_id: int | None
    device_message_id: str | None = None
    read: bool | None = None
    locked: bool | None = None


@dataclasses.dataclass(frozen=True, slots=True)
class DeviceDelete:
    message_id: int | None
    device_message_id: str | None = None


DeviceChange = DeviceInsert | DeviceUpdate | DeviceDelete


@dataclasses.dataclass(frozen=True, slots=True)
class SyncResult:
    """What a sync answers. The changes are `messages[i]` with what happened to it,
    `kinds[i]`: two lists side by side rather than a pair per change, which a sync of a
    thousand built and took apart again. From the rows to the answer's JSON, a thousand
    changes cost 0.91-0.94 ms with the pairs and a call per change to render each, and
    0.71-0.72 ms side by side and rendered in one comprehension (2026-12-07)."""

    messages: list[SyncedMessage]
    kinds: list[ChangeKind]
    acks: list[tuple[str, int]]  # (device message id, message id) for the device's inserts
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
        device_changes: list[DeviceChange],
        acks: list[int],
        limit: int | None,
        initial: bool,
    ) -> SyncResult:
        if device_id is None:
            raise MissingParameter("device_id")
        # Most syncs only acknowledge and list: their acknowledgement finds the device or
        # not, before anything changes, and spares a look-up of its own.
        if (device_changes or initial) and not await self.store.device_exists(
            who.account_id, device_id
        ):
            raise UnknownDevice("the device id is invalid")
        count = DEFAULT_LIMIT if not limit or limit <= 0 else min(limit, MAX_LIMIT)
        applied = [await self._apply(who, device_id, change) for change in device_changes]
        device_acks = [ack for ack in applied if ack is not None]
        acknowledged = max(acks, default=0)
        if initial:
            # The current messages from scratch, page by page: the device keeps asking with
            # an initial sync and the state it got until there is no more. Everything
            # arrives as created; deletes before the listing are simply absent.
            after = acknowledged
        else:
            acked = await self.store.acknowledge_sync(
                who.account_id, device_id, acknowledged, now=self.clock()
            )
            if acked is None:
                raise UnknownDevice("the device id is invalid")
            after = acked
        # The turn covers the rendering too: it is given back on the loop's next turn.
        async with self.mailbox.turns.turn():
            changed, purged, newest = await self.store.list_changes(
                who.account_id, after_modseq=after, limit=count + 1, include_deleted=not initial
            )
        if not initial and after < purged:
            return SyncResult([], [], device_acks, after, more=False, resync=True)
        more = len(changed) > count
        changed = changed[:count]
        if more:
            next_state = changed[-1].modseq
        else:
            # Nothing more to send: the device is now as current as the newest change.
            next_state = max(newest, changed[-1].modseq if changed else after)
        return SyncResult(
            changed, _kinds(changed, after, initial), device_acks, next_state, more, resync=False
        )

    async def _apply(
        self, who: Principal, device_id: int, change: DeviceChange
    ) -> tuple[str, int] | None:
        if isinstance(change, DeviceInsert):
            if not change.device_message_id:
                raise MissingParameter("device_message_id")
            inserted, _ = await self.mailbox.insert(
                who,
                change.counterpart,
                change.text,
                incoming=change.incoming,
                date_sent=change.sent_at,
                read=change.read,
                device_id=device_id,
                device_message_id=change.device_message_id,
            )
            return change.device_message_id, inserted
        message_id = change.message_id
        if message_id is None and change.device_message_id:
            message_id = await self.store.find_device_message(
                who.account_id, device_id, change.device_message_id
            )
        if message_id is None:
            raise MissingParameter("message_id")
        if isinstance(change, DeviceUpdate):
            # Deleted meanwhile (perhaps by another device)? Then the delete wins.
            with contextlib.suppress(NotFound):
                await self.mailbox.update(who, message_id, read=change.read, locked=change.locked)
        else:
            await self.mailbox.delete_messages(who, [message_id])
        return None


def _kinds(messages: list[SyncedMessage], after: int, initial: bool) -> list[ChangeKind]:
    """What each message is to a device after `after`: deleted, created since (everything,
    in an initial sync), or updated."""
    created, updated, deleted = ChangeKind.CREATED, ChangeKind.UPDATED, ChangeKind.DELETED
    return [
        deleted if m.deleted else created if initial or m.created_modseq > after else updated
        for m in messages
    ]
