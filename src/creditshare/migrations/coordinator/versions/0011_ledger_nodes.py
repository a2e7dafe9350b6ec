"""Store the ledger's interior nodes, so proofs read O(log n) rows (issue 16).

``ledger_node`` holds the hash of every complete perfect subtree of the log above
the leaves, keyed (level, index); appends write the nodes their leaves complete in
the same transaction. The upgrade backfills the nodes of the leaves already stored
in one streamed pass (``creditshare.ledger._backfill``: a page of leaf hashes and
O(log n) hashes in memory at a time, about n rows written for n leaves). On a large
ledger that is minutes of work in the upgrade's one transaction: run it in a quiet
moment, with every coordinator stopped (a coordinator of the previous release would
append leaves without their nodes).

Revision ID: c0011
Revises: c0010
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from creditshare.ledger._backfill import backfill_nodes

revision = "c0011"
down_revision = "c0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "ledger_node",
        sa.Column("level", sa.SmallInteger(), autoincrement=False, nullable=False),
        sa.Column("idx", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("hash", sa.LargeBinary(length=32), nullable=False),
        sa.PrimaryKeyConstraint("level", "idx"),
    )
    backfill_nodes(op.get_bind())


def downgrade() -> None:
    op.drop_table("ledger_node")
