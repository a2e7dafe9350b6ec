"""Streaming import on SQLite and PostgreSQL: files read a block at a time, rows staged a
chunk at a time, the snapshot applied set-wise.

Tiny chunk and block sizes make a small file cross many chunk and block boundaries, so
what the importer holds at once and what a refusal in a late chunk leaves behind are
asserted on what is staged per chunk, never on timing or memory readings.
"""

from __future__ import annotations

import random
import traceback
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from sqlalchemy import event, select, text, update
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError

from creditshare.departments import FieldValue, get_department
from creditshare.errors import ImportRejectedError
from creditshare.identity import make_uscc
from creditshare.node import (
    RecordStore,
    _importer,
    _staging,
    check_files,
    import_files,
    make_engine,
)
from creditshare.node._records import BATCHES, PREVIOUS, RECORDS
from creditshare.node._staging import SnapshotStaging, staging

TAX = get_department("tax")
HEADER = "uscc,annual_tax_paid,tax_credit_grade,months_in_arrears"
GRADES = "ABMCD"


def _uscc(i: int) -> str:
    return str(make_uscc("9", "1", "310101", f"MC{i:06d}"))


@pytest.fixture
def engine(database_url: str) -> Iterator[Engine]:
    engine = make_engine(database_url)
    yield engine
    engine.dispose()


@pytest.fixture
def store(engine: Engine) -> RecordStore:
    return RecordStore(engine)


def _write(path: Path, rows: dict[str, tuple[float, str, int]]) -> Path:
    lines = [HEADER] + [f"{u},{paid},{grade},{months}" for u, (paid, grade, months) in rows.items()]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def _dump(engine: Engine) -> tuple[Any, ...]:
    """Everything an import may change: records, previous values, history and counts."""
    with engine.connect() as conn:
        records = conn.execute(select(RECORDS).order_by(RECORDS.c.uscc)).all()
        previous = conn.execute(select(PREVIOUS).order_by(PREVIOUS.c.uscc)).all()
        batches = conn.execute(select(BATCHES).order_by(BATCHES.c.id)).all()
    return [tuple(r) for r in records], [tuple(r) for r in previous], [tuple(r) for r in batches]


class _Spy:
    """Records, at every staged chunk, its size and how many rows had been parsed."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.parsed = 0
        self.chunks: list[tuple[int, int]] = []  # (rows staged in this chunk, parsed ahead)
        self._staged = 0
        parse, add = _importer.parse_file, SnapshotStaging.add

        def counting_parse(*args: Any, **kwargs: Any) -> Iterator[Any]:
            for row in parse(*args, **kwargs):
                self.parsed += 1
                yield row

        def spying_add(staging: SnapshotStaging, rows: Any) -> None:
            if rows:
                self.chunks.append((len(rows), self.parsed - self._staged))
                self._staged += len(rows)
            add(staging, rows)

        monkeypatch.setattr(_importer, "parse_file", counting_parse)
        monkeypatch.setattr(SnapshotStaging, "add", spying_add)


def test_the_importer_holds_at_most_one_chunk(
    store: RecordStore, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    spy = _Spy(monkeypatch)
    monkeypatch.setattr(_importer, "_BLOCK", 64)  # many blocks per file, too
    first = {_uscc(i): (float(i), GRADES[i % 5], i % 3) for i in range(53)}
    second = {_uscc(i): (float(i), "A", 0) for i in range(53, 60)}
    summary = import_files(
        store,
        TAX,
        [_write(tmp_path / "a.csv", first), _write(tmp_path / "b.csv", second)],
        chunk_rows=7,
    )
    assert summary.rows == summary.added == 60
    sizes = [size for size, _ in spy.chunks]
    # Each file's rows go in chunks of 7, the last one of each file partial.
    assert sizes == [7] * 7 + [4] + [7]
    # Nothing is parsed ahead of what is staged beyond the chunk being filled.
    assert all(ahead <= 7 for _, ahead in spy.chunks)
    assert store.count() == 60


def _ragged_file(path: Path) -> Path:
    """CRLF, a lone CR, quoted newlines, a BOM, blank lines and multi-byte characters, so
    that tiny blocks split every kind of line end and character."""
    rows = [
        "\ufeff" + HEADER + "\r\n",
        f"{_uscc(1)},1.5,A,0\r\n",
        "\r\n",
        f'"{_uscc(2)}","2",B,"1"\r',
        f'{_uscc(3)}," 3 ",M,2\n',
        f'"{_uscc(4)}",4,"C",3\n',
        ",,,\n",
        f"{_uscc(5)},5,D,4",
    ]
    path.write_bytes("".join(rows).encode("utf-8"))
    return path


@pytest.mark.parametrize("block", [1, 2, 3, 5, 7, 64, 1 << 20])
def test_blocks_of_any_size_parse_alike(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, block: int
) -> None:
    path = _ragged_file(tmp_path / "ragged.csv")
    monkeypatch.setattr(_importer, "_BLOCK", block)
    rows = list(_importer.parse_file(path, TAX))
    assert [(u, line) for u, _, line in rows] == [
        (_uscc(1), 2),
        (_uscc(2), 4),
        (_uscc(3), 5),
        (_uscc(4), 6),
        (_uscc(5), 8),
    ]
    assert rows[1][1] == {"annual_tax_paid": 2.0, "tax_credit_grade": "B", "months_in_arrears": 1}


@pytest.mark.parametrize("block", [1, 4, 64])
def test_a_bad_byte_is_refused_with_its_line_whatever_the_block(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, block: int
) -> None:
    path = tmp_path / "gbk.csv"
    good = "".join(f"{_uscc(i)},1,A,0\n" for i in range(5))
    path.write_bytes((HEADER + "\n" + good).encode() + b"x\xb0\xa1,2,A,0\n")
    monkeypatch.setattr(_importer, "_BLOCK", block)
    with pytest.raises(ImportRejectedError) as caught:
        list(_importer.parse_file(path, TAX))
    assert (caught.value.line, "not UTF-8" in caught.value.reason) == (7, True)


def test_a_line_without_end_is_refused_not_held(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """csv bounds a field, not a line: a file with no line break (a wrong export, or a
    single-line JSON dump) would otherwise be held whole before the first row parsed."""
    monkeypatch.setattr(_importer, "_BLOCK", 16)
    monkeypatch.setattr(_importer, "_MAX_LINE", 100)
    path = tmp_path / "long.csv"
    path.write_text(f"{HEADER}\n{_uscc(1)},1,A,0\n" + "x" * 500 + "\n", encoding="utf-8")
    held: list[int] = []
    lines = _importer._lines

    def watched(*args: Any) -> Iterator[str]:
        for line in lines(*args):
            held.append(len(line))
            yield line

    monkeypatch.setattr(_importer, "_lines", watched)
    with pytest.raises(ImportRejectedError) as caught:
        list(_importer.parse_file(path, TAX))
    assert (caught.value.line, "longer than 100 characters" in caught.value.reason) == (3, True)
    assert max(held) <= 100


def test_a_bad_row_in_a_late_chunk_changes_nothing(
    engine: Engine, store: RecordStore, tmp_path: Path
) -> None:
    rows = {_uscc(i): (float(i), "A", 0) for i in range(40)}
    import_files(store, TAX, [_write(tmp_path / "seed.csv", rows)], chunk_rows=6)
    changed = {u: (v[0] + 1, "B", 1) for u, v in rows.items()}
    changed[_uscc(99)] = (1.0, "A", 0)
    path = _write(tmp_path / "late.csv", changed)
    with path.open("a", encoding="utf-8") as handle:
        handle.write(f"{_uscc(100)},1,Z,0\n")  # line 43: the last chunk's last row
    before = _dump(engine)
    with pytest.raises(ImportRejectedError) as caught:
        import_files(store, TAX, [path], chunk_rows=6)
    assert (caught.value.file, caught.value.line) == (str(path), 43)
    assert "tax_credit_grade" in caught.value.reason
    assert _dump(engine) == before
    # The staging table went with the refusal: the next import starts empty.
    again = import_files(store, TAX, [_write(tmp_path / "again.csv", rows)], chunk_rows=6)
    assert (again.added, again.changed, again.removed, again.unchanged) == (0, 0, 0, 40)


def test_a_duplicate_across_chunks_and_files_is_refused_with_both_places(
    engine: Engine, store: RecordStore, tmp_path: Path
) -> None:
    a = _write(tmp_path / "a.csv", {_uscc(i): (1.0, "A", 0) for i in range(20)})
    b = _write(tmp_path / "b.csv", {_uscc(i): (1.0, "A", 0) for i in range(30, 40)})
    before = _dump(engine)
    # Within one file, chunks apart: line 18 repeats line 3 (chunks of 4).
    late = {_uscc(i): (1.0, "A", 0) for i in range(30, 46)}
    path = tmp_path / "late.csv"
    _write(path, late)
    with path.open("a", encoding="utf-8") as handle:
        handle.write(f"{_uscc(31).lower()},2,B,0\n")
    with pytest.raises(ImportRejectedError) as caught:
        import_files(store, TAX, [path], chunk_rows=4)
    assert (caught.value.file, caught.value.line) == (str(path), 18)
    assert f"duplicate USCC {_uscc(31)} (first seen at {path}, line 3)" in caught.value.reason
    # Across files: b.csv line 2 repeats nothing in a.csv, but a.csv again does.
    with pytest.raises(ImportRejectedError) as caught:
        import_files(store, TAX, [a, b, a], chunk_rows=4)
    assert (caught.value.file, caught.value.line) == (str(a), 2)
    assert f"(first seen at {a}, line 2)" in caught.value.reason
    assert _dump(engine) == before


def test_a_duplicate_before_a_bad_row_in_one_chunk_is_the_error(
    store: RecordStore, tmp_path: Path
) -> None:
    """The first bad line is reported, whichever check finds it."""
    path = tmp_path / "both.csv"
    path.write_text(
        f"{HEADER}\n{_uscc(1)},1,A,0\n{_uscc(2)},1,A,0\n{_uscc(1)},1,A,0\n{_uscc(3)},1,Q,0\n"
    )
    with pytest.raises(ImportRejectedError) as caught:
        import_files(store, TAX, [path], chunk_rows=100)
    assert caught.value.line == 4 and "duplicate USCC" in caught.value.reason


def _model(
    held: dict[str, dict[str, FieldValue]], snapshot: dict[str, dict[str, FieldValue]]
) -> tuple[int, int, int, int]:
    """The counts a snapshot must report, computed the obvious way, in memory."""
    added = sum(1 for u in snapshot if u not in held)
    changed = sum(1 for u in snapshot if u in held and held[u] != snapshot[u])
    removed = sum(1 for u in held if u not in snapshot)
    return added, changed, removed, len(snapshot) - added - changed


def test_streamed_snapshots_match_the_in_memory_model(
    engine: Engine, store: RecordStore, tmp_path: Path
) -> None:
    rng = random.Random(16)
    held: dict[str, dict[str, FieldValue]] = {}
    for round_ in range(4):
        rows = {
            _uscc(i): (float(rng.randrange(3)), GRADES[rng.randrange(2)], rng.randrange(2))
            for i in range(120)
            if rng.random() < 0.8
        }
        path = _write(tmp_path / f"s{round_}.csv", rows)
        summary = import_files(store, TAX, [path], chunk_rows=9, allow_empty=True)
        snapshot: dict[str, dict[str, FieldValue]] = {
            u: {"annual_tax_paid": p, "tax_credit_grade": g, "months_in_arrears": m}
            for u, (p, g, m) in rows.items()
        }
        expected = _model(held, snapshot)
        assert (summary.added, summary.changed, summary.removed, summary.unchanged) == expected
        assert store.all() == snapshot
        kept = _previous_usccs(engine)
        for uscc in set(held) | set(snapshot):
            gone_or_changed = uscc in held and held[uscc] != snapshot.get(uscc)
            assert store.previous(uscc) == held.get(uscc), uscc
            assert (uscc in kept) == gone_or_changed, uscc
        held = snapshot


def _previous_usccs(engine: Engine) -> set[str]:
    with engine.connect() as conn:
        return set(conn.execute(select(PREVIOUS.c.uscc)).scalars())


def test_the_same_values_in_another_json_layout_are_unchanged(
    engine: Engine, store: RecordStore, tmp_path: Path
) -> None:
    """The database compares JSON text; values equal as values but stored another way
    (keys in another order, as a record of an older schema's field order) are
    unchanged, as they were when snapshots compared values in Python."""
    rows = {_uscc(i): (float(i), "A", i) for i in range(10)}
    path = _write(tmp_path / "a.csv", rows)
    import_files(store, TAX, [path])
    reordered = {"months_in_arrears": 3, "tax_credit_grade": "A", "annual_tax_paid": 3.0}
    with engine.begin() as conn:
        conn.execute(update(RECORDS).where(RECORDS.c.uscc == _uscc(3)).values(data=reordered))
        stored = conn.execute(
            text("SELECT CAST(data AS TEXT) FROM enterprise_record WHERE uscc = :u"),
            {"u": _uscc(3)},
        ).scalar_one()
    assert stored.startswith('{"months_in_arrears"')  # not vacuous
    again = import_files(store, TAX, [path])
    assert (again.added, again.changed, again.removed, again.unchanged) == (0, 0, 0, 10)
    assert _previous_usccs(engine) == set()


def test_import_max_rows_refuses_a_larger_snapshot(
    engine: Engine, store: RecordStore, tmp_path: Path
) -> None:
    path = _write(tmp_path / "a.csv", {_uscc(i): (1.0, "A", 0) for i in range(12)})
    with pytest.raises(ImportRejectedError) as caught:
        import_files(store, TAX, [path], max_rows=10, chunk_rows=4)
    assert (caught.value.line, "more than 10 rows" in caught.value.reason) == (12, True)
    assert store.count() == 0
    assert import_files(store, TAX, [path], max_rows=12).rows == 12


def test_check_files_streams_and_finds_duplicates(tmp_path: Path) -> None:
    a = _write(tmp_path / "a.csv", {_uscc(i): (1.0, "A", 0) for i in range(30)})
    b = _write(tmp_path / "b.csv", {_uscc(i): (1.0, "A", 0) for i in range(30, 35)})
    assert check_files(TAX, [a, b]) == 35
    with pytest.raises(ImportRejectedError, match="duplicate USCC"):
        check_files(TAX, [a, b, b])


def _plans(engine: Engine, statements: list[tuple[str, Any]]) -> list[str]:
    """Each statement's plan as one string (SQLite: EXPLAIN QUERY PLAN; PostgreSQL:
    EXPLAIN with sequential scans priced out, so any usable index shows)."""
    plans = []
    with engine.connect() as conn:
        if engine.dialect.name == "postgresql":
            conn.exec_driver_sql("SET enable_seqscan = off")
            prefix = "EXPLAIN "
        else:
            prefix = "EXPLAIN QUERY PLAN "
        for statement, parameters in statements:
            rows = conn.exec_driver_sql(prefix + statement, parameters).all()
            plans.append(" | ".join(" ".join(str(c) for c in row) for row in rows))
    return plans


def test_the_query_path_reads_records_by_index(
    engine: Engine, store: RecordStore, tmp_path: Path
) -> None:
    """What a query reads of the records (``RecordStore.get``; ``previous`` for
    monitoring) is an index search, so its cost does not grow with the enterprises."""

    rows = {_uscc(i): (float(i), "A", 0) for i in range(50)}
    import_files(store, TAX, [_write(tmp_path / "a.csv", rows)])
    import_files(store, TAX, [_write(tmp_path / "b.csv", dict(list(rows.items())[:40]))])
    seen: list[tuple[str, Any]] = []

    def capture(conn: Any, cursor: Any, statement: str, parameters: Any, *_: Any) -> None:
        if statement.lstrip().upper().startswith("SELECT"):
            seen.append((statement, parameters))

    event.listen(engine, "before_cursor_execute", capture)
    try:
        assert store.get(_uscc(3)) is not None
        assert store.previous(_uscc(45)) is not None  # removed: its kept values
        assert store.previous(_uscc(3)) is not None  # unchanged: its current values
    finally:
        event.remove(engine, "before_cursor_execute", capture)
    reads = [(s, p) for s, p in seen if "enterprise_record" in s or "previous_record" in s]
    assert len(reads) >= 3
    for plan in _plans(engine, reads):
        if engine.dialect.name == "sqlite":
            assert "SEARCH" in plan and "INDEX" in plan and "SCAN" not in plan, plan
        else:
            assert "Index" in plan and "Seq Scan" not in plan, plan


def test_latest_changes_lists_a_few_and_counts_them_all(store: RecordStore, tmp_path: Path) -> None:
    """A page shows a few USCCs of each kind and the counts: a first import of millions
    of enterprises "added" them all, and no caller should hold them all to count them."""
    first = {_uscc(i): (1.0, "A", 0) for i in range(30)}
    import_files(store, TAX, [_write(tmp_path / "a.csv", first)])
    second = {u: (2.0, "B", 0) if i % 3 == 0 else v for i, (u, v) in enumerate(first.items())}
    second = {u: v for i, (u, v) in enumerate(second.items()) if i % 5 != 1}
    second.update({_uscc(i): (1.0, "A", 0) for i in range(40, 47)})
    import_files(store, TAX, [_write(tmp_path / "b.csv", second)])
    everything = store.latest_changes()
    few = store.latest_changes(limit=3)
    assert everything is not None and few is not None
    assert everything.counts == (7, 8, 6) == few.counts  # 10 changed, 2 of them removed
    assert (len(everything.added), len(everything.changed), len(everything.removed)) == (7, 8, 6)
    assert few.added == everything.added[:3]
    assert few.changed == everything.changed[:3]
    assert few.removed == everything.removed[:3]


def _staging_tables_left(engine: Engine) -> list[int]:
    """For each connection the pool holds, the staging tables left in its session (the
    pool rolls back what a returned connection left open; temporary tables it keeps)."""
    conns = [engine.connect() for _ in range(engine.pool.checkedin())]  # type: ignore[attr-defined]
    try:
        sql = (
            "SELECT count(*) FROM temp.sqlite_master WHERE name LIKE 'snapshot_%'"
            if engine.dialect.name == "sqlite"
            else "SELECT count(to_regclass('pg_temp.snapshot_staging')) "
            "+ count(to_regclass('pg_temp.snapshot_chunk'))"
        )
        return [int(conn.exec_driver_sql(sql).scalar_one()) for conn in conns]
    finally:
        for conn in conns:
            conn.close()


def _logged(exc: BaseException | None) -> list[str]:
    """The lines a log shows of ``exc`` and the exceptions chained to it (not the code)."""
    lines: list[str] = []
    while exc is not None:
        lines += traceback.format_exception_only(exc)
        exc = exc.__cause__ or (None if exc.__suppress_context__ else exc.__context__)
    return lines


def test_a_database_error_while_staging_is_raised_and_leaves_no_staging_table(
    engine: Engine, store: RecordStore, tmp_path: Path
) -> None:
    """A statement the database refuses mid-staging (here a NOT NULL line; in life a full
    disk or PostgreSQL's temp_file_limit) is the error the caller sees, not a failure of
    the clean-up it aborted, and the pooled connection keeps no staging table."""
    import_files(store, TAX, [_write(tmp_path / "seed.csv", {_uscc(1): (1.0, "A", 0)})])
    before = _dump(engine)
    refused = (IntegrityError, psycopg.errors.NotNullViolation)
    with pytest.raises(refused) as caught, staging(engine) as staged:
        staged.add([(_uscc(2), {"annual_tax_paid": 1.0}, 0, 2)])
        staged.add([(_uscc(3), {"annual_tax_paid": 1.0}, 0, None)])  # type: ignore[list-item]
    assert "null" in str(caught.value).lower()  # the refusal itself, not a clean-up error
    assert not any(_uscc(3) in text or "annual_tax_paid" in text for text in _logged(caught.value))
    assert _dump(engine) == before
    left = _staging_tables_left(engine)
    assert left and set(left) == {0}


def _rows_read(node: dict[str, Any], table: str) -> int:
    """Rows the scans of ``table`` in an EXPLAIN (ANALYZE, FORMAT JSON) plan returned."""
    own = node["Actual Rows"] * node["Actual Loops"] if node.get("Relation Name") == table else 0
    return own + sum(_rows_read(child, table) for child in node.get("Plans", ()))


def test_each_page_of_changed_records_reads_a_page_of_records(
    postgres_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The apply pages through the changed records by key: each page must read about a
    page of records, not every record before it (quadratic at millions of changes)."""
    monkeypatch.setattr(_staging, "APPLY_CHUNK", 20)
    engine = make_engine(postgres_url)
    store = RecordStore(engine)
    pages: list[tuple[str, Any]] = []

    def capture(conn: Any, cursor: Any, statement: str, params: Any, *_: Any) -> None:
        if statement.startswith("SELECT snapshot_staging.uscc") and " JOIN " in statement:
            pages.append((statement, params))

    try:
        rows = [(_uscc(i), {"annual_tax_paid": float(i)}) for i in range(2000)]
        store.apply_snapshot(rows, files="a", sha256="0" * 64)
        event.listen(engine, "before_cursor_execute", capture)
        changed = [(u, {"annual_tax_paid": v["annual_tax_paid"] + 1}) for u, v in rows]
        with staging(engine) as staged:
            staged.add([(u, d, 0, n) for n, (u, d) in enumerate(changed)])
            staged.apply(files="b", sha256="0" * 64)
            event.remove(engine, "before_cursor_execute", capture)
            statement, params = pages[-2]  # the last page that found changes
            # On the staging connection: the staging table is its session's.
            plan = staged._conn.exec_driver_sql(
                "EXPLAIN (ANALYZE, FORMAT JSON) " + statement, params
            ).scalar_one()
        assert len(pages) > 50
        assert _rows_read(plan[0]["Plan"], "enterprise_record") <= 3 * 20
    finally:
        engine.dispose()
