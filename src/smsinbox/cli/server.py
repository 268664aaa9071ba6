"""`smsinbox serve` and `smsinbox worker`: the long-running processes."""

from __future__ import annotations

import asyncio
import logging
import sys
from typing import Annotated

import typer

from smsinbox.cli.base import (
    app,
    fail,
    run,
    settings_of,
)
from smsinbox.config import Settings
from smsinbox.services import Services
from smsinbox.web.requestlog import LOG_FORMAT


def log_to_stderr(settings: Settings) -> None:
    """Logging for the long-running commands (serve, worker)."""
    logging.disable(logging.NOTSET)
    logging.basicConfig(level=settings.log_level.upper(), format=LOG_FORMAT, stream=sys.stderr)


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
        await services.push_worker.run(stop)

    run(ctx, work)
