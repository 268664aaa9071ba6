"""The outermost ASGI application: what every request pays before its handler runs.

One layer does what three middlewares and Starlette's router did: the benchmark's no-op
answer, the body size cap, the route lookup, the latency sample and the access log line.
Measured on a saturated `/healthz`, the old stack spent more than its handler and the
response together: a log record formatted and written on every request, a histogram child
looked up by labels, four nested `send` wrappers and an in-order match over every route.

Fixed paths (every hot route) are found by one dict lookup. Paths with parameters
(`/admin/accounts/{username}/...`), wrong methods and unknown paths go to the Starlette
application, which answers them as before (405 with `Allow`, 404), and which also runs the
lifespan.
"""

from __future__ import annotations

import collections
import dataclasses
import logging
import time
from collections.abc import Awaitable, Callable

from prometheus_client.metrics import Histogram
from starlette.applications import Starlette
from starlette.datastructures import State
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route
from starlette.types import Message, Receive, Scope, Send

from smsinbox.metrics import Metrics
from smsinbox.web.requestlog import RequestLog

log = logging.getLogger("smsinbox.http")

NOOP_PATH = "/_bench/noop"
_NOOP_START: Message = {
    "type": "http.response.start",
    "status": 200,
    "headers": [(b"content-length", b"0")],
}
_NOOP_BODY: Message = {"type": "http.response.body", "body": b""}

Handler = Callable[[Request], Awaitable[Response]]


@dataclasses.dataclass(frozen=True, slots=True)
class _Endpoint:
    handler: Handler
    methods: frozenset[str]
    name: str


class Front:
    """Routes fixed paths itself and hands everything else to `app` (see the module)."""

    def __init__(
        self,
        app: Starlette,
        metrics: Metrics,
        *,
        max_body_bytes: int,
        request_log: RequestLog | None,
        noop_route: bool,
    ) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes
        self.request_log = request_log
        self.noop_route = noop_route
        self._durations = metrics.request_duration
        # One histogram child per (route, method, status), looked up once.
        self._samples: dict[tuple[str, str, int], Histogram] = {}
        routes = [route for route in app.routes if isinstance(route, Route)]
        paths = collections.Counter(route.path for route in routes)
        self._fixed = {
            route.path: _Endpoint(
                route.endpoint, frozenset(route.methods or ()), route.endpoint.__name__
            )
            for route in routes
            # Paths with parameters, and paths with a route per method, are Starlette's.
            if not route.param_convertors and paths[route.path] == 1
        }

    @property
    def state(self) -> State:
        """The Starlette application's state (the services live there)."""
        return self.app.state

    @property
    def routes(self) -> list[BaseRoute]:
        """Every route, fixed or not, as the Starlette application holds them."""
        return self.app.routes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)  # lifespan
            return
        path = scope["path"]
        if self.noop_route and path == NOOP_PATH:
            await send(_NOOP_START)
            await send(_NOOP_BODY)
            return
        started = time.perf_counter()
        status = 500
        sent_start = False

        async def send_and_note(message: Message) -> None:
            nonlocal status, sent_start
            if message["type"] == "http.response.start":
                status = message["status"]
                sent_start = True
            await send(message)

        endpoint = self._fixed.get(path)
        name = "unmatched"
        try:
            if not self._body_fits(scope):
                await _too_large(send_and_note)
                return
            counted = _CountingReceive(receive, self.max_body_bytes)
            try:
                if endpoint is not None and scope["method"] in endpoint.methods:
                    name = endpoint.name
                    scope["app"] = self.app
                    scope["endpoint"] = endpoint.handler
                    response = await endpoint.handler(Request(scope, counted, send_and_note))
                    await response(scope, counted, send_and_note)
                else:
                    await self.app(scope, counted, send_and_note)
                    name = getattr(scope.get("endpoint"), "__name__", "unmatched")
            except _BodyTooLarge:
                if not sent_start:
                    await _too_large(send_and_note)
        except Exception:
            log.exception("unhandled error in %s %s", scope["method"], path)
            if not sent_start:
                await _internal_error(send_and_note)
        finally:
            self._record(name, scope, path, status, time.perf_counter() - started)

    def _body_fits(self, scope: Scope) -> bool:
        for header, value in scope["headers"]:
            if header == b"content-length":
                return bool(value.isdigit()) and int(value) <= self.max_body_bytes
        return True

    def _record(self, name: str, scope: Scope, path: str, status: int, elapsed: float) -> None:
        key = (name, scope["method"], status)
        sample = self._samples.get(key)
        if sample is None:
            sample = self._samples[key] = self._durations.labels(name, key[1], str(status))
        sample.observe(elapsed)
        if self.request_log is not None:
            client = scope.get("client")
            # Never the query string: it carries passwords and tokens.
            self.request_log.line(client[0] if client else "-", key[1], path, status, elapsed)


class _CountingReceive:
    """`receive` that stops a body once it has grown past the cap, however it was sent."""

    __slots__ = ("_left", "_receive")

    def __init__(self, receive: Receive, max_bytes: int) -> None:
        self._receive = receive
        self._left = max_bytes

    async def __call__(self) -> Message:
        message = await self._receive()
        if message["type"] == "http.request":
            self._left -= len(message.get("body", b""))
            if self._left < 0:
                raise _BodyTooLarge
        return message


class _BodyTooLarge(BaseException):
    """Not an Exception: a handler's catch-all (MC5 and EAPI answer "internal error" from
    one) must not swallow it, or an oversized body would get a 200 instead of the 413."""


async def _plain(send: Send, status: int, body: bytes) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"text/plain; charset=utf-8"),
                (b"content-length", str(len(body)).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


async def _too_large(send: Send) -> None:
    await _plain(send, 413, b"request body too large\n")


async def _internal_error(send: Send) -> None:
    await _plain(send, 500, b"Internal Server Error")
