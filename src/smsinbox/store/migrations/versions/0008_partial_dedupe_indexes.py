"""partial de-duplication indexes: messages without the ids they guard are not in them

Every message was an entry of the unique indexes on (upstream_id, upstream_message_id) and
(account_id, device_id, device_message_id), although only messages with those ids can
collide: a message an SMPP bind delivers in one part has no upstream id, an incoming
message no device. Two B-tree entries per message fewer make SQLite's ingest statements
about a tenth cheaper (bench/ingestcost.py). The look-ups name the ids with `=`, which
implies IS NOT NULL, so both engines still use the indexes for them; uniqueness means the
same, since NULLs never collide.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-06
"""

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

UPSTREAM = ("ix_messages_upstream_id_upstream_message_id",
            ["upstream_id", "upstream_message_id"], "upstream_message_id IS NOT NULL")  # fmt: skip
DEVICE = ("ix_messages_account_id_device_id_device_message_id",
          ["account_id", "device_id", "device_message_id"], "device_id IS NOT NULL")  # fmt: skip


def upgrade() -> None:
    for name, columns, where in (UPSTREAM, DEVICE):
        op.drop_index(name, table_name="messages")
        op.create_index(name, "messages", columns, unique=True,
                        sqlite_where=sa.text(where), postgresql_where=sa.text(where))  # fmt: skip


def downgrade() -> None:
    for name, columns, _ in (UPSTREAM, DEVICE):
        op.drop_index(name, table_name="messages")
        op.create_index(name, "messages", columns, unique=True)
