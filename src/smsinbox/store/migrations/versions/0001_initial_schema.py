"""initial schema

Revision ID: 0001
Revises: (none)
Create Date: 2026-11-25
"""

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "accounts",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("username", sa.String(length=128), nullable=False),
        sa.Column("password_hash", sa.String(length=255), nullable=False),
        sa.Column("status", sa.String(length=20), nullable=False),
        sa.Column("time_zone", sa.String(length=64), nullable=False),
        sa.Column("reseller", sa.String(length=128), nullable=True),
        sa.Column("created_at", sa.BigInteger(), nullable=False),
        sa.Column("password_changed_at", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_accounts")),
        sa.UniqueConstraint("username", name=op.f("uq_accounts_username")),
        sqlite_autoincrement=True,
    )
    op.create_table(
        "api_keys",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("name", sa.String(length=128), nullable=False),
        sa.Column("key_hash", sa.String(length=64), nullable=False),
        sa.Column("created_at", sa.BigInteger(), nullable=False),
        sa.Column("revoked_at", sa.BigInteger(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_api_keys")),
        sa.UniqueConstraint("key_hash", name=op.f("uq_api_keys_key_hash")),
        sa.UniqueConstraint("name", name=op.f("uq_api_keys_name")),
        sqlite_autoincrement=True,
    )
    op.create_table(
        "upstreams",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("name", sa.String(length=128), nullable=False),
        sa.Column("token_hash", sa.String(length=64), nullable=False),
        sa.Column("created_at", sa.BigInteger(), nullable=False),
        sa.Column("revoked_at", sa.BigInteger(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_upstreams")),
        sa.UniqueConstraint("name", name=op.f("uq_upstreams_name")),
        sa.UniqueConstraint("token_hash", name=op.f("uq_upstreams_token_hash")),
        sqlite_autoincrement=True,
    )
    op.create_table(
        "account_counters",
        sa.Column(
            "account_id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=False,
            nullable=False,
        ),
        sa.Column("last_seq", sa.BigInteger(), server_default=sa.text("0"), nullable=False),
        sa.Column("last_received_at", sa.BigInteger(), server_default=sa.text("0"), nullable=False),
        sa.Column("last_modseq", sa.BigInteger(), server_default=sa.text("0"), nullable=False),
        sa.Column("purged_modseq", sa.BigInteger(), server_default=sa.text("0"), nullable=False),
        sa.ForeignKeyConstraint(
            ["account_id"],
            ["accounts.id"],
            name=op.f("fk_account_counters_account_id_accounts"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("account_id", name=op.f("pk_account_counters")),
    )
    op.create_table(
        "auth_tokens",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column(
            "account_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False
        ),
        sa.Column(
            "api_key_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False
        ),
        sa.Column("token_hash", sa.String(length=64), nullable=False),
        sa.Column("created_at", sa.BigInteger(), nullable=False),
        sa.Column("expires_at", sa.BigInteger(), nullable=False),
        sa.Column("revoked_at", sa.BigInteger(), nullable=True),
        sa.ForeignKeyConstraint(
            ["account_id"],
            ["accounts.id"],
            name=op.f("fk_auth_tokens_account_id_accounts"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["api_key_id"],
            ["api_keys.id"],
            name=op.f("fk_auth_tokens_api_key_id_api_keys"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_auth_tokens")),
        sa.UniqueConstraint("token_hash", name=op.f("uq_auth_tokens_token_hash")),
        sqlite_autoincrement=True,
    )
    op.create_index(op.f("ix_auth_tokens_account_id"), "auth_tokens", ["account_id"], unique=False)
    op.create_table(
        "contacts",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column(
            "account_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False
        ),
        sa.Column("name", sa.String(length=255), nullable=False),
        sa.Column("created_at", sa.BigInteger(), nullable=False),
        sa.Column("modified_at", sa.BigInteger(), nullable=False),
        sa.ForeignKeyConstraint(
            ["account_id"],
            ["accounts.id"],
            name=op.f("fk_contacts_account_id_accounts"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_contacts")),
        sqlite_autoincrement=True,
    )
    op.create_index(op.f("ix_contacts_account_id"), "contacts", ["account_id"], unique=False)
    op.create_table(
        "conversations",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column(
            "account_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False
        ),
        sa.Column("counterpart", sa.String(length=32), nullable=False),
        sa.Column("message_count", sa.Integer(), nullable=False),
        sa.Column("unread_count", sa.Integer(), nullable=False),
        sa.Column("unsent_count", sa.Integer(), nullable=False),
        sa.Column("last_message_id", sa.BigInteger(), nullable=False),
        sa.Column("last_message_at", sa.BigInteger(), nullable=False),
        sa.Column("snippet", sa.String(length=160), nullable=False),
        sa.ForeignKeyConstraint(
            ["account_id"],
            ["accounts.id"],
            name=op.f("fk_conversations_account_id_accounts"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_conversations")),
        sqlite_autoincrement=True,
    )
    op.create_index(
        op.f("ix_conversations_account_id_counterpart"),
        "conversations",
        ["account_id", "counterpart"],
        unique=True,
    )
    op.create_index(
        op.f("ix_conversations_account_id_last_message_at"),
        "conversations",
        ["account_id", "last_message_at"],
        unique=False,
    )
    op.create_table(
        "devices",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column(
            "account_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False
        ),
        sa.Column("name", sa.String(length=128), nullable=False),
        sa.Column("created_at", sa.BigInteger(), nullable=False),
        sa.Column("acked_modseq", sa.BigInteger(), server_default=sa.text("0"), nullable=False),
        sa.Column("last_sync_at", sa.BigInteger(), nullable=True),
        sa.ForeignKeyConstraint(
            ["account_id"],
            ["accounts.id"],
            name=op.f("fk_devices_account_id_accounts"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_devices")),
        sqlite_autoincrement=True,
    )
    op.create_index(op.f("ix_devices_account_id"), "devices", ["account_id"], unique=False)
    op.create_table(
        "numbers",
        sa.Column("msisdn", sa.String(length=32), nullable=False),
        sa.Column(
            "account_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False
        ),
        sa.Column("created_at", sa.BigInteger(), nullable=False),
        sa.ForeignKeyConstraint(
            ["account_id"],
            ["accounts.id"],
            name=op.f("fk_numbers_account_id_accounts"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("msisdn", name=op.f("pk_numbers")),
    )
    op.create_index(op.f("ix_numbers_account_id"), "numbers", ["account_id"], unique=False)
    op.create_table(
        "push_endpoints",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column(
            "account_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False
        ),
        sa.Column("url", sa.String(length=2048), nullable=False),
        sa.Column("format", sa.String(length=16), nullable=False),
        sa.Column("events", sa.String(length=32), nullable=False),
        sa.Column("secret", sa.String(length=128), nullable=True),
        sa.Column("enabled", sa.Boolean(), server_default=sa.text("true"), nullable=False),
        sa.Column("disabled_reason", sa.String(length=255), nullable=True),
        sa.Column("failing_since", sa.BigInteger(), nullable=True),
        sa.Column("created_at", sa.BigInteger(), nullable=False),
        sa.ForeignKeyConstraint(
            ["account_id"],
            ["accounts.id"],
            name=op.f("fk_push_endpoints_account_id_accounts"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_push_endpoints")),
        sqlite_autoincrement=True,
    )
    op.create_index(
        op.f("ix_push_endpoints_account_id"), "push_endpoints", ["account_id"], unique=False
    )
    op.create_table(
        "unrouted",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("sender", sa.String(length=32), nullable=False),
        sa.Column("recipient", sa.String(length=32), nullable=False),
        sa.Column("text", sa.Text(), nullable=False),
        sa.Column("encoding", sa.String(length=5), nullable=False),
        sa.Column("body", sa.LargeBinary(), nullable=True),
        sa.Column("reply_ref", sa.BigInteger(), nullable=True),
        sa.Column(
            "upstream_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=True
        ),
        sa.Column("upstream_message_id", sa.String(length=128), nullable=True),
        sa.Column("received_at", sa.BigInteger(), nullable=False),
        sa.Column("sent_at", sa.BigInteger(), nullable=True),
        sa.ForeignKeyConstraint(
            ["upstream_id"],
            ["upstreams.id"],
            name=op.f("fk_unrouted_upstream_id_upstreams"),
            ondelete="SET NULL",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_unrouted")),
        sqlite_autoincrement=True,
    )
    op.create_index(op.f("ix_unrouted_recipient_id"), "unrouted", ["recipient", "id"], unique=False)
    op.create_index(
        op.f("ix_unrouted_upstream_id_upstream_message_id"),
        "unrouted",
        ["upstream_id", "upstream_message_id"],
        unique=True,
    )
    op.create_table(
        "contact_numbers",
        sa.Column(
            "contact_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False
        ),
        sa.Column("msisdn", sa.String(length=32), nullable=False),
        sa.ForeignKeyConstraint(
            ["contact_id"],
            ["contacts.id"],
            name=op.f("fk_contact_numbers_contact_id_contacts"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("contact_id", "msisdn", name=op.f("pk_contact_numbers")),
    )
    op.create_index(op.f("ix_contact_numbers_msisdn"), "contact_numbers", ["msisdn"], unique=False)
    op.create_table(
        "deliveries",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column(
            "endpoint_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False
        ),
        sa.Column(
            "account_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False
        ),
        sa.Column("message_id", sa.BigInteger(), nullable=False),
        sa.Column("event", sa.String(length=8), nullable=False),
        sa.Column("state", sa.String(length=12), nullable=False),
        sa.Column("attempts", sa.Integer(), server_default=sa.text("0"), nullable=False),
        sa.Column("next_attempt_at", sa.BigInteger(), nullable=False),
        sa.Column("created_at", sa.BigInteger(), nullable=False),
        sa.Column("delivered_at", sa.BigInteger(), nullable=True),
        sa.Column("last_status", sa.Integer(), nullable=True),
        sa.Column("last_error", sa.String(length=255), nullable=True),
        sa.ForeignKeyConstraint(
            ["account_id"],
            ["accounts.id"],
            name=op.f("fk_deliveries_account_id_accounts"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["endpoint_id"],
            ["push_endpoints.id"],
            name=op.f("fk_deliveries_endpoint_id_push_endpoints"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_deliveries")),
        sqlite_autoincrement=True,
    )
    op.create_index(
        op.f("ix_deliveries_account_id_id"), "deliveries", ["account_id", "id"], unique=False
    )
    op.create_index(
        "ix_deliveries_pending",
        "deliveries",
        ["next_attempt_at"],
        unique=False,
        sqlite_where=sa.text("state = 'pending'"),
        postgresql_where=sa.text("state = 'pending'"),
    )
    op.create_table(
        "messages",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column(
            "account_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False
        ),
        sa.Column("seq", sa.BigInteger(), nullable=False),
        sa.Column("direction", sa.String(length=3), nullable=False),
        sa.Column("sender", sa.String(length=32), nullable=False),
        sa.Column("recipient", sa.String(length=32), nullable=False),
        sa.Column("counterpart", sa.String(length=32), nullable=False),
        sa.Column("text", sa.Text(), nullable=False),
        sa.Column("encoding", sa.String(length=5), nullable=False),
        sa.Column("body", sa.LargeBinary(), nullable=True),
        sa.Column("reply_to_id", sa.BigInteger(), nullable=True),
        sa.Column(
            "upstream_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=True
        ),
        sa.Column("upstream_message_id", sa.String(length=128), nullable=True),
        sa.Column("received_at", sa.BigInteger(), nullable=False),
        sa.Column("sent_at", sa.BigInteger(), nullable=True),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("origin", sa.String(length=8), nullable=False),
        sa.Column("read", sa.Boolean(), server_default=sa.text("false"), nullable=False),
        sa.Column("locked", sa.Boolean(), server_default=sa.text("false"), nullable=False),
        sa.Column("deleted", sa.Boolean(), server_default=sa.text("false"), nullable=False),
        sa.Column("modseq", sa.BigInteger(), nullable=False),
        sa.Column("created_modseq", sa.BigInteger(), nullable=False),
        sa.Column("deleted_at", sa.BigInteger(), nullable=True),
        sa.Column("status_at", sa.BigInteger(), nullable=True),
        sa.Column("send_at", sa.BigInteger(), nullable=True),
        sa.Column("device_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=True),
        sa.Column("device_message_id", sa.String(length=128), nullable=True),
        sa.ForeignKeyConstraint(
            ["account_id"],
            ["accounts.id"],
            name=op.f("fk_messages_account_id_accounts"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["device_id"],
            ["devices.id"],
            name=op.f("fk_messages_device_id_devices"),
            ondelete="SET NULL",
        ),
        sa.ForeignKeyConstraint(
            ["upstream_id"],
            ["upstreams.id"],
            name=op.f("fk_messages_upstream_id_upstreams"),
            ondelete="SET NULL",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_messages")),
        sqlite_autoincrement=True,
    )
    op.create_index(
        op.f("ix_messages_account_id_counterpart_id"),
        "messages",
        ["account_id", "counterpart", "id"],
        unique=False,
    )
    op.create_index(
        op.f("ix_messages_account_id_device_id_device_message_id"),
        "messages",
        ["account_id", "device_id", "device_message_id"],
        unique=True,
    )
    op.create_index(
        op.f("ix_messages_account_id_id"), "messages", ["account_id", "id"], unique=False
    )
    op.create_index(
        op.f("ix_messages_account_id_modseq"), "messages", ["account_id", "modseq"], unique=False
    )
    op.create_index(
        op.f("ix_messages_account_id_received_at_id"),
        "messages",
        ["account_id", "received_at", "id"],
        unique=False,
    )
    op.create_index(
        op.f("ix_messages_account_id_seq"), "messages", ["account_id", "seq"], unique=True
    )
    op.create_index(
        "ix_messages_outgoing_due",
        "messages",
        ["status", "send_at", "status_at"],
        unique=False,
        sqlite_where=sa.text("status IN ('scheduled', 'sending')"),
        postgresql_where=sa.text("status IN ('scheduled', 'sending')"),
    )
    op.create_index(
        op.f("ix_messages_upstream_id_upstream_message_id"),
        "messages",
        ["upstream_id", "upstream_message_id"],
        unique=True,
    )
    op.create_table(
        "delivery_attempts",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column(
            "delivery_id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False
        ),
        sa.Column("attempted_at", sa.BigInteger(), nullable=False),
        sa.Column("http_status", sa.Integer(), nullable=True),
        sa.Column("latency_ms", sa.Integer(), nullable=False),
        sa.Column("error", sa.String(length=255), nullable=True),
        sa.ForeignKeyConstraint(
            ["delivery_id"],
            ["deliveries.id"],
            name=op.f("fk_delivery_attempts_delivery_id_deliveries"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_delivery_attempts")),
        sqlite_autoincrement=True,
    )
    op.create_index(
        op.f("ix_delivery_attempts_delivery_id"), "delivery_attempts", ["delivery_id"], unique=False
    )
    _create_search_index()


def downgrade() -> None:
    _drop_search_index()
    op.drop_index(op.f("ix_delivery_attempts_delivery_id"), table_name="delivery_attempts")
    op.drop_table("delivery_attempts")
    op.drop_index(op.f("ix_messages_upstream_id_upstream_message_id"), table_name="messages")
    op.drop_index(
        "ix_messages_outgoing_due",
        table_name="messages",
        sqlite_where=sa.text("status IN ('scheduled', 'sending')"),
        postgresql_where=sa.text("status IN ('scheduled', 'sending')"),
    )
    op.drop_index(op.f("ix_messages_account_id_seq"), table_name="messages")
    op.drop_index(op.f("ix_messages_account_id_received_at_id"), table_name="messages")
    op.drop_index(op.f("ix_messages_account_id_modseq"), table_name="messages")
    op.drop_index(op.f("ix_messages_account_id_id"), table_name="messages")
    op.drop_index(op.f("ix_messages_account_id_device_id_device_message_id"), table_name="messages")
    op.drop_index(op.f("ix_messages_account_id_counterpart_id"), table_name="messages")
    op.drop_table("messages")
    op.drop_index(
        "ix_deliveries_pending",
        table_name="deliveries",
        sqlite_where=sa.text("state = 'pending'"),
        postgresql_where=sa.text("state = 'pending'"),
    )
    op.drop_index(op.f("ix_deliveries_account_id_id"), table_name="deliveries")
    op.drop_table("deliveries")
    op.drop_index(op.f("ix_contact_numbers_msisdn"), table_name="contact_numbers")
    op.drop_table("contact_numbers")
    op.drop_index(op.f("ix_unrouted_upstream_id_upstream_message_id"), table_name="unrouted")
    op.drop_index(op.f("ix_unrouted_recipient_id"), table_name="unrouted")
    op.drop_table("unrouted")
    op.drop_index(op.f("ix_push_endpoints_account_id"), table_name="push_endpoints")
    op.drop_table("push_endpoints")
    op.drop_index(op.f("ix_numbers_account_id"), table_name="numbers")
    op.drop_table("numbers")
    op.drop_index(op.f("ix_devices_account_id"), table_name="devices")
    op.drop_table("devices")
    op.drop_index(op.f("ix_conversations_account_id_last_message_at"), table_name="conversations")
    op.drop_index(op.f("ix_conversations_account_id_counterpart"), table_name="conversations")
    op.drop_table("conversations")
    op.drop_index(op.f("ix_contacts_account_id"), table_name="contacts")
    op.drop_table("contacts")
    op.drop_index(op.f("ix_auth_tokens_account_id"), table_name="auth_tokens")
    op.drop_table("auth_tokens")
    op.drop_table("account_counters")
    op.drop_table("upstreams")
    op.drop_table("api_keys")
    op.drop_table("accounts")


# Full-text search over message text and addresses (substring, 3+ characters). Not in the
# SQLAlchemy metadata: each engine does it its own way.
SQLITE_SEARCH = [
    "CREATE VIRTUAL TABLE messages_search USING fts5(owner, text, counterpart, tokenize='trigram')",
    """CREATE TRIGGER messages_search_insert AFTER INSERT ON messages BEGIN
        INSERT INTO messages_search (rowid, owner, text, counterpart)
        VALUES (new.id, 'a' || new.account_id || 'z', new.text, new.counterpart);
    END""",
    """CREATE TRIGGER messages_search_delete AFTER DELETE ON messages BEGIN
        DELETE FROM messages_search WHERE rowid = old.id;
    END""",
    """CREATE TRIGGER messages_search_update AFTER UPDATE OF text, counterpart, account_id
        ON messages BEGIN
        UPDATE messages_search SET owner = 'a' || new.account_id || 'z', text = new.text,
            counterpart = new.counterpart WHERE rowid = old.id;
    END""",
]
POSTGRES_SEARCH = [
    "CREATE EXTENSION IF NOT EXISTS pg_trgm",
    "CREATE INDEX ix_messages_text_trgm ON messages USING gin (text gin_trgm_ops)",
    "CREATE INDEX ix_messages_counterpart_trgm ON messages USING gin (counterpart gin_trgm_ops)",
]


def _create_search_index() -> None:
    dialect = op.get_bind().dialect.name
    for statement in SQLITE_SEARCH if dialect == "sqlite" else POSTGRES_SEARCH:
        op.execute(statement)


def _drop_search_index() -> None:
    if op.get_bind().dialect.name == "sqlite":
        for name in ("insert", "delete", "update"):
            op.execute(f"DROP TRIGGER IF EXISTS messages_search_{name}")
        op.execute("DROP TABLE IF EXISTS messages_search")
    else:
        op.execute("DROP INDEX IF EXISTS ix_messages_text_trgm")
        op.execute("DROP INDEX IF EXISTS ix_messages_counterpart_trgm")
