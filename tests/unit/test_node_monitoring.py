"""A node's post-loan monitoring storage: events raised inside the snapshot import that
reveals them, and the outbox each cycle answers from (acknowledgements, resends, the
per-batch cap, repeated and backward cycles, ended and unknown subscriptions).

Storage runs on SQLite and PostgreSQL (``database_url``); the rules themselves are pure.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import event, select
from sqlalchemy.engine import Engine

from creditshare.consent import ConsentGrant, Purpose
from creditshare.crypto import AlertPrivateKey, PrivateKey, PublicKey, SigningKey
from creditshare.departments import DEPARTMENTS, Department, FieldValue
from creditshare.errors import ConflictError, InvalidInputError, OutOfOrderError
from creditshare.monitoring import BATCH_EVENTS, SignalChoice, event_id
from creditshare.node import RecordStore
from creditshare.node._storage import make_engine
from creditshare.node.monitoring import Change, MonitoringStore, detect_events, raised
from creditshare.node.monitoring._tables import ALERT_EVENTS, MONITOR_CYCLES
from creditshare.signed import SignedSubscription, subscription_document

COURT = DEPARTMENTS["court"]
TAX = DEPARTMENTS["tax"]
SOCIAL = DEPARTMENTS["social"]
NODE = "yrd-court"
A = "91350100M00010006A"
B = "91110000100000008J"
BANK_KEY = SigningKey.generate()
ALERT_KEY = AlertPrivateKey.generate()
NOW = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)


def _spec(department: Department, signal: str) -> Any:
    return next(s for s in department.signals if s.signal.value == signal)


# -- the rules ---------------------------------------------------------------------------


def _j(n: int) -> dict[str, FieldValue]:
    return {"judgments_as_defendant": n, "dishonest_debtor": 0}


@pytest.mark.parametrize(
    ("before", "after", "threshold", "expected"),
    [
        (_j(0), _j(1), 1, True),
        (_j(2), _j(3), 1, True),
        (_j(2), _j(3), 2, False),  # one more is below a threshold of two
        (_j(2), _j(4), 2, True),
        (None, _j(1), 1, True),  # absent before counts as 0
        (None, _j(0), 1, False),
        (_j(1), None, 1, False),  # removed: nothing raised
        (_j(3), _j(1), 1, False),  # fewer is no event
        (_j(1), _j(1), 1, False),
    ],
)
def test_increase(
    before: Mapping[str, FieldValue] | None,
    after: Mapping[str, FieldValue] | None,
    threshold: int,
    expected: bool,
) -> None:
    spec = _spec(COURT, "court_judgment")
    assert raised(spec, threshold, Change(before, after)) is expected


def _d(flag: int) -> dict[str, FieldValue]:
    return {"judgments_as_defendant": 0, "dishonest_debtor": flag}


@pytest.mark.parametrize(
    ("before", "after", "expected"),
    [
        (_d(0), _d(1), True),
        (None, _d(1), True),  # a new record already listed
        (_d(1), _d(1), False),
        (_d(1), _d(0), False),  # delisted is no event
        (_d(0), None, False),
        (None, _d(0), False),
    ],
)
def test_becomes_true(
    before: Mapping[str, FieldValue] | None, after: Mapping[str, FieldValue] | None, expected: bool
) -> None:
    assert raised(_spec(COURT, "dishonest_debtor"), None, Change(before, after)) is expected


def _g(grade: str) -> dict[str, FieldValue]:
    return {"annual_tax_paid": 1.0, "tax_credit_grade": grade, "months_in_arrears": 0}


@pytest.mark.parametrize(
    ("before", "after", "threshold", "expected"),
    [
        (_g("A"), _g("B"), 1, True),
        (_g("B"), _g("M"), 1, True),  # levels read best to worst: A, B, M, C, D
        (_g("A"), _g("B"), 2, False),
        (_g("A"), _g("C"), 2, True),
        (_g("C"), _g("A"), 1, False),  # an upgrade
        (_g("B"), _g("B"), 1, False),
        (None, _g("D"), 1, False),  # absent before: nothing to compare
        (_g("A"), None, 1, False),
    ],
)
def test_downgrade(
    before: Mapping[str, FieldValue] | None,
    after: Mapping[str, FieldValue] | None,
    threshold: int,
    expected: bool,
) -> None:
    spec = _spec(TAX, "tax_downgrade")
    levels = TAX.fields[1].levels
    assert raised(spec, threshold, Change(before, after), levels) is expected


def _h(n: int) -> dict[str, FieldValue]:
    return {"insured_headcount": n, "months_in_arrears": 0}


@pytest.mark.parametrize(
    ("before", "after", "threshold", "expected"),
    [
        (_h(100), _h(80), 20, True),  # exactly 20 %
        (_h(100), _h(81), 20, False),
        (_h(100), _h(0), 100, True),
        (_h(10), _h(9), 10, True),
        (_h(0), _h(0), 1, False),  # no previous headcount to fall from
        (None, _h(5), 1, False),
        (_h(100), None, 1, False),  # removed: nothing raised
        (_h(50), _h(60), 1, False),
    ],
)
def test_drop_percent(
    before: Mapping[str, FieldValue] | None,
    after: Mapping[str, FieldValue] | None,
    threshold: int,
    expected: bool,
) -> None:
    assert raised(_spec(SOCIAL, "headcount_drop"), threshold, Change(before, after)) is expected


# -- storage ------------------------------------------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = NOW

    def __call__(self) -> datetime:
        return self.now


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


def _grant(uscc: str, indicators: tuple[str, ...], valid_until: datetime) -> ConsentGrant:
    return ConsentGrant.create(
        uscc,
        "bank-1",
        Purpose.POST_LOAN_MONITORING,
        NOW - timedelta(days=1),
        valid_until,
        indicators=indicators,
    )


def subscribe(
    store: MonitoringStore,
    uscc: str = A,
    signals: Mapping[str, int | None] | None = None,
    indicators: tuple[str, ...] = ("*",),
    valid_until: datetime = NOW + timedelta(days=365),
) -> SignedSubscription:
    grant = _grant(uscc, indicators, valid_until)
    choices = [
        SignalChoice.of(name, threshold)
        for name, threshold in (signals or {"court_judgment": 1, "dishonest_debtor": None}).items()
    ]
    signed = SignedSubscription.sign(
        subscription_document(
            subscription_id=uuid.uuid4().hex,
            requester="bank-1",
            uscc=uscc,
            consent_id=grant.consent_id,
            chains=(),
            signals=choices,
            alert_key=ALERT_KEY.public_key(),
            time=NOW,
        ),
        BANK_KEY,
    )
    assert store.register(signed, NODE, grant).newly_registered
    return signed


def snapshot(
    engine: Engine,
    records: Mapping[str, Mapping[str, FieldValue]],
    department: Department = COURT,
    at: datetime = NOW,
) -> int:
    counts = RecordStore(engine).apply_snapshot(
        records.items(),
        files="t.csv",
        sha256="0" * 64,
        allow_empty=True,
        now=at,
        on_snapshot=lambda conn, snap, when: detect_events(conn, department, snap, when),
    )
    return counts.batch_id


def cycle(
    store: MonitoringStore,
    number: int,
    subscriptions: list[SignedSubscription],
    acknowledged: int = 0,
    revoked: frozenset[str] = frozenset(),
) -> Any:
    requested = sorted((s.subscription_id, s.digest()) for s in subscriptions)
    return store.answer_cycle(number, acknowledged, requested, NODE, revoked.__contains__)


def _events(plan: Any, signed: SignedSubscription) -> list[Any]:
    (batch,) = [b.batch for b in plan.batches if b.batch.subscription_id == signed.subscription_id]
    return list(batch.events)


def test_a_judgment_raises_one_event_with_stable_id_seq_and_bands(
    engine: Engine, store: MonitoringStore
) -> None:
    first = snapshot(engine, {A: _j(0), B: _j(0)})
    signed = subscribe(store)
    assert store.subscription(signed.subscription_id)["from_snapshot"] == first  # type: ignore[index]
    later = NOW + timedelta(days=3)
    second = snapshot(engine, {A: _j(2), B: _j(5)}, at=later)
    (only,) = store.pending_events(signed.subscription_id)  # B is not watched
    assert only.id == event_id(NODE, signed.subscription_id, second, only.signal)
    assert (only.seq, only.signal.value, only.severity.value) == (1, "court_judgment", "high")
    assert (only.observed_at, only.snapshot) == (later.date(), second)
    assert (only.indicator, only.before, only.after) == ("judgments_band", "none", "2–4")


def test_before_and_after_are_shown_only_for_indicators_the_consent_covers(
    engine: Engine, store: MonitoringStore
) -> None:
    snapshot(engine, {A: _j(0)})
    covered = subscribe(store, indicators=("judgments_band",))
    other = subscribe(store, indicators=("dishonest_debtor",))
    snapshot(engine, {A: {"judgments_as_defendant": 1, "dishonest_debtor": 1}})
    shown = {e.signal.value: e for e in store.pending_events(covered.subscription_id)}
    assert (shown["court_judgment"].before, shown["court_judgment"].after) == ("none", "1")
    assert (shown["dishonest_debtor"].indicator, shown["dishonest_debtor"].after) == ("", "")
    hidden = {e.signal.value: e for e in store.pending_events(other.subscription_id)}
    assert (hidden["court_judgment"].indicator, hidden["court_judgment"].before) == ("", "")
    assert (hidden["court_judgment"].after, hidden["dishonest_debtor"].after) == ("", "listed")


def test_two_imports_between_cycles_are_both_detected_in_seq_order(
    engine: Engine, store: MonitoringStore
) -> None:
    snapshot(engine, {A: _j(0)})
    signed = subscribe(store, signals={"court_judgment": 1})
    one = snapshot(engine, {A: _j(1)})
    two = snapshot(engine, {A: _j(2)})  # replaces the first import's previous values
    events = store.pending_events(signed.subscription_id)
    assert [(e.seq, e.snapshot, e.before, e.after) for e in events] == [
        (1, one, "none", "1"),
        (2, two, "1", "2–4"),
    ]
    assert len({e.id for e in events}) == 2


def test_thresholds_and_absent_records(engine: Engine, store: MonitoringStore) -> None:
    snapshot(engine, {B: _j(0)})
    strict = subscribe(store, signals={"court_judgment": 3})
    new = subscribe(store, signals={"court_judgment": 1})
    snapshot(engine, {A: _j(2), B: _j(0)})  # A is new: absent counts as 0
    assert store.pending_events(strict.subscription_id) == []
    assert [e.before for e in store.pending_events(new.subscription_id)] == [""]
    snapshot(engine, {B: _j(0)})  # A removed: no event
    assert len(store.pending_events(new.subscription_id)) == 1


def test_an_import_nobody_watches_costs_one_query(engine: Engine) -> None:
    statements: list[str] = []

    def count(*args: Any) -> None:
        statements.append(args[2])

    snapshot(engine, {A: _j(0)})
    event.listen(engine, "before_cursor_execute", count)
    try:
        with engine.begin() as conn:
            assert detect_events(conn, COURT, 1, NOW) == 0
    finally:
        event.remove(engine, "before_cursor_execute", count)
    assert len(statements) == 1


def test_a_failed_import_leaves_no_events(engine: Engine, store: MonitoringStore) -> None:
    snapshot(engine, {A: _j(0)})
    signed = subscribe(store)

    def records() -> Iterator[tuple[str, Mapping[str, FieldValue]]]:
        yield A, _j(4)
        raise ValueError("the export broke half-way")

    with pytest.raises(ValueError, match="half-way"):
        RecordStore(engine).apply_snapshot(
            records(),
            files="t.csv",
            sha256="0" * 64,
            on_snapshot=lambda conn, snap, when: detect_events(conn, COURT, snap, when),
        )
    assert store.pending_events(signed.subscription_id) == []
    assert store.subscription(signed.subscription_id)["next_seq"] == 1  # type: ignore[index]


def test_expired_and_ended_subscriptions_raise_nothing(
    engine: Engine, store: MonitoringStore
) -> None:
    snapshot(engine, {A: _j(0)})
    expiring = subscribe(store, valid_until=NOW + timedelta(days=1))
    snapshot(engine, {A: _j(1)}, at=NOW + timedelta(days=2))
    assert store.pending_events(expiring.subscription_id) == []


def test_registering_again_is_idempotent_and_another_document_conflicts(
    engine: Engine, store: MonitoringStore
) -> None:
    signed = subscribe(store)
    grant = _grant(A, ("*",), NOW + timedelta(days=1))
    again = store.register(signed, NODE, grant)
    assert not again.newly_registered
    forged = SignedSubscription.sign(signed.document, SigningKey.generate())
    with pytest.raises(ConflictError, match="another signed document"):
        store.register(forged, NODE, grant)


# -- the outbox -----------------------------------------------------------------------------


def test_events_are_sent_again_until_acknowledged(engine: Engine, store: MonitoringStore) -> None:
    snapshot(engine, {A: _j(0)})
    signed = subscribe(store, signals={"court_judgment": 1})
    snapshot(engine, {A: _j(1)})
    (event_,) = _events(cycle(store, 1, [signed]), signed)
    # Cycle 1 was never stored by the coordinator: cycle 2 sends the event again.
    assert [e.id for e in _events(cycle(store, 2, [signed], acknowledged=0), signed)] == [event_.id]
    # Cycle 1 acknowledged, but the event went out again in cycle 2: still pending.
    assert [e.id for e in _events(cycle(store, 3, [signed], acknowledged=1), signed)] == [event_.id]
    assert _events(cycle(store, 4, [signed], acknowledged=3), signed) == []
    assert store.pending_events(signed.subscription_id) == []


def test_an_event_whose_answer_was_lost_is_not_dropped_by_a_later_acknowledgement(
    engine: Engine, store: MonitoringStore
) -> None:
    """Cycle 1's answer (carrying the event) was never stored; cycle 2 did not ask for
    that subscription, and its answer was stored: acknowledging cycle 2 must not drop an
    event that only cycle 1 carried."""
    snapshot(engine, {A: _j(0), B: _j(0)})
    signed = subscribe(store, signals={"court_judgment": 1})
    other = subscribe(store, uscc=B, signals={"court_judgment": 1})
    snapshot(engine, {A: _j(1), B: _j(0)})
    (event_,) = _events(cycle(store, 1, [signed, other]), signed)
    cycle(store, 2, [other], acknowledged=0)
    again = _events(cycle(store, 3, [signed, other], acknowledged=2), signed)
    assert [e.id for e in again] == [event_.id]
    assert _events(cycle(store, 4, [signed, other], acknowledged=3), signed) == []


def test_a_batch_carries_at_most_batch_events_and_says_more_wait(
    engine: Engine, store: MonitoringStore
) -> None:
    snapshot(engine, {A: _d(0)})
    signed = subscribe(store)
    for n in range(1, 4):  # each import raises a judgment; the first also a listing
        snapshot(engine, {A: {"judgments_as_defendant": n, "dishonest_debtor": 1}})
    assert len(store.pending_events(signed.subscription_id)) == 4
    snapshot(engine, {A: {"judgments_as_defendant": 9, "dishonest_debtor": 1}})
    snapshot(engine, {A: {"judgments_as_defendant": 10, "dishonest_debtor": 1}})
    plan = cycle(store, 1, [signed])
    (batch,) = [b.batch for b in plan.batches]
    assert [e.seq for e in batch.events] == [1, 2, 3, 4] and BATCH_EVENTS == 4
    assert batch.more
    (batch,) = [b.batch for b in cycle(store, 2, [signed], acknowledged=1).batches]
    assert [e.seq for e in batch.events] == [5, 6] and not batch.more


def test_the_same_cycle_again_answers_the_same_events(
    engine: Engine, store: MonitoringStore
) -> None:
    snapshot(engine, {A: _j(0)})
    signed = subscribe(store, signals={"court_judgment": 1})
    quiet = subscribe(store, uscc=B)
    snapshot(engine, {A: _j(1)})
    first = cycle(store, 5, [signed, quiet])
    snapshot(engine, {A: _j(2)})  # raised after cycle 5 was answered
    again = cycle(store, 5, [signed, quiet])
    assert [e.id for e in _events(again, signed)] == [e.id for e in _events(first, signed)]
    assert _events(again, quiet) == [] and len(again.batches) == 2
    assert [
        b.batch.more for b in again.batches if b.batch.subscription_id == signed.subscription_id
    ] == [True]
    # Acknowledging cycle 5 covers exactly what it carried; the later event follows.
    assert [e.seq for e in _events(cycle(store, 6, [signed], acknowledged=5), signed)] == [2]


def test_cycles_never_go_back(engine: Engine, store: MonitoringStore) -> None:
    signed = subscribe(store)
    cycle(store, 3, [signed])
    with pytest.raises(OutOfOrderError, match="cycle 2 is older than cycle 3"):
        cycle(store, 2, [signed])
    assert len(cycle(store, 4, [signed], acknowledged=3).batches) == 1


def test_unknown_and_ended_subscriptions_are_named_and_no_longer_served(
    engine: Engine, store: MonitoringStore, clock: Clock
) -> None:
    snapshot(engine, {A: _j(0)})
    revoked = subscribe(store)
    expiring = subscribe(store, valid_until=NOW + timedelta(hours=1))
    served = subscribe(store)
    snapshot(engine, {A: _j(1)})
    never = SignedSubscription.sign({**served.document, "subscription_id": "f" * 32}, BANK_KEY)
    altered = SignedSubscription.sign({**served.document, "time": "2026-11-30T12:00:01Z"}, BANK_KEY)
    clock.now = NOW + timedelta(hours=2)
    requested = sorted(
        [(s.subscription_id, s.digest()) for s in (revoked, expiring, never)]
        + [(served.subscription_id, altered.digest())]  # the digest of another document
    )
    plan = store.answer_cycle(1, 0, requested, NODE, {revoked.consent_id}.__contains__)
    assert sorted(plan.unknown) == sorted(["f" * 32, served.subscription_id])
    assert dict(plan.ended) == {
        revoked.subscription_id: "consent revoked",
        expiring.subscription_id: "consent expired",
    }
    assert plan.batches == []
    assert store.pending_events(revoked.subscription_id) == []  # dropped with it
    # Ended for good, even if the revocation were somehow forgotten.
    again = store.answer_cycle(2, 1, requested, NODE, lambda _: False)
    assert dict(again.ended) == dict(plan.ended)
    assert len(cycle(store, 3, [served], acknowledged=2).batches) == 1


def test_scored_subscriptions_are_planned_with_their_key_and_a_refused_plan_writes_nothing(
    engine: Engine, store: MonitoringStore, bank_key: PrivateKey
) -> None:
    """score_change: the plan names the model and the bank's key for each served
    subscription watching it, in request order; a plan refused before commit (no scale,
    too large) leaves the cycle unanswered and its events unsent."""
    snapshot(engine, {A: _j(0)})
    grant = _grant(A, ("*",), NOW + timedelta(days=365))
    scored = SignedSubscription.sign(
        subscription_document(
            subscription_id="a" * 32,
            requester="bank-1",
            uscc=A,
            consent_id=grant.consent_id,
            chains=(),
            signals=[SignalChoice.of("court_judgment"), SignalChoice.of("score_change", 20)],
            alert_key=ALERT_KEY.public_key(),
            time=NOW,
            model_id="sme-scorecard-v1",
            key_fingerprint=bank_key.public_key.fingerprint(),
        ),
        BANK_KEY,
    )
    assert store.register(scored, NODE, grant, bank_key.public_key).newly_registered
    row = store.subscription(scored.subscription_id)
    assert row is not None and row["model_id"] == "sme-scorecard-v1"
    assert row["score_key"] == bank_key.public_key.to_text()
    plain = subscribe(store, uscc=B)
    assert store.subscription(plain.subscription_id)["score_key"] is None  # type: ignore[index]
    snapshot(engine, {A: _j(1)})
    requested = sorted((s.subscription_id, s.digest()) for s in (scored, plain))

    def refuse(plan: Any) -> None:
        assert [(s.subscription_id, s.uscc, s.model_id) for s in plan.scores] == [
            (scored.subscription_id, A, "sme-scorecard-v1")
        ]
        assert PublicKey.from_text(plan.scores[0].score_key) == bank_key.public_key
        raise InvalidInputError("no")

    with pytest.raises(InvalidInputError):
        store.answer_cycle(1, 0, requested, NODE, lambda _: False, refuse)
    with engine.connect() as conn:
        assert conn.execute(select(ALERT_EVENTS.c.sent_cycle)).scalars().all() == [None]
        assert conn.execute(select(MONITOR_CYCLES.c.number)).first() is None
    # Not answered: cycle 1 is a first answer, not a retry, and takes the event.
    plan = store.answer_cycle(1, 0, requested, NODE, lambda _: False)
    assert [s.subscription_id for s in plan.scores] == [scored.subscription_id]
    assert len(_events(plan, scored)) == 1
