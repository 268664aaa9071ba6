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
from typing import Any

import httpx

from smsinbox.core.clock import Clock, now_ms
from smsinbox.core.values import parse_count
from smsinbox.errors import StoreUnavailable
from smsinbox.metrics import Metrics
from smsinbox.push import formats
from smsinbox.push.addresses import AddressPolicy, RefusedAddress
from smsinbox.store import Store
from smsinbox.store.push import NOTIFY_CHANNEL, DueDelivery

log = logging.getLogger("smsinbox.push")

BATCH = 100
# A claimed delivery is not handed to another worker for at least this long (and never
# before its attempt could have timed out twice over). The worker renews the leases of
# what it holds; a worker that dies stops renewing, and its deliveries are due again soon.
MIN_LEASE_MS = 20_000
# The share of the attempts in flight that one endpoint may take: a receiver that hangs
# ties up its own share until its attempts time out, never every slot.
ENDPOINT_SHARE = 4
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
        self.concurrency = concurrency
        self._slots = asyncio.Semaphore(concurrency)
        self.per_endpoint = max(1, concurrency // ENDPOINT_SHARE)
        self.lease_ms = self._lease_ms(rounds=1)
        # Attempts started by the loop, each on its own, and how many per endpoint.
        self._held: set[asyncio.Task[None]] = set()
        self._held_by_endpoint: dict[int, int] = {}
        # Each endpoint's turns: at most its share of the slots attempts at once.
        self._turns: dict[int, asyncio.Semaphore] = {}
        self._waiting: set[int] = set()  # held deliveries not yet sent
        self._leased: set[int] = set()  # held deliveries whose outcome is not recorded yet
        self._wake = asyncio.Event()
        self._client: httpx.AsyncClient | None = None
        store.outbox_listeners.append(self.wake)

    def _lease_ms(self, *, rounds: int) -> int:
        """A lease that outlasts `rounds` attempts one after another, timing out twice."""
        return max(MIN_LEASE_MS, int(2 * rounds * self.timeout_s * 1000))

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
        """Keep claiming due deliveries while there is room, each attempted on its own: a
        slow receiver holds up only its own deliveries, never the next claim."""
        failures = 0
        renewing = asyncio.create_task(self._renew_leases(stop))
        try:
            while not stop.is_set():
                self._wake.clear()
                starting = sum(min(h, self.per_endpoint) for h in self._held_by_endpoint.values())
                room = min(BATCH, self.concurrency - starting)
                if room <= 0:
                    await self._sleep(stop, 5.0, until_one_finishes=True)
                    continue
                try:
                    claimed = await self._claim(room)
                    failures = 0
                    if len(claimed) == room:
                        continue  # more may be due
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
        finally:
            await self._finish_held()
            renewing.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await renewing

    async def _renew_leases(self, stop: asyncio.Event) -> None:
        """Renew the leases of held deliveries, several times per lease, until stopped."""
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self.lease_ms / 4000)
            if not self._leased:
                continue
            try:
                await self.store.renew_leases(
                    list(self._leased), until=self.clock() + self.lease_ms
                )
            except StoreUnavailable:
                log.warning("push: leases not renewed: store unavailable")
            except Exception:
                log.exception("push: renewing leases failed")

    async def _claim(self, limit: int) -> list[DueDelivery]:
        """Claim up to `limit` due deliveries and start an attempt of each, at most an
        endpoint's share at once; returns what was claimed."""
        busy = [e for e, held in self._held_by_endpoint.items() if held >= self.per_endpoint]
        claimed = await self.store.claim_due_deliveries(
            now=self.clock(), lease_ms=self.lease_ms, limit=limit, skip_endpoints=busy
        )
        for delivery in claimed:
            endpoint = delivery.endpoint_id
            self._held_by_endpoint[endpoint] = self._held_by_endpoint.get(endpoint, 0) + 1
            turns = self._turns.setdefault(endpoint, asyncio.Semaphore(self.per_endpoint))
            self._leased.add(delivery.id)
            self._waiting.add(delivery.id)
            task = asyncio.create_task(self._attempt_logged(delivery, turns))
            self._held.add(task)
            task.add_done_callback(self._held.discard)
        return claimed

    async def _finish_held(self) -> None:
        """On stop: let attempts in flight end (their answers are recorded), hand back the
        ones still waiting for their turn (due again at once, for the next run)."""
        if not self._held:
            return
        waiting = set(self._waiting)
        self._waiting.clear()  # none starts now
        _, pending = await asyncio.wait(set(self._held), timeout=self.timeout_s + 1)
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)
        try:
            await self.store.release_deliveries(sorted(waiting), now=self.clock())
        except StoreUnavailable:
            log.warning("push: %d waiting deliveries not handed back", len(waiting))

    async def _sleep(
        self, stop: asyncio.Event, seconds: float, *, until_one_finishes: bool = False
    ) -> None:
        waiters: set[asyncio.Future[Any]] = {
            asyncio.ensure_future(stop.wait()),
            asyncio.ensure_future(self._wake.wait()),
        }
        if until_one_finishes and self._held:
            waiters.add(asyncio.ensure_future(asyncio.wait(set(self._held))))
        await asyncio.wait(waiters, timeout=seconds, return_when=asyncio.FIRST_COMPLETED)
        for waiter in waiters:
            waiter.cancel()

    async def deliver_due(self, limit: int = BATCH) -> int:
        """One round: claim what is due and attempt each; returns how many were attempted."""
        # Nothing renews these leases: they cover the whole round.
        rounds = -(-limit // self.concurrency)
        batch = await self.store.claim_due_deliveries(
            now=self.clock(), lease_ms=self._lease_ms(rounds=rounds), limit=limit
        )
        await asyncio.gather(*(self._attempt(delivery) for delivery in batch))
        return len(batch)

    async def _attempt_logged(self, delivery: DueDelivery, turns: asyncio.Semaphore) -> None:
        """An attempt run on its own, in its endpoint's turn: its failures are logged,
        never lost in a task."""
        ok = False
        try:
            async with turns:
                if delivery.id not in self._waiting:
                    return  # stopping: handed back unattempted
                self._waiting.discard(delivery.id)
                ok = await self._attempt(delivery)
        except StoreUnavailable:
            # The outcome is not recorded: the delivery is attempted again once its lease
            # ends (at least once, never lost).
            log.warning("push: outcome of delivery %d not recorded: store unavailable", delivery.id)
        except Exception:
            log.exception("push attempt of delivery %d failed", delivery.id)
        finally:
            self._leased.discard(delivery.id)
            self._waiting.discard(delivery.id)
            endpoint = delivery.endpoint_id
            held = self._held_by_endpoint.pop(endpoint, 1) - 1
            if held:
                self._held_by_endpoint[endpoint] = held
            else:
                self._turns.pop(endpoint, None)
            if not ok or held == self.per_endpoint - 1 or not held:
                # A retry is scheduled, or the endpoint has a free turn again: look now.
                # (A success under load needs no extra claim: commits wake the loop.)
                self.wake()

    async def _attempt(self, delivery: DueDelivery) -> bool:
        async with self._slots:
            return await self._send(delivery)

    async def _send(self, delivery: DueDelivery) -> bool:
        """One attempt, its outcome recorded; True if the receiver accepted it."""
        started = time.perf_counter()
        status: int | None = None
        error: str | None = None
        retry_after: float | None = None
        ok = False
        try:
            # One deadline for the whole attempt: httpx's timeout bounds each read, and a
            # receiver that trickles its answer a byte at a time would never hit it.
            async with asyncio.timeout(self.timeout_s):
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
        except TimeoutError:
            status = None
            error = f"no complete answer within {self.timeout_s:g} s"
        latency = time.perf_counter() - started
        self.metrics.push_latency.observe(latency)
        self._leased.discard(delivery.id)  # its outcome sets the next attempt time now
        await self._record(delivery, ok, status, error, retry_after, int(latency * 1000))
        return ok

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
    seconds = parse_count(value)
    if seconds is not None:
        return float(seconds)
    with contextlib.suppress(TypeError, ValueError):
        moment = email.utils.parsedate_to_datetime(value)
        return max(0.0, (moment - dt.datetime.now(dt.UTC)).total_seconds())
    return None
