"""The inbox queries the polling APIs share: authenticate, then page in commit order."""

from __future__ import annotations

import dataclasses

from smsinbox.core.auth import PasswordAuthenticator
from smsinbox.core.caller import INTERNAL, Caller
from smsinbox.core.clock import Clock, now_ms
from smsinbox.core.turns import ReadTurns
from smsinbox.errors import InvalidInput
from smsinbox.models import Account, Direction, PolledMessage
from smsinbox.store import Store

# The MC5 platform's page size, fixed by its documentation.
TIME_PAGE_SIZE = 100
INCOMING = (Direction.INCOMING,)
BOTH_WAYS = (Direction.INCOMING, Direction.OUTGOING)
LATEST_SECOND = 253402300799  # 9999-12-31 23:59:59


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
        async with self.turns.turn():
            page = await self.store.page_by_time(
                account.id,
                after_ms=(since + 1) * 1000,
                limit=TIME_PAGE_SIZE,
                directions=BOTH_WAYS if outgoing else INCOMING,
                clock=self.clock,
                mark_retrieved=True,
            )
        newest = page.messages[-1].received_at // 1000 if page.messages else since
        return SincePage(page.messages, newest, page.has_more)

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
