"""Participants' CA-issued credentials and the CAs' revocation lists, relayed to nodes;
enterprises' signed consent revocations and which nodes hold them.

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
    with op.batch_alter_table("consent") as batch:
        batch.add_column(sa.Column("revocation", sa.JSON(), nullable=True))
    op.create_table(
        "revocation_delivery",
        sa.Column("consent_id", AutoString(length=32), nullable=False),
        sa.Column("node_id", AutoString(length=64), nullable=False),
        sa.Column("delivered_at", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("consent_id", "node_id"),
    )
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
    op.drop_table("revocation_delivery")
    with op.batch_alter_table("consent") as batch:
        batch.drop_column("revocation")
    op.drop_table("relayed_revocation_list")
    op.drop_index(
        op.f("ix_participant_credential_participant_id"), table_name="participant_credential"
    )
    op.drop_table("participant_credential")
