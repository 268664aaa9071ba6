"""Sending over SMPP: queued outgoing messages submitted to the bind their recipient routes
to, each cut into parts, at the pace the bind allows, and what each attempt came to
recorded.

Messages are claimed from the queue while the binds have room in their windows, and each
is submitted part by part; the outcomes are recorded in one transaction per handful (those
finished while the last was written), so the store is never the pace.

- ESME_ROK: the part is accepted; the SMSC's id for it is kept (its receipts name it). A
  message whose every part is accepted is sent.
- ESME_RTHROTTLED, ESME_RMSGQFUL and the other statuses that mean "not now": the bind holds
  off a moment, and the message is tried again later (from the part that was refused).
- No answer, or the bind lost: tried again later, perhaps over another bind; the SMSC may
  have taken a part whose answer was lost, so that part may reach the handset twice (SMPP
  has no way to ask).
- Any other status: the SMSC refuses the message for good; it is rejected.
- A message no bind could take before `expires_at` has failed.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Callable
from typing import Any

from smsinbox.core.clock import now_ms
from smsinbox.errors import StoreUnavailable
from smsinbox.metrics import Metrics
from smsinbox.models import MessageStatus, Outbound, SentPart, SmppBind, Submission
from smsinbox.smpp import messages
from smsinbox.smpp.bind import Bind, NotBound, State
from smsinbox.smpp.coding import Alphabet
from smsinbox.smpp.pdu import Command, Pdu, Status
from smsinbox.smpp.session import ResponseTimeout, SessionClosed
from smsinbox.store import Store

log = logging.getLogger("smsinbox.smpp")

# Statuses that refuse a submit_sm for now, not for good.
TEMPORARY = frozenset(
    {Status.ESME_RTHROTTLED, Status.ESME_RMSGQFUL, Status.ESME_RX_T_APPN, Status.ESME_RSYSERR}
)
# How long a claimed message is held: longer than its parts' answers and the bind's pace can
# take; a sender that stops meanwhile leaves it due again after this.
LEASE_MS = 120_000
# Messages a bind may have in hand at once, whatever its window.
MIN_IN_HAND = 100
# With a throughput limit on every bind, claim no more than they send in this long.
PACED_CLAIM_S = 10
# How long a stopping sender waits for the answers to what it has submitted.
STOP_GRACE_S = 5.0
# A message tried again waits this long the first time, doubling up to the longest.
RETRY_FIRST_MS = 1_000
RETRY_MAX_MS = 60_000
# A throttled bind sends nothing for this long.
THROTTLE_HOLD_S = 1.0
# How often the queue is looked at when nothing wakes the sender.
POLL_S = 1.0

Running = Callable[[], list[tuple[SmppBind, Bind]]]


class Pace:
    """At most `rate` submit_sm a second (0: no limit), and none while held off."""

    def __init__(self, rate: int) -> None:
        self.rate = rate
        self._next_at = 0.0
        self._held_until = 0.0

    async def turn(self) -> None:
        loop = asyncio.get_running_loop()
        now = loop.time()
        at = max(now, self._next_at, self._held_until)
        if self.rate:
            self._next_at = at + 1 / self.rate
        if at > now:
            await asyncio.sleep(at - now)

    def hold(self, seconds: float) -> None:
        self._held_until = max(self._held_until, asyncio.get_running_loop().time() + seconds)


def route(recipient: str, binds: list[SmppBind]) -> SmppBind | None:
    """The bind whose longest prefix matches the recipient, else one routing `*` (the
    first of equals: the caller lists bound binds first)."""
    best: SmppBind | None = None
    best_length = -1
    for bind in binds:
        for prefix in bind.routes.split():
            length = 0 if prefix == "*" else len(prefix)
            if (prefix == "*" or recipient.startswith(prefix)) and length > best_length:
                best, best_length = bind, length
    return best


def retry_delay_ms(attempts: int) -> int:
    """How long to wait before the next try, after `attempts` tries: doubling, capped,
    less a random share so a queue that waited together does not return together."""
    ceiling = min(RETRY_MAX_MS, RETRY_FIRST_MS * 2 ** min(attempts, 16))
    return int(ceiling * (1 - 0.25 * random.random()))


def submit_sm(
    bind: SmppBind, message: Outbound, short_message: bytes, parts: messages.Outgoing
) -> Pdu:
    sender_ton, sender_npi = _address_kind(message.sender)
    recipient_ton, recipient_npi = _address_kind(message.recipient)
    return Pdu(
        Command.SUBMIT_SM,
        0,
        params={
            "service_type": "",
            "source_addr_ton": sender_ton,
            "source_addr_npi": sender_npi,
            "source_addr": message.sender,
            "dest_addr_ton": recipient_ton,
            "dest_addr_npi": recipient_npi,
            "destination_addr": message.recipient,
            "esm_class": parts.esm_class,
            "protocol_id": 0,
            "priority_flag": 0,
            "schedule_delivery_time": "",
            "validity_period": "",
            "registered_delivery": 1 if message.registered_delivery else 0,
            "replace_if_present_flag": 0,
            "data_coding": parts.data_coding,
            "sm_default_msg_id": 0,
            "short_message": short_message,
        },
    )


def _address_kind(address: str) -> tuple[int, int]:
    """type_of_number and numbering_plan_indicator: international E.164 for a number,
    network-specific for a short code (8 digits at most), alphanumeric for a name."""
    if address.isascii() and address.isdigit():
        return (1, 1) if len(address) > 8 else (3, 1)
    return 5, 0


class SmppSender:
    """Submits the queued messages over the running binds until stopped."""

    def __init__(
        self,
        store: Store,
        running: Running,
        metrics: Metrics,
        *,
        clock: Callable[[], int] = now_ms,
    ) -> None:
        self.store = store
        self.running = running
        self.metrics = metrics
        self.clock = clock
        self._wake = asyncio.Event()
        self._paces: dict[str, Pace] = {}
        self._finished: list[Submission] = []
        self._attempts: set[asyncio.Task[None]] = set()
        # Ids of the messages in hand here: being attempted, or their outcome not yet
        # recorded; and of those, the ones being attempted.
        self._in_hand: set[int] = set()
        self._attempting: set[int] = set()
        self._renewed_at = 0
        self._recorder: asyncio.Task[None] | None = None
        self._recording_after = 0.0  # loop time: after a store outage, wait a moment
        store.outbound_listeners.append(self._wake.set)

    async def run(self, stop: asyncio.Event) -> None:
        """Claim, submit and record until `stop`; then finish the attempts in hand (their
        binds are still up: the caller unbinds after this returns).

        Outcomes are recorded by a task of their own, one transaction at a time: those that
        finish while one is written go together in the next, so the store's round trips
        never set the pace, and claiming goes on meanwhile."""
        stopping = asyncio.create_task(stop.wait())
        delay = 0.0
        try:
            while not stop.is_set():
                # Cleared before the pass, not after it: an attempt that ends or a message
                # queued while the pass awaits the store sets it again, and the wait below
                # then returns at once. Cleared after the pass, that wake was lost, and its
                # outcome waited for the next look at the queue (a second later).
                self._wake.clear()
                self._start_recording()
                try:
                    await self._renew()
                    claimed = await self._claim()
                    delay = 0.0
                except StoreUnavailable:
                    delay = min(max(delay * 2, 1.0), 30.0)
                    log.warning("SMPP sender: store unavailable, next try in %.0f s", delay)
                    claimed = 0
                except Exception:
                    # A fault of one pass must not end sending: what it claimed is due
                    # again when its lease ends.
                    log.exception("SMPP sender pass failed")
                    delay, claimed = 5.0, 0
                if claimed:
                    continue
                waking = asyncio.ensure_future(self._wake.wait())
                waiting: set[asyncio.Future[Any]] = {stopping, waking}
                if self._recorder is not None and not self._recorder.done():
                    # Its end may leave outcomes to record and room to claim. A record
                    # finished earlier is not waited for: it would end the wait at once.
                    waiting.add(self._recorder)
                await asyncio.wait(
                    waiting, timeout=delay or POLL_S, return_when=asyncio.FIRST_COMPLETED
                )
                waking.cancel()
        finally:
            stopping.cancel()
            if self._attempts:
                _, unfinished = await asyncio.wait(set(self._attempts), timeout=STOP_GRACE_S)
                for attempt in unfinished:
                    attempt.cancel()  # what it had sent is recorded as it ends
                if unfinished:
                    await asyncio.wait(unfinished)
            if self._recorder is not None:
                await self._recorder
            self._recording_after = 0.0
            self._start_recording()
            if self._recorder is not None:
                await self._recorder

    def _start_recording(self) -> None:
        """Record what has finished, unless a record is being written (what finishes
        meanwhile goes in the next) or the store was away a moment ago."""
        recorder = self._recorder
        if recorder is not None and not recorder.done():
            return
        if not self._finished or asyncio.get_running_loop().time() < self._recording_after:
            return
        self._recorder = asyncio.create_task(self._record(), name="smpp sender records")

    async def _claim(self) -> int:
        """Claim as many due messages as the binds have room for, and start them."""
        now = self.clock()
        running = [(configured, bind) for configured, bind in self.running() if _sends(configured)]
        bound = [(configured, bind) for configured, bind in running if bind.state is State.BOUND]
        # Room for twice the windows (a message's parts go one after another, so each
        # message in hand has at most one submit_sm in flight), and for a batch worth
        # recording at once however small the window: the rest wait for the window.
        capacity = sum(max(configured.window * 2, MIN_IN_HAND) for configured, _ in bound)
        room = capacity - len(self._attempts)
        if not bound:
            # Nothing can be sent from here now: only give up on the messages out of time.
            expired = await self.store.claim_outbound(
                now=now, until=now + LEASE_MS, limit=100, expired_only=True
            )
            await self.store.record_submissions(
                [_failed(message, "no bind could send it in time") for message in expired],
                now=now,
            )
            return 0
        # No more than the binds' pace sends in a while: the rest stays for other senders.
        pace = [configured.throughput for configured, _ in bound]
        if all(pace):
            room = min(room, sum(pace) * PACED_CLAIM_S - len(self._attempts))
        if room <= 0 or (self._attempts and room < capacity // 2):
            return 0  # claimed in handfuls, not one by one as each attempt ends
        claimed = [
            message
            for message in await self.store.claim_outbound(
                now=now, until=now + LEASE_MS, limit=room
            )
            # In hand already (its lease ran out while it waited for its turn): its
            # attempt goes on, and the new lease holds it longer.
            if message.message_id not in self._in_hand
        ]
        # Bound binds first: of two routing the same prefix, the bound one sends.
        routable = [configured for configured, _ in bound] + [
            configured for configured, bind in running if (configured, bind) not in bound
        ]
        binds = {configured.name: bind for configured, bind in running}
        for message in claimed:
            chosen = route(message.recipient, routable)
            attempt = asyncio.create_task(
                self._attempt(message, chosen, None if chosen is None else binds[chosen.name])
            )
            self._attempts.add(attempt)
            attempt.add_done_callback(self._attempts.discard)
        return len(claimed)

    async def _record(self) -> None:
        finished, self._finished = self._finished, []
        try:
            await self.store.record_submissions(finished, now=self.clock())
        except StoreUnavailable:
            # Kept for the next try, still in hand: their leases hold them meanwhile.
            self._finished[:0] = finished
            self._recording_after = asyncio.get_running_loop().time() + 1.0
            log.warning("SMPP sender: outcomes not recorded, store unavailable")
            return
        except Exception:
            # Not the store's absence: the same records would fail again. Their leases
            # run out and the messages are tried again (from their recorded parts).
            log.exception("SMPP sender: %d outcomes not recorded", len(finished))
        for outcome in finished:
            self._in_hand.discard(outcome.message_id)
        self._wake.set()  # room for more

    async def _renew(self) -> None:
        """Hold the messages in hand a while longer, once their lease is half gone, so no
        other sender takes one this one is still sending."""
        now = self.clock()
        if now < self._renewed_at + LEASE_MS // 2 or not self._attempting:
            return
        # Only those still being attempted: one whose outcome waits to be recorded must
        # keep the time that record gives it (when to try again), not a new lease.
        await self.store.renew_outbound(sorted(self._attempting), until=now + LEASE_MS)
        self._renewed_at = now

    async def _attempt(
        self, message: Outbound, configured: SmppBind | None, bind: Bind | None
    ) -> None:
        self._in_hand.add(message.message_id)
        self._attempting.add(message.message_id)
        accepted: list[SentPart] = []
        try:
            outcome = await self._submit(message, configured, bind, accepted)
        except asyncio.CancelledError:
            # Stopped mid-way: the parts the SMSC accepted are recorded, so they are not
            # sent again.
            self._attempting.discard(message.message_id)
            self._finished.append(self._retry(message, accepted, "the sender stopped"))
            raise
        except Exception as error:
            log.exception("submitting message %d failed", message.message_id)
            outcome = self._retry(message, accepted, f"{type(error).__name__}: {error}")
        self._attempting.discard(message.message_id)
        self._finished.append(outcome)
        self._wake.set()

    async def _submit(
        self,
        message: Outbound,
        configured: SmppBind | None,
        bind: Bind | None,
        accepted: list[SentPart],
    ) -> Submission:
        """Submit the message's parts not yet accepted, adding each accepted to `accepted`
        as its answer comes."""
        now = self.clock()
        if now >= message.expires_at:
            return _failed(message, "no bind accepted it in time")
        if configured is None or bind is None:
            return self._retry(message, [], f"no SMPP bind routes {message.recipient}")
        try:
            parts = messages.outgoing(
                message.text,
                message.message_id % 256,
                default_alphabet=Alphabet(configured.default_alphabet),
                packed=configured.gsm_packed,
            )
        except messages.TooManyParts as error:  # in this bind's alphabet
            return Submission.of(
                message, accepted, MessageStatus.REJECTED, error=f"{configured.name}: {error}"
            )
        total = len(parts.short_messages)
        pace = self._pace(configured)
        for number, short_message in enumerate(parts.short_messages, start=1):
            if number in message.submitted:
                continue
            await pace.turn()
            try:
                answer = await bind.request(submit_sm(configured, message, short_message, parts))
            except (NotBound, SessionClosed, ResponseTimeout) as lost:
                self.metrics.smpp_submits.labels(configured.name, "lost").inc()
                return self._retry(message, accepted, f"{type(lost).__name__}: {lost}")
            status = _status_name(answer.status)
            self.metrics.smpp_submits.labels(configured.name, status).inc()
            if answer.command is Command.GENERIC_NACK or answer.status != Status.ESME_ROK:
                if answer.status in TEMPORARY:
                    if answer.status == Status.ESME_RTHROTTLED:
                        pace.hold(THROTTLE_HOLD_S)
                    return self._retry(message, accepted, f"{configured.name}: {status}")
                return Submission.of(
                    message, accepted, MessageStatus.REJECTED, error=f"{configured.name}: {status}"
                )
            accepted.append(SentPart(number, total, configured.id, answer.text("message_id")))
        return Submission.of(message, accepted, MessageStatus.SENT)

    def _retry(self, message: Outbound, accepted: list[SentPart], error: str) -> Submission:
        retry_at = self.clock() + retry_delay_ms(message.attempts)
        if retry_at >= message.expires_at:
            return _failed(message, error, accepted)
        return Submission.of(message, accepted, None, retry_at=retry_at, error=error)

    def _pace(self, configured: SmppBind) -> Pace:
        pace = self._paces.get(configured.name)
        if pace is None or pace.rate != configured.throughput:
            pace = self._paces[configured.name] = Pace(configured.throughput)
        return pace


def _sends(bind: SmppBind) -> bool:
    return bind.mode != "receiver"


def _failed(message: Outbound, error: str, accepted: list[SentPart] | None = None) -> Submission:
    log.warning("message %d to %s failed: %s", message.message_id, message.recipient, error)
    return Submission.of(message, accepted or [], MessageStatus.FAILED, error=error)


def _status_name(status: int) -> str:
    try:
        return Status(status).name
    except ValueError:
        return f"{status:#x}"
