"""The schema, as SQLAlchemy Core tables. Alembic migrations must produce exactly this.

Times are integer epoch milliseconds (UTC) everywhere: they sort, compare and serialise the
same way on both engines, and every dialect derives its own format from them.
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    text,
)

from smsinbox.models import MessageStatus

metadata = MetaData(
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_N_name)s",
        "uq": "uq_%(table_name)s_%(column_0_N_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
        "ck": "ck_%(table_name)s_%(constraint_name)s",
    }
)

# BIGSERIAL (a sequence) on PostgreSQL; on SQLite an INTEGER PRIMARY KEY with AUTOINCREMENT,
# which is the only way SQLite promises never to reuse an id (DESIGN invariant 2).
Id = BigInteger().with_variant(Integer(), "sqlite")

MSISDN = 32  # E.164 is at most 15 digits; short codes and alphanumeric senders fit too.

# Conditions of the partial indexes. SQLite uses a partial index only for a query condition
# written exactly like the index's own, so queries use these same texts.
OUTGOING_DUE = f"status IN ('{MessageStatus.SCHEDULED}', '{MessageStatus.SENDING}')"
PENDING = "state = 'pending'"
# Deleted messages kept as sync tombstones; few at any time, so their index stays small.
TOMBSTONE = "deleted = true"
# Outgoing messages: what incoming ones are threaded onto (their replies).
OUTGOING = "direction = 'out'"
# Messages an upstream or a device named: the ones their de-duplication indexes hold.
WITH_UPSTREAM_ID = "upstream_message_id IS NOT NULL"
FROM_A_DEVICE = "device_id IS NOT NULL"
# What a mysms search matches (text, counterpart) and may filter on besides the account.
SEARCHED_COLUMNS = ("text", "counterpart", "deleted", "locked")

accounts = Table(
    "accounts",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("username", String(128), nullable=False, unique=True),
    Column("password_hash", String(255), nullable=False),
    # active | blocked | needs_activation
    Column("status", String(20), nullable=False),
    Column("time_zone", String(64), nullable=False),
    Column("reseller", String(128), nullable=True),
    Column("created_at", BigInteger, nullable=False),
    Column("password_changed_at", BigInteger, nullable=False),
    # ISO 3166 code whose national number forms the account's users write; NULL: the
    # server's default_region.
    Column("region", String(2), nullable=True),
    sqlite_autoincrement=True,
)

# One narrow row per account that every writer of that account's messages updates first.
# Its row lock (PostgreSQL) or the single writer (SQLite) makes ids, sequence numbers and
# timestamps follow commit order, which is what keeps polling cursors exact.
account_counters = Table(
    "account_counters",
    metadata,
    Column(
        "account_id",
        Id,
        ForeignKey("accounts.id", ondelete="CASCADE"),
        primary_key=True,
        autoincrement=False,
    ),
    Column("last_seq", BigInteger, nullable=False, server_default=text("0")),
    Column("last_received_at", BigInteger, nullable=False, server_default=text("0")),
    Column("last_modseq", BigInteger, nullable=False, server_default=text("0")),
    # Highest modseq of a tombstone purged so far: a device that has not caught up to it
    # can no longer be told about that delete and must resync from scratch.
    Column("purged_modseq", BigInteger, nullable=False, server_default=text("0")),
)

numbers = Table(
    "numbers",
    metadata,
    Column("msisdn", String(MSISDN), primary_key=True),
    Column("account_id", Id, ForeignKey("accounts.id", ondelete="CASCADE"), nullable=False),
    Column("created_at", BigInteger, nullable=False),
    Index(None, "account_id"),
)

upstreams = Table(
    "upstreams",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("name", String(128), nullable=False, unique=True),
    Column("token_hash", String(64), nullable=False, unique=True),
    Column("created_at", BigInteger, nullable=False),
    Column("revoked_at", BigInteger, nullable=True),
    sqlite_autoincrement=True,
)

api_keys = Table(
    "api_keys",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("name", String(128), nullable=False, unique=True),
    Column("key_hash", String(64), nullable=False, unique=True),
    Column("created_at", BigInteger, nullable=False),
    Column("revoked_at", BigInteger, nullable=True),
    sqlite_autoincrement=True,
)

auth_tokens = Table(
    "auth_tokens",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("account_id", Id, ForeignKey("accounts.id", ondelete="CASCADE"), nullable=False),
    Column("api_key_id", Id, ForeignKey("api_keys.id", ondelete="CASCADE"), nullable=False),
    Column("token_hash", String(64), nullable=False, unique=True),
    Column("created_at", BigInteger, nullable=False),
    Column("expires_at", BigInteger, nullable=False),
    Column("revoked_at", BigInteger, nullable=True),
    Index(None, "account_id"),
    sqlite_autoincrement=True,
)

# Browser sessions of the web inbox (an account's user) and console (the operator, no
# account). The cookie carries the token; only its digest is stored, as for auth tokens.
# The CSRF token every form of the session must echo is stored as it is: it proves only
# that a form came from a page of this session, and is useless without the cookie.
web_sessions = Table(
    "web_sessions",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("account_id", Id, ForeignKey("accounts.id", ondelete="CASCADE"), nullable=True),
    Column("token_hash", String(64), nullable=False, unique=True),
    Column("csrf_token", String(64), nullable=False),
    Column("created_at", BigInteger, nullable=False),
    Column("expires_at", BigInteger, nullable=False),
    Column("revoked_at", BigInteger, nullable=True),
    Index(None, "account_id"),
    sqlite_autoincrement=True,
)

devices = Table(
    "devices",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("account_id", Id, ForeignKey("accounts.id", ondelete="CASCADE"), nullable=False),
    Column("name", String(128), nullable=False),
    Column("created_at", BigInteger, nullable=False),
    # The account modseq this device has confirmed it holds (mysms sync).
    Column("acked_modseq", BigInteger, nullable=False, server_default=text("0")),
    Column("last_sync_at", BigInteger, nullable=True),
    Index(None, "account_id"),
    sqlite_autoincrement=True,
)

contacts = Table(
    "contacts",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("account_id", Id, ForeignKey("accounts.id", ondelete="CASCADE"), nullable=False),
    Column("name", String(255), nullable=False),
    Column("created_at", BigInteger, nullable=False),
    Column("modified_at", BigInteger, nullable=False),
    Index(None, "account_id"),
    sqlite_autoincrement=True,
)

contact_numbers = Table(
    "contact_numbers",
    metadata,
    Column("contact_id", Id, ForeignKey("contacts.id", ondelete="CASCADE"), primary_key=True),
    Column("msisdn", String(MSISDN), primary_key=True),
    Index(None, "msisdn"),
)

messages = Table(
    "messages",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("account_id", Id, ForeignKey("accounts.id", ondelete="CASCADE"), nullable=False),
    # Position in the account's commit order (DESIGN invariant 2).
    Column("seq", BigInteger, nullable=False),
    # in | out
    Column("direction", String(3), nullable=False),
    Column("sender", String(MSISDN), nullable=False),
    Column("recipient", String(MSISDN), nullable=False),
    # The other party: the sender of an incoming message, the recipient of an outgoing one.
    Column("counterpart", String(MSISDN), nullable=False),
    Column("text", Text, nullable=False),
    # 7bit | 8bit | 16bit
    Column("encoding", String(5), nullable=False),
    # The exact octets of an 8bit message; its text is only a best-effort reading.
    Column("body", LargeBinary, nullable=True),
    # Id of the outgoing message this one answers. Not a foreign key: the answered message
    # may be pruned by retention while the answer stays.
    Column("reply_to_id", BigInteger, nullable=True),
    Column("upstream_id", Id, ForeignKey("upstreams.id", ondelete="SET NULL"), nullable=True),
    Column("upstream_message_id", String(128), nullable=True),
    # Server receive time, clamped to never go backwards within an account.
    Column("received_at", BigInteger, nullable=False),
    # The time the sending side claims, kept as given.
    Column("sent_at", BigInteger, nullable=True),
    # received | retrieved for incoming; pending | complete | failed ... for outgoing.
    Column("status", String(16), nullable=False),
    # sim | platform | app
    Column("origin", String(8), nullable=False),
    Column("read", Boolean, nullable=False, server_default=text("false")),
    Column("locked", Boolean, nullable=False, server_default=text("false")),
    Column("deleted", Boolean, nullable=False, server_default=text("false")),
    # Bumped on every change so device sync can ask for "everything after N".
    Column("modseq", BigInteger, nullable=False),
    # The modseq of the message's creation: a device behind it has never seen the message.
    Column("created_modseq", BigInteger, nullable=False),
    Column("deleted_at", BigInteger, nullable=True),
    # When `status` last changed.
    Column("status_at", BigInteger, nullable=True),
    # Scheduled sending time of an outgoing message (mysms dateSendOn).
    Column("send_at", BigInteger, nullable=True),
    # A message a device reported (mysms insert or sync), with the device's own id for it.
    Column("device_id", Id, ForeignKey("devices.id", ondelete="SET NULL"), nullable=True),
    Column("device_message_id", String(128), nullable=True),
    Index(None, "account_id", "seq", unique=True),
    # Time cursors (MC5 `since`) and id cursors (EAPI `last_retrieved_id`) both walk one
    # account's messages in commit order; these two indexes make each page a range scan.
    Index(None, "account_id", "received_at", "id"),
    # On PostgreSQL it also carries what a search matches and filters on, so a search reads
    # the account's newest messages from the index alone (store/postgres.py, migration 0010).
    Index(None, "account_id", "id", postgresql_include=list(SEARCHED_COLUMNS)),
    Index(None, "account_id", "counterpart", "id"),
    Index(None, "account_id", "modseq"),
    # Only messages with the ids each guards (see migration 0008): the others cannot collide.
    Index(
        None,
        "upstream_id",
        "upstream_message_id",
        unique=True,
        sqlite_where=text(WITH_UPSTREAM_ID),
        postgresql_where=text(WITH_UPSTREAM_ID),
    ),
    Index(
        None,
        "account_id",
        "device_id",
        "device_message_id",
        unique=True,
        sqlite_where=text(FROM_A_DEVICE),
        postgresql_where=text(FROM_A_DEVICE),
    ),
    # Outgoing messages waiting to be sent: scheduled ones, and local deliveries in flight.
    # Partial, so the dispatcher's look (every second) never touches the other messages.
    Index(
        "ix_messages_outgoing_due",
        "status",
        "send_at",
        "status_at",
        sqlite_where=text(OUTGOING_DUE),
        postgresql_where=text(OUTGOING_DUE),
    ),
    # The latest outgoing message to a counterpart from one of the account's numbers, which
    # an incoming message answers: partial, so the conversation's incoming messages (most
    # of it) are never walked.
    Index(
        "ix_messages_outgoing_by_counterpart",
        "account_id",
        "counterpart",
        "sender",
        "id",
        sqlite_where=text(OUTGOING),
        postgresql_where=text(OUTGOING),
    ),
    # Tombstones by age, so the retention pass finds the accounts that have any to purge
    # without reading every account's messages.
    Index(
        "ix_messages_tombstones",
        "account_id",
        "deleted_at",
        sqlite_where=text(TOMBSTONE),
        postgresql_where=text(TOMBSTONE),
    ),
    sqlite_autoincrement=True,
)

# A conversation shows the start of its last message.
SNIPPET_CHARS = 160

conversations = Table(
    "conversations",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("account_id", Id, ForeignKey("accounts.id", ondelete="CASCADE"), nullable=False),
    Column("counterpart", String(MSISDN), nullable=False),
    Column("message_count", Integer, nullable=False),
    Column("unread_count", Integer, nullable=False),
    Column("unsent_count", Integer, nullable=False),
    Column("last_message_id", BigInteger, nullable=False),
    Column("last_message_at", BigInteger, nullable=False),
    Column("snippet", String(SNIPPET_CHARS), nullable=False),
    Index(None, "account_id", "counterpart", unique=True),
    Index(None, "account_id", "last_message_at"),
    sqlite_autoincrement=True,
)

# Messages for numbers nobody owns, kept until the operator assigns the number
# (DESIGN invariant 3). Same content columns as `messages`, no account.
unrouted = Table(
    "unrouted",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("sender", String(MSISDN), nullable=False),
    Column("recipient", String(MSISDN), nullable=False),
    Column("text", Text, nullable=False),
    Column("encoding", String(5), nullable=False),
    Column("body", LargeBinary, nullable=True),
    Column("reply_ref", BigInteger, nullable=True),
    Column("upstream_id", Id, ForeignKey("upstreams.id", ondelete="SET NULL"), nullable=True),
    Column("upstream_message_id", String(128), nullable=True),
    Column("received_at", BigInteger, nullable=False),
    Column("sent_at", BigInteger, nullable=True),
    Index(None, "recipient", "id"),
    Index(None, "upstream_id", "upstream_message_id", unique=True),
    sqlite_autoincrement=True,
)

# Where an account wants its messages pushed (several endpoints allowed).
push_endpoints = Table(
    "push_endpoints",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("account_id", Id, ForeignKey("accounts.id", ondelete="CASCADE"), nullable=False),
    Column("url", String(2048), nullable=False),
    # standard | mc5 | eapi
    Column("format", String(16), nullable=False),
    # Comma-separated events: mo (incoming messages), status (outgoing message status).
    Column("events", String(32), nullable=False),
    # The Standard Webhooks signing secret (whsec_...); it must be readable to sign.
    Column("secret", String(128), nullable=True),
    Column("enabled", Boolean, nullable=False, server_default=text("true")),
    Column("disabled_reason", String(255), nullable=True),
    # When the current run of failures began; None while deliveries succeed.
    Column("failing_since", BigInteger, nullable=True),
    Column("created_at", BigInteger, nullable=False),
    Index(None, "account_id"),
    sqlite_autoincrement=True,
)

# Commits that queue deliveries notify push workers of other processes on this channel
# (PostgreSQL NOTIFY).
NOTIFY_CHANNEL = "smsinbox_push"
# Incoming messages were stored (PostgreSQL): the web inbox's live pages look for changes.
MAILBOX_CHANNEL = "smsinbox_mailbox"

# The transactional outbox: one row per (message, endpoint, event), written in the same
# transaction as the message (DESIGN invariant 4).
deliveries = Table(
    "deliveries",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("endpoint_id", Id, ForeignKey("push_endpoints.id", ondelete="CASCADE"), nullable=False),
    Column("account_id", Id, ForeignKey("accounts.id", ondelete="CASCADE"), nullable=False),
    # Not a foreign key: the delivery log outlives a pruned message.
    Column("message_id", BigInteger, nullable=False),
    # mo | status
    Column("event", String(8), nullable=False),
    # pending | delivered | dead (retries exhausted or endpoint disabled)
    Column("state", String(12), nullable=False),
    Column("attempts", Integer, nullable=False, server_default=text("0")),
    Column("next_attempt_at", BigInteger, nullable=False),
    Column("created_at", BigInteger, nullable=False),
    Column("delivered_at", BigInteger, nullable=True),
    Column("last_status", Integer, nullable=True),
    Column("last_error", String(255), nullable=True),
    # Partial: the worker looks only at what is still to be sent.
    Index(
        "ix_deliveries_pending",
        "next_attempt_at",
        sqlite_where=text(PENDING),
        postgresql_where=text(PENDING),
    ),
    # An endpoint's pending deliveries in the order they are due: the worker claims per
    # endpoint, as many as its lane has room for (migration 0004).
    Index(
        "ix_deliveries_pending_by_endpoint",
        "endpoint_id",
        "next_attempt_at",
        "id",
        sqlite_where=text(PENDING),
        postgresql_where=text(PENDING),
    ),
    # Whether a message has a delivery to an endpoint (replays), an endpoint's deliveries.
    Index("ix_deliveries_endpoint_message", "endpoint_id", "message_id"),
    Index(None, "account_id", "id"),
    sqlite_autoincrement=True,
)

# Every attempt, for the operator: `smsinbox push deliveries`.
delivery_attempts = Table(
    "delivery_attempts",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("delivery_id", Id, ForeignKey("deliveries.id", ondelete="CASCADE"), nullable=False),
    Column("attempted_at", BigInteger, nullable=False),
    Column("http_status", Integer, nullable=True),
    Column("latency_ms", Integer, nullable=False),
    Column("error", String(255), nullable=True),
    Index(None, "delivery_id"),
    sqlite_autoincrement=True,
)

# SMSCs smsinbox binds to as an ESME (`smsinbox smpp add`). Each delivers through an
# upstream of its own (`smpp:<name>`, with a token nobody holds), which scopes the ids that
# make a redelivered message a duplicate. The password is kept as given: the bind sends it.
smpp_binds = Table(
    "smpp_binds",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("name", String(64), nullable=False, unique=True),
    Column("host", String(255), nullable=False),
    Column("port", Integer, nullable=False),
    Column("tls", Boolean, nullable=False),
    Column("system_id", String(15), nullable=False),
    Column("password", String(8), nullable=False),
    Column("system_type", String(12), nullable=False),
    # receiver | transmitter | transceiver
    Column("mode", String(12), nullable=False),
    Column("address_range", String(40), nullable=False),
    # Requests of ours in flight at once, and at most this many submit_sm a second (0: no
    # limit of ours).
    Column("window", Integer, nullable=False),
    Column("throughput", Integer, nullable=False),
    Column("enquire_link_s", Integer, nullable=False),
    # Recipient prefixes this bind sends to, space-separated; `*` for the rest.
    Column("routes", String(255), nullable=False, server_default=""),
    # What data_coding 0 means at this SMSC (gsm, latin1, ascii), and whether it packs GSM
    # septets eight to seven octets.
    Column("default_alphabet", String(10), nullable=False),
    Column("gsm_packed", Boolean, nullable=False),
    Column("enabled", Boolean, nullable=False),
    Column("upstream_id", Id, ForeignKey("upstreams.id"), nullable=False),
    Column("created_at", BigInteger, nullable=False),
    # What the process running the bind last saw (`smsinbox smpp list` reads it): bound,
    # binding, backing off, stopped; the last error; when the state changed.
    Column("state", String(16), nullable=False),
    Column("last_error", String(255), nullable=False),
    Column("state_at", BigInteger, nullable=True),
    sqlite_autoincrement=True,
)

# Parts of long messages received over SMPP, kept from their deliver_sm_resp until the
# message is whole (or the wait for the rest runs out) and stored; then marked assembled
# and kept a while longer, so a part the SMSC delivers again is recognised, not taken for
# a new message.
smpp_parts = Table(
    "smpp_parts",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("bind_id", Id, ForeignKey("smpp_binds.id", ondelete="CASCADE"), nullable=False),
    Column("source", String(MSISDN), nullable=False),
    Column("destination", String(MSISDN), nullable=False),
    Column("reference", Integer, nullable=False),
    Column("total", Integer, nullable=False),
    Column("sequence", Integer, nullable=False),
    Column("alphabet", String(10), nullable=False),
    # The part's units (smpp/coding.py): joined with the others' before decoding.
    Column("units", LargeBinary, nullable=False),
    Column("received_at", BigInteger, nullable=False),
    Column("assembled_at", BigInteger, nullable=True),
    # A part's place: named, as the convention's name would pass PostgreSQL's 63 octets.
    Index(
        "ix_smpp_parts_place",
        "bind_id",
        "source",
        "destination",
        "reference",
        "total",
        "sequence",
        unique=True,
    ),
    # The sweep: messages waiting too long, and assembled parts kept long enough.
    Index(None, "assembled_at", "received_at"),
    sqlite_autoincrement=True,
)

# The outbound queue: outgoing messages waiting for an SMSC to accept them. A row is due at
# `due_at`; a sender claims it by moving `due_at` past the time its attempt may take, so a
# sender that dies leaves it due again. It leaves the queue when every part is accepted,
# when the SMSC refuses it for good, or when it has waited until `expires_at`.
outbound = Table(
    "outbound",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("account_id", Id, ForeignKey("accounts.id", ondelete="CASCADE"), nullable=False),
    Column(
        "message_id",
        Id,
        ForeignKey("messages.id", ondelete="CASCADE"),
        nullable=False,
        unique=True,
    ),
    Column("registered_delivery", Boolean, nullable=False),
    Column("queued_at", BigInteger, nullable=False),
    Column("expires_at", BigInteger, nullable=False),
    Column("due_at", BigInteger, nullable=False),
    Column("attempts", Integer, nullable=False, server_default=text("0")),
    Column("last_error", String(255), nullable=False, server_default=""),
    Index(None, "due_at"),
    sqlite_autoincrement=True,
)

# The parts of outgoing messages an SMSC accepted, with its id for each: delivery receipts
# name that id, and a message's status follows its parts' (delivered once all are).
sent_parts = Table(
    "sent_parts",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("account_id", Id, ForeignKey("accounts.id", ondelete="CASCADE"), nullable=False),
    Column("message_id", Id, ForeignKey("messages.id", ondelete="CASCADE"), nullable=False),
    Column("part", Integer, nullable=False),
    Column("total", Integer, nullable=False),
    # Not a foreign key: the parts outlive a bind the operator removes.
    Column("bind_id", BigInteger, nullable=False),
    Column("smsc_message_id", String(65), nullable=False),
    # sent, then the receipt's word: delivered, undeliverable, expired, deleted, rejected
    Column("state", String(16), nullable=False),
    Column("error", String(32), nullable=False, server_default=""),
    Column("submitted_at", BigInteger, nullable=False),
    Column("state_at", BigInteger, nullable=False),
    Index(None, "message_id", "part", unique=True),
    Index(None, "smsc_message_id"),
    sqlite_autoincrement=True,
)

# Receipts that came before the submit_sm_resp they are about was recorded (an SMSC may
# send the receipt at once): kept until the part is, then applied to it.
early_receipts = Table(
    "early_receipts",
    metadata,
    Column("id", Id, primary_key=True, autoincrement=True),
    Column("smsc_message_id", String(65), nullable=False),
    Column("state", String(16), nullable=False),
    Column("error", String(32), nullable=False),
    Column("received_at", BigInteger, nullable=False),
    Index(None, "smsc_message_id"),
    Index(None, "received_at"),
    sqlite_autoincrement=True,
)

# EAPI send_sms batches: the messages one call sent, under the id of the first of them.
batch_messages = Table(
    "batch_messages",
    metadata,
    Column(
        "message_id",
        Id,
        ForeignKey("messages.id", ondelete="CASCADE"),
        primary_key=True,
        autoincrement=False,
    ),
    Column("account_id", Id, ForeignKey("accounts.id", ondelete="CASCADE"), nullable=False),
    Column("batch_id", BigInteger, nullable=False),
    Index(None, "account_id", "batch_id"),
)
