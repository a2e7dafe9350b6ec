"""Registered Paillier public keys: validated once, named by fingerprint afterwards.

Revision ID: c0005
Revises: c0003
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlmodel.sql.sqltypes import AutoString, UTCDateTime

revision = "c0005"
down_revision = "c0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "paillier_key",
        sa.Column("fingerprint", AutoString(length=64), nullable=False),
        sa.Column("participant_id", AutoString(length=64), nullable=False),
        sa.Column("modulus", AutoString(length=1024), nullable=False),
        sa.Column("bits", sa.Integer(), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("retired_at", UTCDateTime(), nullable=True),
        sa.ForeignKeyConstraint(["participant_id"], ["participant.id"]),
        sa.PrimaryKeyConstraint("fingerprint"),
    )
    op.create_index(
        op.f("ix_paillier_key_participant_id"), "paillier_key", ["participant_id"], unique=False
    )


def downgrade() -> None:
    op.drop_index(op.f("ix_paillier_key_participant_id"), table_name="paillier_key")
    op.drop_table("paillier_key")
