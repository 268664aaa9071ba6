"""The three push formats: how one delivery becomes one HTTP request.

- standard: a JSON POST signed per the Standard Webhooks specification;
- mc5: the MC5 platform's GET (Push MO and Push Status parameters);
- eapi: the EAPI platform's GET of an incoming message.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import functools
import zoneinfo
from typing import Any

import orjson
from standardwebhooks import Webhook

from smsinbox.models import Encoding, MessageStatus
from smsinbox.smpp import coding
from smsinbox.store.push import DueDelivery

FORMATS = ("standard", "mc5", "eapi")
EVENTS = ("mo", "status")

# The MC5 platform's outgoing message status codes.
MC5_STATUS = {
    MessageStatus.COMPLETE: 2,
    MessageStatus.PENDING: 16,
    MessageStatus.SENDING: 11,
    MessageStatus.SCHEDULED: 10,
    MessageStatus.FAILED: 5,
    MessageStatus.SENT: 11,
    MessageStatus.DELIVERED: 2,
    MessageStatus.UNDELIVERABLE: 5,
    MessageStatus.EXPIRED: 3,
    MessageStatus.REJECTED: 8,
}


@dataclasses.dataclass(frozen=True, slots=True)
class PushRequest:
    method: str
    url: str
    params: dict[str, str]
    headers: dict[str, str]
    content: bytes | None


def webhook_id(delivery: DueDelivery) -> str:
    """The same id on every attempt of a delivery: receivers de-duplicate by it."""
    return f"msg_{delivery.id}"


def build(delivery: DueDelivery, *, now: dt.datetime) -> PushRequest:
    if delivery.format == "standard":
        return _standard(delivery, now)
    if delivery.format == "mc5":
        return _mc5(delivery)
    return _eapi(delivery)


def _standard(delivery: DueDelivery, now: dt.datetime) -> PushRequest:
    data: dict[str, Any] = {
        "id": str(delivery.message_id),
        "sequence": delivery.seq,
        "from": delivery.sender,
        "to": delivery.recipient,
        "text": delivery.text,
        "encoding": delivery.encoding.value,
        "receivedAt": _iso(delivery.received_at),
        "replyTo": None if delivery.reply_to_id is None else str(delivery.reply_to_id),
    }
    if delivery.encoding is Encoding.BINARY and delivery.body is not None:
        data["hex"] = delivery.body.hex()
    if delivery.event == "status":
        data["status"] = delivery.status
        data["statusAt"] = _iso(delivery.status_at or delivery.received_at)
    # Compact JSON, non-ASCII as UTF-8, keys in the order written here.
    payload = orjson.dumps(
        {
            "type": "message.received" if delivery.event == "mo" else "message.status",
            "timestamp": now.isoformat().replace("+00:00", "Z"),
            "data": data,
        }
    ).decode()
    identifier = webhook_id(delivery)
    signature = _signer(delivery.secret or "").sign(identifier, now, payload)
    return PushRequest(
        "POST",
        delivery.url,
        {},
        {
            "content-type": "application/json",
            "webhook-id": identifier,
            "webhook-timestamp": str(int(now.timestamp())),
            "webhook-signature": signature,
        },
        payload.encode(),
    )


@functools.lru_cache(maxsize=1024)
def _signer(secret: str) -> Webhook:
    """An endpoint's signer, its secret decoded once rather than on every push."""
    return Webhook(secret)


def _mc5(delivery: DueDelivery) -> PushRequest:
    seconds = str(delivery.received_at // 1000)
    if delivery.event == "mo":
        params = {
            "MOMessageId": str(delivery.message_id),
            "MTMessageId": "" if delivery.reply_to_id is None else str(delivery.reply_to_id),
            "timestamp": seconds,
            "from": delivery.sender,
            "to": delivery.recipient,
            "text": delivery.text,
        }
    else:
        params = {
            "status": delivery.status,
            "statusCode": str(MC5_STATUS.get(delivery.status, 0)),
            "id": str(delivery.message_id),
            "timestamp": str((delivery.status_at or delivery.received_at) // 1000),
            "from": delivery.sender,
            "to": delivery.recipient,
            "text": delivery.text,
            # Counted as the network counts: septets ('€' takes two) or UTF-16 units.
            "numberOfParts": str(coding.count_parts(delivery.text)),
        }
    return PushRequest("GET", delivery.url, params, {}, None)


def _eapi(delivery: DueDelivery) -> PushRequest:
    if delivery.encoding is Encoding.GSM7:
        message = delivery.text
    elif delivery.encoding is Encoding.BINARY:
        message = (delivery.body or b"").hex()
    else:
        message = delivery.text.encode("utf-16-be").hex()
    zone = zoneinfo.ZoneInfo(delivery.time_zone)
    received = dt.datetime.fromtimestamp(delivery.received_at / 1000, zone)
    params = {
        "msisdn": delivery.recipient,
        "sender": delivery.sender,
        "message": message,
        "dca": delivery.encoding.value,
        "msg_id": str(delivery.message_id),
        "source_id": "",
        "referring_batch_id": str(delivery.reply_to_id or 0),
        "received_time": received.strftime("%Y-%m-%d %H:%M:%S"),
    }
    return PushRequest("GET", delivery.url, params, {}, None)


def succeeded(delivery: DueDelivery, status: int, body: bytes) -> bool:
    """2xx is success; the EAPI platform also wants a non-empty body with its 200."""
    if delivery.format == "eapi":
        return status == 200 and bool(body.strip())
    return 200 <= status < 300


def _iso(epoch_ms: int) -> str:
    moment = dt.datetime.fromtimestamp(epoch_ms / 1000, dt.UTC)
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")
