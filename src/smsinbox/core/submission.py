"""The send APIs of the polling platforms (MC5 sendSingle2, EAPI send_sms and get_report):
authenticate with the account's username and password, then send through the one send path
every dialect shares (Mailbox.send_from), and report what became of a batch.

A message goes from one of the account's own numbers (the first, unless the caller names
another it owns): a number it does not own would let one customer send as another.
"""

from __future__ import annotations

import datetime as dt
import zoneinfo
from collections.abc import Sequence

from smsinbox.core.auth import PasswordAuthenticator
from smsinbox.core.caller import INTERNAL, Caller
from smsinbox.core.clock import Clock, now_ms
from smsinbox.core.mailbox import Mailbox
from smsinbox.core.numbers import normalize_msisdn, normalize_sender
from smsinbox.core.values import parse_count
from smsinbox.errors import BatchTooLarge, InvalidInput, MissingParameter, SenderWithoutNumber
from smsinbox.models import Account, Batched
from smsinbox.store import Store

# The most recipients one send_sms call may name.
MAX_BATCH = 1000


class SendApi:
    def __init__(
        self,
        store: Store,
        authenticator: PasswordAuthenticator,
        mailbox: Mailbox,
        *,
        default_region: str = "",
        clock: Clock = now_ms,
    ) -> None:
        self.store = store
        self.authenticator = authenticator
        self.mailbox = mailbox
        # Numbers are read in the sending account's region, else in this one.
        self.default_region = default_region
        self.clock = clock

    async def send_single(
        self,
        username: str | None,
        password: str | None,
        *,
        recipient: str | None,
        text: str | None,
        sender: str | None = None,
        reply_to: str | None = None,
        caller: Caller = INTERNAL,
    ) -> tuple[int, str]:
        """Send one message (MC5 sendSingle2): its id and recipient. Without a recipient,
        it answers the message `reply_to` names (its sender)."""
        account = await self.authenticator.authenticate(username, password, caller)
        from_number = await self._sender(account, sender)
        if reply_to:
            answered_id = parse_count(reply_to)
            if answered_id is None:
                raise InvalidInput("replyTo must be the documentId of a message", "replyTo")
            answered = await self.store.get_message(account.id, answered_id)
            if answered is None:
                raise InvalidInput("replyTo names no message of this account", "replyTo")
            if not recipient:
                recipient = answered.counterpart
        number = normalize_msisdn(recipient, "recipient", region=self._region(account))
        body = self._text(text, "text")
        message_id = await self.mailbox.send_from(account.id, from_number, number, body)
        return message_id, number

    async def send_batch(
        self,
        username: str | None,
        password: str | None,
        *,
        recipients: Sequence[str],
        text: str,
        sender: str | None = None,
        send_at_local: dt.datetime | None = None,
        want_report: bool = True,
        caller: Caller = INTERNAL,
    ) -> int:
        """Send one text to each recipient (EAPI send_sms), now or at `send_at_local` (a
        time in the account's time zone): the batch id its status report is asked with."""
        account = await self.authenticator.authenticate(username, password, caller)
        send_at = None
        if send_at_local is not None:
            zone = zoneinfo.ZoneInfo(account.time_zone)
            send_at = int(send_at_local.replace(tzinfo=zone).timestamp() * 1000)
        from_number = await self._sender(account, sender)
        region = self._region(account)
        numbers = [normalize_msisdn(recipient, "msisdn", region=region) for recipient in recipients]
        if not numbers:
            raise MissingParameter("msisdn")
        if len(numbers) > MAX_BATCH:
            raise BatchTooLarge(f"at most {MAX_BATCH} recipients in one batch", "msisdn")
        body = self._text(text, "message")
        sent = [
            await self.mailbox.send_from(
                account.id, from_number, number, body,
                send_on=send_at, registered_delivery=want_report,
            )
            for number in numbers
        ]  # fmt: skip
        return await self.store.add_batch(account.id, sent)

    async def batch_report(
        self,
        username: str | None,
        password: str | None,
        batch_id: int,
        *,
        msisdn: str | None = None,
        caller: Caller = INTERNAL,
    ) -> tuple[Account, list[Batched]]:
        """The messages of one of the account's batches (none for a batch it does not have);
        with `msisdn`, only those sent to that number."""
        account = await self.authenticator.authenticate(username, password, caller)
        batch = await self.store.list_batch(account.id, batch_id)
        if not msisdn:
            return account, batch
        try:
            number = normalize_msisdn(msisdn, "msisdn", region=self._region(account))
        except InvalidInput:
            return account, []  # nothing was sent to what is no number
        return account, [message for message in batch if message.recipient == number]

    async def _sender(self, account: Account, given: str | None) -> str:
        found = await self.store.get_account_by_id(account.id)
        numbers = found[1] if found is not None else ()
        if not given:
            if not numbers:
                raise SenderWithoutNumber("the account has no number to send from")
            return numbers[0]
        sender = normalize_sender(given, "sender", region=self._region(account))
        if sender not in numbers:
            raise InvalidInput("sender must be one of the account's numbers", "sender")
        return sender

    def _region(self, account: Account) -> str:
        return account.region or self.default_region

    def _text(self, text: str | None, field: str) -> str:
        if not text:
            raise MissingParameter(field)
        if len(text) > self.mailbox.max_chars:
            raise InvalidInput(f"{field} is longer than {self.mailbox.max_chars} characters", field)
        return text.replace("\x00", "\ufffd")
