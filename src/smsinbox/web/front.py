"""The outermost ASGI application: what every request pays before its handler runs.

One layer does what three middlewares and Starlette's router did: the benchmark's no-op
answer, the body size cap, the route lookup, the latency sample and the access log line.
Measured on a saturated `/healthz`, the old stack spent more than its handler and the
response together: a log record formatted and written on every request, a histogram child
looked up by labels, four nested `send` wrappers and an in-order match over every route.
A fixed path's answer is sent by this layer itself, its status read from the response,
so the common answer passes through no wrapper at all; a chunked body alone is counted
as it arrives (a content-length is checked once, and the parser delivers no more).

Each request gets an id: the client's (or its proxy's) `X-Request-ID` when it is sane
(visible ASCII, 1 to 128 characters), else this process's random prefix and a count
(0.13 µs to make, where a uuid4 takes 2.3 µs). Every answer carries it back as
`X-Request-ID`, the request log writes it, and log records emitted while the request is
handled carry it (smsinbox.logs). Making it, the context variable and the header cost a
`/healthz` request about 0.9 µs of this layer's 2.9 µs, driven in-process on a 2-core VM
(2026-12-07), against some 130 µs of server CPU per request over a socket there. The
benchmark's no-op answer has none: it measures the server without this layer.

Fixed paths (every hot route) are found by one dict lookup. Paths with parameters
(`/admin/accounts/{username}/...`), wrong methods and unknown paths go to the Starlette
application, which answers them as before (405 with `Allow`, 404), and which also runs the
lifespan.
"""

from __future__ import annotations

import collections
import dataclasses
import itertools
import logging
import re
import secrets
import time
from collections.abc import Awaitable, Callable

from starlette.applications import Starlette
from starlette.datastructures import State
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from smsinbox.logs import current_request_id
from smsinbox.metrics import LoopSeries, Metrics
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
# The answer's header naming the request: (b"x-request-id", id).
Tag = tuple[bytes, bytes]
# An id a client may choose: visible ASCII, no space (the text log separates by spaces).
_sane_request_id = re.compile(rb"[!-~]{1,128}").fullmatch


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
        # Ids of this process's requests: unique across restarts and processes with
        # overwhelming likelihood (48 random bits), cheap to make.
        self._id_prefix = secrets.token_hex(6).encode() + b"-"
        self._id_numbers = itertools.count(1)
        # One histogram child per (route, method, status), looked up once.
        self._samples: dict[tuple[str, str, int], LoopSeries] = {}
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
        endpoint = self._fixed.get(path)
        body, request_id = _read_head(scope, self.max_body_bytes)
        if request_id is None:
            request_id = self._id_prefix + b"%x" % next(self._id_numbers)
        # Never reset: uvicorn runs each request in a task of its own, whose context is a
        # copy that ends with it (a reset would cost as much again as the set).
        current_request_id.set(request_id)
        tag = (b"x-request-id", request_id)
        if body is _TOO_LARGE:
            name, status = "unmatched", 413
            await _too_large(send, tag)
        else:
            if body is _UNFRAMED:
                receive = _CountingReceive(receive, self.max_body_bytes)
            if endpoint is not None and scope["method"] in endpoint.methods:
                name = endpoint.name
                status = await self._answer(endpoint, scope, receive, send, tag)
            else:
                name, status = await self._delegate(scope, receive, send, tag)
        self._record(name, scope, path, status, time.perf_counter() - started, request_id)

    async def _answer(
        self, endpoint: _Endpoint, scope: Scope, receive: Receive, send: Send, tag: Tag
    ) -> int:
        """A fixed path's handler and its answer, tagged with the request's id; the status
        sent."""
        scope["app"] = self.app
        scope["endpoint"] = endpoint.handler
        try:
            response = await endpoint.handler(Request(scope, receive, send))
        except _BodyTooLarge:
            await _too_large(send, tag)
            return 413
        except Exception:
            log.exception("unhandled error in %s %s", scope["method"], scope["path"])
            await _internal_error(send, tag)
            return 500
        if response.background is None and type(response).__call__ is Response.__call__:
            # What Response.__call__ sends, without its wrapper round `send` per message.
            # A copy of the headers: a response may be shared (healthz answers one).
            try:
                await send({"type": "http.response.start", "status": response.status_code,
                            "headers": [*response.raw_headers, tag]})  # fmt: skip
                await send({"type": "http.response.body", "body": response.body})
            except Exception:
                log.exception("unhandled error in %s %s", scope["method"], scope["path"])
            return response.status_code
        return await self._stream(response, scope, receive, send, tag)

    async def _stream(
        self, app: ASGIApp, scope: Scope, receive: Receive, send: Send, tag: Tag
    ) -> int:
        """`app` answers on its own (Starlette's router, a streamed response), its answer
        tagged with the request's id; the status it sent, or an answer for the error it
        raised before it sent one."""
        status = 500
        sent_start = False

        async def send_and_note(message: Message) -> None:
            nonlocal status, sent_start
            if message["type"] == "http.response.start":
                status = message["status"]
                sent_start = True
                message = {**message, "headers": [*message.get("headers", ()), tag]}
            await send(message)

        try:
            await app(scope, receive, send_and_note)
        except _BodyTooLarge:
            if not sent_start:
                await _too_large(send, tag)
                return 413
        except Exception:
            log.exception("unhandled error in %s %s", scope["method"], scope["path"])
            if not sent_start:
                await _internal_error(send, tag)
                return 500
        return status

    async def _delegate(
        self, scope: Scope, receive: Receive, send: Send, tag: Tag
    ) -> tuple[str, int]:
        """Starlette's router: paths with parameters, wrong methods, unknown paths."""
        status = await self._stream(self.app, scope, receive, send, tag)
        return getattr(scope.get("endpoint"), "__name__", "unmatched"), status

    def _record(
        self, name: str, scope: Scope, path: str, status: int, elapsed: float, request_id: bytes
    ) -> None:
        key = (name, scope["method"], status)
        sample = self._samples.get(key)
        if sample is None:
            sample = self._samples[key] = self._durations.labels(name, key[1], str(status))
        sample.observe(elapsed)
        if self.request_log is not None:
            client = scope.get("client")
            # Never the query string: it carries passwords and tokens.
            self.request_log.line(
                client[0] if client else "-", key[1], path, status, elapsed, request_id
            )


# How a request's body is delimited, as far as the size cap is concerned.
_FRAMED = "framed"  # by a content-length within the cap, or no body at all
_UNFRAMED = "unframed"  # chunked: counted as it arrives
_TOO_LARGE = "too large"  # a content-length over the cap, or one that is not a number


def _read_head(scope: Scope, max_bytes: int) -> tuple[str, bytes | None]:
    """How the body is framed, and the client's request id if it sent a sane one: one
    pass over the headers for both."""
    # HTTP/1.1 requests carry a body only with content-length or transfer-encoding, and
    # the parser delivers no more than a content-length says.
    framing = _FRAMED
    request_id = None
    for header, value in scope["headers"]:
        if header == b"content-length":
            if not (value.isdigit() and int(value) <= max_bytes):
                framing = _TOO_LARGE
        elif header == b"transfer-encoding":
            if framing is _FRAMED:
                framing = _UNFRAMED
        elif header == b"x-request-id" and _sane_request_id(value) is not None:
            request_id = value
    return framing, request_id


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


async def _plain(send: Send, status: int, body: bytes, tag: Tag) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"text/plain; charset=utf-8"),
                (b"content-length", str(len(body)).encode()),
                tag,
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


async def _too_large(send: Send, tag: Tag) -> None:
    await _plain(send, 413, b"request body too large\n", tag)


async def _internal_error(send: Send, tag: Tag) -> None:
    await _plain(send, 500, b"Internal Server Error", tag)
