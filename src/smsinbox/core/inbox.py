"""The inbox queries the polling APIs share: authenticate, then page in commit order."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import time

from smsinbox.core.auth import PasswordAuthenticator
from smsinbox.core.caller import INTERNAL, Caller
from smsinbox.core.clock import Clock, now_ms
from smsinbox.core.turns import ReadTurns
from smsinbox.errors import InvalidInput, StoreUnavailable
from smsinbox.models import Account, Direction, PolledMessage
from smsinbox.store import Store

# The MC5 platform's page size, fixed by its documentation.
TIME_PAGE_SIZE = 100
INCOMING = (Direction.INCOMING,)
BOTH_WAYS = (Direction.INCOMING, Direction.OUTGOING)
LATEST_SECOND = 253402300799  # 9999-12-31 23:59:59
# Accounts polled by time within this long have their watermarks raised ahead of each
# second (Inbox.keep_watermarks), at most RAISED_AT_ONCE of them a transaction.
KEEP_RAISED_S = 60.0
RAISED_AT_ONCE = 500
# How long before a second opens its watermarks are raised: more than a raise's commit.
RAISE_AHEAD_MS = 25

log = logging.getLogger("smsinbox.inbox")


@dataclasses.dataclass(frozen=True, slots=True)
class SincePage:
    """Messages after a `since` cursor, and the cursor to ask with next."""

    messages: list[PolledMessage]
    newest_timestamp: int  # epoch seconds: the next `since`
    has_more: bool


@dataclasses.dataclass(frozen=True, slots=True)
class IdPage:
    account: Account
    messages: list[PolledMessage]


class Inbox:
    def __init__(
        self,
        store: Store,
        authenticator: PasswordAuthenticator,
        *,
        id_page_size: int,
        turns: ReadTurns,
        clock: Clock = now_ms,
    ) -> None:
        self.store = store
        self.turns = turns
        self.authenticator = authenticator
        self.id_page_size = id_page_size
        self.clock = clock
        # account id -> when it was last polled by time (monotonic)
        self._polled_by_time: dict[int, float] = {}
        # account id -> the highest receive-time watermark seen committed for it, by a poll
        # or a raise ahead: a poll in a second it covers need not read it again.
        self._watermarks: dict[int, int] = {}

    async def messages_since(
        self,
        username: str | None,
        password: str | None,
        since: int,
        *,
        outgoing: bool,
        caller: Caller = INTERNAL,
    ) -> SincePage:
        """Up to a page of messages newer than `since` (epoch seconds, exclusive).

        Retrieved incoming messages change status from received to retrieved.
        """
        if not 0 <= since <= LATEST_SECOND:
            raise InvalidInput("since must be a non-negative epoch time in seconds", "since")
        account = await self.authenticator.authenticate(username, password, caller)
        self._polled_by_time[account.id] = time.monotonic()
        async with self.turns.turn():
            page = await self.store.page_by_time(
                account.id,
                after_ms=(since + 1) * 1000,
                limit=TIME_PAGE_SIZE,
                directions=BOTH_WAYS if outgoing else INCOMING,
                clock=self.clock,
                mark_retrieved=True,
                watermark_at_least=self._watermarks.get(account.id, 0),
            )
        self._saw_watermark(account.id, page.watermark)
        newest = page.messages[-1].received_at // 1000 if page.messages else since
        return SincePage(page.messages, newest, page.has_more)

    async def keep_watermarks(self, stop: asyncio.Event) -> None:
        """Raise the watermarks of the accounts polled by time lately to each second just
        before it opens.

        A poll by time reads without writing once its account's watermark is at the open
        second (store: page_by_time); the first poll of an account in a second would raise
        it in a write transaction of its own and wait for that commit, a few milliseconds
        that made those polls (one in a hundred under load) the slowest. Raised here for all
        of them in one transaction, committed by the time the second opens, their polls
        find it raised. The price: a message such an account receives in the last
        RAISE_AHEAD_MS of a second is given the next second's start as its receive time, as
        a writer that a poll overtakes is. A poll that finds its watermark behind still
        raises it itself, so cursors rely on nothing done here.
        """
        unavailable = False
        while not stop.is_set():
            until_raise = (1000 - (self.clock() + RAISE_AHEAD_MS) % 1000 + 1) / 1000
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), until_raise)
            if stop.is_set():
                return
            try:
                await self.raise_watermarks_ahead()
                unavailable = False
            except StoreUnavailable as error:
                if not unavailable:  # once an outage, not every second of it
                    log.warning("watermarks not raised ahead of polls: %s", error)
                unavailable = True
            except Exception:
                log.exception("raising watermarks failed")

    async def raise_watermarks_ahead(self) -> None:
        """One round of keep_watermarks: the recent pollers' watermarks to the second that
        opens within RAISE_AHEAD_MS (or the one open now)."""
        next_second_starts = (self.clock() + RAISE_AHEAD_MS) // 1000 * 1000
        accounts = self._recently_polled()
        for start in range(0, len(accounts), RAISED_AT_ONCE):
            chunk = accounts[start : start + RAISED_AT_ONCE]
            await self.store.raise_watermarks(chunk, to_ms=next_second_starts)
            for account_id in chunk:
                self._saw_watermark(account_id, next_second_starts)

    def _saw_watermark(self, account_id: int, watermark: int) -> None:
        if watermark > self._watermarks.get(account_id, 0):
            self._watermarks[account_id] = watermark

    def _recently_polled(self) -> list[int]:
        """Accounts polled by time within KEEP_RAISED_S; the others are forgotten."""
        since = time.monotonic() - KEEP_RAISED_S
        polled = self._polled_by_time
        for account_id in [a for a, at in polled.items() if at < since]:
            del polled[account_id]
            self._watermarks.pop(account_id, None)
        return list(polled)

    async def messages_after_id(
        self,
        username: str | None,
        password: str | None,
        last_id: int,
        *,
        caller: Caller = INTERNAL,
    ) -> IdPage:
        """Incoming messages with an id above `last_id`, ascending, one page."""
        if last_id < 0:
            raise InvalidInput("last_retrieved_id must not be negative", "last_retrieved_id")
        account = await self.authenticator.authenticate(username, password, caller)
        async with self.turns.turn():
            messages = await self.store.page_by_id(
                account.id, after_id=last_id, limit=self.id_page_size, directions=INCOMING
            )
        return IdPage(account, messages)
