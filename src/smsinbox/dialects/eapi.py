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

from smsinbox.core import gsm
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
    BatchTooLarge,
    DomainError,
    InvalidInput,
    LoginLockedOut,
    SenderWithoutNumber,
    StoreUnavailable,
    UnknownAccount,
)
from smsinbox.models import Batched, Encoding, MessageStatus, PolledMessage
from smsinbox.smpp.coding import count_parts as coding_parts

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
    (BatchTooLarge, 201, "maximum batch size exceeded"),
    (SenderWithoutNumber, 24, "the account has no number to send from"),
    (InvalidInput, 24, None),  # MissingParameter too; the description is the error's own
    (StoreUnavailable, 40, "temporarily unavailable"),
]


def status_line(error: DomainError) -> str:
    for kind, code, description in STATUS_LINES:
        if isinstance(error, kind):
            return pipe.line(code, pipe.escape(description or error.detail), "")
    return pipe.line(*INTERNAL_ERROR, "")


async def _read(request: Request, *required: str) -> WireParams:
    """The request's parameters, each of `required` present and not empty."""
    try:
        params = await WireParams.read(request)
    except UnsupportedMediaType as error:
        raise InvalidInput(f"unsupported content type {error}") from None
    for name in required:
        if not params.text(name):
            raise InvalidInput(f"missing required parameter {name}", name)
    return params


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
        params = await _read(request, "username", "password", "last_retrieved_id")
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


# get_report's status_code of each message status (the platform's report codes).
REPORT_CODES = {
    MessageStatus.SCHEDULED: 0,  # in progress
    MessageStatus.SENDING: 0,
    MessageStatus.PENDING: 0,
    MessageStatus.SENT: 10,  # delivered upstream
    MessageStatus.COMPLETE: 11,  # delivered to mobile (an account on this server)
    MessageStatus.DELIVERED: 11,
    MessageStatus.FAILED: 50,  # delivery failed: generic failure (no SMSC took it in time)
    MessageStatus.UNDELIVERABLE: 51,  # delivery to phone failed
    MessageStatus.REJECTED: 52,  # delivery to network failed (the SMSC refused it)
    MessageStatus.EXPIRED: 53,  # message expired
}
FINAL_REPORTS = frozenset({11, 50, 51, 52, 53})
REPORT_FIELDS = ("body", "completed_time", "created_time", "credits", "origin_address",
                 "source_id")  # fmt: skip


def _send_text(params: WireParams) -> str:
    """The message as text: 7bit as given (only characters GSM 7-bit has), 16bit as the
    hexadecimal UCS-2 octets the platform takes."""
    message = params.text("message")
    if not message:
        raise InvalidInput("missing required parameter message", "message")
    dca = (params.text("dca") or "7bit").lower()
    if dca == "7bit":
        if not gsm.is_gsm(message):
            raise InvalidInput("message has characters 7bit cannot carry: send it as 16bit", "dca")
        return message
    if dca == "16bit":
        try:
            return bytes.fromhex(message).decode("utf-16-be")
        except ValueError:
            raise InvalidInput(
                "a 16bit message must be hexadecimal UCS-2 octets", "message"
            ) from None
    if dca == "8bit":
        raise InvalidInput("8bit messages cannot be sent here", "dca")
    raise InvalidInput("dca must be 7bit, 8bit or 16bit", "dca")


def _flag(params: WireParams, name: str, default: bool) -> bool:
    value = params.text(name)
    if value is None or value == "":
        return default
    if value not in ("0", "1"):
        raise InvalidInput(f"{name} must be 0 or 1", name)
    return value == "1"


def _send_time(raw: str | None) -> dt.datetime | None:
    """send_time, `yyyy-MM-dd HH:mm:ss` in the account's time zone."""
    if not raw:
        return None
    try:
        return dt.datetime.strptime(raw, "%Y-%m-%d %H:%M:%S")
    except ValueError:
        raise InvalidInput("send_time must be yyyy-MM-dd HH:mm:ss", "send_time") from None


async def send_sms(request: Request) -> Response:
    """GET|POST /eapi/submission/send_sms/2/2.0 (and without /eapi) — EAPI send_sms.

    `msisdn` may list recipients separated by commas; each gets the message, all under one
    batch id. `routing_group`, `repliable`, `source_id`, `msg_class` and `stop_dup_id` are
    accepted and not used."""
    services: Core = request.app.state.services
    try:
        params = await _read(request, "username", "password", "message", "msisdn")
        text = _send_text(params)
        batch_id = await services.send_api.send_batch(
            params.text("username"),
            params.text("password"),
            recipients=[found for found in (params.text("msisdn") or "").split(",") if found],
            text=text,
            sender=params.text("sender"),
            send_at_local=_send_time(params.text("send_time")),
            want_report=_flag(params, "want_report", True),
            caller=Caller.of("eapi", request.client),
        )
    except DomainError as error:
        return _text(status_line(error))
    except Exception:
        log.exception("send_sms failed")
        return _text(pipe.line(*INTERNAL_ERROR, ""))
    return _text(pipe.line(0, "IN_PROGRESS", batch_id) + "\n")


def _report_line(message: Batched, fields: list[str], zone: zoneinfo.ZoneInfo) -> str:
    code = REPORT_CODES.get(message.status, 0)
    values: list[object] = [message.recipient, code]
    for field in fields:
        if field == "body":
            values.append(pipe.escape(message.text))
        elif field == "created_time":
            values.append(local_time(message.created_at // 1000, zone))
        elif field == "completed_time":
            done = message.status_at if code in FINAL_REPORTS and message.status_at else None
            values.append("" if done is None else local_time(done // 1000, zone))
        elif field == "credits":
            values.append(coding_parts(message.text))
        elif field == "origin_address":
            values.append(pipe.escape(message.sender))
        else:  # source_id: not kept
            values.append("")
    return pipe.line(*values)


async def get_report(request: Request) -> Response:
    """GET|POST /eapi/status_reports/get_report/2/2.0 (and without /eapi) — the status of
    each message of a send_sms batch: `msisdn|status_code`, then the optional fields asked
    for. A batch the account does not have has no rows."""
    services: Core = request.app.state.services
    try:
        params = await _read(request, "username", "password", "batch_id")
        batch_id = parse_count(params.text("batch_id"))
        if batch_id is None:
            raise InvalidInput("batch_id must be a non-negative integer", "batch_id")
        fields = [found.strip() for found in (params.text("optional_fields") or "").split(",")
                  if found.strip()]  # fmt: skip
        for field in fields:
            if field not in REPORT_FIELDS:
                raise InvalidInput(f"unknown optional field {field}", "optional_fields")
        account, batch = await services.send_api.batch_report(
            params.text("username"), params.text("password"), batch_id,
            msisdn=params.text("msisdn"), caller=Caller.of("eapi", request.client),
        )  # fmt: skip
    except DomainError as error:
        return _text(status_line(error))
    except Exception:
        log.exception("get_report failed")
        return _text(pipe.line(*INTERNAL_ERROR, ""))
    zone = zoneinfo.ZoneInfo(account.time_zone)
    lines = [pipe.line(0, "Results to follow"), ""]
    lines += [_report_line(message, fields, zone) for message in batch]
    return _text("\n".join(lines) + "\n")
