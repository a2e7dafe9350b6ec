"""The coordinator's label-sum steps: each call claims its step under the row's lock
before it is relayed, so a second concurrent call is the bureau's 409, not a node
refusal that fails the job."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.engine import Engine
from sqlmodel import Session

from creditshare.coordinator import _training_steps
from creditshare.coordinator._db import TrainingJobRow, make_engine
from creditshare.coordinator._training_steps import (
    check_step,
    claim_label_sums,
    record_label_sums,
)
from creditshare.errors import ConflictError, OutOfOrderError

from .._databases import fresh_postgres_database

NODE = "yrd-market"


def _now() -> datetime:
    return datetime(2026, 1, 1, tzinfo=UTC)


@pytest.fixture
def engine(tmp_path: Path) -> Engine:
    return _with_job(make_engine(f"sqlite:///{tmp_path / 'coordinator.db'}"))


@pytest.fixture(params=["sqlite", "postgresql"])
def any_engine(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Engine]:
    if request.param == "sqlite":
        yield _with_job(make_engine(f"sqlite:///{tmp_path / 'coordinator.db'}"))
        return
    with fresh_postgres_database() as url:
        engine = _with_job(make_engine(url))
        yield engine
        engine.dispose()


def _with_job(engine: Engine) -> Engine:
    with Session(engine) as session:
        session.add(
            TrainingJobRow(
                id="job-1",
                bureau="bureau-a",
                model_id="m",
                status="training",
                nodes=[NODE],
                config={},
                progress={},
                history=[],
                sizes={NODE: {"rows": 300, "features": ["ind"], "label_sums": "needed"}},
                public_key="",
                created_at=_now(),
                updated_at=_now(),
            )
        )
        session.commit()
    return engine


def _state(engine: Engine) -> Any:
    with Session(engine) as session:
        row = session.get(TrainingJobRow, "job-1")
        assert row is not None
        return row.sizes[NODE]["label_sums"]


def test_a_second_call_while_one_is_under_way_is_a_conflict(engine: Engine) -> None:
    assert claim_label_sums(engine, _now, "job-1", NODE, "sums") == "needed"
    assert _state(engine) == "sending"
    with pytest.raises(ConflictError, match="under way"):
        claim_label_sums(engine, _now, "job-1", NODE, "sums")
    with pytest.raises(ConflictError, match="under way"):
        claim_label_sums(engine, _now, "job-1", NODE, "apply_sums")
    record_label_sums(engine, _now, "job-1", NODE, "summing")  # a chunk came through
    assert claim_label_sums(engine, _now, "job-1", NODE, "sums") == "summing"
    record_label_sums(engine, _now, "job-1", NODE, "asked")  # the final chunk
    with pytest.raises(OutOfOrderError, match="once per job"):
        claim_label_sums(engine, _now, "job-1", NODE, "sums")
    assert claim_label_sums(engine, _now, "job-1", NODE, "apply_sums") == "asked"
    with pytest.raises(ConflictError, match="under way"):
        claim_label_sums(engine, _now, "job-1", NODE, "apply_sums")
    record_label_sums(engine, _now, "job-1", NODE, "set")
    with pytest.raises(OutOfOrderError, match="once per job"):
        claim_label_sums(engine, _now, "job-1", NODE, "apply_sums")


def test_of_two_claims_at_once_the_second_reads_the_first(
    any_engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The claim is a compare-and-set: while the first claim sits between its read and
    its write, the second must wait for it (SQLite ignores FOR UPDATE and reads lazily
    without a lock, so it takes its write lock first) and then be refused. Without the
    lock the second reads "needed" too, reaches the check, and both go through."""
    real = _training_steps.check_step
    seen: list[str] = []
    first_inside = threading.Event()
    second_inside = threading.Event()

    def check(row: TrainingJobRow, step: Any, node: str | None) -> None:
        assert node is not None
        seen.append(row.sizes[node]["label_sums"])
        if len(seen) == 1:
            first_inside.set()
            # Hold the first claim open until the second one reads (the defect) or for a
            # while (it is waiting for the lock, as it should); never a reason to fail.
            second_inside.wait(timeout=1.0)
        else:
            second_inside.set()
        real(row, step, node)

    monkeypatch.setattr(_training_steps, "check_step", check)
    outcomes: list[object] = []

    def claim() -> None:
        try:
            outcomes.append(claim_label_sums(any_engine, _now, "job-1", NODE, "sums"))
        except ConflictError as refused:
            outcomes.append(refused)

    first = threading.Thread(target=claim)
    first.start()
    assert first_inside.wait(timeout=60)
    second = threading.Thread(target=claim)
    second.start()
    first.join(timeout=120)
    second.join(timeout=120)
    assert seen == ["needed", "sending"]
    assert outcomes[0] == "needed"
    assert isinstance(outcomes[1], ConflictError) and "under way" in str(outcomes[1])


def test_a_refused_call_gives_its_step_back(engine: Engine) -> None:
    before = claim_label_sums(engine, _now, "job-1", NODE, "sums")
    record_label_sums(engine, _now, "job-1", NODE, before)  # the node refused the chunk
    assert claim_label_sums(engine, _now, "job-1", NODE, "sums") == "needed"


def test_applying_or_computing_needs_every_chunk_sent(engine: Engine) -> None:
    record_label_sums(engine, _now, "job-1", NODE, "summing")
    with pytest.raises(OutOfOrderError, match="final level-sums call"):
        claim_label_sums(engine, _now, "job-1", NODE, "apply_sums")
    with Session(engine) as session:
        row = session.get(TrainingJobRow, "job-1")
        assert row is not None
        with pytest.raises(OutOfOrderError, match="before computing"):
            check_step(row, "compute", NODE)
        with pytest.raises(OutOfOrderError, match="not set"):
            check_step(row, "finish", None)


def _job(config: dict[str, Any]) -> TrainingJobRow:
    return TrainingJobRow(
        id="job-2",
        bureau="bureau-a",
        model_id="m",
        status="training",
        nodes=[NODE],
        config=config,
        progress={},
        history=[],
        sizes={NODE: {"rows": 300, "features": []}},
        public_key="",
        created_at=_now(),
        updated_at=_now(),
    )


def test_a_tree_job_takes_the_tree_steps_only_and_a_logistic_job_the_logistic_ones() -> None:
    trees = _job({"model_type": "gbdt", "description": ""})
    check_step(trees, "tree", NODE)
    for step in ("compute", "sums", "apply_sums"):
        with pytest.raises(ConflictError, match="gradient-boosted trees"):
            check_step(trees, step, NODE)
    logistic = _job({"description": ""})
    check_step(logistic, "compute", NODE)
    with pytest.raises(ConflictError, match="logistic model"):
        check_step(logistic, "tree", NODE)


def test_a_tree_step_before_the_node_opened_the_job_is_refused() -> None:
    trees = _job({"model_type": "gbdt"})
    trees.sizes = {NODE: {"aligned": True}}
    with pytest.raises(ConflictError, match="open the job"):
        check_step(trees, "tree", NODE)
