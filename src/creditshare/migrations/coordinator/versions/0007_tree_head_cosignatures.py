"""Cosignatures of tree heads by the data nodes (witnesses), shared by every replica.

Revision ID: c0007
Revises: c0006

(c0006 is the lead's revision of issue 11; when both are merged this one revises c0006.)
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlmodel.sql.sqltypes import AutoString, UTCDateTime

revision = "c0007"
down_revision = "c0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "tree_head_cosignature",
        sa.Column("tree_size", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("witness", AutoString(length=64), nullable=False),
        sa.Column("root", sa.LargeBinary(), nullable=False),
        sa.Column("key_id", sa.LargeBinary(), nullable=False),
        sa.Column("timestamp", sa.BigInteger(), nullable=False),
        sa.Column("signature", sa.LargeBinary(), nullable=False),
        sa.Column("collected_at", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("tree_size", "witness"),
    )


def downgrade() -> None:
    op.drop_table("tree_head_cosignature")
