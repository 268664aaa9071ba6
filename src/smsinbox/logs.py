"""The log lines of `smsinbox serve` and `smsinbox worker`: text, or one JSON object a line.

Every record goes to standard error through one handler on the root logger: smsinbox's
own loggers, alembic's, asyncio's, Python's warnings and uvicorn's, whose loggers would
otherwise carry handlers and a format of their own. The request log (web/requestlog.py)
writes its lines in the same two formats itself, without `logging`, for speed.

The outermost layer (web/front.py) puts each request's id in `current_request_id`; the
handler's filter copies it onto each record emitted while that request is handled, so a
traceback can be matched to its request's line.
"""

from __future__ import annotations

import json
import logging
import logging.config
import time
from contextvars import ContextVar
from typing import Any

import orjson

from smsinbox.config import Settings

# Every text line: logging's default `asctime` (local time, milliseconds after a comma),
# the level, the logger and the message. The request log writes the same shape.
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s %(message)s"

# uvicorn's loggers that carry lines to keep (its access log is not kept).
UVICORN_LOGGERS = ("uvicorn", "uvicorn.error", "uvicorn.asgi")

# Bytes, as the request's header carries it: decoded only when a record is emitted.
current_request_id: ContextVar[bytes | None] = ContextVar("smsinbox_request_id", default=None)


def utc_seconds(second: int) -> str:
    """`second` (since the epoch) as ISO 8601 in UTC, without its fraction or zone."""
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))


def utc_time(moment: float) -> str:
    """`moment` (seconds since the epoch) as ISO 8601 in UTC with milliseconds."""
    second = int(moment)
    return f"{utc_seconds(second)}.{int((moment - second) * 1000):03d}Z"


def json_line(fields: dict[str, Any]) -> str:
    """One JSON object, without a newline."""
    try:
        return orjson.dumps(fields).decode()
    except TypeError:
        # A lone surrogate (a file name decoded with surrogateescape) is no UTF-8: escape it
        # rather than lose the line to logging's "--- Logging error ---".
        return json.dumps(fields, default=str)


class RequestIdFilter(logging.Filter):
    """Gives each record `request_id`: the id of the request being handled, or None."""

    def filter(self, record: logging.LogRecord) -> bool:
        request_id = current_request_id.get()
        record.request_id = None if request_id is None else request_id.decode("ascii")
        return True


class TextFormatter(logging.Formatter):
    """TEXT_FORMAT, with ` request_id=ID` after the message of a record emitted during a
    request (before a traceback, which follows on lines of its own)."""

    def __init__(self) -> None:
        super().__init__(TEXT_FORMAT)

    def formatMessage(self, record: logging.LogRecord) -> str:
        line = super().formatMessage(record)
        request_id = getattr(record, "request_id", None)
        return line if request_id is None else f"{line} request_id={request_id}"


class JsonFormatter(logging.Formatter):
    """A record as one JSON object: time (UTC, ISO 8601 with milliseconds), level, logger,
    message, and request_id, exc_info and stack_info when the record has them."""

    def format(self, record: logging.LogRecord) -> str:
        fields: dict[str, Any] = {
            "time": utc_time(record.created),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        request_id = getattr(record, "request_id", None)
        if request_id is not None:
            fields["request_id"] = request_id
        if record.exc_info:
            fields["exc_info"] = self.formatException(record.exc_info)
        elif record.exc_text:
            fields["exc_info"] = record.exc_text
        if record.stack_info:
            fields["stack_info"] = self.formatStack(record.stack_info)
        return json_line(fields)


def logging_config(settings: Settings) -> dict[str, Any]:
    """The `logging.config.dictConfig` of serve and worker, uvicorn's loggers included."""
    formatter = JsonFormatter if settings.log_format == "json" else TextFormatter
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "filters": {"request_id": {"()": RequestIdFilter}},
        "formatters": {"line": {"()": formatter}},
        "handlers": {
            "stderr": {
                "class": "logging.StreamHandler",
                "stream": "ext://sys.stderr",
                "formatter": "line",
                "filters": ["request_id"],
            }
        },
        "root": {"level": settings.log_level.upper(), "handlers": ["stderr"]},
        "loggers": {
            # uvicorn's loggers keep no handler of their own: their records reach the root's.
            **{name: {"handlers": [], "propagate": True} for name in UVICORN_LOGGERS},
            # Its lines carry query strings, which carry passwords: smsinbox logs requests
            # itself (web/requestlog.py). uvicorn turns it off as well with access_log=False.
            "uvicorn.access": {"handlers": [], "propagate": False},
        },
    }


def configure(settings: Settings) -> None:
    """Send every log record to standard error in `settings.log_format`."""
    # The CLI silences logging for administrative commands (cli/base.py); these log.
    logging.disable(logging.NOTSET)
    logging.config.dictConfig(logging_config(settings))
    logging.captureWarnings(True)  # warnings.warn's lines in the same format
