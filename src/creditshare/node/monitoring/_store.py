"""What a node keeps for post-loan monitoring, and the transactions that change it.

``register`` adds a watched subscription (ordered with snapshot imports by the same
lock, so a subscription either sees a snapshot's events or starts after it);
``end_listed`` and ``end_expired`` end subscriptions the coordinator ended or whose
consent lapsed, dropping their events; ``answer_cycle`` turns one Monitor request into
the batches to seal: it delivers what the coordinator acknowledged (and sends again
what an unstored answer carried), ends subscriptions whose consent was revoked or
expired, marks the events each batch carries as sent in this cycle, and lists the
subscriptions whose score share is due (score_change). All run under the snapshot lock,
so a concurrent import and a cycle never interleave their reads and writes.
"""

from __future__ import annotations

import threading
from collections import defaultdict
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from itertools import islice
from typing import Any

from sqlalchemy import bindparam, delete, func, insert, select, update
from sqlalchemy.engine import Connection, Engine

from creditshare.consent import ConsentGrant
from creditshare.crypto import PublicKey
from creditshare.errors import ConflictError, GoneError, OutOfOrderError
from creditshare.monitoring import BATCH_EVENTS, AlertBatch, AlertEvent, Severity, Signal
from creditshare.node._records import latest_batch, snapshot_transaction
from creditshare.node.monitoring._tables import ALERT_EVENTS, MONITOR_CYCLES, WATCHED, utc
from creditshare.signed import SignedSubscription

__all__ = ["CyclePlan", "MonitoringStore", "PlannedBatch", "PlannedScore", "Registration"]

#: Ids per ``IN (...)`` list: bounds statement size whatever a cycle asks.
_CHUNK = 500
REVOKED = "consent revoked"
EXPIRED = "consent expired"
ENDED_BY_COORDINATOR = "ended by the coordinator"


def _chunks(items: Sequence[str]) -> Iterator[list[str]]:
    iterator = iter(items)
    while chunk := list(islice(iterator, _CHUNK)):
        yield chunk


@dataclass(frozen=True, slots=True)
class Registration:
    newly_registered: bool
    #: The latest snapshot when it was registered (0: none).
    from_snapshot: int


@dataclass(frozen=True, slots=True)
class PlannedBatch:
    """A batch to seal: to the subscription's alert key, as ``batch`` says."""

    alert_key: str
    batch: AlertBatch


@dataclass(frozen=True, slots=True)
class PlannedScore:
    """A score share due: Enc(this node's share of ``model_id``'s linear score for
    ``uscc``) under ``score_key`` (the bank's Paillier key, base64 modulus)."""

    subscription_id: str
    uscc: str
    model_id: str
    score_key: str


@dataclass(slots=True)
class CyclePlan:
    batches: list[PlannedBatch] = field(default_factory=list)
    #: Served subscriptions watching score_change, in request order.
    scores: list[PlannedScore] = field(default_factory=list)
    unknown: list[str] = field(default_factory=list)
    ended: list[tuple[str, str]] = field(default_factory=list)


def _event(row: Any) -> AlertEvent:
    observed = row.observed_at
    if isinstance(observed, datetime):
        observed = observed.date()
    assert isinstance(observed, date)
    return AlertEvent(
        id=row.id,
        seq=int(row.seq),
        signal=Signal(row.signal),
        severity=Severity(row.severity),
        observed_at=observed,
        snapshot=int(row.snapshot),
        indicator=row.indicator,
        before=row.before,
        after=row.after,
    )


class MonitoringStore:
    def __init__(self, engine: Engine, clock: Callable[[], datetime]) -> None:
        self._engine = engine
        self._clock = clock
        # One cycle at a time in this process (a coordinator's retry may overlap the
        # call it retries); the snapshot lock orders it with imports and other processes.
        self._lock = threading.Lock()

    def register(
        self,
        signed: SignedSubscription,
        node_id: str,
        grant: ConsentGrant,
        score_key: PublicKey | None = None,
    ) -> Registration:
        """Watch ``signed`` from the next snapshot on; idempotent for the same signed
        subscription, ConflictError for another one under the same id, GoneError once it
        has ended here (never silently served again). ``score_key``:
        the bank's Paillier key, checked against the signed fingerprint by the caller
        (score_change only)."""
        digest = signed.digest()
        with snapshot_transaction(self._engine) as conn:
            held = conn.execute(
                select(WATCHED.c.digest, WATCHED.c.from_snapshot, WATCHED.c.ended_reason).where(
                    WATCHED.c.subscription_id == signed.subscription_id
                )
            ).first()
            if held is not None and held.ended_reason is not None:
                # Not resurrected: its events and sequence were dropped when it ended, so
                # serving it again would hide what happened meanwhile. A new id starts clean.
                raise GoneError(
                    f"subscription {signed.subscription_id} has ended on this node "
                    f"({held.ended_reason}): subscribe again under a new id"
                )
            if held is not None:
                if held.digest != digest:
                    raise ConflictError(
                        f"subscription {signed.subscription_id} is registered here with "
                        "another signed document"
                    )
                return Registration(False, int(held.from_snapshot))
            latest = latest_batch(conn) or 0
            conn.execute(
                insert(WATCHED).values(
                    subscription_id=signed.subscription_id,
                    node_id=node_id,
                    uscc=signed.uscc,
                    bank=signed.requester,
                    consent_id=signed.consent_id,
                    consent_valid_until=utc(grant.valid_until),
                    signals=[c.to_json() for c in signed.signals],
                    indicators=list(grant.indicators),
                    alert_key=signed.alert_key.to_text(),
                    model_id=signed.model_id,
                    score_key=None if score_key is None else score_key.to_text(),
                    digest=digest,
                    from_snapshot=latest,
                    next_seq=1,
                    registered_at=utc(self._clock()),
                )
            )
            return Registration(True, latest)

    def answer_cycle(
        self,
        number: int,
        acknowledged: int,
        requested: Sequence[tuple[str, str]],
        node_id: str,
        is_revoked: Callable[[str], bool],
        before_commit: Callable[[CyclePlan], None] | None = None,
    ) -> CyclePlan:
        """The batches of cycle ``number`` for ``requested`` (id, digest) pairs, in order.

        The same number again answers again with the events it carried the first time
        (none newly taken, so an acknowledgement of this cycle covers exactly what either
        answer held); a lower number than one answered is OutOfOrderError.
        ``before_commit`` sees the plan before anything is written and may refuse it
        (raising), which leaves this node's state as it was.
        """
        now = self._clock()
        with self._lock, snapshot_transaction(self._engine) as conn:
            last = conn.execute(select(func.max(MONITOR_CYCLES.c.number))).scalar()
            if last is not None and number < int(last):
                raise OutOfOrderError(
                    f"cycle {number} is older than cycle {int(last)}, which this node "
                    "answered already: cycles never go back"
                )
            retry = last is not None and number == int(last)
            # Acknowledged: the coordinator stored the answer of cycle ``acknowledged``, so
            # the events it carried are delivered. Events last sent in an earlier cycle
            # were in an answer it did not store (else they would have been acknowledged
            # then, or sent again since): they go out again.
            conn.execute(delete(ALERT_EVENTS).where(ALERT_EVENTS.c.sent_cycle == acknowledged))
            conn.execute(
                update(ALERT_EVENTS)
                .where(ALERT_EVENTS.c.sent_cycle < acknowledged)
                .values(sent_cycle=None)
            )
            ids = [sid for sid, _ in requested]
            watched = self._watched(conn, ids)
            pending = self._pending(conn, ids)
            plan = CyclePlan()
            sent: list[str] = []
            newly_ended: list[dict[str, Any]] = []
            for sid, digest in requested:
                row = watched.get(sid)
                if row is None or row.digest != digest:
                    plan.unknown.append(sid)
                    continue
                reason = row.ended_reason
                if reason is None:
                    if is_revoked(row.consent_id):
                        reason = REVOKED
                    elif utc(row.consent_valid_until) <= now:
                        reason = EXPIRED
                    if reason is not None:
                        newly_ended.append({"key": sid, "reason": reason})
                if reason is not None:
                    plan.ended.append((sid, reason))
                    continue
                events = pending.get(sid, [])
                if retry:
                    chosen = [e for e in events if e.sent_cycle == number][:BATCH_EVENTS]
                else:
                    chosen = events[:BATCH_EVENTS]
                    sent.extend(e.id for e in chosen)
                batch = AlertBatch(
                    sid,
                    node_id,
                    number,
                    tuple(_event(e) for e in chosen),
                    more=len(events) > len(chosen),
                )
                plan.batches.append(PlannedBatch(row.alert_key, batch))
                if row.score_key is not None:
                    plan.scores.append(PlannedScore(sid, row.uscc, row.model_id, row.score_key))
            if before_commit is not None:
                before_commit(plan)
            self._end(conn, newly_ended, now)
            for chunk in _chunks(sent):
                conn.execute(
                    update(ALERT_EVENTS)
                    .where(ALERT_EVENTS.c.id.in_(chunk))
                    .values(sent_cycle=number)
                )
            conn.execute(delete(MONITOR_CYCLES))
            conn.execute(insert(MONITOR_CYCLES).values(number=number, answered_at=utc(now)))
        return plan

    @staticmethod
    def _watched(conn: Connection, ids: Sequence[str]) -> dict[str, Any]:
        found: dict[str, Any] = {}
        for chunk in _chunks(ids):
            rows = conn.execute(
                select(
                    WATCHED.c.subscription_id,
                    WATCHED.c.digest,
                    WATCHED.c.alert_key,
                    WATCHED.c.uscc,
                    WATCHED.c.model_id,
                    WATCHED.c.score_key,
                    WATCHED.c.consent_id,
                    WATCHED.c.consent_valid_until,
                    WATCHED.c.ended_reason,
                ).where(WATCHED.c.subscription_id.in_(chunk))
            )
            found.update((row.subscription_id, row) for row in rows)
        return found

    @staticmethod
    def _pending(conn: Connection, ids: Sequence[str]) -> dict[str, list[Any]]:
        """Unacknowledged events of these subscriptions, each list in seq order."""
        pending: dict[str, list[Any]] = defaultdict(list)
        for chunk in _chunks(ids):
            rows = conn.execute(
                select(ALERT_EVENTS)
                .where(ALERT_EVENTS.c.subscription_id.in_(chunk))
                .order_by(ALERT_EVENTS.c.subscription_id, ALERT_EVENTS.c.seq)
            )
            for row in rows:
                pending[row.subscription_id].append(row)
        return pending

    @staticmethod
    def _end(conn: Connection, ended: list[dict[str, Any]], now: datetime) -> None:
        """Stop serving these subscriptions; their waiting events are dropped with them."""
        if not ended:
            return
        conn.execute(
            update(WATCHED)
            .where(WATCHED.c.subscription_id == bindparam("key"))
            .values(ended_reason=bindparam("reason"), ended_at=utc(now)),
            ended,
        )
        for chunk in _chunks([e["key"] for e in ended]):
            conn.execute(delete(ALERT_EVENTS).where(ALERT_EVENTS.c.subscription_id.in_(chunk)))

    def subscription(self, subscription_id: str) -> dict[str, Any] | None:
        """One watched subscription's row (for operators and tests)."""
        with self._engine.connect() as conn:
            row = conn.execute(
                select(WATCHED).where(WATCHED.c.subscription_id == subscription_id)
            ).first()
            return None if row is None else dict(row._mapping)

    def pending_events(self, subscription_id: str) -> list[AlertEvent]:
        """The events waiting for acknowledgement, in seq order (for operators and tests)."""
        with self._engine.connect() as conn:
            return [_event(row) for row in self._pending(conn, [subscription_id])[subscription_id]]

    # -- ends the coordinator announces, and lapsed consents -------------------------------

    def end_listed(self, ids: Sequence[str]) -> int:
        """End the listed subscriptions this node holds and still serves (the coordinator
        ended them: cancelled by the bank, consent revoked or expired), dropping their
        waiting events; unknown or already ended ids are ignored. How many it ended.

        The coordinator's word suffices: ending is a denial a compromised coordinator
        could always cause anyway (by no longer asking for the subscription), and it
        never lets anything more out of this node."""
        if not ids:
            return 0
        with snapshot_transaction(self._engine) as conn:
            return self._end_active(conn, list(ids), ENDED_BY_COORDINATOR)

    def end_expired(self) -> int:
        """End every served subscription whose consent has expired, dropping its waiting
        events, whether or not a cycle still asks for it; how many."""
        now = utc(self._clock())
        with snapshot_transaction(self._engine) as conn:
            ids = list(
                conn.execute(
                    select(WATCHED.c.subscription_id).where(
                        WATCHED.c.ended_reason.is_(None), WATCHED.c.consent_valid_until <= now
                    )
                ).scalars()
            )
            return self._end_active(conn, ids, EXPIRED) if ids else 0

    def _end_active(self, conn: Connection, ids: list[str], reason: str) -> int:
        active: list[str] = []
        for chunk in _chunks(ids):
            active.extend(
                conn.execute(
                    select(WATCHED.c.subscription_id).where(
                        WATCHED.c.subscription_id.in_(chunk), WATCHED.c.ended_reason.is_(None)
                    )
                ).scalars()
            )
        self._end(conn, [{"key": sid, "reason": reason} for sid in active], self._clock())
        return len(active)
