"""Regulator cohort statistics: snapshot cubes and the privacy budget spent.

``stats_cube`` keeps, per accepted snapshot (import batch), the department's
aggregate cube for the statistics catalogue it was built under (counts and clipped
sums over region x every catalogue dimension; aggregates only, never a row), so a
query about an earlier date reads that snapshot's figures after later imports
replaced its records. ``privacy_spend`` keeps the ε each answered statistics query
spent, keyed by its ledger index, for the per-regulator, per-period budget. Downgrading
drops both: cubes of earlier snapshots are lost for good (the records they summed
are gone), and the budget spent so far is forgotten.

Revision ID: n0009
Revises: n0008
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlmodel.sql.sqltypes import AutoString, UTCDateTime

revision = "n0009"
down_revision = "n0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "stats_cube",
        sa.Column("batch_id", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("catalogue_digest", AutoString(length=64), nullable=False),
        sa.Column("data", sa.LargeBinary(), nullable=False),
        sa.Column("built_at", UTCDateTime(), nullable=False),
        sa.ForeignKeyConstraint(["batch_id"], ["import_batch.id"]),
        sa.PrimaryKeyConstraint("batch_id"),
    )
    op.create_table(
        "privacy_spend",
        sa.Column("leaf_index", sa.Integer(), autoincrement=False, nullable=False),
        sa.Column("requester", AutoString(length=64), nullable=False),
        sa.Column("period", AutoString(length=16), nullable=False),
        sa.Column("epsilon", sa.Float(), nullable=False),
        sa.Column("spent_at", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("leaf_index"),
    )
    op.create_index(
        "ix_privacy_spend_requester_period",
        "privacy_spend",
        ["requester", "period"],
        unique=False,
    )


def downgrade() -> None:
    op.drop_index("ix_privacy_spend_requester_period", table_name="privacy_spend")
    op.drop_table("privacy_spend")
    op.drop_table("stats_cube")
