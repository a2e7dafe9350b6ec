"""A node's privacy budget: ε per regulator per period, spent with the receipt's claim.

On SQLite and PostgreSQL: spends add up to the allowance and not past it, a refusal
names the regulator, period, spent, allowance and asked and spends nothing (nor claims
the receipt), regulators and periods are counted apart, and concurrent spends from two
processes' worth of budget objects on one database never overshoot.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy.engine import Engine

from creditshare.errors import PrivacyBudgetExceededError
from creditshare.ledger import QueryRecord
from creditshare.node._privacy_budget import BudgetTotal, PrivacyBudget
from creditshare.node._storage import make_engine
from creditshare.node._trust import AccessLog

from .._databases import fresh_postgres_database

NOW = datetime(2026, 12, 1, 1, 30, tzinfo=UTC)


@pytest.fixture(params=["sqlite", "postgresql"])
def engine(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Engine]:
    if request.param == "sqlite":
        engine = make_engine(f"sqlite:///{tmp_path / 'node.db'}")
        yield engine
        engine.dispose()
        return
    with fresh_postgres_database() as url:
        engine = make_engine(url)
        yield engine
        engine.dispose()


def _record(index: int, regulator: str = "pboc-sh") -> QueryRecord:
    """What the access log keeps of a statistics record (the claim does not read its kind)."""
    return QueryRecord(
        "query",
        f"{index:032x}",
        NOW,
        "",
        regulator,
        "regulator",
        "statistics",
        "",
        "",
        "f" * 64,
        ("yrd",),
        (),
    )


def _spend(
    log: AccessLog,
    budget: PrivacyBudget,
    index: int,
    epsilon: float,
    regulator: str = "pboc-sh",
    period: str = "2026-12",
) -> bool:
    with budget.guarded():
        return log.claim(
            index,
            _record(index, regulator),
            "Cohort",
            also=lambda conn: budget.spend(conn, index, regulator, period, epsilon),
        )


def test_spends_add_up_to_the_allowance_and_a_refusal_spends_nothing(engine: Engine) -> None:
    log, budget = AccessLog(engine, lambda: NOW), PrivacyBudget(engine, 10.0, lambda: NOW)
    assert _spend(log, budget, 1, 4.5)
    assert _spend(log, budget, 2, 5.0)
    assert budget.spent("pboc-sh", "2026-12") == 9.5
    with pytest.raises(PrivacyBudgetExceededError) as refused:
        _spend(log, budget, 3, 1.0)
    assert str(refused.value) == (
        "privacy budget for regulator pboc-sh in 2026-12 would be exceeded: "
        "spent 9.5 of 10, asked 1"
    )
    # Nothing of the refused query is kept: no spend, and its receipt is not claimed.
    assert budget.spent("pboc-sh", "2026-12") == 9.5
    assert not log.seen(3)
    assert [row.leaf_index for row in budget.entries()] == [2, 1]
    # What is left can still be spent, exactly.
    assert _spend(log, budget, 4, 0.5)
    assert budget.spent("pboc-sh", "2026-12") == 10.0


def test_thousandths_add_up_exactly(engine: Engine) -> None:
    log, budget = AccessLog(engine, lambda: NOW), PrivacyBudget(engine, 1.0, lambda: NOW)
    for index in range(10):  # 0.1 ten times is 0.9999999999999999 in floats
        assert _spend(log, budget, index, 0.1)
    with pytest.raises(PrivacyBudgetExceededError, match=r"spent 1 of 1, asked 0\.001"):
        _spend(log, budget, 10, 0.001)


def test_regulators_and_periods_are_counted_apart(engine: Engine) -> None:
    log, budget = AccessLog(engine, lambda: NOW), PrivacyBudget(engine, 2.0, lambda: NOW)
    assert _spend(log, budget, 1, 2.0, "pboc-sh")
    assert _spend(log, budget, 2, 2.0, "pboc-hz")
    assert _spend(log, budget, 3, 2.0, "pboc-sh", period="2027-01")
    with pytest.raises(PrivacyBudgetExceededError, match="pboc-hz in 2026-12"):
        _spend(log, budget, 4, 0.5, "pboc-hz")
    assert budget.totals() == [
        BudgetTotal("pboc-hz", "2026-12", 1, 2.0),
        BudgetTotal("pboc-sh", "2026-12", 1, 2.0),
        BudgetTotal("pboc-sh", "2027-01", 1, 2.0),
    ]


def test_a_receipt_spends_once(engine: Engine) -> None:
    log, budget = AccessLog(engine, lambda: NOW), PrivacyBudget(engine, 10.0, lambda: NOW)
    assert _spend(log, budget, 7, 1.0)
    assert not _spend(log, budget, 7, 1.0)  # the claim loses: already used
    assert budget.spent("pboc-sh", "2026-12") == 1.0


def test_concurrent_spends_never_overshoot(engine: Engine) -> None:
    """Two budget objects (as two node processes on one database would have) and many
    threads: exactly as many queries as fit are answered, never one more."""
    log = AccessLog(engine, lambda: NOW)
    budgets = [PrivacyBudget(engine, 3.0, lambda: NOW) for _ in range(2)]
    outcomes: list[str] = []
    lock = threading.Lock()

    def ask(index: int) -> None:
        try:
            _spend(log, budgets[index % 2], index, 0.5)
            outcome = "spent"
        except PrivacyBudgetExceededError:
            outcome = "refused"
        except Exception as exc:  # SQLite's single writer may say "busy": not a spend
            outcome = f"error {type(exc).__name__}"
        with lock:
            outcomes.append(outcome)

    threads = [threading.Thread(target=ask, args=(i,)) for i in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    spent = budgets[0].spent("pboc-sh", "2026-12")
    assert spent <= 3.0
    assert outcomes.count("spent") == round(spent / 0.5)
    if engine.dialect.name == "postgresql":  # the advisory lock queues them: all decided
        assert outcomes.count("spent") == 6 and outcomes.count("refused") == 10
