"""The coordinator's listings behind the CLI's lists (``coordinator._listing``), on SQLite
and PostgreSQL: who sees which rows, newest first, and pages that neither skip nor
repeat a row, also when rows share a creation time (the id breaks the tie)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import event
from sqlalchemy.engine import Engine
from sqlmodel import Session

from creditshare.coordinator._db import ConsentRow, Participant, TrainingJobRow, make_engine
from creditshare.coordinator._listing import UnknownCursorError, consents_for, jobs_for
from creditshare.errors import InvalidInputError, PermissionDeniedError

from .._databases import fresh_postgres_database

T0 = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)
USCC_A = "91310115MA3BJ1XGXC"
USCC_B = "91110000600037341L"


def _who(id_: str, role: str, uscc: str | None = None) -> Participant:
    return Participant(id=id_, role=role, name=id_, uscc=uscc, created_at=T0)


BUREAU_A, BUREAU_B = _who("bureau-a", "bureau"), _who("bureau-b", "bureau")
BANK_A, BANK_B = _who("bank-a", "bank"), _who("bank-b", "bank")
ENTERPRISE_A = _who("ent-a", "enterprise", USCC_A)
OPERATOR, DEPARTMENT = _who("op", "operator"), _who("dept", "department")

#: Jobs: (id, bureau, status, minutes after T0). j2 and j3 share a time.
JOBS = [
    ("j1", "bureau-a", "finished", 0),
    ("j2", "bureau-a", "training", 5),
    ("j3", "bureau-a", "failed", 5),
    ("j4", "bureau-b", "training", 6),
    ("j5", "bureau-a", "cancelled", 9),
]
#: Consents: (id, enterprise, grantee, minutes after T0). c2 and c3 share a time.
CONSENTS = [
    ("c1", USCC_A, "bank-a", 0),
    ("c2", USCC_A, "bank-a", 1),
    ("c3", USCC_B, "bank-a", 1),
    ("c4", USCC_A, "bank-b", 2),
    ("c5", USCC_B, "bank-b", 3),
]


def _fill(engine: Engine) -> Engine:
    with Session(engine) as session:
        for p in (BUREAU_A, BUREAU_B, BANK_A, BANK_B, ENTERPRISE_A, OPERATOR, DEPARTMENT):
            session.add(_who(p.id, p.role, p.uscc))
        for job_id, bureau, status, minutes in JOBS:
            at = T0 + timedelta(minutes=minutes)
            session.add(
                TrainingJobRow(
                    id=job_id,
                    bureau=bureau,
                    model_id=f"m-{job_id}",
                    status=status,
                    nodes=["yrd-tax"],
                    config={},
                    progress={},
                    history=[],
                    sizes={},
                    public_key="",
                    created_at=at,
                    updated_at=at,
                )
            )
        session.commit()
        for consent_id, uscc, grantee, minutes in CONSENTS:
            at = T0 + timedelta(minutes=minutes)
            session.add(
                ConsentRow(
                    id=consent_id,
                    uscc=uscc,
                    grantee=grantee,
                    purpose="pre_loan_review",
                    document={},
                    signature="",
                    valid_from=at,
                    valid_until=at + timedelta(days=1),
                    created_at=at,
                )
            )
        session.commit()
    return engine


@pytest.fixture(params=["sqlite", "postgresql"])
def engine(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Engine]:
    if request.param == "sqlite":
        made = _fill(make_engine(f"sqlite:///{tmp_path / 'coordinator.db'}"))
        yield made
        made.dispose()
        return
    with fresh_postgres_database() as url:
        made = _fill(make_engine(url))
        yield made
        made.dispose()


def _ids(rows: list[TrainingJobRow] | list[ConsentRow]) -> list[str]:
    return [r.id for r in rows]


def test_a_bureau_sees_its_own_jobs_newest_first_and_an_operator_all(engine: Engine) -> None:
    assert _ids(jobs_for(engine, BUREAU_A)) == ["j5", "j3", "j2", "j1"]  # j3 > j2: the tie
    assert _ids(jobs_for(engine, BUREAU_B)) == ["j4"]
    assert _ids(jobs_for(engine, OPERATOR)) == ["j5", "j4", "j3", "j2", "j1"]
    assert _ids(jobs_for(engine, BUREAU_A, status="training")) == ["j2"]
    assert _ids(jobs_for(engine, OPERATOR, status="training")) == ["j4", "j2"]
    for nobody in (BANK_A, ENTERPRISE_A, DEPARTMENT):
        with pytest.raises(PermissionDeniedError):
            jobs_for(engine, nobody)
    with pytest.raises(InvalidInputError, match="status"):
        jobs_for(engine, BUREAU_A, status="sleeping")


def test_job_pages_neither_skip_nor_repeat(engine: Engine) -> None:
    for size in (1, 2, 3):
        seen: list[str] = []
        before = None
        while page := jobs_for(engine, OPERATOR, limit=size, before=before):
            assert len(page) <= size
            seen += _ids(page)
            before = page[-1].id
        assert seen == ["j5", "j4", "j3", "j2", "j1"], size


def test_a_cursor_outside_the_callers_rows_is_refused(engine: Engine) -> None:
    with pytest.raises(UnknownCursorError, match="before") as refused:
        jobs_for(engine, BUREAU_B, before="j2")  # bureau A's job
    assert refused.value.field == "before"
    with pytest.raises(UnknownCursorError):
        jobs_for(engine, BUREAU_B, status="training", before="j2")  # a filter lets none in
    with pytest.raises(UnknownCursorError):
        consents_for(engine, BANK_B, before="c1")  # bank A's consent
    with pytest.raises(UnknownCursorError):
        consents_for(engine, ENTERPRISE_A, uscc=USCC_B, before="c3")  # another's consent
    with pytest.raises(UnknownCursorError):
        jobs_for(engine, OPERATOR, before="j9")  # no such job


def test_a_cursor_the_filter_no_longer_matches_still_pages_on(engine: Engine) -> None:
    """Page 1 of status=training ends at j4; j4 then finishes. Page 2 starts after j4
    all the same (the cursor is a position among the caller's rows, not a filtered
    row), and the filters still hold on it."""
    first = jobs_for(engine, OPERATOR, status="training", limit=1)
    assert _ids(first) == ["j4"]
    with Session(engine) as session:
        job = session.get(TrainingJobRow, "j4")
        assert job is not None
        job.status = "finished"
        session.add(job)
        session.commit()
    assert _ids(jobs_for(engine, OPERATOR, status="training", limit=1, before="j4")) == ["j2"]
    assert _ids(jobs_for(engine, OPERATOR, status="finished", before="j3")) == ["j1"]
    assert _ids(jobs_for(engine, BUREAU_A, status="training", before="j3")) == ["j2"]
    # The same for consents: a cursor outside the uscc filter but visible to the caller.
    assert _ids(consents_for(engine, BANK_A, uscc=USCC_A, before="c3")) == ["c2", "c1"]
    assert _ids(consents_for(engine, OPERATOR, uscc=USCC_B, before="c4")) == ["c3"]


def test_each_party_sees_only_its_consents(engine: Engine) -> None:
    assert _ids(consents_for(engine, BANK_A)) == ["c3", "c2", "c1"]
    assert _ids(consents_for(engine, BANK_B)) == ["c5", "c4"]
    assert _ids(consents_for(engine, ENTERPRISE_A)) == ["c4", "c2", "c1"]
    assert _ids(consents_for(engine, OPERATOR)) == ["c5", "c4", "c3", "c2", "c1"]
    assert _ids(consents_for(engine, OPERATOR, uscc=USCC_B)) == ["c5", "c3"]
    assert _ids(consents_for(engine, BANK_A, uscc=USCC_B)) == ["c3"]
    # An enterprise's filter cannot reach another enterprise's consents.
    assert _ids(consents_for(engine, ENTERPRISE_A, uscc=USCC_B)) == []
    with pytest.raises(PermissionDeniedError):
        consents_for(engine, DEPARTMENT)
    pages = [consents_for(engine, BANK_A, limit=1)]
    while page := consents_for(engine, BANK_A, limit=1, before=pages[-1][-1].id):
        pages.append(page)
    assert [_ids(p) for p in pages] == [["c3"], ["c2"], ["c1"]]


def test_each_viewers_page_is_read_from_an_index_in_order(tmp_path: Path) -> None:
    """The pages' own queries, as SQLite plans them: each viewer's rows come from an
    index already in (created_at, id) order, never sorted afresh (a temp B-tree),
    which on a large table would read every matching row for each page. (A status
    filter may be planned on the status index instead: the planner's call.)"""
    engine = _fill(make_engine(f"sqlite:///{tmp_path / 'coordinator.db'}"))
    seen: list[tuple[str, Any]] = []

    def remember(_conn: Any, _cursor: Any, statement: str, parameters: Any, *_: Any) -> None:
        if statement.lstrip().upper().startswith("SELECT") and "ORDER BY" in statement:
            seen.append((statement, parameters))

    event.listen(engine, "before_cursor_execute", remember)
    jobs_for(engine, BUREAU_A, limit=2, before="j3")
    jobs_for(engine, OPERATOR, before="j5")
    consents_for(engine, BANK_A, before="c3")
    consents_for(engine, ENTERPRISE_A, limit=1)
    consents_for(engine, OPERATOR, uscc=USCC_B)
    event.remove(engine, "before_cursor_execute", remember)
    assert len(seen) == 5
    with engine.connect() as conn:
        for statement, parameters in seen:
            plan = conn.exec_driver_sql(f"EXPLAIN QUERY PLAN {statement}", parameters).all()
            steps = " | ".join(str(row[-1]) for row in plan)
            assert "USING INDEX ix_" in steps and "_created_at_id" in steps, steps
            assert "TEMP B-TREE" not in steps, steps
    engine.dispose()
