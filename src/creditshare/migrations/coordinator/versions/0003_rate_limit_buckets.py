"""Rate-limit counts shared by coordinator replicas (``rate_limit_store = "database"``).

Revision ID: c0003
Revises: c0002
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlmodel.sql.sqltypes import AutoString

revision = "c0003"
down_revision = "c0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "rate_limit_bucket",
        sa.Column("scope", AutoString(length=32), nullable=False),
        sa.Column("key", AutoString(length=64), nullable=False),
        sa.Column("bucket", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("hits", sa.Integer(), nullable=False),
        sa.PrimaryKeyConstraint("scope", "key", "bucket"),
    )


def downgrade() -> None:
    op.drop_table("rate_limit_bucket")
