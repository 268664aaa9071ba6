"""What a signed-in mysms user can do with their messages: the rules behind each resource."""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

from smsinbox.core import records
from smsinbox.core.clock import Clock, now_ms
from smsinbox.core.encodings import encoding_for
from smsinbox.core.ingest import Ingestor
from smsinbox.core.numbers import normalize_msisdn, normalize_sender
from smsinbox.core.sessions import Principal
from smsinbox.core.turns import ReadTurns
from smsinbox.errors import (
    InvalidInput,
    MissingParameter,
    NotFound,
    SenderWithoutNumber,
    UnknownDevice,
)
from smsinbox.models import Conversation, InboundMessage, Message, MessageStatus
from smsinbox.smpp.coding import count_parts
from smsinbox.smpp.messages import MAX_PARTS
from smsinbox.store import Store

MIN_SEARCH = 3
MAX_DEVICE_MESSAGE_ID = 128
MAX_PAGE = 1000
DEFAULT_PAGE = 100


@dataclasses.dataclass(frozen=True, slots=True)
class Deletion:
    deleted: int
    kept_locked: list[int]


def _page(offset: int | None, limit: int | None) -> tuple[int, int]:
    offset = offset or 0
    limit = DEFAULT_PAGE if limit is None or limit <= 0 else min(limit, MAX_PAGE)
    if offset < 0:
        raise InvalidInput("offset must not be negative", "offset")
    return offset, limit


def address_of(who: Principal, address: str | None, field: str = "address") -> str:
    """A counterpart's address as stored: a number read in the user's region, or an
    alphanumeric sender id as given."""
    return normalize_sender(address, field, region=who.region)


def _text(text: str | None, max_chars: int) -> str:
    if text is None or text == "":
        raise MissingParameter("text")
    if len(text) > max_chars:
        raise InvalidInput(f"text is longer than {max_chars} characters", "text")
    return text.replace("\x00", "\ufffd")


class Mailbox:
    def __init__(
        self,
        store: Store,
        ingestor: Ingestor,
        *,
        max_chars: int,
        turns: ReadTurns,
        send_expiry_s: int = 86_400,
        clock: Clock = now_ms,
    ) -> None:
        self.store = store
        self.turns = turns
        self.ingestor = ingestor
        self.max_chars = max_chars
        self.send_expiry_ms = send_expiry_s * 1000
        self.clock = clock

    async def conversations(
        self, who: Principal, *, offset: int | None, limit: int | None
    ) -> list[tuple[Conversation, str | None]]:
        first, count = _page(offset, limit)
        async with self.turns.turn():
            return await self.store.list_conversations_with_names(
                who.account_id, offset=first, limit=count
            )

    async def unread(self, who: Principal) -> int:
        """Unread messages in all of the user's conversations."""
        return await self.store.count_unread(who.account_id)

    async def conversation_messages(
        self, who: Principal, address: str | None, *, offset: int | None, limit: int | None
    ) -> list[Message]:
        first, count = _page(offset, limit)
        async with self.turns.turn():
            return await self.store.list_conversation_messages(
                who.account_id, address_of(who, address), offset=first, limit=count
            )

    async def read_conversation(self, who: Principal, address: str | None) -> int:
        return await self.store.mark_conversations_read(
            who.account_id, [address_of(who, address)], now=self.clock()
        )

    async def delete_conversations(self, who: Principal, addresses: Sequence[str]) -> Deletion:
        if not addresses:
            raise MissingParameter("counterparts")
        deleted, kept = await self.store.delete_messages(
            who.account_id, counterparts=[address_of(who, a) for a in addresses], now=self.clock()
        )
        return Deletion(deleted, kept)

    async def delete_messages(self, who: Principal, message_ids: Sequence[int]) -> Deletion:
        if not message_ids:
            raise MissingParameter("message_ids")
        deleted, kept = await self.store.delete_messages(
            who.account_id, message_ids=message_ids, now=self.clock()
        )
        return Deletion(deleted, kept)

    async def lock(self, who: Principal, message_ids: Sequence[int], locked: bool) -> int:
        if not message_ids:
            raise MissingParameter("message_ids")
        return await self.store.set_locked(who.account_id, message_ids, locked)

    async def update(
        self,
        who: Principal,
        message_id: int | None,
        *,
        read: bool | None,
        locked: bool | None,
    ) -> Message:
        if message_id is None:
            raise MissingParameter("message_id")
        values = {
            name: value for name, value in (("read", read), ("locked", locked)) if value is not None
        }
        updated = await self.store.update_message(
            who.account_id, message_id, values, now=self.clock()
        )
        if updated is None:
            raise NotFound("no such message")
        return updated

    async def search(
        self,
        who: Principal,
        query: str | None,
        *,
        address: str | None,
        locked: bool | None,
        limit: int | None,
    ) -> list[Message]:
        if not query:
            raise MissingParameter("query")
        if len(query.strip()) < MIN_SEARCH:
            raise InvalidInput(f"query must have at least {MIN_SEARCH} characters", "query")
        _, count = _page(0, limit)
        async with self.turns.turn():
            return await self.store.search_messages(
                who.account_id,
                query.strip(),
                counterpart=None if address is None else address_of(who, address),
                locked=locked,
                limit=count,
            )

    async def insert(
        self,
        who: Principal,
        address: str | None,
        text: str | None,
        *,
        incoming: bool,
        date_sent: int | None,
        read: bool,
        device_id: int | None,
        device_message_id: str | None,
    ) -> tuple[int, bool]:
        """Store a message the user's own device received (or sent) on its SIM."""
        await self._check_device(who, device_id)
        if device_message_id is not None and (
            len(device_message_id) > MAX_DEVICE_MESSAGE_ID or not device_message_id.isprintable()
        ):
            raise InvalidInput(
                f"device_message_id must be at most {MAX_DEVICE_MESSAGE_ID} printable characters",
                "device_message_id",
            )
        body = _text(text, self.max_chars)
        message = records.reported_by_device(
            who.numbers[0] if who.numbers else "",
            address_of(who, address),
            body,
            incoming=incoming,
            sent_at=date_sent,
            read=read,
            device_id=device_id,
            device_message_id=device_message_id,
        )
        return await self.store.add_device_message(who.account_id, message, now=self.clock())

    async def send(
        self,
        who: Principal,
        recipient: int | str | None,
        text: str | None,
        *,
        send_on: int | None,
        device_id: int | None,
    ) -> int:
        """Send a message from the account's first number (mysms send)."""
        if recipient is None or recipient == "":
            raise MissingParameter("recipient")
        if not who.numbers:
            raise SenderWithoutNumber("the account has no number to send from")
        await self._check_device(who, device_id)
        return await self.send_from(
            who.account_id,
            who.numbers[0],
            normalize_msisdn(str(recipient), "recipient", region=who.region),
            _text(text, self.max_chars),
            send_on=send_on,
            origin="app",
            device_id=device_id,
        )

    async def send_from(
        self,
        account_id: int,
        sender: str,
        recipient: str,
        text: str,
        *,
        send_on: int | None = None,
        origin: str = "platform",
        device_id: int | None = None,
        registered_delivery: bool = True,
    ) -> int:
        """Send a message: at once to an account on this server, else into the queue for an
        SMSC. Its id.

        A `send_on` in the future schedules it; the dispatcher sends it when due, also after
        a restart, since the schedule is the stored message itself.
        """
        if count_parts(text) > MAX_PARTS:
            raise InvalidInput(f"text takes more than {MAX_PARTS} short messages", "text")
        now = self.clock()
        scheduled = send_on is not None and send_on > now
        message = records.outgoing(
            sender,
            recipient,
            text,
            status=MessageStatus.SCHEDULED if scheduled else MessageStatus.SENDING,
            now=now,
            send_at=send_on if scheduled else None,
            origin=origin,
            device_id=device_id,
        )
        message_id = await self.store.add_message(account_id, message, now=now)
        if not scheduled:
            await self.deliver(
                account_id, message_id, sender, recipient, text,
                registered_delivery=registered_delivery,
            )  # fmt: skip
        return message_id

    async def deliver(
        self,
        account_id: int,
        message_id: int,
        sender: str,
        recipient: str,
        text: str,
        *,
        registered_delivery: bool = True,
    ) -> None:
        """Hand an outgoing message on: into a local inbox, or to the queue for an SMSC."""
        if await self.store.find_account_by_number(recipient) is None:
            # No account here owns the number: an SMPP bind sends it, or it fails in time.
            now = self.clock()
            await self.store.queue_outgoing(
                account_id, message_id, registered_delivery=registered_delivery,
                expires_at=now + self.send_expiry_ms, now=now,
            )  # fmt: skip
            return
        await self.ingestor.ingest(
            InboundMessage(
                sender=sender,
                recipient=recipient,
                text=text,
                encoding=encoding_for(text),
                # Makes a repeated delivery (after a crash) a duplicate, not a second copy.
                upstream_message_id=f"local:{message_id}",
                origin="app",
            )
        )
        await self.store.set_outgoing_status(
            account_id, message_id, MessageStatus.COMPLETE, now=self.clock()
        )

    async def _check_device(self, who: Principal, device_id: int | None) -> None:
        if device_id is not None and not await self.store.device_exists(who.account_id, device_id):
            raise UnknownDevice("the device id is invalid")
