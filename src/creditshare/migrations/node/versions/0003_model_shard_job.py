"""Tag each trained shard with the training job that made it.

A coordinator whose /finish fails after some nodes kept their shards tells them to
drop the job; the tag lets a node discard exactly that job's shard (and nothing a
configured or earlier model holds), so the model id can be trained again.

Revision ID: n0003
Revises: n0002
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlmodel.sql.sqltypes import AutoString

revision = "n0003"
down_revision = "n0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("model_shard") as batch:
        batch.add_column(sa.Column("job_id", AutoString(length=64), nullable=True))
        batch.create_index(batch.f("ix_model_shard_job_id"), ["job_id"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("model_shard") as batch:
        batch.drop_index(batch.f("ix_model_shard_job_id"))
        batch.drop_column("job_id")
