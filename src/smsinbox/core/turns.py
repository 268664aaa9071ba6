"""Bulk reads (polls, syncs, searches) take turns, so a crowd of pollers never starves ingest.

A poll's read and its rendering run in one step of the event loop (SQLite reads do not
suspend, and a PostgreSQL page is rendered in the step its rows arrive in), and every
request that became ready since the loop's last turn takes its step in the next one. With
dozens of pollers a turn of the loop lasts tens of milliseconds, and an ingest batch waits
three turns (its statements, its commit, the answers): measured, ingest beside 32 saturating
MC5 pollers fell to 0.07 of its rate alone. So at most `concurrency` bulk reads run at
once, and a turn is given back only on the loop's next turn: however many pollers wait, a
turn of the loop works on a few of them, and ingest's steps come round quickly.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager


class ReadTurns:
    def __init__(self, concurrency: int) -> None:
        self._slots = asyncio.Semaphore(concurrency)

    @asynccontextmanager
    async def turn(self) -> AsyncIterator[None]:
        """Hold one of the turns for the block and the step of the event loop it ends in
        (where the caller renders what it read)."""
        await self._slots.acquire()
        try:
            yield
        finally:
            asyncio.get_running_loop().call_soon(self._slots.release)
