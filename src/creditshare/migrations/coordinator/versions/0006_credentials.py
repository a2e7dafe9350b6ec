"""Participants' CA-issued credentials and the CAs' revocation lists, relayed to nodes.

Revision ID: c0006
Revises: c0005
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlmodel.sql.sqltypes import AutoString, UTCDateTime

revision = "c0006"
down_revision = "c0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "participant_credential",
        sa.Column("fingerprint", AutoString(length=64), nullable=False),
        sa.Column("participant_id", AutoString(length=64), nullable=False),
        sa.Column("serial", AutoString(length=64), nullable=False),
        sa.Column("der", sa.LargeBinary(), nullable=False),
        sa.Column("not_after", UTCDateTime(), nullable=False),
        sa.Column("uploaded_at", UTCDateTime(), nullable=False),
        sa.ForeignKeyConstraint(["participant_id"], ["participant.id"]),
        sa.PrimaryKeyConstraint("fingerprint"),
    )
    op.create_index(
        op.f("ix_participant_credential_participant_id"),
        "participant_credential",
        ["participant_id"],
        unique=False,
    )
    op.create_table(
        "relayed_revocation_list",
        sa.Column("issuer", AutoString(length=64), nullable=False),
        sa.Column("number", sa.BigInteger(), nullable=False),
        sa.Column("der", sa.LargeBinary(), nullable=False),
        sa.Column("this_update", UTCDateTime(), nullable=False),
        sa.Column("next_update", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("issuer"),
    )


def downgrade() -> None:
    op.drop_table("relayed_revocation_list")
    op.drop_index(
        op.f("ix_participant_credential_participant_id"), table_name="participant_credential"
    )
    op.drop_table("participant_credential")
