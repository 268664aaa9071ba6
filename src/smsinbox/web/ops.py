"""Operator endpoints: liveness, readiness, metrics."""

from __future__ import annotations

import contextlib

from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response

from smsinbox.core.clock import now_ms
from smsinbox.errors import StoreUnavailable
from smsinbox.services import Services

# The same answer every time, built once: the outermost layer sends a plain response's
# status, headers and body as they are, and nothing changes them.
_ALIVE = PlainTextResponse("ok\n")


async def healthz(request: Request) -> Response:
    """GET /healthz — the process is up and serving."""
    return _ALIVE


async def readyz(request: Request) -> Response:
    """GET /readyz — the database answers; load balancers stop routing here when it fails.

    Each SMPP bind this process runs is listed with its state; a bind that is down does not
    make the HTTP APIs unready, so it does not change the status."""
    services: Services = request.app.state.services
    binds = "".join(
        f"smpp {name}: {state.value}"
        + (f" ({error})" if error and state.value != "bound" else "")
        + "\n"
        for name, (state, error) in sorted(services.smpp.states().items())
    )
    try:
        await services.store.db.ping()
    except StoreUnavailable:
        return PlainTextResponse("database unavailable\n" + binds, status_code=503)
    return PlainTextResponse("ready\n" + binds)


async def metrics(request: Request) -> Response:
    """GET /metrics — Prometheus text exposition."""
    services: Services = request.app.state.services
    # On a database outage keep the last known figure; the scrape itself must still succeed.
    with contextlib.suppress(StoreUnavailable):
        services.metrics.unrouted_waiting.set(await services.store.count_unrouted())
        depth, oldest = await services.store.queue_figures()
        queued, retrying = await services.store.outbound_figures()
        services.metrics.outbound_queued.set(queued)
        services.metrics.outbound_retrying.set(retrying)
        services.metrics.push_queue_depth.set(depth)
        age = 0.0 if oldest is None else max(0.0, (now_ms() - oldest) / 1000)
        services.metrics.push_oldest_age.set(age)
    return Response(generate_latest(services.metrics.registry), media_type=CONTENT_TYPE_LATEST)
