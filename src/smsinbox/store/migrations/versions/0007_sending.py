"""sending: the outbound queue, the parts SMSCs accepted, early receipts, EAPI batches, and
the prefixes each SMPP bind sends to

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-06
"""

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

Id = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.add_column(
        "smpp_binds",
        sa.Column("routes", sa.String(length=255), nullable=False, server_default=""),
    )
    op.create_table(
        "outbound",
        sa.Column("id", Id, autoincrement=True, nullable=False),
        sa.Column("account_id", Id, nullable=False),
        sa.Column("message_id", Id, nullable=False),
        sa.Column("registered_delivery", sa.Boolean(), nullable=False),
        sa.Column("queued_at", sa.BigInteger(), nullable=False),
        sa.Column("expires_at", sa.BigInteger(), nullable=False),
        sa.Column("due_at", sa.BigInteger(), nullable=False),
        sa.Column("attempts", sa.Integer(), server_default=sa.text("0"), nullable=False),
        sa.Column("last_error", sa.String(length=255), server_default="", nullable=False),
        sa.ForeignKeyConstraint(
            ["account_id"], ["accounts.id"], name="fk_outbound_account_id_accounts",
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["message_id"], ["messages.id"], name="fk_outbound_message_id_messages",
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name="pk_outbound"),
        sa.UniqueConstraint("message_id", name="uq_outbound_message_id"),
        sqlite_autoincrement=True,
    )  # fmt: skip
    op.create_index("ix_outbound_due_at", "outbound", ["due_at"], unique=False)
    op.create_table(
        "sent_parts",
        sa.Column("id", Id, autoincrement=True, nullable=False),
        sa.Column("account_id", Id, nullable=False),
        sa.Column("message_id", Id, nullable=False),
        sa.Column("part", sa.Integer(), nullable=False),
        sa.Column("total", sa.Integer(), nullable=False),
        sa.Column("bind_id", sa.BigInteger(), nullable=False),
        sa.Column("smsc_message_id", sa.String(length=65), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("error", sa.String(length=32), server_default="", nullable=False),
        sa.Column("submitted_at", sa.BigInteger(), nullable=False),
        sa.Column("state_at", sa.BigInteger(), nullable=False),
        sa.ForeignKeyConstraint(
            ["account_id"], ["accounts.id"], name="fk_sent_parts_account_id_accounts",
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["message_id"], ["messages.id"], name="fk_sent_parts_message_id_messages",
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name="pk_sent_parts"),
        sqlite_autoincrement=True,
    )  # fmt: skip
    op.create_index(
        "ix_sent_parts_message_id_part", "sent_parts", ["message_id", "part"], unique=True
    )
    op.create_index(
        "ix_sent_parts_smsc_message_id", "sent_parts", ["smsc_message_id"], unique=False
    )
    op.create_table(
        "early_receipts",
        sa.Column("id", Id, autoincrement=True, nullable=False),
        sa.Column("smsc_message_id", sa.String(length=65), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("error", sa.String(length=32), nullable=False),
        sa.Column("received_at", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_early_receipts"),
        sqlite_autoincrement=True,
    )
    op.create_index(
        "ix_early_receipts_smsc_message_id", "early_receipts", ["smsc_message_id"], unique=False
    )
    op.create_index(
        "ix_early_receipts_received_at", "early_receipts", ["received_at"], unique=False
    )
    op.create_table(
        "batch_messages",
        sa.Column("message_id", Id, autoincrement=False, nullable=False),
        sa.Column("account_id", Id, nullable=False),
        sa.Column("batch_id", sa.BigInteger(), nullable=False),
        sa.ForeignKeyConstraint(
            ["message_id"], ["messages.id"], name="fk_batch_messages_message_id_messages",
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["account_id"], ["accounts.id"], name="fk_batch_messages_account_id_accounts",
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("message_id", name="pk_batch_messages"),
    )  # fmt: skip
    op.create_index(
        "ix_batch_messages_account_id_batch_id",
        "batch_messages",
        ["account_id", "batch_id"],
        unique=False,
    )


def downgrade() -> None:
    op.drop_table("batch_messages")
    op.drop_table("early_receipts")
    op.drop_table("sent_parts")
    op.drop_table("outbound")
    with op.batch_alter_table("smpp_binds") as batch:
        batch.drop_column("routes")
