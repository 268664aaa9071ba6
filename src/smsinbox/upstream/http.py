"""The HTTP endpoint upstreams deliver incoming messages to.

It is a valid Kannel `get-url` target as is:
``/inbound/sms?token=T&from=%p&to=%P&text=%b&coding=%c&charset=%C&id=%I``
(``%b``, the message as received; ``%a`` squeezes runs of spaces).
Kannel counts only 200/202 as accepted and sends a non-empty answer back as a reply SMS,
so success is 200 with an empty body. Anything else tells the upstream to keep the message:
4xx (with a one-line reason) when retrying cannot help, 503 when it can.
"""

from __future__ import annotations

import logging

from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response

from smsinbox.core.api import Core
from smsinbox.core.caller import Caller
from smsinbox.core.ingest import RawInbound
from smsinbox.dialects.params import UnsupportedMediaType, WireParams
from smsinbox.errors import InvalidInput, LoginLockedOut, StoreUnavailable
from smsinbox.models import IngestOutcome, IngestResult

log = logging.getLogger("smsinbox.inbound")

RETRY_AFTER_SECONDS = "5"
_OUTCOMES = {outcome: outcome.value.encode() for outcome in IngestOutcome}


def _reason(status: int, reason: str, **headers: str) -> Response:
    return PlainTextResponse(reason + "\n", status_code=status, headers=headers)


def _bearer(request: Request) -> str | None:
    # The raw headers, not request.headers: that builds a mapping of them all, and Kannel
    # sends none of this one.
    for name, value in request.scope["headers"]:
        if name == b"authorization":
            scheme, _, credentials = value.decode("latin-1").partition(" ")
            return credentials.strip() if scheme.lower() == "bearer" and credentials else None
    return None


async def inbound_sms(request: Request) -> Response:
    """GET|POST /inbound/sms — upstream (HTTP, Kannel) delivery of one incoming SMS."""
    services: Core = request.app.state.services
    try:
        params = await WireParams.read(request)
        token = _bearer(request) or params.text("token")
        # The scope's (host, port), not request.client: that builds a named tuple of it.
        caller = Caller.of("inbound", request.scope.get("client"))
        attempt = await services.login_guard.admit(caller, None)
        upstream = await services.upstreams.recognise(token)
        if upstream is None:
            await services.login_guard.failed(attempt)
            return _reason(401, "invalid or missing upstream token")
        raw = RawInbound(
            sender=params.text("from"),
            recipient=params.text("to"),
            text=params.octets("text"),
            hex=params.text("hex"),
            encoding=params.text("encoding"),
            coding=params.text("coding"),
            charset=params.text("charset"),
            upstream_message_id=params.text("id"),
            ref=params.text("ref"),
            time=params.text("time"),
        )
        result = await services.ingestor.accept(raw, upstream_id=upstream.id)
    except UnsupportedMediaType as error:
        return _reason(415, f"unsupported content type {error}: send a URL-encoded form")
    except LoginLockedOut as error:
        return _reason(
            429, "too many failed logins, retry later", **{"Retry-After": str(error.retry_after_s)}
        )
    except InvalidInput as error:
        return _reason(400, error.detail)
    except StoreUnavailable:
        return _reason(
            503, "store temporarily unavailable, retry", **{"Retry-After": RETRY_AFTER_SECONDS}
        )
    log.debug("inbound %s id=%s from upstream %s", result.outcome, result.id, upstream.name)
    return _Acknowledged(result)


class _Acknowledged(Response):
    """200 with an empty body and what happened in headers, built as they go on the wire:
    Response's own __init__ renders a body and encodes and checks each header again, a
    tenth of this handler's time."""

    def __init__(self, result: IngestResult) -> None:  # the attributes Response sets
        self.status_code = 200
        self.body = b""
        self.background = None
        self.raw_headers = [
            (b"content-length", b"0"),
            (b"content-type", b"text/plain; charset=utf-8"),  # as Starlette names text
            (b"x-smsinbox-outcome", _OUTCOMES[result.outcome]),
            # Unrouted messages are numbered apart; they get a message id when assigned.
            (b"x-smsinbox-unrouted-id" if result.unrouted else b"x-smsinbox-id",
             b"%d" % result.id),
        ]  # fmt: skip
