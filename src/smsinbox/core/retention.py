"""Retention: the background pruner that keeps each account's history capped.

It works in small batches, each its own short transaction, so ingestion and polling never
wait long behind it. Locked messages are never pruned.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import functools
import logging
import random
from collections.abc import Awaitable, Callable

from smsinbox.core.clock import Clock, now_ms
from smsinbox.errors import StoreUnavailable
from smsinbox.store import Store

log = logging.getLogger("smsinbox.retention")

DAY_MS = 86_400_000
MAX_BACKOFF_S = 300.0

PrunedListener = Callable[[str, int], None]


@dataclasses.dataclass(frozen=True, slots=True)
class PruneReport:
    by_count: int
    by_age: int
    tombstones: int = 0


class Retention:
    def __init__(
        self,
        store: Store,
        *,
        max_messages: int,
        max_age_days: int,
        interval_s: float,
        tombstone_days: int = 30,
        batch: int = 500,
        clock: Clock = now_ms,
        on_pruned: PrunedListener | None = None,
    ) -> None:
        self.store = store
        self.max_messages = max_messages
        self.max_age_days = max_age_days
        self.tombstone_days = tombstone_days
        self.interval_s = interval_s
        self.batch = batch
        self.clock = clock
        self._on_pruned = on_pruned or (lambda reason, count: None)
        self._stop = asyncio.Event()

    async def plan(self) -> PruneReport:
        """What `prune_once` would delete now, counted without deleting anything."""
        by_count = by_age = 0
        before = self.clock() - self.max_age_days * DAY_MS if self.max_age_days > 0 else None
        if self.max_messages > 0 or before is not None:
            floor = self.max_messages if before is None else 0
            for account_id in await self.store.list_account_ids(min_messages_ever=floor):
                over_cap, expired = await self.store.count_prunable(
                    account_id, keep=self.max_messages, before_ms=before
                )
                by_count += over_cap
                by_age += expired
        tombstones = await self.store.count_expired_tombstones(
            deleted_before=self.clock() - self.tombstone_days * DAY_MS
        )
        return PruneReport(by_count, by_age, tombstones)

    async def prune_once(self, progress: Callable[[int], None] | None = None) -> PruneReport:
        """One pass over every account that may be over a limit; `progress` is told each
        batch's count as it is deleted."""
        told = progress or (lambda count: None)
        by_count = by_age = 0
        if self.max_messages > 0:
            for account_id in await self.store.list_account_ids(
                min_messages_ever=self.max_messages
            ):
                by_count += await self._drain(
                    "count",
                    functools.partial(
                        self.store.prune_beyond_count,
                        account_id,
                        keep=self.max_messages,
                        batch=self.batch,
                    ),
                    told,
                )
        if self.max_age_days > 0:
            before = self.clock() - self.max_age_days * DAY_MS
            for account_id in await self.store.list_account_ids():
                by_age += await self._drain(
                    "age",
                    functools.partial(
                        self.store.prune_older_than, account_id, before_ms=before, batch=self.batch
                    ),
                    told,
                )
        deleted_before = self.clock() - self.tombstone_days * DAY_MS
        tombstones = 0
        for account_id in await self.store.accounts_with_tombstones(deleted_before=deleted_before):
            tombstones += await self._drain(
                "tombstone",
                functools.partial(
                    self.store.purge_tombstones,
                    account_id,
                    deleted_before=deleted_before,
                    batch=self.batch,
                ),
                told,
            )
        return PruneReport(by_count, by_age, tombstones)

    async def _drain(
        self,
        reason: str,
        prune_batch: Callable[[], Awaitable[int]],
        progress: Callable[[int], None],
    ) -> int:
        total = 0
        while True:
            pruned = await prune_batch()
            if pruned:
                self._on_pruned(reason, pruned)
                progress(pruned)
            total += pruned
            # Let requests in between batches and between accounts: SQLite statements run
            # on the event loop, so a pass over many accounts must not hold it throughout.
            await asyncio.sleep(0)
            if pruned < self.batch or self._stop.is_set():
                return total

    async def run(self, stop: asyncio.Event) -> None:
        """Prune every interval until `stop` is set; back off while the store is down.

        A pass in progress ends after its current batch once `stop` is set.
        """
        self._stop = stop
        delay, failures = self.interval_s, 0
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), delay)
            if stop.is_set():
                return
            try:
                report = await self.prune_once()
            except StoreUnavailable:
                failures += 1
                ceiling = max(MAX_BACKOFF_S, self.interval_s)
                delay = min(self.interval_s * 2**failures, ceiling) * random.uniform(0.8, 1.0)
                log.warning("retention: store unavailable, next try in %.0f s", delay)
                continue
            except Exception:
                log.exception("retention pass failed")
                delay = self.interval_s
                continue
            delay, failures = self.interval_s, 0
            if report.by_count or report.by_age:
                log.info("retention pruned %d by count, %d by age", report.by_count, report.by_age)
