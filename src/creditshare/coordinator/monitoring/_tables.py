"""The monitoring tables: subscriptions, their registrations on nodes, cycles, stored
sealed batches (alerts), webhooks and their deliveries.

All of them live in the coordinator's one database, so replicas share them: a cycle's
number is claimed by a row insert (two replicas cannot run the same cycle), a node's
alerts and its acknowledged cycle commit together (an acknowledged batch is a stored
one), and a webhook delivery is a row that survives a restart.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import JSON, BigInteger, Column, Index, Integer, LargeBinary
from sqlmodel import Field, SQLModel

#: 64-bit ids on PostgreSQL (a federation stores millions of batches a day); SQLite's
#: autoincrementing key must be declared INTEGER (it is 64-bit there anyway).
_BIG_ID = BigInteger().with_variant(Integer(), "sqlite")

__all__ = [
    "AlertPruneRow",
    "AlertRow",
    "CycleRow",
    "NodeAckRow",
    "RegistrationRow",
    "SubscriptionRow",
    "WebhookDeliveryRow",
    "WebhookRow",
]


class SubscriptionRow(SQLModel, table=True):
    """A bank's subscription to one enterprise's risk events, as the bank signed it."""

    __tablename__ = "monitoring_subscription"

    id: str = Field(primary_key=True, max_length=32)
    bank: str = Field(index=True, max_length=64)
    uscc: str = Field(index=True, max_length=18)
    consent_id: str = Field(index=True, max_length=32)
    #: The chains in scope (the subscription's, or its consent's when it named none).
    chains: list[str] = Field(sa_column=Column(JSON, nullable=False))
    #: ``[{type, threshold}]``, sorted, thresholds filled.
    signals: list[dict[str, Any]] = Field(sa_column=Column(JSON, nullable=False))
    alert_key_fingerprint: str = Field(max_length=64)
    #: The bank's ``{document, signature}`` (SignedSubscription.to_json()).
    signed: dict[str, Any] = Field(sa_column=Column(JSON, nullable=False))
    digest: str = Field(max_length=64)
    status: str = Field(index=True, max_length=8)  # active, ended
    ended_reason: str = Field(default="", max_length=300)
    created_at: datetime
    ended_at: datetime | None = None
    #: The ledger entry recording it (-1 while it is being recorded).
    ledger_index: int = Field(default=-1, sa_column=Column(BigInteger, nullable=False))


class RegistrationRow(SQLModel, table=True):
    """Whether a node in a subscription's scope has it registered (Watch answered)."""

    __tablename__ = "monitoring_registration"

    subscription_id: str = Field(primary_key=True, max_length=32)
    node_id: str = Field(primary_key=True, max_length=64)
    registered: bool = False


class CycleRow(SQLModel, table=True):
    """One monitoring cycle; inserting its number is what lets one replica run it."""

    __tablename__ = "monitoring_cycle"

    number: int = Field(
        sa_column=Column(BigInteger, primary_key=True, autoincrement=False, nullable=False)
    )
    id: str = Field(max_length=32)
    started_at: datetime
    finished_at: datetime | None = None
    ledger_index: int = Field(default=-1, sa_column=Column(BigInteger, nullable=False))
    subscriptions: int = 0
    #: Per node asked: ``{node, batches, unknown, ended, error}``.
    nodes: list[dict[str, Any]] = Field(sa_column=Column(JSON, nullable=False))


class NodeAckRow(SQLModel, table=True):
    """The newest cycle whose answer from a node is stored (acknowledged to it next time)."""

    __tablename__ = "monitoring_node_ack"

    node_id: str = Field(primary_key=True, max_length=64)
    acknowledged_cycle: int = Field(sa_column=Column(BigInteger, nullable=False))


class AlertRow(SQLModel, table=True):
    """One sealed batch a node sent for a bank's subscription (kind ``batch``), or the
    subscription's encrypted score of a cycle (kind ``score``, node ""); ``cursor``
    orders them."""

    __tablename__ = "monitoring_alert"
    __table_args__ = (Index("ix_monitoring_alert_bank_cursor", "bank", "cursor"),)

    cursor: int | None = Field(
        default=None, sa_column=Column(_BIG_ID, primary_key=True, autoincrement=True)
    )
    bank: str = Field(max_length=64)
    subscription_id: str = Field(max_length=32)
    node: str = Field(max_length=64)
    chain: str = Field(max_length=16)
    department: str = Field(max_length=64)
    cycle: int = Field(sa_column=Column(BigInteger, nullable=False))
    #: The sealed batch, or (score) the Paillier ciphertext of the linear score.
    sealed: bytes = Field(sa_column=Column(LargeBinary, nullable=False))
    stored_at: datetime = Field(index=True)
    kind: str = Field(default="batch", max_length=8)
    #: score: ``{scale, model_id, score_scale, threshold}``; None for a batch.
    detail: dict[str, Any] | None = Field(default=None, sa_column=Column(JSON, nullable=True))


class AlertPruneRow(SQLModel, table=True):
    """The newest cursor of a bank's alerts deleted for age: a cursor at or below it is
    gone (410), not unknown (404)."""

    __tablename__ = "monitoring_alert_pruned"

    bank: str = Field(primary_key=True, max_length=64)
    pruned_through: int = Field(sa_column=Column(BigInteger, nullable=False))


class WebhookRow(SQLModel, table=True):
    """A bank's webhook endpoint and the secret its calls are signed with."""

    __tablename__ = "monitoring_webhook"

    bank: str = Field(primary_key=True, max_length=64)
    url: str = Field(max_length=2000)
    secret: str = Field(max_length=64)
    created_at: datetime


class WebhookDeliveryRow(SQLModel, table=True):
    """One webhook call (up to 100 alerts), retried with backoff until delivered or failed."""

    __tablename__ = "monitoring_webhook_delivery"
    __table_args__ = (Index("ix_monitoring_webhook_delivery_due", "status", "next_attempt_at"),)

    id: int | None = Field(
        default=None, sa_column=Column(_BIG_ID, primary_key=True, autoincrement=True)
    )
    bank: str = Field(index=True, max_length=64)
    webhook_id: str = Field(max_length=64, unique=True)
    payload: dict[str, Any] = Field(sa_column=Column(JSON, nullable=False))
    attempts: int = 0
    next_attempt_at: datetime
    status: str = Field(max_length=16)  # pending, delivered, failed
    last_error: str = Field(default="", max_length=300)
    created_at: datetime
