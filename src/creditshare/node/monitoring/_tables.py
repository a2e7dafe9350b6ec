"""The node's monitoring tables: the subscriptions it watches, and their outbox of events.

An event row lives from the snapshot import that raised it until the coordinator
acknowledges the cycle that carried it (then it is deleted: nothing is kept longer
than delivery needs). ``sent_cycle`` is the last cycle it went out in; an event sent in
a cycle the coordinator never acknowledged goes out again (at least once).
"""

from __future__ import annotations

from datetime import UTC, date, datetime
from typing import Any

from sqlalchemy import JSON, BigInteger, Column, Index, Table, Text, UniqueConstraint
from sqlmodel import Field, SQLModel

__all__ = [
    "ALERT_EVENTS",
    "MONITOR_CYCLES",
    "WATCHED",
    "AlertEventRow",
    "MonitorCycleRow",
    "WatchedSubscriptionRow",
    "utc",
]


def utc(moment: datetime) -> datetime:
    """A time as stored: aware, in UTC (a naive one is taken to be UTC already)."""
    return moment.astimezone(UTC) if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


class WatchedSubscriptionRow(SQLModel, table=True):
    """A bank's subscription this node registered (``Watch``), as the bank signed it."""

    __tablename__ = "watched_subscription"

    subscription_id: str = Field(primary_key=True, max_length=32)
    #: This node's id when it registered: event ids are derived from it.
    node_id: str = Field(max_length=64)
    uscc: str = Field(max_length=18, index=True)
    bank: str = Field(max_length=64)
    consent_id: str = Field(max_length=32, index=True)
    consent_valid_until: datetime
    #: The signed choices, ``[{type, threshold}]`` sorted by type.
    signals: list[dict[str, Any]] = Field(sa_column=Column(JSON, nullable=False))
    #: The consent's indicators (``*``: all): before/after are shown only for those.
    indicators: list[str] = Field(sa_column=Column(JSON, nullable=False))
    #: The bank's X25519 alert key (base64): the only key its batches are sealed to.
    alert_key: str = Field(max_length=64)
    #: The model whose score share this node answers each cycle ("" unless the
    #: subscription watches score_change).
    model_id: str = Field(default="", max_length=64)
    #: The bank's Paillier key (base64 modulus) the signed key_fingerprint names: the only
    #: key score shares are encrypted under. None unless score_change is watched.
    score_key: str | None = Field(default=None, sa_column=Column(Text, nullable=True))
    #: SignedSubscription.digest(): a cycle names the subscription by id and digest.
    digest: str = Field(max_length=64)
    #: The latest snapshot when it was registered (0: none); events come from later ones.
    from_snapshot: int
    #: The seq the next event of this subscription gets (1, 2, 3...).
    next_seq: int = 1
    registered_at: datetime
    #: Why this node no longer serves it (consent revoked or expired); None: active.
    ended_reason: str | None = Field(default=None, max_length=64)
    ended_at: datetime | None = None


class AlertEventRow(SQLModel, table=True):
    """An event waiting for the coordinator's acknowledgement of the cycle it went out in."""

    __tablename__ = "alert_event"
    __table_args__ = (
        UniqueConstraint("subscription_id", "seq", name="uq_alert_event_subscription_seq"),
        Index("ix_alert_event_sent_cycle", "sent_cycle"),
    )

    id: str = Field(primary_key=True, max_length=32)
    subscription_id: str = Field(foreign_key="watched_subscription.subscription_id", max_length=32)
    seq: int
    signal: str = Field(max_length=32)
    severity: str = Field(max_length=16)
    observed_at: date
    snapshot: int
    indicator: str = Field(default="", max_length=64)
    before: str = Field(default="", max_length=64)
    after: str = Field(default="", max_length=64)
    #: The last cycle it was sent in; None: not sent yet.
    sent_cycle: int | None = Field(default=None, sa_column=Column(BigInteger, nullable=True))


class MonitorCycleRow(SQLModel, table=True):
    """The latest cycle this node answered: cycles may repeat (a retry), never go back."""

    __tablename__ = "monitor_cycle"

    number: int = Field(sa_column=Column(BigInteger, primary_key=True, autoincrement=False))
    answered_at: datetime


def _table(model: type[SQLModel]) -> Table:
    table = model.__table__  # type: ignore[attr-defined]
    assert isinstance(table, Table)
    return table


WATCHED = _table(WatchedSubscriptionRow)
ALERT_EVENTS = _table(AlertEventRow)
MONITOR_CYCLES = _table(MonitorCycleRow)
