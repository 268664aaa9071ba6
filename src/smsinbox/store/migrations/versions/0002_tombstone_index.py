"""tombstone index: the retention pass finds accounts with old deletes without a scan

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-25
"""

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

TOMBSTONE = "deleted = true"


def upgrade() -> None:
    op.create_index(
        "ix_messages_tombstones",
        "messages",
        ["account_id", "deleted_at"],
        unique=False,
        sqlite_where=sa.text(TOMBSTONE),
        postgresql_where=sa.text(TOMBSTONE),
    )


def downgrade() -> None:
    op.drop_index("ix_messages_tombstones", table_name="messages")
