"""A node learns that subscriptions ended: the coordinator lists them in a cycle
(``MonitoringStore.end_listed``), or their consent expired (``end_expired``). Either way
the node ends them for good, drops their waiting events and raises no more for them;
registering one again is refused, never a silent resurrection with stale state."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta

import pytest
from sqlalchemy import func, select
from sqlalchemy.engine import Engine

from creditshare.errors import GoneError
from creditshare.node._storage import make_engine
from creditshare.node.monitoring import MonitoringStore
from creditshare.node.monitoring._tables import ALERT_EVENTS

from .test_node_monitoring import NODE, NOW, A, Clock, _grant, _j, cycle, snapshot, subscribe

BY_COORDINATOR = "ended by the coordinator"


@pytest.fixture
def engine(database_url: str) -> Iterator[Engine]:
    engine = make_engine(database_url)
    yield engine
    engine.dispose()


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def store(engine: Engine, clock: Clock) -> MonitoringStore:
    return MonitoringStore(engine, clock)


def _all_events(engine: Engine) -> int:
    with engine.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(ALERT_EVENTS)).scalar_one())


def test_listed_ends_end_the_subscription_and_drop_its_events(
    engine: Engine, store: MonitoringStore
) -> None:
    snapshot(engine, {A: _j(0)})
    cancelled = subscribe(store, signals={"court_judgment": 1})
    kept = subscribe(store, signals={"court_judgment": 1})
    snapshot(engine, {A: _j(1)})
    cycle(store, 1, [cancelled, kept])  # sent, never acknowledged
    snapshot(engine, {A: _j(2)})  # and one not sent yet
    assert len(store.pending_events(cancelled.subscription_id)) == 2

    assert store.end_listed([cancelled.subscription_id, "f" * 32]) == 1  # unknown: ignored
    row = store.subscription(cancelled.subscription_id)
    assert row is not None and row["ended_reason"] == BY_COORDINATOR
    assert row["ended_at"] is not None
    assert store.pending_events(cancelled.subscription_id) == []
    assert len(store.pending_events(kept.subscription_id)) == 2  # others untouched

    # Detection stops for it; the other subscription still raises.
    snapshot(engine, {A: _j(5)})
    assert store.pending_events(cancelled.subscription_id) == []
    assert len(store.pending_events(kept.subscription_id)) == 3
    # Idempotent: listed again (the coordinator had not stored the answer), nothing changes.
    assert store.end_listed([cancelled.subscription_id]) == 0
    assert store.subscription(cancelled.subscription_id)["ended_reason"] == BY_COORDINATOR  # type: ignore[index]
    assert store.end_listed([]) == 0


def test_a_subscription_ended_by_the_coordinator_is_answered_as_ended(
    engine: Engine, store: MonitoringStore
) -> None:
    signed = subscribe(store)
    store.end_listed([signed.subscription_id])
    plan = cycle(store, 1, [signed])
    assert plan.batches == [] and plan.ended == [(signed.subscription_id, BY_COORDINATOR)]


def test_an_ended_reason_is_not_overwritten(
    engine: Engine, store: MonitoringStore, clock: Clock
) -> None:
    signed = subscribe(store, valid_until=NOW + timedelta(hours=1))
    clock.now = NOW + timedelta(hours=2)
    assert store.end_expired() == 1
    assert store.end_listed([signed.subscription_id]) == 0
    assert store.subscription(signed.subscription_id)["ended_reason"] == "consent expired"  # type: ignore[index]


def test_events_of_an_expired_consent_are_deleted_even_if_no_cycle_asks(
    engine: Engine, store: MonitoringStore, clock: Clock
) -> None:
    snapshot(engine, {A: _j(0)})
    expiring = subscribe(store, signals={"court_judgment": 1}, valid_until=NOW + timedelta(days=1))
    lasting = subscribe(store, signals={"court_judgment": 1})
    snapshot(engine, {A: _j(1)})
    assert _all_events(engine) == 2
    assert store.end_expired() == 0  # not expired yet
    clock.now = NOW + timedelta(days=2)
    assert store.end_expired() == 1
    assert store.pending_events(expiring.subscription_id) == []
    assert store.subscription(expiring.subscription_id)["ended_reason"] == "consent expired"  # type: ignore[index]
    assert len(store.pending_events(lasting.subscription_id)) == 1
    assert store.end_expired() == 0


def test_registering_an_ended_subscription_again_is_refused(
    engine: Engine, store: MonitoringStore
) -> None:
    snapshot(engine, {A: _j(0)})
    signed = subscribe(store, signals={"court_judgment": 1})
    store.end_listed([signed.subscription_id])
    grant = _grant(A, ("*",), NOW + timedelta(days=365))
    with pytest.raises(GoneError, match=f"subscription {signed.subscription_id} has ended"):
        store.register(signed, NODE, grant)
    snapshot(engine, {A: _j(1)})
    assert store.pending_events(signed.subscription_id) == []
    assert store.subscription(signed.subscription_id)["ended_reason"] == BY_COORDINATOR  # type: ignore[index]
