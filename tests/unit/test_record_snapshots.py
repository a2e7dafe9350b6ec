"""The record store's snapshots on SQLite and PostgreSQL: what each one added, changed
and removed, the previous values kept for change detection, and that a refused or
failed snapshot leaves records, previous values, history and counts as they were."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select
from sqlalchemy.engine import Engine

from creditshare.departments import FieldValue, get_department
from creditshare.errors import ImportRejectedError
from creditshare.identity import make_uscc
from creditshare.node import RecordStore, import_files, make_engine
from creditshare.node._records import BATCHES, CHUNK, PREVIOUS, RECORDS

Record = tuple[str, dict[str, FieldValue]]
N = 2 * CHUNK + 203  # several chunks, the last one partial


def _uscc(i: int) -> str:
    return str(make_uscc("9", "1", "310101", f"MB{i:06d}"))


def _values(i: int, version: int = 0) -> dict[str, FieldValue]:
    return {
        "annual_tax_paid": float(i * 10 + version),
        "tax_credit_grade": "ABCD"[i % 4],
        "months_in_arrears": i % 7,
    }


def _first(n: int = N) -> list[Record]:
    return [(_uscc(i), _values(i)) for i in range(n)]


@pytest.fixture
def engine(database_url: str) -> Iterator[Engine]:
    engine = make_engine(database_url)
    yield engine
    engine.dispose()


@pytest.fixture
def store(engine: Engine) -> RecordStore:
    return RecordStore(engine)


def _apply(store: RecordStore, records: Any, name: str, **options: Any) -> Any:
    return store.apply_snapshot(records, files=name, sha256="0" * 64, **options)


def _dump(engine: Engine, store: RecordStore) -> tuple[Any, ...]:
    """Every row a snapshot may write, and what the store says about changes."""
    with engine.connect() as conn:
        records = conn.execute(
            select(RECORDS.c.uscc, RECORDS.c.data, RECORDS.c.batch_id).order_by(RECORDS.c.uscc)
        ).all()
        previous = conn.execute(select(PREVIOUS).order_by(PREVIOUS.c.uscc)).all()
        batches = conn.execute(select(BATCHES).order_by(BATCHES.c.id)).all()
    return (
        [tuple(r) for r in records],
        [tuple(r) for r in previous],
        [tuple(r) for r in batches],
        store.latest_changes(),
        [store.previous(_uscc(i)) for i in (0, 7, 11, 77, N + 1)],
    )


def _second() -> tuple[list[Record], set[str], set[str], set[str]]:
    """Every 7th record changed, every 11th removed (77 is both: removed), 50 added."""
    records: list[Record] = []
    changed, removed, added = set(), set(), set()
    for i in range(N):
        if i % 11 == 0:
            removed.add(_uscc(i))
        elif i % 7 == 0:
            records.append((_uscc(i), _values(i, 1)))
            changed.add(_uscc(i))
        else:
            records.append((_uscc(i), _values(i)))
    for i in range(N, N + 50):
        records.append((_uscc(i), _values(i)))
        added.add(_uscc(i))
    return records, changed, removed, added


def test_a_snapshot_across_chunks_counts_and_keeps_previous_values(
    engine: Engine, store: RecordStore
) -> None:
    assert store.latest_changes() is None
    assert store.previous(_uscc(1)) is None
    first = _apply(store, iter(_first()), "first.csv")  # a generator is enough
    assert (first.added, first.changed, first.removed, first.unchanged) == (N, 0, 0, 0)
    records, changed, removed, added = _second()
    second = _apply(store, records, "second.csv", now=datetime(2026, 12, 1, tzinfo=UTC))
    assert (second.added, second.changed, second.removed, second.unchanged) == (
        len(added),
        len(changed),
        len(removed),
        N - len(changed) - len(removed),
    )
    assert store.count() == second.rows == len(records)
    changes = store.latest_changes()
    assert changes is not None and changes.batch_id == second.batch_id
    assert changes.added == tuple(sorted(added))
    assert changes.changed == tuple(sorted(changed))
    assert changes.removed == tuple(sorted(removed))
    for i in range(N):
        uscc = _uscc(i)
        assert store.previous(uscc) == _values(i), i  # whatever happened since
        expected = None if uscc in removed else _values(i, 1 if uscc in changed else 0)
        assert store.get(uscc) == expected, i
    for uscc in added:
        assert store.previous(uscc) is None
    with engine.connect() as conn:
        from_snapshot = dict(conn.execute(select(RECORDS.c.uscc, RECORDS.c.batch_id)).all())
        kept = conn.execute(select(PREVIOUS.c.uscc)).scalars().all()
    # Each value says where it came from; only changed and removed records were copied.
    assert {u for u, b in from_snapshot.items() if b == second.batch_id} == changed | added
    assert sorted(kept) == sorted(changed | removed)
    history = store.snapshots()
    assert [(b.id, b.files, b.rows, b.added, b.changed, b.removed) for b in history] == [
        (second.batch_id, "second.csv", len(records), len(added), len(changed), len(removed)),
        (first.batch_id, "first.csv", N, N, 0, 0),
    ]
    assert history[0].imported_at.replace(tzinfo=UTC) == datetime(2026, 12, 1, tzinfo=UTC)
    assert [b.id for b in store.snapshots(limit=1)] == [second.batch_id]


def _fails_midway() -> Iterator[Record]:
    """Two chunks' worth of writes (changes, additions) happen before the failure."""
    records, _, _, _ = _second()
    yield from records[: 2 * CHUNK + 10]
    raise ImportRejectedError("third.csv", 2 * CHUNK + 12, "annual_tax_paid is empty")


def _duplicate() -> Iterator[Record]:
    records, _, _, _ = _second()
    yield from records[: CHUNK + 3]
    yield records[5]


FAILURES: dict[str, tuple[Any, type[Exception], str]] = {
    "bad row after two chunks were written": (
        _fails_midway,
        ImportRejectedError,
        "annual_tax_paid is empty",
    ),
    "snapshot would remove every record": (
        lambda: [(_uscc(i), _values(i)) for i in range(10 * N, 10 * N + 5)],
        ImportRejectedError,
        f"would remove all {N - N // 11 - 1 + 50} current records",
    ),
    "header-only snapshot": (lambda: [], ImportRejectedError, "--allow-empty"),
    "a USCC twice": (_duplicate, ValueError, "each USCC once"),
}


@pytest.mark.parametrize("failure", FAILURES, ids=list(FAILURES))
def test_a_failed_snapshot_changes_nothing(
    engine: Engine, store: RecordStore, failure: str
) -> None:
    make, error, message = FAILURES[failure]
    _apply(store, _first(), "first.csv")
    _apply(store, _second()[0], "second.csv")  # so there are previous values to keep
    before = _dump(engine, store)
    assert before[1] and before[3].changed  # not vacuous
    with pytest.raises(error, match=message.replace("-", "\\-")):
        _apply(store, make(), "third.csv")
    assert _dump(engine, store) == before
    # The store is usable afterwards, and the next snapshot compares with the second.
    third = _apply(store, _second()[0], "again.csv")
    assert (third.added, third.changed, third.removed) == (0, 0, 0)


def test_a_bad_file_changes_nothing(engine: Engine, store: RecordStore, tmp_path: Path) -> None:
    _apply(store, _first(), "first.csv")
    _apply(store, _second()[0], "second.csv")
    before = _dump(engine, store)
    bad = tmp_path / "tax.csv"
    lines = ["uscc,annual_tax_paid,tax_credit_grade,months_in_arrears"]
    lines += [f"{_uscc(i)},{i + 0.5},A,0" for i in range(N)]
    lines.append(f"{_uscc(N)},1,Z,0")
    bad.write_text("\n".join(lines) + "\n")
    with pytest.raises(ImportRejectedError, match=f"line {N + 2}: tax_credit_grade"):
        import_files(store, get_department("tax"), [bad])
    assert _dump(engine, store) == before


def test_concurrent_snapshots_queue(database_url: str, store: RecordStore) -> None:
    """Two imports at once (two operators) both land, one after the other: the later
    one's counts are against the earlier one's records, never a mix."""
    _apply(store, _first(), "first.csv")
    a, _, _, _ = _second()
    b = [(_uscc(i), _values(i, 2)) for i in range(0, N, 2)]
    results: dict[str, Any] = {}
    errors: list[BaseException] = []

    def run(name: str, records: list[Record]) -> None:
        engine = make_engine(database_url)
        try:
            results[name] = _apply(RecordStore(engine), records, name)
        except BaseException as exc:  # surfaced below
            errors.append(exc)
        finally:
            engine.dispose()

    threads = [threading.Thread(target=run, args=(n, r)) for n, r in (("a", a), ("b", b))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    earlier, later = sorted(results.values(), key=lambda c: c.batch_id)
    held = {u: d for u, d in (a if earlier is results["a"] else b)}
    final = {u: d for u, d in (b if earlier is results["a"] else a)}
    assert later.added == len(final.keys() - held.keys())
    assert later.removed == len(held.keys() - final.keys())
    assert later.changed == sum(1 for u in final.keys() & held.keys() if final[u] != held[u])
    assert store.all() == final
