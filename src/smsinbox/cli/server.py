"""`smsinbox serve` and `smsinbox worker`: the long-running processes."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Iterator
from typing import Annotated

import typer

from smsinbox import logs
from smsinbox.cli.base import (
    app,
    fail,
    run,
    settings_of,
)
from smsinbox.config import Settings
from smsinbox.metrics import Metrics
from smsinbox.services import Services

log = logging.getLogger("smsinbox.worker")


def log_to_stderr(settings: Settings) -> None:
    """Logging for the long-running commands (serve, worker): every line to stderr, in
    `log_format`, uvicorn's included."""
    logs.configure(settings)


@app.command()
def serve(
    ctx: typer.Context,
    host: Annotated[str | None, typer.Option(help="Listen address (setting: host).")] = None,
    port: Annotated[int | None, typer.Option(help="Listen port (setting: port).")] = None,
) -> None:
    """Run the HTTP server (migrates the schema first unless migrate_on_start is off)."""
    import uvicorn

    from smsinbox.app import create_app
    from smsinbox.web.protocol import JoinedWritesProtocol

    settings = settings_of(ctx, host=host, port=port)
    log_to_stderr(settings)
    try:
        application = create_app(settings)
    except ValueError as error:
        fail(str(error), 2)
    uvicorn.run(
        application,
        host=settings.host,
        port=settings.port,
        log_level=settings.log_level,
        # log_to_stderr has configured uvicorn's loggers: they write through smsinbox's
        # handler, in its format, rather than through handlers of their own.
        log_config=None,
        # uvicorn's access log prints query strings, which carry passwords and tokens;
        # smsinbox logs each request itself without them.
        access_log=False,
        lifespan="on",
        http=JoinedWritesProtocol,
    )


@app.command()
def worker(ctx: typer.Context) -> None:
    """Run the push worker on its own (with push_worker off in `serve`), until stopped."""
    import signal

    settings = settings_of(ctx)
    log_to_stderr(settings)

    async def work(services: Services) -> None:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(signum, stop.set)
        from smsinbox.heap import settle_heap

        settle_heap()
        with metrics_served(settings, services.metrics):
            await services.push_worker.run(stop)

    run(ctx, work)


@contextlib.contextmanager
def metrics_served(settings: Settings, metrics: Metrics) -> Iterator[None]:
    """The worker's /metrics on `host`:`worker_metrics_port` (none when the port is 0)
    while the block runs.

    prometheus_client's own HTTP server, in a thread: a scrape reads counters and
    histograms that take their own locks, and /proc, so it needs nothing of the event
    loop, and a scrape never waits for the worker (nor the worker for a scrape)."""
    if not settings.worker_metrics_port:
        yield
        return
    from prometheus_client import start_http_server

    try:
        server, thread = start_http_server(
            settings.worker_metrics_port, settings.host, registry=metrics.worker_registry()
        )
    except OSError as error:
        fail(f"worker_metrics_port: cannot listen on {settings.host}:"
             f"{settings.worker_metrics_port}: {error.strerror or error}")  # fmt: skip
    log.info("serving /metrics on %s:%d", settings.host, settings.worker_metrics_port)
    try:
        yield
    finally:
        server.shutdown()  # at most half a second: serve_forever's poll interval
        server.server_close()
        thread.join()
