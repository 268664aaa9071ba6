"""The push worker: claims due deliveries, sends them, records every attempt.

At least once: a delivery leaves the outbox only when its receiver has accepted it, or when
its retries are exhausted (dead-lettered, visible and replayable) or its endpoint disabled.

Each endpoint has a lane: its claimed deliveries wait there in order and are sent with at
most `endpoint_concurrency` attempts in flight, so a slow or hanging receiver ties up its
own lane and never another's. Claims take many due deliveries in one transaction, skipping
endpoints whose lanes are full; outcomes are recorded in batches by one recorder, in one
transaction each, as they come in.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import dataclasses
import datetime as dt
import email.utils
import logging
import random
import time
from collections.abc import AsyncIterator
from typing import Any

from smsinbox.core.clock import Clock, now_ms
from smsinbox.core.values import parse_count
from smsinbox.errors import StoreUnavailable
from smsinbox.metrics import Metrics
from smsinbox.models import DeliveryState
from smsinbox.push import formats
from smsinbox.push.addresses import AddressPolicy, RefusedAddress
from smsinbox.push.http11 import AnswerError, PushClient
from smsinbox.store import Store
from smsinbox.store.push import NOTIFY_CHANNEL, AttemptOutcome, DueDelivery

log = logging.getLogger("smsinbox.push")

# Most deliveries one claim takes.
BATCH = 200
# Most outcomes one recording transaction writes.
MAX_RECORDED = 500
# A claimed delivery is not handed to another worker for at least this long (and never
# before its attempt could have timed out twice over). The worker renews the leases of
# what it holds; a worker that dies stops renewing, and its deliveries are due again soon.
MIN_LEASE_MS = 20_000
# The most of a receiver's answer that is read: only its status and whether it is empty
# matter, and a hostile receiver must not fill the worker's memory.
MAX_ANSWER_BYTES = 64 * 1024
MAX_RETRY_AFTER_S = 24 * 3600
# The most of the worker's attempts (and claims) one endpoint may have: a quarter.
ENDPOINT_SHARE = 4
# Deliveries claimed ahead of the attempts in flight, as a multiple of them.
PREFETCH = 2
# While the worker holds deliveries, how long it waits at most for a wake-up before it
# claims again (see _claim_while_running).
HELD_RECHECK_S = 1.0


@dataclasses.dataclass(slots=True)
class _Lane:
    """One endpoint's claimed deliveries: those waiting their turn, and how many are sent."""

    waiting: collections.deque[DueDelivery] = dataclasses.field(default_factory=collections.deque)
    sending: int = 0


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
        endpoint_concurrency: int,
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
        # Never more than a quarter of the worker's attempts: receivers that hang take up
        # their own lanes, and the worker still has room for the rest.
        self.endpoint_concurrency = max(1, min(endpoint_concurrency, concurrency // ENDPOINT_SHARE))
        # Lanes hold the next turns' deliveries as well, so they keep sending while the
        # claim that refills them is still on its way back from the database.
        self._lane_holds = PREFETCH * self.endpoint_concurrency
        self.lease_ms = max(MIN_LEASE_MS, int(2 * timeout_s * 1000))
        # Every delivery this worker holds, from its claim until its outcome is recorded
        # (their leases are renewed), and the lanes they wait and are sent in.
        self._held: dict[int, DueDelivery] = {}
        self._lanes: dict[int, _Lane] = {}
        self._sending: set[asyncio.Task[None]] = set()
        self._outcomes: list[tuple[DueDelivery, AttemptOutcome, str]] = []
        self._outcome_ready = asyncio.Event()
        self._wake = asyncio.Event()
        self._client: PushClient | None = None
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
        finishing = asyncio.Event()
        async with self._http_client():
            recording = asyncio.create_task(self._record_outcomes(finishing), name="push outcomes")
            renewing = asyncio.create_task(self._renew_leases(stop), name="push leases")
            try:
                await self._claim_while_running(stop)
            finally:
                await self._finish_held()
                finishing.set()
                self._outcome_ready.set()
                await recording
                renewing.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await renewing
                if unlisten is not None:
                    with contextlib.suppress(Exception):
                        await unlisten()

    @contextlib.asynccontextmanager
    async def _http_client(self) -> AsyncIterator[None]:
        # One client per run, its keep-alive connections reused per receiver: as many to
        # each as its lane sends at once (push/http11.py). Several customers' endpoints may
        # share a host; their lanes, not the host, limit what is sent to each. The client
        # checks the addresses of every connection it opens against the policy.
        client = PushClient(self.addresses)
        self._client = client
        try:
            yield
        finally:
            self._client = None
            await client.close()

    def _full_lanes(self) -> list[int]:
        return [
            endpoint
            for endpoint, lane in self._lanes.items()
            if lane.sending + len(lane.waiting) >= self._lane_holds
        ]

    async def _claim_while_running(self, stop: asyncio.Event) -> None:
        """Claim due deliveries while there is room, into their endpoints' lanes."""
        failures = 0
        while not stop.is_set():
            self._wake.clear()
            # A lane counts up to what it may hold: the deliveries one claim gave it beyond
            # that wait their turn there and take no room from other endpoints.
            taken = sum(
                min(lane.sending + len(lane.waiting), self._lane_holds)
                for lane in self._lanes.values()
            )
            room = min(BATCH, PREFETCH * self.concurrency - taken)
            if room <= 0:
                await self._sleep(stop, 5.0)  # an attempt ending or an outcome recorded wakes it
                continue
            try:
                now = self.clock()
                claimed = await self.store.claim_due_deliveries(
                    now=now,
                    lease_ms=self.lease_ms,
                    limit=room,
                    per_endpoint=self.endpoint_concurrency,
                    skip_endpoints=self._full_lanes(),
                )
                failures = 0
                per_endpoint = collections.Counter(delivery.endpoint_id for delivery in claimed)
                for delivery in claimed:
                    self._held[delivery.id] = delivery
                    lane = self._lanes.setdefault(delivery.endpoint_id, _Lane())
                    lane.waiting.append(delivery)
                    self._send_from(delivery.endpoint_id)
                if len(claimed) == room or self.endpoint_concurrency in per_endpoint.values():
                    continue  # more may be due: of every endpoint, or of one that got its share
                if self._held:
                    # What is still due belongs to full lanes (or to another worker's claim):
                    # an attempt ending wakes this loop, and so does each recorded outcome.
                    # Retries of other endpoints falling due meanwhile wait at most a second.
                    # Asking the store instead would find the full lanes' backlog due and
                    # send this loop round again at once, a claim and a read each time.
                    await self._sleep(stop, HELD_RECHECK_S)
                    continue
                next_due = await self.store.next_due_at(after=now)
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

    def _send_from(self, endpoint: int) -> None:
        """Start the lane's waiting deliveries while it has turns free."""
        lane = self._lanes[endpoint]
        while lane.waiting and lane.sending < self.endpoint_concurrency:
            delivery = lane.waiting.popleft()
            lane.sending += 1
            task = asyncio.create_task(self._attempt(delivery), name=f"push {delivery.id}")
            self._sending.add(task)
            task.add_done_callback(self._sending.discard)

    async def _attempt(self, delivery: DueDelivery) -> None:
        """One attempt, its outcome handed to the recorder; its failures are logged."""
        try:
            outcome, verdict = await self._send(delivery)
        except Exception:
            # Not recorded: the delivery is attempted again once its lease ends.
            log.exception("push attempt of delivery %d failed", delivery.id)
            self._held.pop(delivery.id, None)
        else:
            self._outcomes.append((delivery, outcome, verdict))
            self._outcome_ready.set()
        finally:
            lane = self._lanes[delivery.endpoint_id]
            lane.sending -= 1
            if lane.waiting:
                self._send_from(delivery.endpoint_id)
            elif not lane.sending:
                del self._lanes[delivery.endpoint_id]
            self.wake()  # a turn is free: claim again

    async def _send(self, delivery: DueDelivery) -> tuple[AttemptOutcome, str]:
        """One attempt: what it came to, and the outcome's name for metrics."""
        started = time.perf_counter()
        status: int | None = None
        error: str | None = None
        retry_after: float | None = None
        ok = False
        try:
            # One deadline for the whole attempt: a timeout per read would never end an
            # attempt to a receiver that trickles its answer a byte at a time.
            async with asyncio.timeout(self.timeout_s):
                request = formats.build(delivery, now=dt.datetime.now(dt.UTC))
                assert self._client is not None
                answer = await self._client.request(
                    request.method,
                    request.url,
                    params=request.params,
                    headers=request.headers,
                    body=request.content,
                    keep=MAX_ANSWER_BYTES,
                )
                status = answer.status
                retry_after = _retry_after(answer.retry_after)
            ok = formats.succeeded(delivery, status, answer.body)
            if not ok:
                error = f"HTTP {status}" + (" with an empty body" if status == 200 else "")
            if status not in (429, 503):
                retry_after = None
        except RefusedAddress as refused:
            # Raised by the client as it opens a connection: the addresses it looked up are
            # checked there, so that it connects to no other (push/addresses.py).
            error = str(refused)
        except TimeoutError:  # before OSError, of which it is a kind
            status = None
            error = f"no complete answer within {self.timeout_s:g} s"
        except (OSError, AnswerError, ValueError) as failure:
            # OSError: no connection (refused, unreachable, TLS); ValueError: a URL that
            # cannot be sent to (checked when added, but stored rows outlive the checks of
            # older versions).
            error = f"{type(failure).__name__}: {failure}"[:255]
        latency = time.perf_counter() - started
        self.metrics.push_latency.observe(latency)
        return self._outcome(delivery, ok, status, error, retry_after, int(latency * 1000))

    def _outcome(
        self,
        delivery: DueDelivery,
        ok: bool,
        status: int | None,
        error: str | None,
        retry_after: float | None,
        latency_ms: int,
    ) -> tuple[AttemptOutcome, str]:
        now = self.clock()
        disable = "receiver answered 410 Gone" if status == 410 else None
        if ok:
            state, next_at, verdict = DeliveryState.DELIVERED, now, "delivered"
        elif disable is not None:
            state, next_at, verdict = DeliveryState.DEAD, now, "disabled"
        elif delivery.attempts + 1 >= len(self.schedule_s):
            state, next_at, verdict = DeliveryState.DEAD, now, "dead"
        else:
            delay = self.schedule_s[delivery.attempts + 1]
            delay *= random.uniform(1 - self.jitter, 1 + self.jitter)
            if retry_after is not None:
                # Never sooner than the receiver asked for.
                delay = max(delay, min(retry_after, MAX_RETRY_AFTER_S))
            state, next_at, verdict = DeliveryState.PENDING, now + int(delay * 1000), "retry"
        outcome = AttemptOutcome(
            delivery_id=delivery.id,
            endpoint_id=delivery.endpoint_id,
            state=state,
            next_attempt_at=next_at,
            http_status=status,
            latency_ms=latency_ms,
            error=error,
            disable_reason=disable,
        )
        return outcome, verdict

    async def _record_outcomes(self, finishing: asyncio.Event) -> None:
        """Record outcomes as they come in, all that wait in one transaction, until
        `finishing` is set and the last of them is recorded."""
        while not (finishing.is_set() and not self._outcomes):
            await self._outcome_ready.wait()
            self._outcome_ready.clear()
            while self._outcomes:
                batch = self._outcomes[:MAX_RECORDED]
                del self._outcomes[:MAX_RECORDED]
                await self._record(batch)

    async def _record(self, batch: list[tuple[DueDelivery, AttemptOutcome, str]]) -> None:
        try:
            disabled = await self.store.record_attempts(
                [outcome for _, outcome, _ in batch],
                disable_after_ms=self.disable_after_ms,
                now=self.clock(),
            )
        except StoreUnavailable:
            # Not recorded: each is attempted again once its lease ends (at least once,
            # never lost).
            log.warning("push: %d outcomes not recorded: store unavailable", len(batch))
            disabled = None
        except Exception:
            log.exception("push: recording %d outcomes failed", len(batch))
            disabled = None
        for delivery, _, verdict in batch:
            self._held.pop(delivery.id, None)
            if disabled is not None:
                self.metrics.push_deliveries.labels(verdict).inc()
        for endpoint, reason in (disabled or {}).items():
            log.warning("push endpoint %s disabled: %s", endpoint, reason)
        self.wake()  # room to claim again, and retries may be due

    async def _renew_leases(self, stop: asyncio.Event) -> None:
        """Renew the leases of held deliveries, several times per lease, until stopped."""
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), self.lease_ms / 4000)
            if not self._held:
                continue
            try:
                await self.store.renew_leases(list(self._held), until=self.clock() + self.lease_ms)
            except StoreUnavailable:
                log.warning("push: leases not renewed: store unavailable")
            except Exception:
                log.exception("push: renewing leases failed")

    async def _finish_held(self) -> None:
        """On stop: let attempts in flight end (their outcomes are recorded), hand back the
        ones still waiting for their turn (due again at once, for the next run)."""
        waiting = [d.id for lane in self._lanes.values() for d in lane.waiting]
        for lane in self._lanes.values():
            lane.waiting.clear()  # none starts now
        for delivery_id in waiting:
            self._held.pop(delivery_id, None)
        if self._sending:
            _, pending = await asyncio.wait(set(self._sending), timeout=self.timeout_s + 1)
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
        try:
            await self.store.release_deliveries(sorted(waiting), now=self.clock())
        except StoreUnavailable:
            log.warning("push: %d waiting deliveries not handed back", len(waiting))

    async def _sleep(self, stop: asyncio.Event, seconds: float) -> None:
        waiters: set[asyncio.Future[Any]] = {
            asyncio.ensure_future(stop.wait()),
            asyncio.ensure_future(self._wake.wait()),
        }
        await asyncio.wait(waiters, timeout=seconds, return_when=asyncio.FIRST_COMPLETED)
        for waiter in waiters:
            waiter.cancel()


def _retry_after(value: str | None) -> float | None:
    """Seconds a receiver asks to wait: a count of seconds or an HTTP date; else None."""
    if not value:
        return None
    seconds = parse_count(value)
    if seconds is not None:
        return float(seconds)
    with contextlib.suppress(TypeError, ValueError):
        moment = email.utils.parsedate_to_datetime(value)
        return max(0.0, (moment - dt.datetime.now(dt.UTC)).total_seconds())
    return None
