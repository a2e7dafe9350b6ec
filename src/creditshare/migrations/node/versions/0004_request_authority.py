"""What a node keeps to check signed requests itself.

Revoked consents (with the enterprise's signed revocation), the newest revocation list
accepted from each trusted CA, and the node's own log of the requests it refused.

Revision ID: n0004
Revises: n0003
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlmodel.sql.sqltypes import AutoString, UTCDateTime

revision = "n0004"
down_revision = "n0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # A signed request is answered once: its query id, not only its leaf, is unique.
    with op.batch_alter_table("access_log") as batch:
        batch.drop_index("ix_access_log_query_id")
        batch.create_index("ix_access_log_query_id", ["query_id"], unique=True)
    op.create_table(
        "revoked_consent",
        sa.Column("consent_id", AutoString(length=32), nullable=False),
        sa.Column("uscc", AutoString(length=18), nullable=False),
        sa.Column("revoked_at", UTCDateTime(), nullable=False),
        sa.Column("revocation", sa.LargeBinary(), nullable=False),
        sa.PrimaryKeyConstraint("consent_id"),
    )
    op.create_table(
        "revocation_list",
        sa.Column("issuer_fingerprint", AutoString(length=64), nullable=False),
        sa.Column("number", sa.BigInteger(), nullable=False),
        sa.Column("der", sa.LargeBinary(), nullable=False),
        sa.PrimaryKeyConstraint("issuer_fingerprint"),
    )
    op.create_table(
        "refusal_log",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("refused_at", UTCDateTime(), nullable=False),
        sa.Column("rpc", AutoString(length=32), nullable=False),
        sa.Column("request_id", AutoString(length=64), nullable=False),
        sa.Column("status", AutoString(length=32), nullable=False),
        sa.Column("reason", AutoString(length=300), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_index(op.f("ix_refusal_log_refused_at"), "refusal_log", ["refused_at"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("access_log") as batch:
        batch.drop_index("ix_access_log_query_id")
        batch.create_index("ix_access_log_query_id", ["query_id"], unique=False)
    op.drop_index(op.f("ix_refusal_log_refused_at"), table_name="refusal_log")
    op.drop_table("refusal_log")
    op.drop_table("revocation_list")
    op.drop_table("revoked_consent")
