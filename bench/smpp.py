"""SMPP ingest and sending: deliver_sm a second, each durably stored, through one bind; and
submit_sm a second, each answered ESME_ROK and its message's SENT status committed.

smpp34's SMSC server (an independent SMPP implementation, in Rust) runs in the harness
process on loopback; the server under test binds to it after `smsinbox smpp add`. The SMSC
then delivers `messages` deliver_sm with `window` in flight at once: `window` senders, each
sending its next as soon as its last is answered (a fixed pool rather than a task per
message, which cost the harness half again as much CPU). A deliver_sm is answered ESME_ROK
only once its message is committed, so the rate counts durable messages. Timed from the
first send to the last answer; every answer must be ESME_ROK, and the server's own count of
stored messages must have grown by as many.

Sending: `messages` outgoing messages from the polled accounts to numbers no account owns
are put in the outbound queue first (see `queue`), with no bind to send them. Then a bind
routing every number (`*`) with `window` in flight is configured; the server binds to
smpp34's SMSC within its refresh (5 s), and the sender submits the queue over it, the SMSC
accepting each submit_sm as it comes. Timed from the first submit_sm the SMSC reads to the
moment the queue is seen empty (polled every 20 ms), when every message's SENT status is
committed (a message leaves the queue in the transaction that marks it sent); every
submit_sm must have been accepted once and every message must be SENT. The bind is disabled
after each window. The SMSC's own ceiling (`smpp_send_peer`): smpp34's client, in a process
of its own, submitting as many with 100 in flight to the same SMSC.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import smpp34
from sqlalchemy import func, insert, select

import loops
import spy
from cpu import process_seconds
from datagen import number
from smsinbox.config import Settings
from smsinbox.core import records
from smsinbox.models import MessageStatus, SmppBind
from smsinbox.services import Services
from smsinbox.store import tables

SENDER = "447900000003"
BIND = "bench-smsc"
# Sending: the binds (one per window), the numbers sent to (no account owns them; each
# account writes to RECIPIENTS // accounts of them), and the queue's poll while timing.
SEND_BIND = "bench-send-w{window}"
RECIPIENT_BASE = 33_600_000_000
RECIPIENTS = 1_000
POLL_S = 0.02
# A queue that has not shrunk for this long has stalled: the run fails.
STALLED_S = 60
# The loader's messages in hand at once (add_message, through the store).
LOADERS = 50
# The SMSC's own ceiling: smpp34's client with this many submit_sm in flight.
PEER_WINDOW = 100


def measure(
    server: Any,
    *,
    port: int,
    accounts: int,
    windows: tuple[int, ...],
    messages: int,
    profile: Path | None = None,
) -> dict[str, dict[str, Any]]:
    """One row per window: `smpp_ingest_w<window>`. With `profile`, py-spy records the
    server during each window into that directory."""
    return loops.run(_measure(server, port, accounts, windows, messages, profile))


async def _measure(
    server: Any,
    port: int,
    accounts: int,
    windows: tuple[int, ...],
    messages: int,
    profile: Path | None,
) -> dict[str, dict[str, Any]]:
    smsc = smpp34.Server("127.0.0.1", port, system_id="BENCH")
    await smsc.start()
    try:
        server.cli("smpp", "add", BIND, "--host", "127.0.0.1", "--port", str(port),
                   "--system-id", "bench", "--password", "bench")  # fmt: skip
        esme = await asyncio.wait_for(smsc.next(), 60)  # the server reads binds every smpp_refresh
        recipients = [number(i % accounts + 1) for i in range(accounts)]
        refused = 0

        async def sender(first: int, count: int) -> None:
            nonlocal refused
            for i in range(first, first + count):
                answer = await esme.deliver_sm(
                    recipients[i % accounts], b"bench message", source_addr=SENDER
                )
                refused += not answer.is_success

        async def deliver(count: int, window: int) -> None:
            each = count // window
            await asyncio.gather(*(sender(w * each, each) for w in range(window)))

        await deliver(500, 10)  # the bind's first deliveries, outside the timings
        rows = {}
        for window in windows:
            sent = messages // window * window
            stored = server.stored()
            recorders = spy.start(server.pid, profile / f"smpp_ingest_w{window}") if profile else []
            server_cpu, harness_cpu = process_seconds([server.pid]), time.process_time()
            started = time.perf_counter()
            await deliver(sent, window)
            elapsed = time.perf_counter() - started
            server_cpu = process_seconds([server.pid]) - server_cpu
            harness_cpu = time.process_time() - harness_cpu
            spy.stop(recorders)
            if refused or server.stored() - stored != sent:
                raise RuntimeError(f"smpp: {refused} refused, {server.stored() - stored} of "
                                   f"{sent} stored")  # fmt: skip
            rows[f"smpp_ingest_w{window}"] = {
                "rps": sent / elapsed,
                "messages": sent,
                "window": window,
                "seconds": elapsed,
                "server_cpu_us": server_cpu * 1e6 / sent,
                "smsc_cpu_us": harness_cpu * 1e6 / sent,
            }
        return rows
    finally:
        await smsc.stop()


# --- sending ------------------------------------------------------------------------------


class Smsc:
    """smpp34's SMSC in the harness, accepting every submit_sm as soon as it reads it, each
    with an id of its own. Notes when the first of a run came (with the CPU the server and
    the harness had used by then), and when a bind ended."""

    def __init__(self, port: int, server_pid: int) -> None:
        self.port = port
        self.server_pid = server_pid
        self.server = smpp34.Server("127.0.0.1", port, system_id="BENCH")
        self.accepted = 0
        self.ids = 0
        self.first = asyncio.Event()
        self.first_at = self.first_server_cpu = self.first_harness_cpu = 0.0
        self.unbound = asyncio.Event()
        self._reading: asyncio.Task[None] | None = None

    async def __aenter__(self) -> Smsc:
        await self.server.start()
        self._reading = asyncio.create_task(self._read())
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        assert self._reading is not None
        self._reading.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._reading
        await self.server.stop()

    def reset(self) -> None:
        self.accepted = 0
        self.first.clear()
        self.unbound.clear()

    async def _read(self) -> None:
        while True:
            event = await self.server.next()
            if isinstance(event, smpp34.SubmitSmEvent):
                self.ids += 1
                event.accept(f"{self.ids:x}")
                self.accepted += 1
                if not self.first.is_set():
                    self.first_at = time.perf_counter()
                    self.first_harness_cpu = time.process_time()
                    self.first_server_cpu = process_seconds([self.server_pid])
                    self.first.set()
            elif isinstance(event, smpp34.Unbound):
                self.unbound.set()


def measure_send(
    server: Any,
    *,
    port: int,
    accounts: int,
    windows: tuple[int, ...],
    messages: int,
    profile: Path | None = None,
) -> dict[str, dict[str, Any]]:
    """`smpp_send_peer`, the SMSC's own ceiling, then one row per window:
    `smpp_send_w<window>`. With `profile`, py-spy records the server during each window
    into that directory."""
    return loops.run(_measure_send(server, port, accounts, windows, messages, profile))


async def _measure_send(
    server: Any,
    port: int,
    accounts: int,
    windows: tuple[int, ...],
    messages: int,
    profile: Path | None,
) -> dict[str, dict[str, Any]]:
    services = Services.build(Settings(database_url=server.database_url))
    await services.start()
    try:
        # No bind of the runs before may send (or claim the queue only to put its messages
        # off, as a bound bind that routes none of them would).
        for configured in await services.smpp.configured():
            if configured.enabled:
                await services.smpp.set_enabled(configured.name, False)
        async with Smsc(port, server.pid) as smsc:
            rows = {"smpp_send_peer": await peer_ceiling(smsc, messages)}
            for window in windows:
                rows[f"smpp_send_w{window}"] = await _send(
                    server, services, smsc, accounts, window, messages, profile
                )
        return rows
    finally:
        await services.close()


async def peer_ceiling(smsc: Smsc, messages: int) -> dict[str, Any]:
    """submit_sm a second the SMSC answers when smpp34's client (a process of its own)
    submits: what the harness's SMSC can take, with what it costs it a message."""
    smsc.reset()
    harness_cpu = time.process_time()
    client = await asyncio.create_subprocess_exec(
        sys.executable, __file__, "submit", "--port", str(smsc.port), "--messages",
        str(messages), "--window", str(PEER_WINDOW), stdout=subprocess.PIPE,
    )  # fmt: skip
    output, _ = await client.communicate()
    harness_cpu = time.process_time() - harness_cpu
    figures = json.loads(output)
    if client.returncode or figures["refused"] or smsc.accepted != messages:
        raise RuntimeError(f"smpp peer: {figures['refused']} refused, {smsc.accepted} of "
                           f"{messages} accepted")  # fmt: skip
    return {
        "rps": messages / figures["seconds"],
        "messages": messages,
        "window": PEER_WINDOW,
        "seconds": figures["seconds"],
        "smsc_cpu_us": harness_cpu * 1e6 / messages,
    }


async def _send(
    server: Any,
    services: Services,
    smsc: Smsc,
    accounts: int,
    window: int,
    messages: int,
    profile: Path | None,
) -> dict[str, Any]:
    first_id, last_id = await queue(services, accounts, messages)
    waiting, retried = await services.store.outbound_figures()
    if (waiting, retried) != (messages, 0):
        raise RuntimeError(f"smpp send: {waiting} queued ({retried} tried already), not "
                           f"{messages} untried")  # fmt: skip
    smsc.reset()
    name = SEND_BIND.format(window=window)
    # As `smsinbox smpp add` does, without a process started for it (a second each, four
    # a run): the server takes the bind up from the store within its refresh.
    await services.smpp.add(SmppBind(
        name=name, host="127.0.0.1", port=smsc.port, system_id="bench",
        password="bench",  # noqa: S106 (the loopback SMSC takes any)
        window=window, routes="*",
    ))  # fmt: skip
    recorders = spy.start(smsc.server_pid, profile / f"smpp_send_w{window}") if profile else []
    try:
        await asyncio.wait_for(smsc.first.wait(), 60)  # the server reads binds every smpp_refresh
        progressed = time.monotonic()
        while waiting:
            await asyncio.sleep(POLL_S)
            left, retried = await services.store.outbound_figures()
            if left < waiting:
                waiting, progressed = left, time.monotonic()
            elif time.monotonic() - progressed > STALLED_S:
                raise RuntimeError(f"smpp send: {left} left unsent, none sent in {STALLED_S} s "
                                   f"({retried} tried again, {smsc.accepted} submit_sm "
                                   f"accepted); the server's log ends:\n"
                                   f"{log_tail(Path(server.log.name))}")  # fmt: skip
        ended = time.perf_counter()
        harness_cpu = time.process_time() - smsc.first_harness_cpu
        server_cpu = process_seconds([smsc.server_pid]) - smsc.first_server_cpu
    finally:
        spy.stop(recorders)
    elapsed = ended - smsc.first_at
    sent = await count_sent(services, first_id, last_id)
    if smsc.accepted != messages or sent != messages:
        raise RuntimeError(f"smpp send: {smsc.accepted} submit_sm accepted and {sent} "
                           f"messages sent of {messages}")  # fmt: skip
    await services.smpp.set_enabled(name, False)  # as `smsinbox smpp disable` does
    # The server unbinds within its refresh; the next window's queue must not meet it.
    await asyncio.wait_for(smsc.unbound.wait(), 60)
    if profile:
        spy.summarise(profile / f"smpp_send_w{window}.txt")
    return {
        "rps": messages / elapsed,
        "messages": messages,
        "window": window,
        "seconds": elapsed,
        "server_cpu_us": server_cpu * 1e6 / messages,
        "smsc_cpu_us": harness_cpu * 1e6 / messages,
    }


async def queue(services: Services, accounts: int, messages: int) -> tuple[int, int]:
    """Queue `messages` outgoing messages, each from one of the accounts' numbers to one of
    RECIPIENTS numbers no account owns, as the mailbox leaves a send there: the message
    stored pending (store.add_message, as send_from stores it) and its row in the outbound
    queue, due now. The queue rows go in one statement rather than through
    store.queue_outgoing, which costs 2-4 ms of CPU a message (measured: 2.1 ms on SQLite,
    3.7 ms on PostgreSQL), 20-40 s for 10,000 before anything is measured; what it would
    add beside is a second modseq and a status push to no endpoint. The first and last
    message id."""
    store = services.store
    now = int(time.time() * 1000)
    added: list[tuple[int, int]] = []

    async def loader(first: int) -> None:
        for i in range(first, messages, LOADERS):
            account = i % accounts + 1
            recipient = str(RECIPIENT_BASE + i % RECIPIENTS)
            message = records.outgoing(number(account), recipient, f"bench message {i}",
                                       status=MessageStatus.PENDING, now=now)  # fmt: skip
            added.append((account, await store.add_message(account, message, now=now)))

    await asyncio.gather(*(loader(first) for first in range(LOADERS)))
    added.sort(key=lambda pair: pair[1])
    rows = [
        {"account_id": account, "message_id": message_id, "registered_delivery": True,
         "queued_at": now, "expires_at": now + 86_400_000, "due_at": now, "attempts": 0,
         "last_error": ""}
        for account, message_id in added
    ]  # fmt: skip
    async with store.db.transaction("bench_queue") as connection:
        await connection.execute(insert(tables.outbound), rows)
    return added[0][1], added[-1][1]


async def count_sent(services: Services, first_id: int, last_id: int) -> int:
    messages = tables.messages.c
    async with services.store.db.snapshot("bench_sent") as connection:
        sent = await connection.scalar(
            select(func.count())
            .select_from(tables.messages)
            .where(messages.id.between(first_id, last_id))
            .where(messages.status == MessageStatus.SENT.value)
        )
    return int(sent or 0)


def log_tail(path: Path, lines: int = 30) -> str:
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])


async def submit(port: int, messages: int, window: int) -> dict[str, Any]:
    """smpp34's client submitting `messages` with `window` in flight: seconds, refusals."""
    client = smpp34.Client("127.0.0.1", port, "ceiling", "bench", window_size=window)
    session = await client.connect()
    refused = 0

    async def sender(count: int) -> None:
        nonlocal refused
        for i in range(count):
            answer = await session.submit_sm(
                str(RECIPIENT_BASE + i % RECIPIENTS), b"bench message", source_addr=SENDER
            )
            refused += not answer.is_success

    started = time.perf_counter()
    await asyncio.gather(*(sender(messages // window + (w < messages % window))
                           for w in range(window)))  # fmt: skip
    elapsed = time.perf_counter() - started
    await session.unbind()
    await client.stop()
    return {"seconds": elapsed, "refused": refused}


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="smpp34's client as the SMSC's load")
    parser.add_argument("command", choices=["submit"])
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--messages", type=int, required=True)
    parser.add_argument("--window", type=int, default=PEER_WINDOW)
    args = parser.parse_args()
    print(json.dumps(loops.run(submit(args.port, args.messages, args.window))), flush=True)
    # smpp34's runtime threads can abort the interpreter as it finalizes (PyGILState_Release
    # in a finalizing runtime), after the figures are out: leave without finalizing.
    os._exit(0)
