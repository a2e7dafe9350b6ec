"""Subscription rows and their registrations on nodes (synchronous: callers use to_thread).

Ending a subscription is one conditional UPDATE (active → ended), so when a bank, a
revocation and an expiry sweep race (or two replicas), exactly one of them ends it
and writes the ledger's ``subscription_end`` record.
"""

from __future__ import annotations

import re
from collections.abc import Collection, Iterable
from datetime import datetime
from typing import Any

from sqlalchemy import delete, insert, update
from sqlalchemy import select as core_select
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col, select

from creditshare.coordinator.monitoring._tables import RegistrationRow, SubscriptionRow
from creditshare.errors import ConflictError, NotFoundError

__all__ = ["ACTIVE", "ENDED", "SubscriptionStore"]

ACTIVE = "active"
ENDED = "ended"
_ID = re.compile(r"[0-9a-f]{32}")
_SUBSCRIPTION: Any = SubscriptionRow.__table__  # type: ignore[attr-defined]
_REGISTRATION: Any = RegistrationRow.__table__  # type: ignore[attr-defined]


class SubscriptionStore:
    def __init__(self, engine: Engine) -> None:
        self._engine = engine

    def insert(self, row: SubscriptionRow, nodes: Iterable[str]) -> None:
        """Store a new subscription (ledger index still -1) and its nodes, unregistered;
        the same id again is a ConflictError and writes nothing."""
        conflict = ConflictError(f"subscription {row.id} exists already")
        values = row.model_dump()
        try:
            with self._engine.begin() as conn:
                if conn.execute(_SUBSCRIPTION.select().where(_SUBSCRIPTION.c.id == row.id)).first():
                    raise conflict
                conn.execute(insert(_SUBSCRIPTION).values(**values))
                for node in sorted(set(nodes)):
                    conn.execute(
                        insert(_REGISTRATION).values(
                            subscription_id=row.id, node_id=node, registered=False
                        )
                    )
        except IntegrityError:  # the same id, stored by a concurrent request
            raise conflict from None

    def recorded(self, subscription_id: str, ledger_index: int) -> None:
        with self._engine.begin() as conn:
            conn.execute(
                update(_SUBSCRIPTION)
                .where(_SUBSCRIPTION.c.id == subscription_id)
                .values(ledger_index=ledger_index)
            )

    def forget(self, subscription_id: str) -> None:
        """Undo ``insert`` for a subscription whose ledger record could not be written."""
        with self._engine.begin() as conn:
            conn.execute(
                delete(_REGISTRATION).where(_REGISTRATION.c.subscription_id == subscription_id)
            )
            conn.execute(delete(_SUBSCRIPTION).where(_SUBSCRIPTION.c.id == subscription_id))

    def get(self, subscription_id: str, bank: str | None = None) -> SubscriptionRow:
        """The subscription (of ``bank``, if given: another bank's is as unknown as none)."""
        unknown = NotFoundError(f"no subscription {subscription_id[:64]!r}")
        if not _ID.fullmatch(subscription_id):
            raise unknown
        with Session(self._engine) as session:
            row = session.get(SubscriptionRow, subscription_id)
        if row is None or (bank is not None and row.bank != bank):
            raise unknown
        return row

    def for_bank(self, bank: str, status: str | None = None) -> list[SubscriptionRow]:
        query = select(SubscriptionRow).where(SubscriptionRow.bank == bank)
        if status is not None:
            query = query.where(SubscriptionRow.status == status)
        with Session(self._engine) as session:
            return list(session.exec(query.order_by(col(SubscriptionRow.created_at))))

    def active(self, consent_id: str | None = None) -> list[SubscriptionRow]:
        """Active, recorded subscriptions (of one consent, if given), oldest first."""
        query = select(SubscriptionRow).where(
            SubscriptionRow.status == ACTIVE, col(SubscriptionRow.ledger_index) >= 0
        )
        if consent_id is not None:
            query = query.where(SubscriptionRow.consent_id == consent_id)
        with Session(self._engine) as session:
            return list(session.exec(query.order_by(col(SubscriptionRow.id))))

    def any_active(self) -> bool:
        with self._engine.connect() as conn:
            query = _SUBSCRIPTION.select().where(_SUBSCRIPTION.c.status == ACTIVE).limit(1)
            return conn.execute(query).first() is not None

    def end(self, subscription_id: str, reason: str, now: datetime) -> bool:
        """Mark it ended; False when it was not active (someone else ended it first)."""
        with self._engine.begin() as conn:
            result = conn.execute(
                update(_SUBSCRIPTION)
                .where(_SUBSCRIPTION.c.id == subscription_id, _SUBSCRIPTION.c.status == ACTIVE)
                .values(status=ENDED, ended_reason=reason, ended_at=now)
            )
        return bool(result.rowcount == 1)

    def reopen(self, subscription_id: str) -> None:
        """Undo ``end`` when its ledger record could not be written."""
        with self._engine.begin() as conn:
            conn.execute(
                update(_SUBSCRIPTION)
                .where(_SUBSCRIPTION.c.id == subscription_id)
                .values(status=ACTIVE, ended_reason="", ended_at=None)
            )

    def registrations(self, ids: Iterable[str] | None = None) -> dict[str, dict[str, bool]]:
        """Per subscription, its nodes and whether each has it registered."""
        query = select(RegistrationRow)
        if ids is not None:
            query = query.where(col(RegistrationRow.subscription_id).in_(list(ids)))
        out: dict[str, dict[str, bool]] = {}
        with Session(self._engine) as session:
            for row in session.exec(query):
                out.setdefault(row.subscription_id, {})[row.node_id] = row.registered
        return out

    def set_registered(self, pairs: Iterable[tuple[str, str]], registered: bool) -> None:
        """Set (subscription, node) pairs registered or not, adding pairs not there yet
        (a node that came into scope later: it described itself, or raises a signal now)."""
        with self._engine.begin() as conn:
            for subscription_id, node_id in pairs:
                done = conn.execute(
                    update(_REGISTRATION)
                    .where(
                        _REGISTRATION.c.subscription_id == subscription_id,
                        _REGISTRATION.c.node_id == node_id,
                    )
                    .values(registered=registered)
                )
                if done.rowcount == 0:
                    conn.execute(
                        insert(_REGISTRATION).values(
                            subscription_id=subscription_id,
                            node_id=node_id,
                            registered=registered,
                        )
                    )

    def any_ends_pending(self, nodes: Collection[str]) -> bool:
        """Whether one of ``nodes`` (those configured: a node removed from the federation
        is never asked again) still has an ended subscription registered, so a cycle is
        due to tell it even when no subscription is active."""
        query = (
            core_select(_REGISTRATION.c.node_id)
            .select_from(
                _REGISTRATION.join(
                    _SUBSCRIPTION, _SUBSCRIPTION.c.id == _REGISTRATION.c.subscription_id
                )
            )
            .where(
                _REGISTRATION.c.registered.is_(True),
                _SUBSCRIPTION.c.status == ENDED,
                _REGISTRATION.c.node_id.in_(list(nodes)),
            )
            .limit(1)
        )
        with self._engine.connect() as conn:
            return conn.execute(query).first() is not None

    def pending_ends(self, per_node: int) -> dict[str, list[str]]:
        """Per node, the ended subscriptions it still has registered (sorted, at most
        ``per_node``; the rest wait for later cycles): each cycle tells the node, and the
        registration is released once the node's answer is stored (``set_registered``),
        so a node down keeps them pending until it answers."""
        query = (
            core_select(_REGISTRATION.c.node_id, _REGISTRATION.c.subscription_id)
            .select_from(
                _REGISTRATION.join(
                    _SUBSCRIPTION, _SUBSCRIPTION.c.id == _REGISTRATION.c.subscription_id
                )
            )
            .where(_REGISTRATION.c.registered.is_(True), _SUBSCRIPTION.c.status == ENDED)
            .order_by(_REGISTRATION.c.node_id, _REGISTRATION.c.subscription_id)
        )
        out: dict[str, list[str]] = {}
        with self._engine.connect() as conn:
            for node_id, subscription_id in conn.execute(query):
                ids = out.setdefault(node_id, [])
                if len(ids) < per_node:
                    ids.append(subscription_id)
        return out
