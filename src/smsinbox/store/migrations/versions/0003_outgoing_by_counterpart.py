"""outgoing messages by counterpart: reply threading reads only outgoing messages

Every incoming message looks for the latest outgoing message to its sender (the one it
answers). Through the (account_id, counterpart, id) index that meant walking the whole
conversation's incoming messages when nothing had been sent to the sender, which is the
common case: the cost of each message grew with the conversation. This partial index holds
outgoing messages only.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-02
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

OUTGOING = "direction = 'out'"


def upgrade() -> None:
    op.create_index(
        "ix_messages_outgoing_by_counterpart",
        "messages",
        ["account_id", "counterpart", "sender", "id"],
        unique=False,
        sqlite_where=sa.text(OUTGOING),
        postgresql_where=sa.text(OUTGOING),
    )


def downgrade() -> None:
    op.drop_index("ix_messages_outgoing_by_counterpart", table_name="messages")
