"""Ingestion: the one path every incoming message takes, whoever delivers it.

An upstream's parameters become an InboundMessage (validated, decoded), which the store
routes, de-duplicates, threads and commits in one transaction. Only then may the caller
acknowledge the message (DESIGN invariant 1).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Callable

from smsinbox.core.clock import Clock, now_ms
from smsinbox.core.encodings import decode_hex, decode_text, parse_encoding
from smsinbox.core.numbers import normalize_msisdn, normalize_sender
from smsinbox.core.values import parse_count
from smsinbox.errors import DomainError, InvalidInput
from smsinbox.models import InboundMessage, IngestResult
from smsinbox.store import Store

MAX_UPSTREAM_ID = 128

OutcomeListener = Callable[[str], None]


@dataclasses.dataclass(slots=True)  # not frozen: one per message (see InboundMessage)
class RawInbound:
    """An incoming message as an upstream sent it, before any validation.

    `text` is octets because its charset is only known from `charset` (Kannel sends UCS-2
    text as UTF-16BE octets).
    """

    sender: str | None
    recipient: str | None
    text: bytes | None = None
    hex: str | None = None
    encoding: str | None = None
    coding: str | None = None
    charset: str | None = None
    upstream_message_id: str | None = None
    ref: str | None = None
    time: str | None = None


def build_inbound(
    raw: RawInbound, *, upstream_id: int | None, max_chars: int, region: str = ""
) -> InboundMessage:
    """Validate and decode, the numbers read in `region` (the default region); raises
    InvalidInput with the offending field."""
    sender = normalize_sender(raw.sender, "from", region=region)
    recipient = normalize_msisdn(raw.recipient, "to", region=region)
    encoding = parse_encoding(raw.encoding, raw.coding)
    if raw.hex is not None and raw.text is not None:
        raise InvalidInput("give either text or hex, not both", "hex")
    if raw.hex is not None:
        text, body = decode_hex(raw.hex, encoding)
    else:
        text, body = decode_text(raw.text or b"", encoding, raw.charset)
    if len(text) > max_chars:
        raise InvalidInput(f"text is longer than {max_chars} characters", "text")
    return InboundMessage(
        sender=sender,
        recipient=recipient,
        text=text,
        encoding=encoding,
        body=body,
        upstream_id=upstream_id,
        upstream_message_id=_upstream_message_id(raw.upstream_message_id),
        reply_ref=_reply_ref(raw.ref),
        sent_at=parse_sent_time(raw.time),
    )


def _upstream_message_id(value: str | None) -> str | None:
    if value is None or value.strip() == "":
        return None
    value = value.strip()
    if len(value) > MAX_UPSTREAM_ID or not value.isprintable():
        raise InvalidInput(f"id must be at most {MAX_UPSTREAM_ID} printable characters", "id")
    return value


def _reply_ref(value: str | None) -> int | None:
    if value is None or value.strip() in ("", "0"):
        return None  # 0 is how EAPI-style upstreams say "not a reply"
    ref = parse_count(value)
    if ref is None:
        raise InvalidInput("ref must be a positive message id", "ref")
    return ref


def parse_sent_time(value: str | None) -> int | None:
    """Epoch seconds, or a date and time (UTC unless it carries an offset), to epoch ms."""
    if value is None or value.strip() == "":
        return None
    value = value.strip()
    if value.isascii() and value.isdigit():
        seconds = parse_count(value)
        if seconds is None or seconds > 253402300799:  # 9999-12-31
            raise InvalidInput("time is out of range", "time")
        return seconds * 1000
    try:
        moment = dt.datetime.fromisoformat(value)
    except ValueError:
        raise InvalidInput(
            "time must be epoch seconds or 'YYYY-MM-DD HH:MM[:SS]' (UTC)", "time"
        ) from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=dt.UTC)
    return int(moment.timestamp() * 1000)


class Ingestor:
    """Accepts incoming messages from any upstream: HTTP, Kannel, the CLI, later SMPP."""

    def __init__(
        self,
        store: Store,
        *,
        reply_window_s: int,
        max_chars: int,
        default_region: str = "",
        clock: Clock = now_ms,
        on_outcome: OutcomeListener | None = None,
    ) -> None:
        self.store = store
        self.reply_window_ms = reply_window_s * 1000
        self.max_chars = max_chars
        # Upstreams' numbers are read in the default region: an upstream is no account's.
        self.region = default_region
        self.clock = clock
        self._on_outcome = on_outcome or (lambda outcome: None)

    async def accept(self, raw: RawInbound, *, upstream_id: int | None) -> IngestResult:
        """Validate, store durably, and say what happened; raises DomainError on bad input."""
        try:
            inbound = build_inbound(
                raw, upstream_id=upstream_id, max_chars=self.max_chars, region=self.region
            )
        except DomainError:
            self._on_outcome("rejected")
            raise
        return await self.ingest(inbound)

    async def ingest(self, inbound: InboundMessage) -> IngestResult:
        try:
            result = await self.store.ingest_incoming(
                inbound, now=self.clock(), reply_window_ms=self.reply_window_ms
            )
        except DomainError:
            self._on_outcome("failed")
            raise
        self._on_outcome(result.outcome.value)
        return result

    async def assign_unrouted(self, msisdn: str, username: str) -> int:
        """Give the number to the account and deliver what was waiting for it (the number
        read in the default region, as the waiting messages' recipients were)."""
        number = normalize_msisdn(msisdn, region=self.region)
        moved = await self.store.assign_unrouted(
            number, username, now=self.clock(), reply_window_ms=self.reply_window_ms
        )
        for _ in range(moved):
            self._on_outcome("assigned")
        return moved
