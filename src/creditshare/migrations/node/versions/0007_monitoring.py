"""Post-loan monitoring: the subscriptions a node watches and its outbox of events.

``watched_subscription`` holds each bank's subscription as it signed it (signals,
thresholds, alert key, digest; for score_change the model and the bank's Paillier key)
with the consent's validity and indicators;
``alert_event`` the events snapshot imports raised, until the coordinator acknowledges
the cycle that carried them; ``monitor_cycle`` the latest cycle answered (cycles never
go back). Downgrading drops all three: the subscriptions must be registered again
and waiting events are lost.

Revision ID: n0007
Revises: n0006
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlmodel.sql.sqltypes import AutoString, UTCDateTime

revision = "n0007"
down_revision = "n0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "watched_subscription",
        sa.Column("subscription_id", AutoString(length=32), nullable=False),
        sa.Column("node_id", AutoString(length=64), nullable=False),
        sa.Column("uscc", AutoString(length=18), nullable=False),
        sa.Column("bank", AutoString(length=64), nullable=False),
        sa.Column("consent_id", AutoString(length=32), nullable=False),
        sa.Column("consent_valid_until", UTCDateTime(), nullable=False),
        sa.Column("signals", sa.JSON(), nullable=False),
        sa.Column("indicators", sa.JSON(), nullable=False),
        sa.Column("alert_key", AutoString(length=64), nullable=False),
        sa.Column("model_id", AutoString(length=64), nullable=False),
        sa.Column("score_key", sa.Text(), nullable=True),
        sa.Column("digest", AutoString(length=64), nullable=False),
        sa.Column("from_snapshot", sa.Integer(), nullable=False),
        sa.Column("next_seq", sa.Integer(), nullable=False),
        sa.Column("registered_at", UTCDateTime(), nullable=False),
        sa.Column("ended_reason", AutoString(length=64), nullable=True),
        sa.Column("ended_at", UTCDateTime(), nullable=True),
        sa.PrimaryKeyConstraint("subscription_id"),
    )
    op.create_index(
        op.f("ix_watched_subscription_uscc"), "watched_subscription", ["uscc"], unique=False
    )
    op.create_index(
        op.f("ix_watched_subscription_consent_id"),
        "watched_subscription",
        ["consent_id"],
        unique=False,
    )
    op.create_table(
        "alert_event",
        sa.Column("id", AutoString(length=32), nullable=False),
        sa.Column("subscription_id", AutoString(length=32), nullable=False),
        sa.Column("seq", sa.Integer(), nullable=False),
        sa.Column("signal", AutoString(length=32), nullable=False),
        sa.Column("severity", AutoString(length=16), nullable=False),
        sa.Column("observed_at", sa.Date(), nullable=False),
        sa.Column("snapshot", sa.Integer(), nullable=False),
        sa.Column("indicator", AutoString(length=64), nullable=False),
        sa.Column("before", AutoString(length=64), nullable=False),
        sa.Column("after", AutoString(length=64), nullable=False),
        sa.Column("sent_cycle", sa.BigInteger(), nullable=True),
        sa.ForeignKeyConstraint(["subscription_id"], ["watched_subscription.subscription_id"]),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("subscription_id", "seq", name="uq_alert_event_subscription_seq"),
    )
    op.create_index("ix_alert_event_sent_cycle", "alert_event", ["sent_cycle"], unique=False)
    op.create_table(
        "monitor_cycle",
        sa.Column("number", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("answered_at", UTCDateTime(), nullable=False),
        sa.PrimaryKeyConstraint("number"),
    )


def downgrade() -> None:
    op.drop_table("monitor_cycle")
    op.drop_index("ix_alert_event_sent_cycle", table_name="alert_event")
    op.drop_table("alert_event")
    op.drop_index(op.f("ix_watched_subscription_consent_id"), table_name="watched_subscription")
    op.drop_index(op.f("ix_watched_subscription_uscc"), table_name="watched_subscription")
    op.drop_table("watched_subscription")
