"""The messages an account adds itself, with what the caller leaves unsaid filled in.

Incoming messages from upstreams are the ingest path's (core/ingest.py); these are the
account's own: what it sends, and what its device reports from the SIM. Neither is pushed
to the account's endpoints: the account wrote them, it does not need telling.
"""

from __future__ import annotations

from smsinbox.core.encodings import encoding_for
from smsinbox.models import Direction, MessageStatus, NewMessage


def outgoing(
    sender: str,
    recipient: str,
    text: str,
    *,
    status: MessageStatus,
    now: int,
    send_at: int | None = None,
    origin: str = "platform",
    device_id: int | None = None,
) -> NewMessage:
    """A message the account sends; it is read (the account wrote it) and dated when it is
    due to go, which for a scheduled one is its schedule."""
    return NewMessage(
        direction=Direction.OUTGOING,
        sender=sender,
        recipient=recipient,
        counterpart=recipient,
        text=text,
        encoding=encoding_for(text),
        status=status,
        origin=origin,
        read=True,
        sent_at=send_at or now,
        send_at=send_at,
        device_id=device_id,
    )


def reported_by_device(
    own_number: str,
    address: str,
    text: str,
    *,
    incoming: bool,
    sent_at: int | None,
    read: bool,
    device_id: int | None,
    device_message_id: str | None,
) -> NewMessage:
    """A message the account's device received or sent on its SIM: received or complete
    already, and unread only if it came in and the device says so."""
    return NewMessage(
        direction=Direction.INCOMING if incoming else Direction.OUTGOING,
        sender=address if incoming else own_number,
        recipient=own_number if incoming else address,
        counterpart=address,
        text=text,
        encoding=encoding_for(text),
        status=MessageStatus.RECEIVED if incoming else MessageStatus.COMPLETE,
        origin="sim",
        read=read or not incoming,
        sent_at=sent_at,
        device_id=device_id,
        device_message_id=device_message_id,
    )
