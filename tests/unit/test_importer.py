"""Transactional CSV import: every row checked first, the whole import refused on one bad row."""

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
from creditshare.node._storage import ImportBatch, RecordRow

TAX = get_department("tax")
HEADER = "uscc,annual_tax_paid,tax_credit_grade,months_in_arrears"
EXPECTED_COLUMNS = "uscc,annual_tax_paid,tax_credit_grade,months_in_arrears"


def _uscc(i: int) -> str:
    return str(make_uscc("9", "1", "310101", f"MA{i:06d}"))


U1, U2, U3, U4, U5 = (_uscc(i) for i in range(1, 6))

Snapshot = tuple[list[tuple[str, dict[str, Any], int]], list[tuple[int | None, str, str, int]]]


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


def test_reimport_replaces_values_of_existing_uscc(
    tmp_path: Path, seeded: Path, store: RecordStore, engine: Engine
) -> None:
    import_files(store, TAX, [seeded])
    update = _write(tmp_path / "update.csv", [HEADER, f"{U2},5,A,0", f"{U4},7,D,40"])
    assert import_files(store, TAX, [update]).rows == 2
    assert store.count() == 4
    assert store.get(U2) == {
        "annual_tax_paid": 5.0,
        "tax_credit_grade": "A",
        "months_in_arrears": 0,
    }
    assert store.get(U4) == {
        "annual_tax_paid": 7.0,
        "tax_credit_grade": "D",
        "months_in_arrears": 40,
    }
    assert store.get(U1) == {
        "annual_tax_paid": 1000.5,
        "tax_credit_grade": "A",
        "months_in_arrears": 0,
    }
    records, batches = _snapshot(engine)
    assert [b[3] for b in batches] == [3, 2]
    second = batches[1][0]
    batch_of = {uscc: batch for uscc, _, batch in records}
    assert batch_of[U2] == second
    assert batch_of[U4] == second
    assert batch_of[U1] == batches[0][0]


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
    before = _snapshot(engine)
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
    assert _snapshot(engine) == before
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
    before = _snapshot(engine)
    path = _write(tmp_path / "tax.csv", [header, f"{U4},1,A,0"])
    error = _reject(store, [path])
    assert error.file == str(path)
    assert error.line == 1
    assert "tax schema" in error.reason
    for fragment in fragments:
        assert fragment in error.reason
    assert f"(expected {EXPECTED_COLUMNS})" in error.reason
    assert _snapshot(engine) == before


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
    before = _snapshot(engine)
    path = tmp_path / "gbk.csv"
    path.write_bytes(
        (HEADER + "\n" + f"{U4},1,A,0\n").encode("utf-8") + f"{U5},2,".encode() + b"\xb0\xa1,0\n"
    )
    error = _reject(store, [path])
    assert error.file == str(path)
    assert error.line is None
    assert "not UTF-8" in error.reason
    assert _snapshot(engine) == before


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
