"""The push worker: claims due deliveries, sends them, records every attempt.

At least once: a delivery leaves the outbox only when its receiver has accepted it, or when
its retries are exhausted (dead-lettered, visible and replayable) or its endpoint disabled.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import email.utils
import logging
import random
import time
from collections.abc import AsyncIterator

import httpx

from smsinbox.core.clock import Clock, now_ms
from smsinbox.errors import StoreUnavailable
from smsinbox.metrics import Metrics
from smsinbox.push import formats
from smsinbox.push.addresses import AddressPolicy, RefusedAddress
from smsinbox.store import Store
from smsinbox.store.push import NOTIFY_CHANNEL, DueDelivery

log = logging.getLogger("smsinbox.push")

BATCH = 100
# A claimed delivery is not handed to another worker for at least this long, and never
# before its whole batch could have timed out twice over.
MIN_LEASE_MS = 120_000
# The most of a receiver's answer that is read: only its status and whether it is empty
# matter, and a hostile receiver must not fill the worker's memory.
MAX_ANSWER_BYTES = 64 * 1024
MAX_RETRY_AFTER_S = 24 * 3600


class PushWorker:
    def __init__(
        self,
        store: Store,
        metrics: Metrics,
        *,
        schedule_s: tuple[float, ...],
        jitter: float,
        timeout_s: float,
        concurrency: int,
        disable_after_s: float,
        addresses: AddressPolicy,
        clock: Clock = now_ms,
    ) -> None:
        self.store = store
        self.metrics = metrics
        self.schedule_s = schedule_s
        self.jitter = jitter
        self.timeout_s = timeout_s
        self.disable_after_ms = int(disable_after_s * 1000)
        self.addresses = addresses
        self.clock = clock
        self._slots = asyncio.Semaphore(concurrency)
        rounds = -(-BATCH // concurrency)
        self.lease_ms = max(MIN_LEASE_MS, int(2 * rounds * timeout_s * 1000))
        self._wake = asyncio.Event()
        self._client: httpx.AsyncClient | None = None
        store.outbox_listeners.append(self.wake)

    def wake(self) -> None:
        """Something may be due now (called after commits, and on PostgreSQL NOTIFY)."""
        self._wake.set()

    async def run(self, stop: asyncio.Event) -> None:
        """Deliver until `stop` is set; other processes' commits wake it through NOTIFY."""
        unlisten = None
        try:
            unlisten = await self.store.db.listen(NOTIFY_CHANNEL, self.wake)
        except Exception as error:
            # Still correct without it: the worker polls at least every few seconds.
            log.warning("push: cannot listen for notifications (%s); polling only", error)
        async with self._http_client():
            try:
                await self._loop(stop)
            finally:
                if unlisten is not None:
                    with contextlib.suppress(Exception):
                        await unlisten()

    async def run_until_idle(self, batch: int = 5) -> int:
        """Deliver in small rounds until nothing is due; returns how many were attempted."""
        total = 0
        async with self._http_client():
            while sent := await self.deliver_due(batch):
                total += sent
        return total

    @contextlib.asynccontextmanager
    async def _http_client(self) -> AsyncIterator[None]:
        # One pooled client per run: keep-alive connections to each receiver are reused.
        limits = httpx.Limits(max_connections=100, max_keepalive_connections=50)
        async with httpx.AsyncClient(timeout=self.timeout_s, limits=limits) as client:
            self._client = client
            try:
                yield
            finally:
                self._client = None

    async def _loop(self, stop: asyncio.Event) -> None:
        failures = 0
        while not stop.is_set():
            self._wake.clear()
            try:
                sent = await self.deliver_due()
                failures = 0
                if sent:
                    continue
                next_due = await self.store.next_due_at()
            except StoreUnavailable:
                failures += 1
                await self._sleep(stop, min(2.0**failures, 30.0))
                continue
            except Exception:
                log.exception("push pass failed")
                await self._sleep(stop, 1.0)
                continue
            wait = 5.0 if next_due is None else max(0.0, (next_due - self.clock()) / 1000)
            await self._sleep(stop, min(wait, 5.0))

    async def _sleep(self, stop: asyncio.Event, seconds: float) -> None:
        stopping = asyncio.ensure_future(stop.wait())
        waking = asyncio.ensure_future(self._wake.wait())
        await asyncio.wait({stopping, waking}, timeout=seconds, return_when=asyncio.FIRST_COMPLETED)
        stopping.cancel()
        waking.cancel()

    async def deliver_due(self, limit: int = BATCH) -> int:
        """One round: claim what is due and attempt each; returns how many were attempted."""
        batch = await self.store.claim_due_deliveries(
            now=self.clock(), lease_ms=self.lease_ms, limit=limit
        )
        await asyncio.gather(*(self._attempt(delivery) for delivery in batch))
        return len(batch)

    async def _attempt(self, delivery: DueDelivery) -> None:
        async with self._slots:
            started = time.perf_counter()
            status: int | None = None
            error: str | None = None
            retry_after: float | None = None
            ok = False
            try:
                request = formats.build(delivery, now=dt.datetime.now(dt.UTC))
                await self.addresses.check(request.url)
                assert self._client is not None
                async with self._client.stream(
                    request.method,
                    request.url,
                    params=request.params or None,
                    headers=request.headers,
                    content=request.content,
                ) as response:
                    status = response.status_code
                    answer = b""
                    async for chunk in response.aiter_bytes():
                        answer += chunk
                        if len(answer) >= MAX_ANSWER_BYTES:
                            break
                ok = formats.succeeded(delivery, status, answer)
                if not ok:
                    error = f"HTTP {status}" + (" with an empty body" if status == 200 else "")
                retry_after = _retry_after(response) if status in (429, 503) else None
            except RefusedAddress as refused:
                error = str(refused)
            except httpx.HTTPError as failure:
                error = f"{type(failure).__name__}: {failure}"[:255]
            latency = time.perf_counter() - started
            self.metrics.push_latency.observe(latency)
            await self._record(delivery, ok, status, error, retry_after, int(latency * 1000))

    async def _record(
        self,
        delivery: DueDelivery,
        ok: bool,
        status: int | None,
        error: str | None,
        retry_after: float | None,
        latency_ms: int,
    ) -> None:
        now = self.clock()
        disable = "receiver answered 410 Gone" if status == 410 else None
        if ok:
            state, next_at, outcome = "delivered", now, "delivered"
        elif disable is not None:
            state, next_at, outcome = "dead", now, "disabled"
        elif delivery.attempts + 1 >= len(self.schedule_s):
            state, next_at, outcome = "dead", now, "dead"
        else:
            delay = self.schedule_s[delivery.attempts + 1]
            delay *= random.uniform(1 - self.jitter, 1 + self.jitter)
            if retry_after is not None:
                # Never sooner than the receiver asked for.
                delay = max(delay, min(retry_after, MAX_RETRY_AFTER_S))
            state, next_at, outcome = "pending", now + int(delay * 1000), "retry"
        disabled = await self.store.record_attempt(
            delivery,
            state=state,
            next_attempt_at=next_at,
            http_status=status,
            latency_ms=latency_ms,
            error=error,
            disable_reason=disable,
            disable_after_ms=self.disable_after_ms,
            now=now,
        )
        self.metrics.push_deliveries.labels(outcome).inc()
        if disabled:
            log.warning("push endpoint %s disabled: %s", delivery.endpoint_id, disable or error)


def _retry_after(response: httpx.Response) -> float | None:
    value = response.headers.get("retry-after")
    if not value:
        return None
    if value.strip().isdigit():
        return float(value.strip())
    with contextlib.suppress(TypeError, ValueError):
        moment = email.utils.parsedate_to_datetime(value)
        return max(0.0, (moment - dt.datetime.now(dt.UTC)).total_seconds())
    return None
