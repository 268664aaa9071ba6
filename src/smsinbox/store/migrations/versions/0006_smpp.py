"""smpp: the SMSC binds, and the parts of long messages received over them

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-06
"""

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

Id = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "smpp_binds",
        sa.Column("id", Id, autoincrement=True, nullable=False),
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("host", sa.String(length=255), nullable=False),
        sa.Column("port", sa.Integer(), nullable=False),
        sa.Column("tls", sa.Boolean(), nullable=False),
        sa.Column("system_id", sa.String(length=15), nullable=False),
        sa.Column("password", sa.String(length=8), nullable=False),
        sa.Column("system_type", sa.String(length=12), nullable=False),
        sa.Column("mode", sa.String(length=12), nullable=False),
        sa.Column("address_range", sa.String(length=40), nullable=False),
        sa.Column("window", sa.Integer(), nullable=False),
        sa.Column("throughput", sa.Integer(), nullable=False),
        sa.Column("enquire_link_s", sa.Integer(), nullable=False),
        sa.Column("default_alphabet", sa.String(length=10), nullable=False),
        sa.Column("gsm_packed", sa.Boolean(), nullable=False),
        sa.Column("enabled", sa.Boolean(), nullable=False),
        sa.Column("upstream_id", Id, nullable=False),
        sa.Column("created_at", sa.BigInteger(), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column("last_error", sa.String(length=255), nullable=False),
        sa.Column("state_at", sa.BigInteger(), nullable=True),
        sa.ForeignKeyConstraint(
            ["upstream_id"], ["upstreams.id"], name="fk_smpp_binds_upstream_id_upstreams"
        ),
        sa.PrimaryKeyConstraint("id", name="pk_smpp_binds"),
        sa.UniqueConstraint("name", name="uq_smpp_binds_name"),
        sqlite_autoincrement=True,
    )
    op.create_table(
        "smpp_parts",
        sa.Column("id", Id, autoincrement=True, nullable=False),
        sa.Column("bind_id", Id, nullable=False),
        sa.Column("source", sa.String(length=32), nullable=False),
        sa.Column("destination", sa.String(length=32), nullable=False),
        sa.Column("reference", sa.Integer(), nullable=False),
        sa.Column("total", sa.Integer(), nullable=False),
        sa.Column("sequence", sa.Integer(), nullable=False),
        sa.Column("alphabet", sa.String(length=10), nullable=False),
        sa.Column("units", sa.LargeBinary(), nullable=False),
        sa.Column("received_at", sa.BigInteger(), nullable=False),
        sa.Column("assembled_at", sa.BigInteger(), nullable=True),
        sa.ForeignKeyConstraint(
            ["bind_id"],
            ["smpp_binds.id"],
            name="fk_smpp_parts_bind_id_smpp_binds",
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name="pk_smpp_parts"),
        sqlite_autoincrement=True,
    )
    op.create_index(
        "ix_smpp_parts_place",
        "smpp_parts",
        ["bind_id", "source", "destination", "reference", "total", "sequence"],
        unique=True,
    )
    op.create_index(
        "ix_smpp_parts_assembled_at_received_at",
        "smpp_parts",
        ["assembled_at", "received_at"],
        unique=False,
    )


def downgrade() -> None:
    op.drop_table("smpp_parts")
    op.drop_table("smpp_binds")
