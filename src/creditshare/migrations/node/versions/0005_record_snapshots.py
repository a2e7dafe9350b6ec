"""Imports are snapshots: counts per snapshot, and the values the latest one replaced.

``import_batch`` gains what each snapshot did (added, changed, removed, unchanged;
NULL for batches imported before this revision, whose counts nobody knows), and
``previous_record`` keeps the values each record changed or removed by the latest
snapshot had before it (post-loan monitoring compares them with the current ones).

Revision ID: n0005
Revises: n0004
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlmodel.sql.sqltypes import AutoString

revision = "n0005"
down_revision = "n0004"
branch_labels = None
depends_on = None

COUNTS = ("added", "changed", "removed", "unchanged")


def upgrade() -> None:
    with op.batch_alter_table("import_batch") as batch:
        for name in COUNTS:
            batch.add_column(sa.Column(name, sa.Integer(), nullable=True))
    op.create_table(
        "previous_record",
        sa.Column("uscc", AutoString(length=18), nullable=False),
        sa.Column("data", sa.JSON(), nullable=False),
        sa.Column("batch_id", sa.Integer(), nullable=False),
        sa.Column("replaced_by", sa.Integer(), nullable=False),
        sa.Column("removed", sa.Boolean(), nullable=False),
        sa.ForeignKeyConstraint(["batch_id"], ["import_batch.id"]),
        sa.ForeignKeyConstraint(["replaced_by"], ["import_batch.id"]),
        sa.PrimaryKeyConstraint("uscc"),
    )
    op.create_index(
        op.f("ix_previous_record_replaced_by"), "previous_record", ["replaced_by"], unique=False
    )


def downgrade() -> None:
    op.drop_index(op.f("ix_previous_record_replaced_by"), table_name="previous_record")
    op.drop_table("previous_record")
    with op.batch_alter_table("import_batch") as batch:
        for name in reversed(COUNTS):
            batch.drop_column(name)
