"""Trained gradient-boosted-tree models beside logistic ones.

A trained model now records its ``model_type`` ("logistic" for every existing row) and,
for a gbdt model, its published ``tree_model`` document (shapes, the node owning each
split, leaf weights, base score; never a feature or a threshold). Downgrading drops both
columns: a trained gbdt model would then read as a logistic one with no weights, so
delete such models first.

Revision ID: c0009
Revises: c0008
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlmodel.sql.sqltypes import AutoString

revision = "c0009"
down_revision = "c0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("trained_model") as batch:
        batch.add_column(
            sa.Column(
                "model_type",
                AutoString(length=16),
                nullable=False,
                server_default="logistic",
            )
        )
        batch.add_column(sa.Column("tree_model", sa.JSON(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("trained_model") as batch:
        batch.drop_column("tree_model")
        batch.drop_column("model_type")
