"""create_app(settings) -> the ASGI application. Nothing is built at import time."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import TextIO

from starlette.applications import Starlette
from starlette.routing import BaseRoute, Route

from smsinbox.config import Settings
from smsinbox.dialects import eapi, mc5, mysms, openapi
from smsinbox.heap import settle_heap
from smsinbox.services import Services
from smsinbox.upstream.http import inbound_sms
from smsinbox.web import admin, ops
from smsinbox.web.front import Front
from smsinbox.web.requestlog import RequestLog
from smsinbox.webui import routes as webui


def create_app(settings: Settings, *, request_log_to: TextIO | None = None) -> Front:
    """The application; its request log goes to `request_log_to` (default: stderr)."""
    services = Services.build(settings)
    request_log = None
    if settings.access_log and settings.log_level.lower() in ("debug", "info"):
        request_log = RequestLog(request_log_to or sys.stderr, json=settings.log_format == "json")

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await services.start()
        settle_heap()
        stop = asyncio.Event()
        workers = [
            asyncio.create_task(services.retention.run(stop), name="retention"),
            asyncio.create_task(services.dispatcher.run(stop), name="dispatcher"),
            asyncio.create_task(services.inbox.keep_watermarks(stop), name="watermarks"),
            asyncio.create_task(services.live.run(stop), name="live pages"),
        ]
        if settings.push_worker:
            workers.append(asyncio.create_task(services.push_worker.run(stop), name="push"))
        if settings.smpp_binds:
            workers.append(asyncio.create_task(services.smpp.run(stop), name="smpp"))
        try:
            yield
        finally:
            stop.set()
            await asyncio.gather(*workers)
            await services.close()
            if request_log is not None:
                request_log.close()

    routes: list[BaseRoute] = [
        Route("/healthz", ops.healthz, methods=["GET"]),
        Route("/readyz", ops.readyz, methods=["GET"]),
        Route("/metrics", ops.metrics, methods=["GET"]),
        Route("/openapi.json", openapi.openapi_json, methods=["GET"]),
        Route("/inbound/sms", inbound_sms, methods=["GET", "POST"]),
        Route("/services/rest/user/messages", mc5.check_messages, methods=["GET", "POST"]),
        Route("/services/rest/user/allMessages", mc5.check_all_messages, methods=["GET", "POST"]),
        Route("/services/rest/message/sendSingle2", mc5.send_single2, methods=["GET", "POST"]),
    ]
    routes += mysms.routes()
    routes += admin.routes()
    for prefix in ("/eapi", ""):
        routes += [
            Route(f"{prefix}/reception/get_inbox/1/1.1", eapi.get_inbox, methods=["GET", "POST"]),
            Route(
                f"{prefix}/reception/get_inbox/1/1.0", eapi.get_inbox_v10, methods=["GET", "POST"]
            ),
            Route(f"{prefix}/submission/send_sms/2/2.0", eapi.send_sms, methods=["GET", "POST"]),
            Route(
                f"{prefix}/status_reports/get_report/2/2.0",
                eapi.get_report,
                methods=["GET", "POST"],
            ),
        ]
    routes += webui.routes()
    app = Starlette(routes=routes, lifespan=lifespan)
    app.state.services = services
    return Front(
        app,
        services.metrics,
        max_body_bytes=settings.max_body_bytes,
        request_log=request_log,
        noop_route=settings.benchmark_routes,
    )
