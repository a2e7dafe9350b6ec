"""Keep tree-model shards beside linear ones.

A gradient-boosted-tree model's shard on a node is its split rules (feature,
threshold, default direction) and every tree's shape: a ``TreeShard`` document in
the new ``tree`` column, with ``weights`` empty. One table keeps model ids unique
across both kinds and lets dropping a job discard either kind of shard it kept.
Downgrading drops the column: tree shards would then read as empty linear shards,
so discard them (or their models) before going back.

Revision ID: n0008
Revises: n0007
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "n0008"
down_revision = "n0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("model_shard") as batch:
        batch.add_column(sa.Column("tree", sa.JSON(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("model_shard") as batch:
        batch.drop_column("tree")
