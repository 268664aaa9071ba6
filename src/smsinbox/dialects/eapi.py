"""EAPI get_inbox (seed 003): pipe-delimited text over GET query or POST form.

Every answer is HTTP 200: a status line `code|description|extra`; on success an empty line
and one record per line follow.
"""

from __future__ import annotations

import datetime as dt
import logging
import zoneinfo

from starlette.requests import Request
from starlette.responses import Response

from smsinbox.core.api import Core
from smsinbox.core.caller import Caller
from smsinbox.core.inbox import IdPage
from smsinbox.core.values import parse_count
from smsinbox.dialects import pipe
from smsinbox.dialects.params import UnsupportedMediaType, WireParams
from smsinbox.errors import (
    AccountBlocked,
    AccountNeedsActivation,
    AuthenticationFailed,
    DomainError,
    InvalidInput,
    LoginLockedOut,
    StoreUnavailable,
    UnknownAccount,
)
from smsinbox.models import Encoding, PolledMessage

log = logging.getLogger("smsinbox.eapi")

MEDIA_TYPE = "text/plain; charset=utf-8"
INTERNAL_ERROR = (22, "internal fatal error")
# Order matters: a subclass must come before its base class.
STATUS_LINES: list[tuple[type[DomainError], int, str | None]] = [
    (UnknownAccount, 23, "invalid credentials"),
    (AuthenticationFailed, 23, "invalid credentials"),
    (AccountBlocked, 23, "account blocked"),
    (AccountNeedsActivation, 23, "account not activated"),
    # A lockout is an authentication failure: 40 ("temporarily unavailable") would have
    # clients retry at once. The description tells a person why; clients read the code.
    (LoginLockedOut, 23, "too many failed logins, try again later"),
    (InvalidInput, 24, None),  # MissingParameter too; the description is the error's own
    (StoreUnavailable, 40, "temporarily unavailable"),
]


def status_line(error: DomainError) -> str:
    for kind, code, description in STATUS_LINES:
        if isinstance(error, kind):
            return pipe.line(code, pipe.escape(description or error.detail), "")
    return pipe.line(*INTERNAL_ERROR, "")


def _text(body: str) -> Response:
    return Response(body.encode("utf-8"), media_type=MEDIA_TYPE)


def _last_retrieved_id(raw: str | None) -> int:
    last_retrieved_id = parse_count(raw)
    if last_retrieved_id is None:
        raise InvalidInput("last_retrieved_id must be a non-negative integer", "last_retrieved_id")
    return last_retrieved_id


def local_time(epoch_second: int, zone: zoneinfo.ZoneInfo) -> str:
    """`yyyy-MM-dd HH:mm:ss` in the zone, daylight saving included."""
    return dt.datetime.fromtimestamp(epoch_second, zone).strftime("%Y-%m-%d %H:%M:%S")


def body_of(message: PolledMessage) -> str:
    if message.encoding is Encoding.BINARY:
        octets = message.body if message.body is not None else message.text.encode("latin-1")
        return octets.hex()
    return pipe.escape(message.text)


def render_page(page: IdPage, *, with_encoding: bool) -> str:
    zone = zoneinfo.ZoneInfo(page.account.time_zone)
    times: dict[int, str] = {}  # messages of a page often share their second
    lines = [pipe.line(0, "records to follow", len(page.messages)), ""]
    escape = pipe.escape
    for message in page.messages:
        second = message.received_at // 1000
        local = times.get(second)
        if local is None:
            local = times[second] = local_time(second, zone)
        # Written out as one f-string: a thousand records a page, pipe.line's generator and
        # a list per record cost as much as the rest of the rendering.
        record = (
            f"{message.id}|{escape(message.sender)}|{body_of(message)}|{local}"
            f"|{message.recipient}|{message.reply_to_id or 0}"
        )
        lines.append(f"{record}|{message.encoding.value}" if with_encoding else record)
    return "\n".join(lines) + "\n"


async def _get_inbox(request: Request, *, with_encoding: bool) -> Response:
    services: Core = request.app.state.services
    try:
        try:
            params = await WireParams.read(request)
        except UnsupportedMediaType as error:
            raise InvalidInput(f"unsupported content type {error}") from None
        for name in ("username", "password", "last_retrieved_id"):
            if not params.text(name):
                raise InvalidInput(f"missing required parameter {name}", name)
        page = await services.inbox.messages_after_id(
            params.text("username"),
            params.text("password"),
            _last_retrieved_id(params.text("last_retrieved_id")),
            caller=Caller.of("eapi", request.client),
        )
    except DomainError as error:
        return _text(status_line(error))
    except Exception:
        log.exception("get_inbox failed")
        return _text(pipe.line(*INTERNAL_ERROR, ""))
    return _text(render_page(page, with_encoding=with_encoding))


async def get_inbox(request: Request) -> Response:
    """GET|POST /eapi/reception/get_inbox/1/1.1 (and without /eapi) — EAPI get_inbox."""
    return await _get_inbox(request, with_encoding=True)


async def get_inbox_v10(request: Request) -> Response:
    """GET|POST /eapi/reception/get_inbox/1/1.0 (and without /eapi) — six fields, no encoding."""
    return await _get_inbox(request, with_encoding=False)
