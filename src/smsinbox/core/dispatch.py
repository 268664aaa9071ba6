"""The dispatcher: sends scheduled messages when due and finishes interrupted deliveries."""

from __future__ import annotations

import asyncio
import contextlib
import logging

from smsinbox.core.clock import Clock, now_ms
from smsinbox.core.mailbox import Mailbox
from smsinbox.errors import StoreUnavailable
from smsinbox.store import Store

log = logging.getLogger("smsinbox.dispatch")

# A delivery still "sending" after this long was interrupted (a crash, an outage).
STALE_MS = 60_000
BATCH = 100


class Dispatcher:
    def __init__(
        self, store: Store, mailbox: Mailbox, *, interval_s: float = 1.0, clock: Clock = now_ms
    ) -> None:
        self.store = store
        self.mailbox = mailbox
        self.interval_s = interval_s
        self.clock = clock

    async def dispatch_due(self) -> int:
        """Send what is due now; returns how many messages were handed on."""
        now = self.clock()
        due = await self.store.list_due_outgoing(now=now, stale_before=now - STALE_MS, limit=BATCH)
        sent = 0
        for message in due:
            # Claiming first means two dispatchers (two processes) never both send it.
            if not await self.store.claim_outgoing(message, now=now):
                continue
            await self.mailbox.deliver(
                message.account_id, message.id, message.sender, message.recipient, message.text
            )
            sent += 1
        return sent

    async def run(self, stop: asyncio.Event) -> None:
        delay = self.interval_s
        while not stop.is_set():
            try:
                sent = await self.dispatch_due()
                delay = 0 if sent == BATCH else self.interval_s
            except StoreUnavailable:
                delay = min(max(delay, self.interval_s) * 2, 30.0)
                log.warning("dispatcher: store unavailable, next try in %.0f s", delay)
            except Exception:
                log.exception("dispatch pass failed")
                delay = self.interval_s
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), delay)
