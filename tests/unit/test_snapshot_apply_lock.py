"""The apply of a snapshot compares before it takes the snapshot lock, on SQLite and
PostgreSQL: the records stay writable while the changed records are found, and a
snapshot applied in between makes the apply compare again under the lock.

Asserted by probing the lock from another connection at the point between the
comparison and the apply (a write lock taken without waiting), never by timing.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from typing import Any

import pytest
from sqlalchemy import text
from sqlalchemy.engine import Connection, Engine

from creditshare.departments import FieldValue
from creditshare.identity import make_uscc
from creditshare.node import RecordStore, make_engine
from creditshare.node._records import _SNAPSHOT_LOCK
from creditshare.node._staging import SnapshotStaging

Values = dict[str, FieldValue]


def _uscc(i: int) -> str:
    return str(make_uscc("9", "1", "310101", f"LK{i:06d}"))


def _paid(value: float) -> Values:
    return {"annual_tax_paid": value}


@pytest.fixture
def engine(database_url: str) -> Iterator[Engine]:
    engine = make_engine(database_url)
    yield engine
    engine.dispose()


def _lock_is_free(engine: Engine) -> bool:
    """Whether another connection gets the snapshot lock at once (and lets it go)."""
    if engine.dialect.name == "sqlite":
        probe = sqlite3.connect(str(engine.url.database), timeout=0, isolation_level=None)
        try:
            probe.execute("BEGIN IMMEDIATE")
        except sqlite3.OperationalError as exc:
            assert "locked" in str(exc)
            return False
        else:
            probe.execute("ROLLBACK")
            return True
        finally:
            probe.close()
    with engine.connect() as conn:
        got = conn.execute(
            text("SELECT pg_try_advisory_xact_lock(:k)"), {"k": _SNAPSHOT_LOCK}
        ).scalar_one()
        conn.rollback()
        return bool(got)


class _Probe:
    """Wraps the comparison: after each one, whether the lock was free, and a callback
    run after the first comparison of the snapshot under test only."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, engine: Engine) -> None:
        self.free: list[bool] = []
        self.armed = False
        self.between: Any = None
        compare = SnapshotStaging._compare

        def probing(staging: SnapshotStaging, conn: Connection) -> int | None:
            seen = compare(staging, conn)
            if self.armed:
                self.free.append(_lock_is_free(engine))
                if self.between is not None:
                    between, self.between = self.between, None
                    self.armed = False
                    between()
                    self.armed = True
            return seen

        monkeypatch.setattr(SnapshotStaging, "_compare", probing)


def test_the_comparison_leaves_the_records_writable(
    engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = RecordStore(engine)
    store.apply_snapshot([(_uscc(i), _paid(i)) for i in range(50)], files="a", sha256="0" * 64)
    probe = _Probe(monkeypatch, engine)
    under_lock: list[bool] = []
    probe.armed = True
    counts = store.apply_snapshot(
        [(_uscc(i), _paid(i + 1)) for i in range(50)],
        files="b",
        sha256="0" * 64,
        on_snapshot=lambda *_: under_lock.append(_lock_is_free(engine)),
    )
    assert (counts.added, counts.changed, counts.removed, counts.unchanged) == (0, 50, 0, 0)
    # Compared once, with the lock free; the probe does see the lock while it is held.
    assert probe.free == [True]
    assert under_lock == [False]
    assert store.previous(_uscc(7)) == _paid(7)
    assert store.get(_uscc(7)) == _paid(8)


def test_a_snapshot_applied_after_the_comparison_is_compared_against(
    engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The comparison read records a concurrent snapshot then replaced: the apply must
    compare again, under the lock, and count and keep against the newer records."""
    store = RecordStore(engine)
    first = {_uscc(i): _paid(0) for i in range(10)}
    store.apply_snapshot(first.items(), files="a", sha256="0" * 64)
    # Applied between the comparison and the apply: 0 changed as the outer snapshot
    # will, 5 changed otherwise, 9 removed, 11 added.
    between = {u: v for u, v in first.items() if u != _uscc(9)}
    between[_uscc(0)] = _paid(1)
    between[_uscc(5)] = _paid(2)
    between[_uscc(11)] = _paid(0)
    probe = _Probe(monkeypatch, engine)
    probe.between = lambda: store.apply_snapshot(between.items(), files="x", sha256="1" * 64)
    outer = {u: _paid(1) if i < 5 else _paid(0) for i, u in enumerate(first)}
    outer[_uscc(10)] = _paid(0)
    probe.armed = True
    counts = store.apply_snapshot(outer.items(), files="b", sha256="2" * 64)
    # Against ``between``: 9 and 10 added; 1-4 and 5 changed; 11 removed; 0, 6-8 unchanged
    # (against the records the comparison read it would be 1 added, 5 changed, 0 removed).
    assert (counts.added, counts.changed, counts.removed, counts.unchanged) == (2, 5, 1, 4)
    # Compared twice: first without the lock, then again under it.
    assert probe.free == [True, False]
    assert store.all() == outer
    for uscc in set(between) | set(outer):
        assert store.previous(uscc) == between.get(uscc), uscc
    changes = store.latest_changes()
    assert changes is not None and changes.batch_id == counts.batch_id
    assert changes.added == tuple(sorted([_uscc(9), _uscc(10)]))
    assert changes.changed == tuple(sorted(_uscc(i) for i in range(1, 6)))
    assert changes.removed == (_uscc(11),)
