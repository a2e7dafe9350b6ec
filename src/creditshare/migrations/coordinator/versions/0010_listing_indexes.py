"""Index the consent and training-job listings by viewer and creation time.

``GET /v1/consents`` and ``GET /v1/training-jobs`` page newest first
(``ORDER BY created_at DESC, id DESC LIMIT n``), restricted to what the caller may
see: a grantee's consents, an enterprise's (by USCC), a bureau's jobs, or all of
them for an operator. Without an index that starts with the viewer's column and
goes on with (``created_at``, ``id``), each page sorts every matching row; with one
it reads the ``n`` rows it shows (a backward index scan serves the descending order).

Creating an index locks the table against writes while it is built (the upgrade is
one transaction, so ``CREATE INDEX CONCURRENTLY`` is not available); on a large
consent table run the upgrade in a quiet moment.

Revision ID: c0010
Revises: c0009
"""

from __future__ import annotations

from alembic import op

revision = "c0010"
down_revision = "c0009"
branch_labels = None
depends_on = None

#: (index, table, columns), as the models in ``coordinator._db`` declare them.
INDEXES: tuple[tuple[str, str, list[str]], ...] = (
    ("ix_consent_grantee_created_at_id", "consent", ["grantee", "created_at", "id"]),
    ("ix_consent_uscc_created_at_id", "consent", ["uscc", "created_at", "id"]),
    ("ix_consent_created_at_id", "consent", ["created_at", "id"]),
    ("ix_training_job_bureau_created_at_id", "training_job", ["bureau", "created_at", "id"]),
    ("ix_training_job_created_at_id", "training_job", ["created_at", "id"]),
)


def upgrade() -> None:
    for name, table, columns in INDEXES:
        op.create_index(name, table, columns, unique=False)


def downgrade() -> None:
    for name, table, _columns in reversed(INDEXES):
        op.drop_index(name, table_name=table)
