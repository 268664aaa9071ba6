"""SMPP ingest: deliver_sm a second, each durably stored, through one bind.

smpp34's SMSC server (an independent SMPP implementation, in Rust) runs in the harness
process on loopback; the server under test binds to it after `smsinbox smpp add`. The SMSC
then delivers `messages` deliver_sm with `window` in flight at once: `window` senders, each
sending its next as soon as its last is answered (a fixed pool rather than a task per
message, which cost the harness half again as much CPU). A deliver_sm is answered ESME_ROK
only once its message is committed, so the rate counts durable messages. Timed from the
first send to the last answer; every answer must be ESME_ROK, and the server's own count of
stored messages must have grown by as many.
"""

from __future__ import annotations

import asyncio
import os
import time
from pathlib import Path
from typing import Any

import smpp34

from datagen import number

SENDER = "447900000003"
BIND = "bench-smsc"


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def measure(
    server: Any, *, port: int, accounts: int, windows: tuple[int, ...], messages: int
) -> dict[str, dict[str, Any]]:
    """One row per window: `smpp_ingest_w<window>`."""
    return asyncio.run(_measure(server, port, accounts, windows, messages))


async def _measure(
    server: Any, port: int, accounts: int, windows: tuple[int, ...], messages: int
) -> dict[str, dict[str, Any]]:
    smsc = smpp34.Server("127.0.0.1", port, system_id="BENCH")
    await smsc.start()
    try:
        server.cli("smpp", "add", BIND, "--host", "127.0.0.1", "--port", str(port),
                   "--system-id", "bench", "--password", "bench")  # fmt: skip
        esme = await asyncio.wait_for(smsc.next(), 60)  # the server reads new binds every 5 s
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
            server_cpu, harness_cpu = cpu_seconds(server.pid), time.process_time()
            started = time.perf_counter()
            await deliver(sent, window)
            elapsed = time.perf_counter() - started
            server_cpu = cpu_seconds(server.pid) - server_cpu
            harness_cpu = time.process_time() - harness_cpu
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
