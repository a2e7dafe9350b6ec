"""Keep each trained shard's preprocessing next to its weights.

Weights now apply to the features after the transformation training fitted
(standardise, clip), stored here as a Preprocessing document, so scoring applies
exactly what training evaluated. Existing rows keep NULL: the identity, which is
what their weights (folded onto raw features when they were kept) need. Downgrading
drops the column: shards trained since would then score without their preprocessing,
so discard them (or their models) before going back.

Revision ID: n0006
Revises: n0005
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "n0006"
down_revision = "n0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("model_shard") as batch:
        batch.add_column(sa.Column("preprocessing", sa.JSON(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("model_shard") as batch:
        batch.drop_column("preprocessing")
