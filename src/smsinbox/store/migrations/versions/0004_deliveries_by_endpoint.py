"""deliveries by endpoint: replays and per-endpoint claims read an index, not the queue

A replay queues a delivery for each message that has none yet to an endpoint: without an
index on (endpoint_id, message_id), each message's check read every delivery of the account,
so a replay of a thousand messages over a queue of thousands took seconds (and on SQLite held
the event loop meanwhile). The same index serves dead-lettering an endpoint's pending
deliveries and the cascade when an endpoint is removed.

The pending deliveries of one endpoint in the order they are due (partial, like
ix_deliveries_pending): the worker claims per endpoint, up to the room its lane has, so an
endpoint with a full lane costs a claim nothing instead of a walk past its backlog.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-02
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

PENDING = "state = 'pending'"


def upgrade() -> None:
    op.create_index(
        "ix_deliveries_endpoint_message", "deliveries", ["endpoint_id", "message_id"], unique=False
    )
    op.create_index(
        "ix_deliveries_pending_by_endpoint",
        "deliveries",
        ["endpoint_id", "next_attempt_at", "id"],
        unique=False,
        sqlite_where=sa.text(PENDING),
        postgresql_where=sa.text(PENDING),
    )


def downgrade() -> None:
    op.drop_index("ix_deliveries_pending_by_endpoint", table_name="deliveries")
    op.drop_index("ix_deliveries_endpoint_message", table_name="deliveries")
