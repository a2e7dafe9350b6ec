"""Initial node schema.

Revision ID: n0001
Revises: None
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlmodel.sql.sqltypes import AutoString, UTCDateTime

revision = "n0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "access_log",
        sa.Column("leaf_index", sa.Integer(), nullable=False),
        sa.Column("query_id", AutoString(length=64), nullable=False),
        sa.Column("uscc", AutoString(length=18), nullable=False),
        sa.Column("requester", AutoString(length=64), nullable=False),
        sa.Column("purpose", AutoString(length=32), nullable=False),
        sa.Column("consent_id", AutoString(length=64), nullable=False),
        sa.Column("model_id", AutoString(length=64), nullable=False),
        sa.Column("answered_at", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("leaf_index"),
    )
    op.create_index(op.f("ix_access_log_query_id"), "access_log", ["query_id"], unique=False)
    op.create_index(op.f("ix_access_log_uscc"), "access_log", ["uscc"], unique=False)
    op.create_table(
        "import_batch",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("files", AutoString(), nullable=False),
        sa.Column("sha256", AutoString(length=64), nullable=False),
        sa.Column("rows", sa.Integer(), nullable=False),
        sa.Column("imported_at", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_table(
        "model_shard",
        sa.Column("model_id", AutoString(length=64), nullable=False),
        sa.Column("weights", sa.JSON(), nullable=False),
        sa.Column("offset", sa.Float(), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("model_id"),
    )
    op.create_table(
        "trusted_tree_head",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("size", sa.BigInteger(), nullable=False),
        sa.Column("root", sa.LargeBinary(), nullable=False),
        sa.Column("timestamp_ms", sa.BigInteger(), nullable=False),
        sa.Column("signature", sa.LargeBinary(), nullable=False),
        sa.Column("key_id", AutoString(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_table(
        "enterprise_record",
        sa.Column("uscc", AutoString(length=18), nullable=False),
        sa.Column("data", sa.JSON(), nullable=False),
        sa.Column("batch_id", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(
            ["batch_id"],
            ["import_batch.id"],
        ),
        sa.PrimaryKeyConstraint("uscc"),
    )
    op.create_index(
        op.f("ix_enterprise_record_batch_id"), "enterprise_record", ["batch_id"], unique=False
    )


def downgrade() -> None:
    op.drop_table("enterprise_record")
    op.drop_table("trusted_tree_head")
    op.drop_table("model_shard")
    op.drop_table("import_batch")
    op.drop_table("access_log")
