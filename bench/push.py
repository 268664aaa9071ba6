"""Push: how fast the worker empties a backlog, and how long a message takes to be pushed.

One `standard` endpoint (signed JSON, the default format) is added through the admin
API, pointing at bench/receiver.py on loopback (the server runs with
`push_allow_private` on for this). Two measurements:

- **drain**: a replay since 0 (the admin API's, `smsinbox push replay` over HTTP, so it
  wakes the server's own worker at once on either engine) queues a delivery of every
  message the account holds (about 1,000: its generated history plus what earlier runs
  ingested). Deliveries per second are timed from the first push to reach the receiver to
  the last.
- **latency**: messages are ingested through `/inbound/sms` at a steady, moderate rate
  (open loop, bench/openloop.py), each text carrying `bench-t=<time it was sent>`; the
  receiver notes when each push arrives. Ingest-to-push latency is arrival minus send
  time: the ingest request, the commit, the worker's wake-up and the push itself.
"""

from __future__ import annotations

import time
from typing import Any
from urllib.parse import quote

import httpx

from cpu import postgres_seconds, process_seconds
from datagen import number, username
from openloop import Request, run_open_loop
from receiver import Receiver

SENDER = "447900000002"


def measure(
    server: Any,
    receiver: Receiver,
    *,
    token: str,
    admin_token: str,
    account: int,
    rate: float,
    duration: float,
    connections: int,
) -> dict[str, dict[str, Any]]:
    """The `push_drain` and `push_latency` figures for one endpoint on `account`."""
    add_endpoint(server, admin_token, account, f"{receiver.url}/push")
    drain = replayed(server, receiver, admin_token=admin_token, accounts=[account])

    receiver.control("reset")
    to = number(account)
    # Never more than a quarter of what the worker drains, so it never falls behind and the
    # figure is the latency of each push, not a queue's.
    rate = min(rate, drain["rps"] / 4)

    def ingest(index: int) -> Request:
        text = quote(f"push bench-t={time.time():.6f}")
        return Request(
            "GET",
            f"/inbound/sms?token={token}&from={SENDER}&to={to}&text={text}&id=push-{index}",
        )

    sent = run_open_loop(server.url, ingest, rate=rate, duration=duration, connections=connections)
    stored = int(rate * duration) - int(sent["failures"]) - int(sent["non_2xx"])
    receiver.wait_for(stored, limit_s=60)
    delays = sorted(
        arrived - stamp for arrived, stamp in receiver.control("arrivals") if stamp is not None
    )
    if len(delays) < stored:
        raise RuntimeError(f"push: {len(delays)} of {stored} ingested messages were pushed")
    latency = {
        "rps": sent["rps"],
        "p50_ms": delays[len(delays) // 2] * 1000,
        "p99_ms": delays[min(len(delays) - 1, int(0.99 * len(delays)))] * 1000,
        "pushed": len(delays),
        "ingest_p99_ms": sent["p99_ms"],
        "non_2xx": sent["non_2xx"],
    }
    return {"push_drain": drain, "push_latency": latency}


def drain_many(
    server: Any, receiver: Receiver, *, admin_token: str, accounts: range, has_endpoint: int
) -> dict[str, Any]:
    """`push_drain_10`: one endpoint per account, all their messages replayed at once.

    Each endpoint has a path of its own on the one receiver: to the worker they are as many
    endpoints (a lane each), to the machine one process instead of ten on its two cores.
    """
    for account in accounts:
        if account != has_endpoint:  # measure() added that one
            add_endpoint(server, admin_token, account, f"{receiver.url}/push/{account}")
    return {**replayed(server, receiver, admin_token=admin_token, accounts=list(accounts)),
            "endpoints": len(accounts)}  # fmt: skip


def add_endpoint(server: Any, admin_token: str, account: int, url: str) -> None:
    """A push endpoint for the account, through the admin API (as `smsinbox push add`
    would add it, without starting a process for each)."""
    answer = httpx.post(
        f"{server.url}/admin/accounts/{username(account)}/push",
        json={"url": url},
        headers={"Authorization": f"Bearer {admin_token}"},
        timeout=60,
    )
    answer.raise_for_status()


def replayed(
    server: Any, receiver: Receiver, *, admin_token: str, accounts: list[int]
) -> dict[str, Any]:
    """Replay every message of the accounts through the admin API (which wakes the server's
    worker at once) and time the deliveries from the first to arrive to the last."""
    receiver.control("reset")
    remote = server.database_url.startswith("postgresql")

    def cpu_so_far() -> tuple[float, float, float]:
        """Seconds of CPU of the server, the receiver and PostgreSQL (SQLite's work is
        the server's own)."""
        return (process_seconds([server.pid]), process_seconds([receiver.pid]),
                postgres_seconds() if remote else 0.0)  # fmt: skip

    cpu_before = cpu_so_far()
    queued = 0
    for account in accounts:
        queued += httpx.post(
            f"{server.url}/admin/accounts/{username(account)}/push/replay",
            json={"since": 0},
            headers={"Authorization": f"Bearer {admin_token}"},
            timeout=60,
        ).json()["queued"]
    stats = receiver.wait_for(queued, limit_s=300)
    if stats["count"] < queued:
        raise RuntimeError(f"push: {stats['count']} of {queued} replayed deliveries arrived")
    seconds = max(stats["last"] - stats["first"], 1e-3)
    server_cpu, receiver_cpu, database_cpu = (
        after - before for after, before in zip(cpu_so_far(), cpu_before, strict=True)
    )
    return {
        "rps": (queued - 1) / seconds, "deliveries": queued, "seconds": seconds,
        "server_cpu_us": server_cpu * 1e6 / queued,
        "database_cpu_us": database_cpu * 1e6 / queued if remote else None,
        "receiver_cpu_us": receiver_cpu * 1e6 / queued,
    }  # fmt: skip
