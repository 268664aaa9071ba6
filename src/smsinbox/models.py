"""Plain values passed between the core, the store and the dialects."""

from __future__ import annotations

import dataclasses
import enum
from typing import NamedTuple


class AccountStatus(enum.StrEnum):
    ACTIVE = "active"
    BLOCKED = "blocked"
    NEEDS_ACTIVATION = "needs_activation"


class Encoding(enum.StrEnum):
    """How the message body travelled over the air (the EAPI names)."""

    GSM7 = "7bit"
    BINARY = "8bit"
    UCS2 = "16bit"


class Direction(enum.StrEnum):
    INCOMING = "in"
    OUTGOING = "out"


class MessageStatus(enum.StrEnum):
    """Where a message stands: incoming ones received, then retrieved by a poll; outgoing
    ones scheduled, sending (being handed on), pending (queued for an SMSC), then complete
    (delivered to an account here), or sent (accepted by the SMSC) and delivered,
    undeliverable, expired or rejected as its receipts say, or failed (never accepted)."""

    RECEIVED = "received"
    RETRIEVED = "retrieved"
    SCHEDULED = "scheduled"
    PENDING = "pending"
    SENDING = "sending"
    COMPLETE = "complete"
    FAILED = "failed"
    SENT = "sent"
    DELIVERED = "delivered"
    UNDELIVERABLE = "undeliverable"
    EXPIRED = "expired"
    REJECTED = "rejected"


class DeliveryState(enum.StrEnum):
    """Where a push delivery stands: pending (due at its next attempt), delivered, or dead
    (given up: out of attempts, its endpoint disabled, or its message pruned)."""

    PENDING = "pending"
    DELIVERED = "delivered"
    DEAD = "dead"


# Outgoing messages not (yet) sent: they count towards a conversation's "unsent" figure.
UNSENT_STATUSES = frozenset(
    {
        MessageStatus.PENDING,
        MessageStatus.FAILED,
        MessageStatus.SCHEDULED,
        MessageStatus.SENDING,
        MessageStatus.REJECTED,
    }
)


@dataclasses.dataclass(frozen=True, slots=True)
class Account:
    id: int
    username: str
    password_hash: str
    status: AccountStatus
    time_zone: str
    reseller: str | None
    created_at: int
    password_changed_at: int
    # The country whose national forms of numbers the account's users write (GB, DE);
    # None: the server's default_region.
    region: str | None


@dataclasses.dataclass(frozen=True, slots=True)
class AccountSummary:
    """An account as the operator lists it."""

    username: str
    status: AccountStatus
    time_zone: str
    reseller: str | None
    msisdns: tuple[str, ...]
    region: str | None = None


@dataclasses.dataclass(frozen=True, slots=True)
class Credential:
    """A named secret (upstream token or API key) as the operator lists it."""

    id: int
    name: str
    created_at: int
    revoked_at: int | None


# Not frozen: built for every incoming message, and a frozen dataclass's __init__ sets
# each field through object.__setattr__ (3.0 against 0.9 us for ten fields). Nothing
# changes one after it is built; none is hashed.
@dataclasses.dataclass(slots=True)
class InboundMessage:
    """An incoming SMS as an upstream delivered it, validated and decoded."""

    sender: str
    recipient: str
    text: str
    encoding: Encoding
    body: bytes | None = None
    upstream_id: int | None = None
    upstream_message_id: str | None = None
    reply_ref: int | None = None
    sent_at: int | None = None
    # platform (an upstream), sim (the user's own device), app (another account here)
    origin: str = "platform"


class IngestOutcome(enum.StrEnum):
    STORED = "stored"
    DUPLICATE = "duplicate"
    UNROUTED = "unrouted"


@dataclasses.dataclass(slots=True)  # not frozen: one per message (see InboundMessage)
class IngestResult:
    """What happened to an inbound message; `id` is the message id, or the unrouted id."""

    outcome: IngestOutcome
    id: int
    unrouted: bool


class Message(NamedTuple):
    """A stored message. A named tuple: pages of a thousand are built per request."""

    id: int
    account_id: int
    seq: int
    direction: Direction
    sender: str
    recipient: str
    counterpart: str
    text: str
    encoding: Encoding
    body: bytes | None
    reply_to_id: int | None
    upstream_message_id: str | None
    received_at: int
    sent_at: int | None
    status: MessageStatus
    origin: str
    read: bool
    locked: bool
    modseq: int
    created_modseq: int
    deleted: bool
    status_at: int | None
    send_at: int | None
    device_message_id: str | None


@dataclasses.dataclass(frozen=True, slots=True)
class NewMessage:
    """A message an account adds itself: one it sends, or one its own device reports.

    The core decides every field (core/records.py); the store writes it as it is, in the
    account's commit order.
    """

    direction: Direction
    sender: str
    recipient: str
    counterpart: str
    text: str
    encoding: Encoding
    status: MessageStatus
    origin: str
    read: bool
    sent_at: int | None
    send_at: int | None = None
    device_id: int | None = None
    device_message_id: str | None = None


class PolledMessage(NamedTuple):
    """A message as the polling APIs (MC5, EAPI) show it: only the columns they render,
    read for pages of up to a thousand per request."""

    id: int
    direction: Direction
    sender: str
    recipient: str
    text: str
    encoding: Encoding
    body: bytes | None
    reply_to_id: int | None
    received_at: int
    status: MessageStatus


class SyncedMessage(NamedTuple):
    """A message as a device sync shows it: only the columns a change renders and the
    modification sequence numbers that say which change it is, read a thousand at a time."""

    id: int
    direction: Direction
    counterpart: str
    text: str
    received_at: int
    sent_at: int | None
    status: MessageStatus
    status_at: int | None
    origin: str
    read: bool
    locked: bool
    deleted: bool
    modseq: int
    created_modseq: int
    device_message_id: str | None


@dataclasses.dataclass(frozen=True, slots=True)
class UnroutedMessage:
    id: int
    sender: str
    recipient: str
    text: str
    encoding: Encoding
    received_at: int


@dataclasses.dataclass(frozen=True, slots=True)
class Conversation:
    counterpart: str
    message_count: int
    unread_count: int
    unsent_count: int
    last_message_id: int
    last_message_at: int
    snippet: str


@dataclasses.dataclass(frozen=True, slots=True)
class Device:
    id: int
    name: str
    created_at: int
    last_sync_at: int | None


class Contact(NamedTuple):
    id: int
    name: str
    msisdns: tuple[str, ...]


@dataclasses.dataclass(frozen=True, slots=True)
class SmppBind:
    """An SMSC smsinbox binds to, as the operator configured it (`smsinbox smpp add`)."""

    name: str
    host: str
    port: int
    system_id: str
    password: str
    system_type: str = ""
    mode: str = "transceiver"  # receiver | transmitter | transceiver
    address_range: str = ""
    tls: bool = False
    window: int = 10
    throughput: int = 0  # submit_sm a second at most; 0: the SMSC's own limit only
    enquire_link_s: int = 30
    # Recipients whose messages this bind sends: number prefixes, `*` for any the other
    # binds' prefixes do not claim; none: it sends nothing (it may still receive).
    routes: str = ""
    default_alphabet: str = "gsm"  # what data_coding 0 means at this SMSC
    gsm_packed: bool = False
    enabled: bool = True
    id: int = 0
    upstream_id: int = 0
    created_at: int = 0
    state: str = "stopped"  # as the process running it last reported
    last_error: str = ""
    state_at: int | None = None


class SmppPart(NamedTuple):
    """A part of a long message received over SMPP, as kept until the message is whole."""

    sequence: int
    alphabet: str
    units: bytes
    received_at: int


@dataclasses.dataclass(frozen=True, slots=True)
class Outbound:
    """An outgoing message waiting in the queue for an SMSC, as the sender claims it."""

    account_id: int
    message_id: int
    sender: str
    recipient: str
    text: str
    registered_delivery: bool
    attempts: int
    queued_at: int
    expires_at: int
    submitted: frozenset[int]  # its parts the SMSC has accepted already (numbered from 1)


@dataclasses.dataclass(frozen=True, slots=True)
class SentPart:
    """A part the SMSC accepted: which bind sent it and the SMSC's id for it."""

    part: int
    total: int
    bind_id: int
    smsc_message_id: str


@dataclasses.dataclass(frozen=True, slots=True)
class Submission:
    """What one attempt to send a queued message came to: the parts accepted, and either
    the status it ends in (sent, rejected, failed) or, while parts remain, when to try
    again."""

    account_id: int
    message_id: int
    recipient: str  # the message's other party (its conversation)
    resumed: bool  # parts of it were accepted before this attempt
    parts: list[SentPart]
    status: MessageStatus | None  # None: some parts wait for another try
    retry_at: int | None = None
    error: str = ""

    @classmethod
    def of(
        cls,
        message: Outbound,
        parts: list[SentPart],
        status: MessageStatus | None,
        *,
        retry_at: int | None = None,
        error: str = "",
    ) -> Submission:
        return cls(
            message.account_id, message.message_id, message.recipient, bool(message.submitted),
            parts, status, retry_at, error,
        )  # fmt: skip


class Batched(NamedTuple):
    """A message of an EAPI send_sms batch, as its status report shows it."""

    message_id: int
    sender: str
    recipient: str
    text: str
    created_at: int
    status: MessageStatus
    status_at: int | None
