"""Live mailboxes: tells the browsers of an account, in this process, that its messages
changed, so their pages fetch what is new without a reload.

An account's mailbox has a version: its newest modseq, which every change to its messages
raises (a new message, a read, a delete, a send's status). One task per process watches the
versions of the accounts whose browsers are connected here: it looks when the store says
incoming messages were committed (in this process directly, from another process by
PostgreSQL's NOTIFY) and, for every other kind of change and for SQLite processes beside this
one, every `poll_s` seconds. A browser that reconnects says which version it last saw and
is told at once if there is a newer one, so nothing changed while it was away goes unseen.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator

from smsinbox.errors import StoreUnavailable
from smsinbox.store import Store
from smsinbox.store.tables import MAILBOX_CHANNEL

log = logging.getLogger("smsinbox.live")


class _Watched:
    """One account's version as last read, and the event its watchers wait on."""

    __slots__ = ("changed", "version", "watchers")

    def __init__(self, version: int) -> None:
        self.version = version
        self.watchers = 0
        self.changed = asyncio.Event()


class LiveMailboxes:
    def __init__(self, store: Store, *, poll_s: float) -> None:
        self.store = store
        self.poll_s = poll_s
        self._watched: dict[int, _Watched] = {}
        self._wake = asyncio.Event()
        store.mailbox_listeners.append(self.wake)

    def wake(self) -> None:
        """Something was committed: look at the watched versions now."""
        self._wake.set()

    async def version(self, account_id: int) -> int:
        """The account's version now: a page rendered after reading it shows every change
        up to it, and its event stream starts from it."""
        return (await self.store.mailbox_versions([account_id])).get(account_id, 0)

    async def changes(self, account_id: int, seen: int | None) -> AsyncIterator[int]:
        """The account's versions as they change, for as long as the caller iterates; the
        current one first when it is newer than `seen` (None: nothing seen yet)."""
        watched = self._watched.get(account_id)
        if watched is None:
            versions = await self.store.mailbox_versions([account_id])
            watched = self._watched.setdefault(account_id, _Watched(versions.get(account_id, 0)))
        watched.watchers += 1
        try:
            last = watched.version if seen is None else seen
            while True:
                if watched.version > last:
                    last = watched.version
                    yield last
                await watched.changed.wait()
        finally:
            watched.watchers -= 1
            if watched.watchers == 0 and self._watched.get(account_id) is watched:
                del self._watched[account_id]

    async def run(self, stop: asyncio.Event) -> None:
        """Watch the versions until `stop` is set."""
        unlisten = None
        try:
            unlisten = await self.store.db.listen(MAILBOX_CHANNEL, self.wake)
        except StoreUnavailable as error:
            log.warning("live pages: cannot listen for notifications (%s); looking every "
                        "%.1f s only", error, self.poll_s)  # fmt: skip
        try:
            while not stop.is_set():
                stopped = asyncio.ensure_future(stop.wait())
                woken = asyncio.ensure_future(self._wake.wait())
                await asyncio.wait({stopped, woken}, timeout=self.poll_s,
                                   return_when=asyncio.FIRST_COMPLETED)  # fmt: skip
                for waiter in (stopped, woken):
                    waiter.cancel()
                self._wake.clear()
                if self._watched:
                    with contextlib.suppress(StoreUnavailable):  # the next look may succeed
                        await self._look()
        finally:
            if unlisten is not None:
                await unlisten()

    async def _look(self) -> None:
        versions = await self.store.mailbox_versions(list(self._watched))
        for account_id, version in versions.items():
            watched = self._watched.get(account_id)
            if watched is not None and version > watched.version:
                watched.version = version
                # Everyone waiting wakes; later waiters wait on a new event.
                watched.changed.set()
                watched.changed = asyncio.Event()
