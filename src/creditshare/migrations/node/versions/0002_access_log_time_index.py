"""Index the access log by time (operators list the latest answered queries).

Revision ID: n0002
Revises: n0001
"""

from __future__ import annotations

from alembic import op

revision = "n0002"
down_revision = "n0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index(op.f("ix_access_log_answered_at"), "access_log", ["answered_at"], unique=False)


def downgrade() -> None:
    op.drop_index(op.f("ix_access_log_answered_at"), table_name="access_log")
