"""Index training jobs by status (the operations gauge and job listings filter on it).

Revision ID: c0002
Revises: c0001
"""

from __future__ import annotations

from alembic import op

revision = "c0002"
down_revision = "c0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index(op.f("ix_training_job_status"), "training_job", ["status"], unique=False)


def downgrade() -> None:
    op.drop_index(op.f("ix_training_job_status"), table_name="training_job")
