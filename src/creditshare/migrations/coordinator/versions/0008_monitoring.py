"""Post-loan monitoring: subscriptions, node registrations, cycles, sealed alerts,
webhooks and their deliveries.

Revision ID: c0008
Revises: c0007
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlmodel.sql.sqltypes import AutoString, UTCDateTime

revision = "c0008"
down_revision = "c0007"
branch_labels = None
depends_on = None

#: 64-bit ids on PostgreSQL; SQLite's autoincrementing key must be INTEGER.
_BIG_ID = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def upgrade() -> None:
    op.create_table(
        "monitoring_subscription",
        sa.Column("id", AutoString(length=32), nullable=False),
        sa.Column("bank", AutoString(length=64), nullable=False),
        sa.Column("uscc", AutoString(length=18), nullable=False),
        sa.Column("consent_id", AutoString(length=32), nullable=False),
        sa.Column("chains", sa.JSON(), nullable=False),
        sa.Column("signals", sa.JSON(), nullable=False),
        sa.Column("alert_key_fingerprint", AutoString(length=64), nullable=False),
        sa.Column("signed", sa.JSON(), nullable=False),
        sa.Column("digest", AutoString(length=64), nullable=False),
        sa.Column("status", AutoString(length=8), nullable=False),
        sa.Column("ended_reason", AutoString(length=300), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.Column("ended_at", UTCDateTime(), nullable=True),
        sa.Column("ledger_index", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    for column in ("bank", "uscc", "consent_id", "status"):
        op.create_index(
            op.f(f"ix_monitoring_subscription_{column}"),
            "monitoring_subscription",
            [column],
            unique=False,
        )
    op.create_table(
        "monitoring_registration",
        sa.Column("subscription_id", AutoString(length=32), nullable=False),
        sa.Column("node_id", AutoString(length=64), nullable=False),
        sa.Column("registered", sa.Boolean(), nullable=False),
        sa.PrimaryKeyConstraint("subscription_id", "node_id"),
    )
    op.create_table(
        "monitoring_cycle",
        sa.Column("number", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("id", AutoString(length=32), nullable=False),
        sa.Column("started_at", UTCDateTime(), nullable=False),
        sa.Column("finished_at", UTCDateTime(), nullable=True),
        sa.Column("ledger_index", sa.BigInteger(), nullable=False),
        sa.Column("subscriptions", sa.Integer(), nullable=False),
        sa.Column("nodes", sa.JSON(), nullable=False),
        sa.PrimaryKeyConstraint("number"),
    )
    op.create_table(
        "monitoring_node_ack",
        sa.Column("node_id", AutoString(length=64), nullable=False),
        sa.Column("acknowledged_cycle", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("node_id"),
    )
    op.create_table(
        "monitoring_alert",
        sa.Column("cursor", _BIG_ID, autoincrement=True, nullable=False),
        sa.Column("bank", AutoString(length=64), nullable=False),
        sa.Column("subscription_id", AutoString(length=32), nullable=False),
        sa.Column("node", AutoString(length=64), nullable=False),
        sa.Column("chain", AutoString(length=16), nullable=False),
        sa.Column("department", AutoString(length=64), nullable=False),
        sa.Column("cycle", sa.BigInteger(), nullable=False),
        sa.Column("sealed", sa.LargeBinary(), nullable=False),
        sa.Column("stored_at", UTCDateTime(), nullable=False),
        sa.Column("kind", AutoString(length=8), nullable=False),
        sa.Column("detail", sa.JSON(), nullable=True),
        sa.PrimaryKeyConstraint("cursor"),
    )
    op.create_index(
        "ix_monitoring_alert_bank_cursor", "monitoring_alert", ["bank", "cursor"], unique=False
    )
    op.create_index(
        op.f("ix_monitoring_alert_stored_at"), "monitoring_alert", ["stored_at"], unique=False
    )
    op.create_table(
        "monitoring_alert_pruned",
        sa.Column("bank", AutoString(length=64), nullable=False),
        sa.Column("pruned_through", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("bank"),
    )
    op.create_table(
        "monitoring_webhook",
        sa.Column("bank", AutoString(length=64), nullable=False),
        sa.Column("url", AutoString(length=2000), nullable=False),
        sa.Column("secret", AutoString(length=64), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("bank"),
    )
    op.create_table(
        "monitoring_webhook_delivery",
        sa.Column("id", _BIG_ID, autoincrement=True, nullable=False),
        sa.Column("bank", AutoString(length=64), nullable=False),
        sa.Column("webhook_id", AutoString(length=64), nullable=False),
        sa.Column("payload", sa.JSON(), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column("next_attempt_at", UTCDateTime(), nullable=False),
        sa.Column("status", AutoString(length=16), nullable=False),
        sa.Column("last_error", AutoString(length=300), nullable=False),
        sa.Column("created_at", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("webhook_id"),
    )
    op.create_index(
        op.f("ix_monitoring_webhook_delivery_bank"),
        "monitoring_webhook_delivery",
        ["bank"],
        unique=False,
    )
    op.create_index(
        "ix_monitoring_webhook_delivery_due",
        "monitoring_webhook_delivery",
        ["status", "next_attempt_at"],
        unique=False,
    )


def downgrade() -> None:
    for table in (
        "monitoring_webhook_delivery",
        "monitoring_webhook",
        "monitoring_alert_pruned",
        "monitoring_alert",
        "monitoring_node_ack",
        "monitoring_cycle",
        "monitoring_registration",
        "monitoring_subscription",
    ):
        op.drop_table(table)
