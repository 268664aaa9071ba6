"""account region: the country whose national forms of numbers an account's users write

NULL, as every existing account gets, means the server's default_region.

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-06
"""

import sqlalchemy as sa
from alembic import op

revision = "0012"
down_revision = "0011"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("accounts", sa.Column("region", sa.String(length=2), nullable=True))


def downgrade() -> None:
    # A plain DROP COLUMN (SQLite 3.35+), not a batch: a batch would copy the table and
    # drop the old one, and with foreign keys on, that drop deletes every account's rows.
    op.drop_column("accounts", "region")
