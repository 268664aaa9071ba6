"""An open-loop load generator: requests at a fixed rate, latency counted from when each was due.

wrk is closed-loop: each connection sends its next request only when the previous one is
answered, so when the server slows down wrk slows down with it and the requests that
*should* have been sent in the meantime are never timed (coordinated omission). That is
right for finding the maximum rate and wrong for "what does a client wait at half of it".
`wrk2` fixes this but is not packaged in Debian (`apt-cache policy wrk2`: no candidate),
so this module does the same in a few lines of asyncio on raw sockets: request i is due
at start + i/rate whatever happened before; it goes out on a free keep-alive connection
(at most `connections`, as many as wrk would use), and its latency runs from when it was
due to when its answer was read, so any wait for a connection counts. Raw sockets rather
than httpx because the generator shares two cores with the server: httpx would cost
several times the CPU per request, and a generator that falls behind its own schedule
measures itself. It reports how far behind schedule it ran (`lag_p99_ms`).
"""

from __future__ import annotations

import asyncio
import gc
import time
from collections.abc import Callable
from dataclasses import dataclass

import loops


@dataclass(frozen=True)
class Request:
    method: str
    path: str
    body: bytes = b""
    content_type: str = "application/json"


async def _read_response(reader: asyncio.StreamReader) -> int:
    """Read one HTTP/1.1 response; return its status."""
    head = await reader.readuntil(b"\r\n\r\n")
    status = int(head[9:12])
    lines = head.lower().split(b"\r\n")
    length = next((int(h[15:]) for h in lines if h.startswith(b"content-length:")), None)
    if length is not None:
        await reader.readexactly(length)
    elif any(h.startswith(b"transfer-encoding:") and b"chunked" in h for h in lines):
        while size := int((await reader.readuntil(b"\r\n")).strip().split(b";")[0], 16):
            await reader.readexactly(size + 2)
        await reader.readuntil(b"\r\n")
    return status


def _encode(request: Request, host: str) -> bytes:
    head = f"{request.method} {request.path} HTTP/1.1\r\nHost: {host}\r\n"
    if request.body or request.method == "POST":
        head += f"Content-Type: {request.content_type}\r\nContent-Length: {len(request.body)}\r\n"
    return (head + "\r\n").encode() + request.body


async def _run(
    port: int,
    make: Callable[[int], Request],
    rate: float,
    duration: float,
    connections: int,
) -> dict[str, float]:
    host = f"127.0.0.1:{port}"
    idle: asyncio.Queue[tuple[asyncio.StreamReader, asyncio.StreamWriter]] = asyncio.Queue()
    opened = 0
    latencies: list[float] = []
    lags: list[float] = []
    failures = 0
    non_2xx = 0

    async def connection() -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        nonlocal opened
        if idle.empty() and opened < connections:
            opened += 1
            return await asyncio.open_connection("127.0.0.1", port)
        return await idle.get()

    async def one(index: int, due: float) -> None:
        nonlocal failures, non_2xx, opened
        lags.append(time.perf_counter() - due)
        reader, writer = await connection()
        try:
            writer.write(_encode(make(index), host))
            status = await _read_response(reader)
        except (OSError, asyncio.IncompleteReadError, ValueError):
            failures += 1
            writer.close()
            opened -= 1
            return
        latencies.append(time.perf_counter() - due)
        non_2xx += not 200 <= status < 300
        idle.put_nowait((reader, writer))

    total = int(rate * duration)
    start = time.perf_counter() + 0.05
    tasks = []
    for index in range(total):
        due = start + index / rate
        delay = due - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        tasks.append(asyncio.create_task(one(index, due)))
    # A server that stops answering must fail the run, not hang it.
    await asyncio.wait_for(asyncio.gather(*tasks), duration + 60)
    elapsed = time.perf_counter() - start
    while not idle.empty():
        idle.get_nowait()[1].close()
    latencies.sort()
    lags.sort()
    return {
        "rps": len(latencies) / elapsed,
        "target_rps": rate,
        "p50_ms": _percentile(latencies, 0.50) * 1000,
        "p99_ms": _percentile(latencies, 0.99) * 1000,
        "lag_p99_ms": _percentile(lags, 0.99) * 1000,
        "non_2xx": non_2xx,
        "failures": failures,
    }


def _percentile(ordered: list[float], fraction: float) -> float:
    if not ordered:
        return float("nan")
    return ordered[min(len(ordered) - 1, int(fraction * len(ordered)))]


def run_open_loop(
    url: str,
    make: Callable[[int], Request],
    *,
    rate: float,
    duration: float,
    connections: int,
) -> dict[str, float]:
    """Send `rate` requests a second for `duration` seconds to the server at `url`.

    `make(i)` builds request i when it is sent (so a timestamp in it is the send time).
    """
    port = int(url.rsplit(":", 1)[1].split("/")[0])
    # No garbage collection while it runs: a full collection over the harness's heap (the
    # generated history's imports, thousands of finished request tasks) took 60-85 ms, a
    # pause counted in the latency of every request due meanwhile, as if the server had
    # taken it. Nothing here needs a cycle freed within a run.
    gc.collect()
    gc.freeze()
    gc.disable()
    try:
        return loops.run(_run(port, make, rate, duration, connections))
    finally:
        gc.enable()
        gc.unfreeze()
