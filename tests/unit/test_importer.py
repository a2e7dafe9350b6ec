"""Snapshot CSV import: every row checked first, the whole import refused on one bad row.

A refused import changes nothing: current records, the previous snapshot's values,
the snapshot history and its counts are compared whole (``_snapshot``).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.engine import Engine
from sqlmodel import Session, select

from creditshare.departments import get_department
from creditshare.errors import ImportRejectedError, InvalidInputError
from creditshare.identity import make_uscc
from creditshare.node import RecordStore, import_files, make_engine
from creditshare.node._records import PreviousRecordRow
from creditshare.node._storage import ImportBatch, RecordRow

TAX = get_department("tax")
HEADER = "uscc,annual_tax_paid,tax_credit_grade,months_in_arrears"
EXPECTED_COLUMNS = "uscc,annual_tax_paid,tax_credit_grade,months_in_arrears"


def _uscc(i: int) -> str:
    return str(make_uscc("9", "1", "310101", f"MA{i:06d}"))


U1, U2, U3, U4, U5 = (_uscc(i) for i in range(1, 6))

Snapshot = tuple[list[tuple[str, dict[str, Any], int]], list[tuple[Any, ...]]]


@pytest.fixture
def engine(tmp_path: Path) -> Engine:
    return make_engine("sqlite:///" + str(tmp_path / "n.db"))


@pytest.fixture
def store(engine: Engine) -> RecordStore:
    return RecordStore(engine)


def _write(path: Path, lines: list[str]) -> Path:
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def _snapshot(engine: Engine) -> Snapshot:
    """Records, then the history (files, digest, rows) of every snapshot."""
    with Session(engine) as session:
        records = [
            (row.uscc, dict(row.data), row.batch_id)
            for row in session.exec(select(RecordRow).order_by(RecordRow.uscc))
        ]
        batches = [
            (b.id, b.files, b.sha256, b.rows)
            for b in session.exec(select(ImportBatch).order_by(ImportBatch.id))  # type: ignore[arg-type]
        ]
    return records, batches


def _everything(engine: Engine) -> tuple[Any, ...]:
    """All a snapshot may change: records, previous values, history with counts and times."""
    with Session(engine) as session:
        previous = [
            (p.uscc, dict(p.data), p.batch_id, p.replaced_by, p.removed)
            for p in session.exec(select(PreviousRecordRow).order_by(PreviousRecordRow.uscc))
        ]
        history = [
            (b.id, b.added, b.changed, b.removed, b.unchanged, b.imported_at)
            for b in session.exec(select(ImportBatch).order_by(ImportBatch.id))  # type: ignore[arg-type]
        ]
    store = RecordStore(engine)
    return (
        _snapshot(engine),
        previous,
        history,
        store.latest_changes(),
        [store.previous(u) for u in (U1, U2, U3, U4, U5)],
    )


def _reject(store: RecordStore, paths: list[Path]) -> ImportRejectedError:
    with pytest.raises(ImportRejectedError) as caught:
        import_files(store, TAX, paths)
    return caught.value


@pytest.fixture
def seeded(tmp_path: Path, store: RecordStore) -> Path:
    """A store holding U1..U3 from one accepted import."""
    return _write(
        tmp_path / "seed.csv",
        [
            HEADER,
            f"{U1},1000.5,A,0",
            f"{U2},250000,C,14",
            f"{U3},0,M,2",
        ],
    )


# --------------------------------------------------------------------------- good files


def test_good_file_imports_every_row(tmp_path: Path, store: RecordStore, engine: Engine) -> None:
    path = _write(
        tmp_path / "tax.csv",
        [HEADER, f"{U1},1000.5,A,0", f"{U2},250000,C,14", f"{U3},0,M,2"],
    )
    summary = import_files(store, TAX, [path])
    assert summary.rows == 3
    assert summary.files == (str(path),)
    assert summary.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
    assert store.count() == 3
    assert store.get(U1) == {
        "annual_tax_paid": 1000.5,
        "tax_credit_grade": "A",
        "months_in_arrears": 0,
    }
    assert store.get(U2) == {
        "annual_tax_paid": 250000.0,
        "tax_credit_grade": "C",
        "months_in_arrears": 14,
    }
    assert store.get(U3) == {
        "annual_tax_paid": 0.0,
        "tax_credit_grade": "M",
        "months_in_arrears": 2,
    }
    assert store.get(U4) is None
    records, batches = _snapshot(engine)
    assert len(batches) == 1
    batch_id, files, sha256, rows = batches[0]
    assert (files, sha256, rows) == (str(path), summary.sha256, 3)
    assert {r[2] for r in records} == {batch_id}


def test_parsed_types_survive_storage(seeded: Path, store: RecordStore) -> None:
    import_files(store, TAX, [seeded])
    data = store.get(U2)
    assert data is not None
    assert type(data["annual_tax_paid"]) is float
    assert type(data["months_in_arrears"]) is int
    assert type(data["tax_credit_grade"]) is str


def test_two_files_import_in_one_batch(tmp_path: Path, store: RecordStore, engine: Engine) -> None:
    a = _write(tmp_path / "a.csv", [HEADER, f"{U1},1,A,0"])
    b = _write(tmp_path / "b.csv", [HEADER, f"{U2},2,B,1", f"{U3},3,D,2"])
    summary = import_files(store, TAX, [a, b])
    assert summary.rows == 3
    assert summary.files == (str(a), str(b))
    expected = hashlib.sha256(a.read_bytes() + b.read_bytes()).hexdigest()
    assert summary.sha256 == expected
    _, batches = _snapshot(engine)
    assert [(f, s, r) for _, f, s, r in batches] == [(f"{a};{b}", expected, 3)]


def test_blank_lines_are_skipped(tmp_path: Path, store: RecordStore) -> None:
    path = _write(
        tmp_path / "tax.csv",
        [HEADER, "", f"{U1},1,A,0", "   ", " , , , ", "", f"{U2},2,B,0", ""],
    )
    assert import_files(store, TAX, [path]).rows == 2
    assert store.count() == 2


def test_line_numbers_count_blank_lines(tmp_path: Path, store: RecordStore) -> None:
    path = _write(tmp_path / "tax.csv", [HEADER, "", f"{U1},1,A,0", "", f"{U2},2,Q,0"])
    error = _reject(store, [path])
    assert error.line == 5
    assert "tax_credit_grade" in error.reason


def test_lowercase_and_padded_uscc_is_normalised(tmp_path: Path, store: RecordStore) -> None:
    path = _write(tmp_path / "tax.csv", [HEADER, f"  {U1.lower()} ,10,b,1"])
    import_files(store, TAX, [path])
    assert store.get(U1) == {
        "annual_tax_paid": 10.0,
        "tax_credit_grade": "B",
        "months_in_arrears": 1,
    }
    assert store.get(U1.lower()) is None
    assert store.count() == 1


def test_lowercase_duplicate_of_uppercase_is_a_duplicate(
    tmp_path: Path, store: RecordStore
) -> None:
    path = _write(tmp_path / "tax.csv", [HEADER, f"{U1},10,B,1", f"{U1.lower()},20,A,0"])
    error = _reject(store, [path])
    assert error.line == 3
    assert "duplicate USCC" in error.reason
    assert store.count() == 0


SEED_U1 = {"annual_tax_paid": 1000.5, "tax_credit_grade": "A", "months_in_arrears": 0}
SEED_U2 = {"annual_tax_paid": 250000.0, "tax_credit_grade": "C", "months_in_arrears": 14}
SEED_U3 = {"annual_tax_paid": 0.0, "tax_credit_grade": "M", "months_in_arrears": 2}


def test_next_snapshot_adds_changes_removes_and_keeps_previous_values(
    tmp_path: Path, seeded: Path, store: RecordStore, engine: Engine
) -> None:
    first = import_files(store, TAX, [seeded])
    assert (first.added, first.changed, first.removed, first.unchanged) == (3, 0, 0, 0)
    # U1 unchanged (written differently), U2 changed, U3 absent (removed), U4 new.
    update = _write(
        tmp_path / "update.csv", [HEADER, f"{U1},1000.50,a,0", f"{U2},5,A,0", f"{U4},7,D,40"]
    )
    second = import_files(store, TAX, [update])
    assert (second.added, second.changed, second.removed, second.unchanged) == (1, 1, 1, 1)
    assert second.rows == 3
    assert second.batch_id == first.batch_id + 1
    assert store.count() == 3
    assert store.get(U1) == SEED_U1
    assert store.get(U2) == {
        "annual_tax_paid": 5.0,
        "tax_credit_grade": "A",
        "months_in_arrears": 0,
    }
    assert store.get(U3) is None  # removed: it no longer scores...
    assert store.get(U4) == {
        "annual_tax_paid": 7.0,
        "tax_credit_grade": "D",
        "months_in_arrears": 40,
    }
    # ...but the values every record had in the previous snapshot are there.
    assert store.previous(U1) == SEED_U1
    assert store.previous(U2) == SEED_U2
    assert store.previous(U3) == SEED_U3
    assert store.previous(U4) is None  # added by the latest snapshot
    assert store.previous(U5) is None
    changes = store.latest_changes()
    assert changes is not None
    assert changes.batch_id == second.batch_id
    assert (changes.added, changes.changed, changes.removed) == ((U4,), (U2,), (U3,))
    # Each current value says which snapshot it came from; the history has the counts.
    records, _ = _snapshot(engine)
    assert {uscc: batch for uscc, _, batch in records} == {
        U1: first.batch_id,
        U2: second.batch_id,
        U4: second.batch_id,
    }
    history = store.snapshots()
    assert [(b.id, b.rows, b.added, b.changed, b.removed, b.unchanged) for b in history] == [
        (second.batch_id, 3, 1, 1, 1, 1),
        (first.batch_id, 3, 3, 0, 0, 0),
    ]
    assert history[0].sha256 == second.sha256 and history[0].files == str(update)


def test_identical_snapshot_is_a_no_op(
    seeded: Path, store: RecordStore, engine: Engine, tmp_path: Path
) -> None:
    import_files(store, TAX, [seeded])
    changed = _write(tmp_path / "changed.csv", [HEADER, f"{U1},1,A,0", f"{U2},250000,C,14"])
    import_files(store, TAX, [changed])
    records_before, _ = _snapshot(engine)
    again = import_files(store, TAX, [changed])
    assert (again.added, again.changed, again.removed, again.unchanged) == (0, 0, 0, 2)
    records_after, batches = _snapshot(engine)
    assert records_after == records_before  # not even the snapshot ids of the values move
    assert len(batches) == 3
    # The previous snapshot held the same values: nothing changed since.
    changes = store.latest_changes()
    assert changes is not None
    assert (changes.added, changes.changed, changes.removed) == ((), (), ())
    assert store.previous(U1) == store.get(U1)
    assert store.previous(U3) is None  # removed two snapshots ago: absent from the previous


def test_removed_then_added_again(seeded: Path, store: RecordStore, tmp_path: Path) -> None:
    import_files(store, TAX, [seeded])
    import_files(store, TAX, [_write(tmp_path / "a.csv", [HEADER, f"{U1},1000.5,A,0"])])
    assert store.previous(U2) == SEED_U2
    back = import_files(
        store, TAX, [_write(tmp_path / "b.csv", [HEADER, f"{U1},1000.5,A,0", f"{U2},1,B,0"])]
    )
    assert (back.added, back.changed, back.removed, back.unchanged) == (1, 0, 0, 1)
    assert store.previous(U2) is None  # it was absent from the previous snapshot
    assert store.get(U2) == {
        "annual_tax_paid": 1.0,
        "tax_credit_grade": "B",
        "months_in_arrears": 0,
    }


def test_snapshot_removing_every_record_is_refused_unless_allowed(
    seeded: Path, store: RecordStore, engine: Engine, tmp_path: Path
) -> None:
    import_files(store, TAX, [seeded])
    before = _everything(engine)
    header_only = _write(tmp_path / "export.csv", [HEADER])
    error = _reject(store, [header_only])
    assert error.file == str(header_only) and error.line is None
    assert "would remove all 3 current records" in error.reason
    assert "--allow-empty" in error.reason
    assert _everything(engine) == before
    # Another department's enterprises (none of the current ones) are refused as well.
    disjoint = _write(tmp_path / "other.csv", [HEADER, f"{U4},1,A,0", f"{U5},2,B,0"])
    assert "would remove all 3" in _reject(store, [disjoint]).reason
    assert _everything(engine) == before
    emptied = import_files(store, TAX, [header_only], allow_empty=True)
    assert (emptied.added, emptied.changed, emptied.removed, emptied.unchanged) == (0, 0, 3, 0)
    assert store.count() == 0
    assert store.previous(U2) == SEED_U2
    # An empty node takes any snapshot: nothing would be removed.
    assert import_files(store, TAX, [header_only]).removed == 0


def test_reordered_columns_bom_and_crlf(tmp_path: Path, store: RecordStore) -> None:
    path = tmp_path / "tax.csv"
    text = f" months_in_arrears , tax_credit_grade,uscc,annual_tax_paid\r\n3,C,{U1},12.5\r\n"
    path.write_bytes(b"\xef\xbb\xbf" + text.encode("utf-8"))
    import_files(store, TAX, [path])
    assert store.get(U1) == {
        "annual_tax_paid": 12.5,
        "tax_credit_grade": "C",
        "months_in_arrears": 3,
    }


def test_quoted_fields_are_unquoted(tmp_path: Path, store: RecordStore) -> None:
    path = _write(tmp_path / "tax.csv", [HEADER, f'"{U1}","1000","A","0"'])
    import_files(store, TAX, [path])
    assert store.get(U1) == {
        "annual_tax_paid": 1000.0,
        "tax_credit_grade": "A",
        "months_in_arrears": 0,
    }


def test_header_only_file_imports_nothing(tmp_path: Path, store: RecordStore) -> None:
    path = _write(tmp_path / "tax.csv", [HEADER])
    assert import_files(store, TAX, [path]).rows == 0
    assert store.count() == 0


def test_other_department_schema(tmp_path: Path, engine: Engine) -> None:
    store = RecordStore(engine)
    court = get_department("court")
    path = _write(
        tmp_path / "court.csv",
        ["uscc,judgments_as_defendant,dishonest_debtor", f"{U1},3,1", f"{U2},0,0"],
    )
    import_files(store, court, [path])
    assert store.get(U1) == {"judgments_as_defendant": 3, "dishonest_debtor": 1}
    bad = _write(
        tmp_path / "court2.csv", ["uscc,judgments_as_defendant,dishonest_debtor", f"{U3},1,2"]
    )
    with pytest.raises(ImportRejectedError) as caught:
        import_files(store, court, [bad])
    assert caught.value.line == 2
    assert "dishonest_debtor must be 0 or 1" in caught.value.reason


# --------------------------------------------------------------------------- rejected rows


def _bad_check_character(code: str) -> str:
    wrong = "0" if code[17] != "0" else "1"
    return code[:17] + wrong


BAD_ROWS: list[tuple[str, Callable[[], str], list[str]]] = [
    ("bad grade", lambda: f"{U5},100,E,0", ["tax_credit_grade", "must be one of", "'E'"]),
    ("lowercase bad grade", lambda: f"{U5},100,x,0", ["tax_credit_grade", "'x'"]),
    ("empty amount", lambda: f"{U5},,A,0", ["annual_tax_paid is empty"]),
    ("negative amount", lambda: f"{U5},-1,A,0", ["annual_tax_paid must be at least 0"]),
    ("nan amount", lambda: f"{U5},nan,A,0", ["annual_tax_paid must be finite"]),
    ("fractional months", lambda: f"{U5},1,A,1.5", ["months_in_arrears must be a whole number"]),
    ("too many months", lambda: f"{U5},1,A,601", ["months_in_arrears must be at most 600"]),
    (
        "check character",
        lambda: f"{_bad_check_character(U5)},100,A,0",
        ["USCC position 18", "check character"],
    ),
    ("letter in division", lambda: f"{U5[:4]}A{U5[5:]},100,A,0", ["USCC position 5"]),
    ("forbidden letter", lambda: f"{U5[:9]}O{U5[10:]},100,A,0", ["USCC position 10", "'O'"]),
    ("short USCC", lambda: f"{U5[:17]},100,A,0", ["must be 18 characters, got 17"]),
    ("too few fields", lambda: f"{U5},100,A", ["expected 4 fields, found 3"]),
    ("too many fields", lambda: f"{U5},100,A,0,extra", ["expected 4 fields, found 5"]),
    ("duplicate USCC", lambda: f"{U1},9,B,0", ["duplicate USCC", U1, "line 2"]),
]


@pytest.mark.parametrize(("case", "make_row", "fragments"), BAD_ROWS, ids=[c[0] for c in BAD_ROWS])
def test_bad_row_at_line_4_rejects_whole_import_and_leaves_store_unchanged(
    tmp_path: Path,
    seeded: Path,
    store: RecordStore,
    engine: Engine,
    case: str,
    make_row: Callable[[], str],
    fragments: list[str],
) -> None:
    import_files(store, TAX, [seeded])
    # A second snapshot, so there are previous values (U2's) that must survive too.
    import_files(
        store,
        TAX,
        [_write(tmp_path / "s2.csv", [HEADER, f"{U1},1000.5,A,0", f"{U2},3,B,1", f"{U3},0,M,2"])],
    )
    before = _everything(engine)
    count_before = store.count()
    # Line 2 overwrites an existing record and line 3 adds one: if either landed, we'd see it.
    path = _write(
        tmp_path / "second.csv",
        [HEADER, f"{U1},777,D,30", f"{U4},888,B,1", make_row(), f"{U2},1,A,0"],
    )
    error = _reject(store, [path])
    assert error.file == str(path)
    assert error.line == 4
    for fragment in fragments:
        assert fragment in error.reason, (case, error.reason)
    assert str(error).startswith(f"{path}, line 4: ")
    assert isinstance(error, InvalidInputError)
    assert store.count() == count_before == 3
    assert _everything(engine) == before
    assert store.previous(U2) == SEED_U2
    assert store.get(U4) is None
    assert store.get(U1) == {
        "annual_tax_paid": 1000.5,
        "tax_credit_grade": "A",
        "months_in_arrears": 0,
    }


def test_duplicate_uscc_across_two_files_rejects_everything(
    tmp_path: Path, store: RecordStore, engine: Engine
) -> None:
    first = _write(tmp_path / "first.csv", [HEADER, f"{U1},1,A,0", f"{U2},2,B,0"])
    second = _write(tmp_path / "second.csv", [HEADER, f"{U3},3,C,0", f"{U2},4,D,0"])
    error = _reject(store, [first, second])
    assert error.file == str(second)
    assert error.line == 3
    assert "duplicate USCC" in error.reason
    assert U2 in error.reason
    assert f"{first}, line 3" in error.reason
    assert store.count() == 0
    assert _snapshot(engine) == ([], [])


def test_bad_second_file_rejects_the_good_first_one(
    tmp_path: Path, store: RecordStore, engine: Engine
) -> None:
    first = _write(tmp_path / "first.csv", [HEADER, f"{U1},1,A,0"])
    second = _write(tmp_path / "second.csv", [HEADER, f"{U2},x,A,0"])
    error = _reject(store, [first, second])
    assert error.file == str(second)
    assert error.line == 2
    assert _snapshot(engine) == ([], [])


# --------------------------------------------------------------------------- rejected files


@pytest.mark.parametrize(
    ("header", "fragments"),
    [
        (
            "uscc,annual_tax_paid,tax_credit_grade",
            ["missing column(s) months_in_arrears"],
        ),
        (
            "uscc,annual_tax_paid,tax_credit_grade,months_in_arrears,notes",
            ["unknown column(s) notes"],
        ),
        (
            "uscc,tax_paid,tax_credit_grade,months_in_arrears",
            ["missing column(s) annual_tax_paid", "unknown column(s) tax_paid"],
        ),
        (
            "uscc,annual_tax_paid,tax_credit_grade,months_in_arrears,uscc",
            ["duplicate column names"],
        ),
        (
            f"{U1},1,A,0",
            ["missing column(s) uscc, annual_tax_paid, tax_credit_grade, months_in_arrears"],
        ),
    ],
)
def test_wrong_header_is_rejected_with_expected_columns(
    tmp_path: Path,
    seeded: Path,
    store: RecordStore,
    engine: Engine,
    header: str,
    fragments: list[str],
) -> None:
    import_files(store, TAX, [seeded])
    before = _everything(engine)
    path = _write(tmp_path / "tax.csv", [header, f"{U4},1,A,0"])
    error = _reject(store, [path])
    assert error.file == str(path)
    assert error.line == 1
    assert "tax schema" in error.reason
    for fragment in fragments:
        assert fragment in error.reason
    assert f"(expected {EXPECTED_COLUMNS})" in error.reason
    assert _everything(engine) == before


@pytest.mark.parametrize("content", [b"", b"\xef\xbb\xbf"])
def test_empty_file_is_rejected(tmp_path: Path, store: RecordStore, content: bytes) -> None:
    path = tmp_path / "empty.csv"
    path.write_bytes(content)
    error = _reject(store, [path])
    assert error.file == str(path)
    assert error.line == 1
    assert "empty" in error.reason
    assert store.count() == 0


def test_non_utf8_file_is_rejected(
    tmp_path: Path, seeded: Path, store: RecordStore, engine: Engine
) -> None:
    import_files(store, TAX, [seeded])
    before = _everything(engine)
    path = tmp_path / "gbk.csv"
    path.write_bytes(
        (HEADER + "\n" + f"{U4},1,A,0\n").encode("utf-8") + f"{U5},2,".encode() + b"\xb0\xa1,0\n"
    )
    error = _reject(store, [path])
    assert error.file == str(path)
    assert error.line == 3  # read a block at a time, yet the bad byte's own line
    assert "not UTF-8" in error.reason
    assert _everything(engine) == before


def test_missing_file_is_rejected(tmp_path: Path, store: RecordStore) -> None:
    path = tmp_path / "nope.csv"
    error = _reject(store, [path])
    assert error.file == str(path)
    assert error.line is None
    assert "cannot open" in error.reason
    assert str(error) == f"{path}: {error.reason}"


def test_no_files_is_rejected(store: RecordStore) -> None:
    with pytest.raises(ImportRejectedError) as caught:
        import_files(store, TAX, [])
    assert caught.value.line is None
    assert "at least one" in caught.value.reason


def test_a_data_row_read_as_a_header_makes_a_short_message(tmp_path: Path) -> None:
    """An export whose first line is a 20 000-field data row (or a header with control
    characters) is refused in one short line, not a 200 kB list of "unknown columns"."""
    from creditshare.departments import get_department
    from creditshare.node._importer import parse_file

    tax = get_department("tax")
    wide = tmp_path / "wide.csv"
    wide.write_text(
        ",".join(tax.columns) + "," + ",".join(f"c{k}" for k in range(20_000)) + ",x\ty\n",
        encoding="utf-8",
    )
    with pytest.raises(ImportRejectedError) as caught:
        list(parse_file(wide, tax))
    message = str(caught.value)
    assert "line 1" in message and "(20001 in all)" in message
    assert len(message) < 500 and "\t" not in message
