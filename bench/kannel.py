"""Kannel as a peer: how fast messages go from an SMSC through Kannel to an HTTP service.

Debian's `kannel` (bearerbox, smsbox) and `kannel-extras` (fakesmsc) carry the messages:
fakesmsc plays the SMSC and sends N messages into bearerbox as fast as it can, bearerbox
hands them to smsbox, and smsbox calls the `sms-service`'s `get-url` for each, exactly as
docs/inbound.md tells operators to configure it. The same pipeline is timed twice, once
against a receiver that only answers `200` (bench/receiver.py: what Kannel itself can
carry) and once against smsinbox's `/inbound/sms`; the ratio of the two rates is how much
of Kannel's own speed smsinbox keeps.

Everything listens on 127.0.0.1 only, on ports from `free_port`, with its configuration
and logs in a temporary directory.
"""

from __future__ import annotations

import asyncio
import shutil
import socket
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

from cpu import process_seconds

KANNEL_PACKAGES = ("kannel", "kannel-extras")
SENDER = "447900000001"

# smsbox's own concurrency towards the get-url, stated with every result:
# - max-pending-requests: HTTP requests smsbox keeps in flight at once (Kannel's default
#   is 512). Set to the harness's connection count, so Kannel drives smsinbox as hard as
#   wrk does in the `ingest` run, and the trivial receiver gets the same concurrency.
# - http-request-retry / http-queue-delay: a request that fails (any answer but 200/202,
#   or no answer) is tried again up to 5 times, 1 s apart, so a slow answer costs time,
#   never a lost message; the count of stored messages must still reach N.
# - log-level 3 (errors) on both boxes: below that Kannel writes lines for every message
#   (smsbox warns "Tried to set Coding field, denied" for each answer, whatever the
#   receiver sends), which would time its logging as much as its forwarding.
SMSBOX_SETTINGS = {"http-request-retry": 5, "http-queue-delay": 1, "log-level": 3}


def ensure_kannel() -> tuple[str, str, str]:
    """bearerbox, smsbox and fakesmsc, installing Debian's packages if they are missing."""
    if not (shutil.which("bearerbox", path="/usr/sbin") and _fakesmsc()):
        print("kannel not found: installing Debian's kannel and kannel-extras", file=sys.stderr)
        subprocess.run(["apt-get", "install", "-y", "-qq", *KANNEL_PACKAGES], check=True)
    bearerbox = shutil.which("bearerbox", path="/usr/sbin:/usr/bin")
    smsbox = shutil.which("smsbox", path="/usr/sbin:/usr/bin")
    fakesmsc = _fakesmsc()
    if not (bearerbox and smsbox and fakesmsc):
        sys.exit("kannel is not available")
    return bearerbox, smsbox, fakesmsc


def _fakesmsc() -> str | None:
    """fakesmsc's path, from the package's own file list (it is not on PATH)."""
    listing = subprocess.run(
        ["dpkg", "-L", "kannel-extras"], capture_output=True, text=True, check=False
    )
    for line in listing.stdout.splitlines():
        if line.endswith("/fakesmsc") and Path(line).is_file():
            return line
    return None


def configuration(workdir: Path, ports: dict[str, int], get_url: str, max_pending: int) -> str:
    """One kannel.conf for both boxes: loopback only, a fake SMSC, one catch-all service."""
    level = SMSBOX_SETTINGS["log-level"]
    return f"""
group = core
admin-port = {ports["admin"]}
admin-interface = 127.0.0.1
admin-password = bench
admin-allow-ip = 127.0.0.1
smsbox-port = {ports["smsbox"]}
smsbox-interface = 127.0.0.1
box-allow-ip = 127.0.0.1
log-file = "{workdir / "bearerbox.log"}"
log-level = {level}

group = smsc
smsc = fake
smsc-id = fake
port = {ports["smsc"]}
our-host = 127.0.0.1
connect-allow-ip = 127.0.0.1

group = smsbox
bearerbox-host = 127.0.0.1
bearerbox-port = {ports["smsbox"]}
max-pending-requests = {max_pending}
http-request-retry = {SMSBOX_SETTINGS["http-request-retry"]}
http-queue-delay = {SMSBOX_SETTINGS["http-queue-delay"]}
log-file = "{workdir / "smsbox.log"}"
log-level = {level}

group = sms-service
keyword = default
max-messages = 0
get-url = "{get_url}"
"""


def carry(
    binaries: tuple[str, str, str],
    workdir: Path,
    *,
    get_url: str,
    recipients: list[str],
    messages: int,
    max_pending: int,
    arrived: Callable[[], int],
    span: Callable[[], tuple[float, float]],
    free_port: Callable[[], int],
    limit_s: float,
    far_end_pid: int,
) -> dict[str, Any]:
    """Send `messages` through fakesmsc → bearerbox → smsbox → `get_url` and time them.

    `arrived()` counts what the far end has so far (requests at the trivial receiver, or
    messages smsinbox stored), to know when all are there; `span()` then gives the exact
    times of the first and the last arrival, as the far end recorded them (the receiver's
    clock, smsinbox's `received_at`). Kannel's start-up and the fakesmsc connection are
    left out, on both sides alike. The CPU time each process spent while the messages
    went through (Kannel's three and `far_end_pid`, the receiver or the server) says how
    much of the two cores each side took: on a shared machine, what bounds the rate.
    """
    bearerbox, smsbox, fakesmsc = binaries
    ports = {name: free_port() for name in ("admin", "smsbox", "smsc")}
    config = workdir / "kannel.conf"
    config.write_text(configuration(workdir, ports, get_url, max_pending))
    log = (workdir / "kannel-processes.log").open("ab")
    processes: list[subprocess.Popen[bytes]] = []
    try:
        processes.append(subprocess.Popen([bearerbox, str(config)], stdout=log, stderr=log))
        _wait_for_port(ports["smsc"], processes[0])
        processes.append(subprocess.Popen([smsbox, str(config)], stdout=log, stderr=log))
        _wait_for_smsbox(ports["admin"], processes)
        before = arrived()
        cpu_before = {"kannel": process_seconds(p.pid for p in processes),
                      "far_end": process_seconds([far_end_pid])}  # fmt: skip
        # Each message to one of the accounts' numbers (fakesmsc picks a template at random).
        templates = [f"{SENDER} {to} text kannel bench message" for to in recipients]
        processes.append(
            subprocess.Popen(
                [fakesmsc, "-H", "127.0.0.1", "-r", str(ports["smsc"]), "-i", "0",
                 "-m", str(messages), *templates],
                stdout=subprocess.DEVNULL, stderr=log,
            )
        )  # fmt: skip
        count = 0
        deadline = time.monotonic() + limit_s
        while (count := arrived() - before) < messages and time.monotonic() < deadline:
            # Seldom: the far end's count costs it work (smsinbox renders all of /metrics),
            # and the rate is timed from the far end's own arrival times, not from here.
            time.sleep(1.0)
        if count < messages:
            raise RuntimeError(
                f"kannel delivered {count} of {messages} messages to {get_url.split('?')[0]} "
                f"within {limit_s:.0f} s; see {workdir}"
            )
        kannel_cpu = process_seconds(p.pid for p in processes) - cpu_before["kannel"]
        far_end_cpu = process_seconds([far_end_pid]) - cpu_before["far_end"]
        first, last = span()
        seconds = max(last - first, 1e-3)
        return {
            "rps": (messages - 1) / seconds,
            "messages": messages,
            "seconds": seconds,
            "max_pending": max_pending,
            # CPU per message: fakesmsc, bearerbox and smsbox together; the far end.
            "kannel_cpu_us": kannel_cpu * 1e6 / messages,
            "far_end_cpu_us": far_end_cpu * 1e6 / messages,
        }
    finally:
        for process in reversed(processes):
            process.terminate()
        for process in reversed(processes):
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()
        log.close()


def _wait_for_port(port: int, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError("bearerbox exited; see bearerbox.log")
        with socket.socket() as probe:
            if probe.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    raise RuntimeError("bearerbox did not open its fake SMSC port")


def _wait_for_smsbox(admin_port: int, processes: list[subprocess.Popen[bytes]]) -> None:
    """Until bearerbox's status page lists the smsbox as connected."""
    deadline = time.monotonic() + 20
    url = f"http://127.0.0.1:{admin_port}/status.txt?password=bench"
    while time.monotonic() < deadline:
        if any(p.poll() is not None for p in processes):
            raise RuntimeError("a Kannel box exited; see bearerbox.log and smsbox.log")
        try:
            status = httpx.get(url, timeout=2).text
        except httpx.TransportError:
            status = ""
        if "smsbox:" in status and "on-line" in status.split("Box connections:")[-1]:
            return
        time.sleep(0.1)
    raise RuntimeError("smsbox did not connect to bearerbox")


def stored_span(database_url: str, upstream: str) -> tuple[int, float, float]:
    """How many messages `upstream` delivered, and the first and last `received_at` (s)."""
    query = (
        "SELECT count(*), min(m.received_at), max(m.received_at) FROM messages m "
        "JOIN upstreams u ON u.id = m.upstream_id WHERE u.name = {}"
    )
    if database_url.startswith("sqlite"):
        path = database_url.split("///", 1)[1]
        with sqlite3.connect(f"file:{path}?mode=ro", uri=True) as connection:
            count, first, last = connection.execute(query.format("?"), (upstream,)).fetchone()
    else:
        count, first, last = asyncio.run(_postgres_row(database_url, query.format("$1"), upstream))
    return int(count), (first or 0) / 1000, (last or 0) / 1000


async def _postgres_row(database_url: str, query: str, *args: object) -> tuple[Any, ...]:
    import asyncpg
    from sqlalchemy.engine import make_url

    dsn = make_url(database_url).set(drivername="postgresql")
    connection = await asyncpg.connect(dsn.render_as_string(hide_password=False))
    try:
        return tuple(await connection.fetchrow(query, *args))
    finally:
        await connection.close()
