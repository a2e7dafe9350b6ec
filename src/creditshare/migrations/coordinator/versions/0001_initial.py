"""Initial coordinator schema.

Revision ID: c0001
Revises: None
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlmodel.sql.sqltypes import AutoString, UTCDateTime

revision = "c0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "ledger_head",
        sa.Column("size", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("root", sa.LargeBinary(length=32), nullable=False),
        sa.Column("timestamp_ms", sa.BigInteger(), nullable=False),
        sa.Column("signature", sa.LargeBinary(length=64), nullable=False),
        sa.Column("key_id", AutoString(length=16), nullable=False),
        sa.PrimaryKeyConstraint("size"),
    )
    op.create_table(
        "ledger_leaf",
        sa.Column("idx", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("data", sa.LargeBinary(), nullable=False),
        sa.Column("leaf_hash", sa.LargeBinary(length=32), nullable=False),
        sa.Column("subject", AutoString(), nullable=False),
        sa.PrimaryKeyConstraint("idx"),
    )
    op.create_index(op.f("ix_ledger_leaf_subject"), "ledger_leaf", ["subject"], unique=False)
    op.create_table(
        "participant",
        sa.Column("id", AutoString(length=64), nullable=False),
        sa.Column("role", AutoString(length=16), nullable=False),
        sa.Column("name", AutoString(length=200), nullable=False),
        sa.Column("uscc", AutoString(length=18), nullable=True),
        sa.Column("signing_key", AutoString(length=64), nullable=True),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("disabled", sa.Boolean(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("uscc"),
    )
    op.create_index(op.f("ix_participant_role"), "participant", ["role"], unique=False)
    op.create_table(
        "trained_model",
        sa.Column("id", AutoString(length=64), nullable=False),
        sa.Column("description", AutoString(), nullable=False),
        sa.Column("intercept", sa.Float(), nullable=False),
        sa.Column("trained_by", AutoString(length=64), nullable=False),
        sa.Column("job_id", AutoString(length=64), nullable=False),
        sa.Column("metrics", sa.JSON(), nullable=False),
        sa.Column("features", sa.JSON(), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_table(
        "training_job",
        sa.Column("id", AutoString(length=64), nullable=False),
        sa.Column("bureau", AutoString(length=64), nullable=False),
        sa.Column("model_id", AutoString(length=64), nullable=False),
        sa.Column("status", AutoString(length=16), nullable=False),
        sa.Column("nodes", sa.JSON(), nullable=False),
        sa.Column("config", sa.JSON(), nullable=False),
        sa.Column("progress", sa.JSON(), nullable=False),
        sa.Column("history", sa.JSON(), nullable=False),
        sa.Column("sizes", sa.JSON(), nullable=False),
        sa.Column("public_key", AutoString(), nullable=False),
        sa.Column("ledger_index", sa.Integer(), nullable=False),
        sa.Column("error", AutoString(), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("updated_at", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index(op.f("ix_training_job_bureau"), "training_job", ["bureau"], unique=False)
    op.create_table(
        "api_credential",
        sa.Column("key_id", AutoString(length=32), nullable=False),
        sa.Column("participant_id", AutoString(), nullable=False),
        sa.Column("secret_sha256", AutoString(length=64), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("revoked_at", UTCDateTime(), nullable=True),
        sa.ForeignKeyConstraint(
            ["participant_id"],
            ["participant.id"],
        ),
        sa.PrimaryKeyConstraint("key_id"),
    )
    op.create_index(
        op.f("ix_api_credential_participant_id"), "api_credential", ["participant_id"], unique=False
    )
    op.create_table(
        "consent",
        sa.Column("id", AutoString(length=32), nullable=False),
        sa.Column("uscc", AutoString(length=18), nullable=False),
        sa.Column("grantee", AutoString(), nullable=False),
        sa.Column("purpose", AutoString(length=32), nullable=False),
        sa.Column("document", sa.JSON(), nullable=False),
        sa.Column("signature", AutoString(length=128), nullable=False),
        sa.Column("valid_from", UTCDateTime(), nullable=False),
        sa.Column("valid_until", UTCDateTime(), nullable=False),
        sa.Column("max_uses", sa.Integer(), nullable=True),
        sa.Column("uses", sa.Integer(), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("revoked_at", UTCDateTime(), nullable=True),
        sa.ForeignKeyConstraint(
            ["grantee"],
            ["participant.id"],
        ),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index(op.f("ix_consent_grantee"), "consent", ["grantee"], unique=False)
    op.create_index(op.f("ix_consent_uscc"), "consent", ["uscc"], unique=False)


def downgrade() -> None:
    op.drop_table("consent")
    op.drop_table("api_credential")
    op.drop_table("training_job")
    op.drop_table("trained_model")
    op.drop_table("participant")
    op.drop_table("ledger_leaf")
    op.drop_table("ledger_head")
