"""create_app(settings) -> the ASGI application. Nothing is built at import time."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.routing import Route

from smsinbox.config import Settings
from smsinbox.dialects import eapi, mc5, mysms
from smsinbox.services import Services
from smsinbox.upstream.http import inbound_sms
from smsinbox.web import admin, openapi, ops
from smsinbox.web.middleware import AccessLog, BodyLimit, NoopRoute


def create_app(settings: Settings) -> Starlette:
    services = Services.build(settings)

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await services.start()
        stop = asyncio.Event()
        workers = [
            asyncio.create_task(services.retention.run(stop), name="retention"),
            asyncio.create_task(services.dispatcher.run(stop), name="dispatcher"),
        ]
        if settings.push_worker:
            workers.append(asyncio.create_task(services.push_worker.run(stop), name="push"))
        try:
            yield
        finally:
            stop.set()
            await asyncio.gather(*workers)
            await services.close()

    routes = [
        Route("/healthz", ops.healthz, methods=["GET"]),
        Route("/readyz", ops.readyz, methods=["GET"]),
        Route("/metrics", ops.metrics, methods=["GET"]),
        Route("/openapi.json", openapi.openapi_json, methods=["GET"]),
        Route("/inbound/sms", inbound_sms, methods=["GET", "POST"]),
        Route("/services/rest/user/messages", mc5.check_messages, methods=["GET", "POST"]),
        Route("/services/rest/user/allMessages", mc5.check_all_messages, methods=["GET", "POST"]),
    ]
    routes += mysms.routes()
    routes += admin.routes()
    for prefix in ("/eapi", ""):
        routes += [
            Route(f"{prefix}/reception/get_inbox/1/1.1", eapi.get_inbox, methods=["GET", "POST"]),
            Route(
                f"{prefix}/reception/get_inbox/1/1.0", eapi.get_inbox_v10, methods=["GET", "POST"]
            ),
        ]
    middleware = [
        Middleware(AccessLog, metrics=services.metrics),
        Middleware(BodyLimit, max_bytes=settings.max_body_bytes),
    ]
    if settings.benchmark_routes:
        middleware.insert(0, Middleware(NoopRoute))
    app = Starlette(routes=routes, lifespan=lifespan, middleware=middleware)
    app.state.services = services
    return app
