"""Bulk reads (polls, syncs, searches) take turns, so a crowd of pollers never starves ingest.

A poll's read and its rendering run in one step of the event loop (SQLite reads do not
suspend, and a PostgreSQL page is rendered in the step its rows arrive in), and every
request that became ready since the loop's last turn takes its step in the next one. With
dozens of pollers a turn of the loop lasts tens of milliseconds, and an ingest batch waits
three turns (its statements, its commit, the answers): measured, ingest beside 32 saturating
MC5 pollers fell to 0.07 of its rate alone. So at most `concurrency` bulk reads run at
once, and a turn is given back only on the loop's next turn: however many pollers wait, a
turn of the loop works on a few of them, and ingest's steps come round quickly.

While incoming messages wait for their batch (`writes_waiting`), reads get half the turns:
with four, ingest beside saturating MC5 pollers kept 0.47-0.48 of its rate alone on SQLite,
with two 0.60-0.61; but two turns at all times cost EAPI polls alone on PostgreSQL a sixth
of their rate (396 -> 325/s), where a read's rows arrive while another's are rendered.
"""

from __future__ import annotations

import asyncio
import collections
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager


class ReadTurns:
    def __init__(
        self, concurrency: int, *, writes_waiting: Callable[[], bool] = lambda: False
    ) -> None:
        self.concurrency = concurrency
        self.yielding = max(1, concurrency // 2)
        # Whether incoming messages wait to be stored (the store's ingest queue says).
        self.writes_waiting = writes_waiting
        self._held = 0
        # Woken waiters whose tasks have not run yet: their turns are kept for them.
        self._woken = 0
        self._waiters: collections.deque[asyncio.Future[None]] = collections.deque()

    def _room(self) -> int:
        limit = self.yielding if self.writes_waiting() else self.concurrency
        return limit - self._held - self._woken

    @asynccontextmanager
    async def turn(self) -> AsyncIterator[None]:
        """Hold one of the turns for the block and the step of the event loop it ends in
        (where the caller renders what it read)."""
        if self._waiters or self._room() <= 0:
            await self._wait()
        self._held += 1
        try:
            yield
        finally:
            asyncio.get_running_loop().call_soon(self._release)

    async def _wait(self) -> None:
        """Wait in line until a turn is free; one woken whose turn went away meanwhile (the
        turns were halved) waits again at the front."""
        loop = asyncio.get_running_loop()
        front = False
        while True:
            waiting = loop.create_future()
            if front:
                self._waiters.appendleft(waiting)
            else:
                self._waiters.append(waiting)
            try:
                await waiting
            except BaseException:
                if waiting in self._waiters:
                    self._waiters.remove(waiting)
                elif waiting.done() and not waiting.cancelled():
                    self._woken -= 1  # woken, then cancelled: the turn goes to the next
                    self._wake()
                raise
            self._woken -= 1
            if self._room() > 0:
                return
            front = True

    def _release(self) -> None:
        self._held -= 1
        self._wake()

    def _wake(self) -> None:
        # As many as there is room for, in line. A waiter whose task was cancelled has its
        # future cancelled before it leaves the line: skipped.
        while self._waiters and self._room() > 0:
            waiting = self._waiters.popleft()
            if not waiting.done():
                waiting.set_result(None)
                self._woken += 1
