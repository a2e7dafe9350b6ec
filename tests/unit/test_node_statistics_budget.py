"""A node's privacy budget: ε per regulator and over all regulators per period, spent
with the receipt's claim.

On SQLite and PostgreSQL: spends add up to the allowance and not past it, a refusal
names the cap (the regulator's or the node's total), period, spent, allowance and asked
and spends nothing (nor claims the receipt), regulators and periods are counted apart
for their own caps but together for the node's, and concurrent spends from two
processes' worth of budget objects on one database never overshoot either cap.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError
from sqlalchemy.engine import Engine

from creditshare.crypto import VerifyKey
from creditshare.errors import PrivacyBudgetExceededError
from creditshare.ledger import LogSigner, QueryRecord
from creditshare.node import NodeSettings
from creditshare.node._privacy_budget import BudgetTotal, PeriodTotal, PrivacyBudget
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
    log, budget = (
        AccessLog(engine, lambda: NOW),
        PrivacyBudget(engine, 10.0, lambda: NOW, total=100.0),
    )
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
    log, budget = (
        AccessLog(engine, lambda: NOW),
        PrivacyBudget(engine, 1.0, lambda: NOW, total=100.0),
    )
    for index in range(10):  # 0.1 ten times is 0.9999999999999999 in floats
        assert _spend(log, budget, index, 0.1)
    with pytest.raises(PrivacyBudgetExceededError, match=r"spent 1 of 1, asked 0\.001"):
        _spend(log, budget, 10, 0.001)


def test_regulators_and_periods_are_counted_apart(engine: Engine) -> None:
    log, budget = (
        AccessLog(engine, lambda: NOW),
        PrivacyBudget(engine, 2.0, lambda: NOW, total=100.0),
    )
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
    log, budget = (
        AccessLog(engine, lambda: NOW),
        PrivacyBudget(engine, 10.0, lambda: NOW, total=100.0),
    )
    assert _spend(log, budget, 7, 1.0)
    assert not _spend(log, budget, 7, 1.0)  # the claim loses: already used
    assert budget.spent("pboc-sh", "2026-12") == 1.0


def test_concurrent_spends_never_overshoot(engine: Engine) -> None:
    """Two budget objects (as two node processes on one database would have) and many
    threads: exactly as many queries as fit are answered, never one more."""
    log = AccessLog(engine, lambda: NOW)
    budgets = [PrivacyBudget(engine, 3.0, lambda: NOW, total=100.0) for _ in range(2)]
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


def test_fresh_regulator_identities_share_the_nodes_total(engine: Engine) -> None:
    """Whoever runs the CA can certify regulator-2, regulator-3, ...: each has its own
    allowance, but together they spend at most the node's total per period."""
    log = AccessLog(engine, lambda: NOW)
    budget = PrivacyBudget(engine, 2.0, lambda: NOW, total=5.0)
    assert _spend(log, budget, 1, 2.0, "regulator-1")
    assert _spend(log, budget, 2, 2.0, "regulator-2")
    with pytest.raises(PrivacyBudgetExceededError) as refused:
        _spend(log, budget, 3, 2.0, "regulator-3")  # within its own allowance of 2
    assert str(refused.value) == (
        "this node's total privacy budget (all regulators together) in 2026-12 would be "
        "exceeded: spent 4 of 5, asked 2"
    )
    assert not log.seen(3)
    assert budget.spent_in_all("2026-12") == 4.0
    # The per-regulator cap is still named when it is the one passed.
    with pytest.raises(PrivacyBudgetExceededError, match="for regulator regulator-1 in 2026-12"):
        _spend(log, budget, 4, 0.5, "regulator-1")
    # What is left of the total can still be spent, exactly, and another period is apart.
    assert _spend(log, budget, 5, 1.0, "regulator-3")
    assert budget.spent_in_all("2026-12") == 5.0
    assert _spend(log, budget, 6, 2.0, "regulator-4", period="2027-01")
    assert budget.period_totals() == [
        PeriodTotal("2026-12", 3, 5.0),
        PeriodTotal("2027-01", 1, 2.0),
    ]


def test_the_total_may_not_be_below_one_regulators_allowance(engine: Engine) -> None:
    with pytest.raises(ValueError, match="below the per-regulator one"):
        PrivacyBudget(engine, 10.0, lambda: NOW, total=9.999)


def test_concurrent_spends_of_many_regulators_never_pass_the_nodes_total(
    engine: Engine,
) -> None:
    """Sixteen regulators, each well within its own allowance, race two budget objects
    on one database: together they never spend past the node's total."""
    log = AccessLog(engine, lambda: NOW)
    budgets = [PrivacyBudget(engine, 2.0, lambda: NOW, total=3.0) for _ in range(2)]
    outcomes: list[str] = []
    lock = threading.Lock()

    def ask(index: int) -> None:
        try:
            _spend(log, budgets[index % 2], index, 0.5, f"regulator-{index}")
            outcome = "spent"
        except PrivacyBudgetExceededError as exc:
            outcome = "refused total" if "total privacy budget" in str(exc) else "refused"
        except Exception as exc:  # SQLite's single writer may say "busy": not a spend
            outcome = f"error {type(exc).__name__}"
        with lock:
            outcomes.append(outcome)

    threads = [threading.Thread(target=ask, args=(i,)) for i in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    spent = budgets[0].spent_in_all("2026-12")
    assert spent <= 3.0
    assert outcomes.count("spent") == round(spent / 0.5)
    assert "refused" not in outcomes  # no regulator came near its own allowance
    if engine.dialect.name == "postgresql":  # the advisory lock queues them: all decided
        assert outcomes.count("spent") == 6 and outcomes.count("refused total") == 10


def test_node_settings_refuse_a_total_below_one_regulators_allowance(tmp_path: Path) -> None:
    base: dict[str, Any] = {
        "node_id": "yrd-tax",
        "department": "tax",
        "chain": "yrd",
        "database_url": f"sqlite:///{tmp_path / 'node.db'}",
        "log_public_key": VerifyKey.from_cryptography(LogSigner.generate().public_key).to_text(),
        "allow_insecure": True,
        "credential_ca": tmp_path / "ca.crt",
    }
    settings = NodeSettings(**base)
    assert (settings.stats_epsilon_per_period, settings.stats_epsilon_total_per_period) == (
        10.0,
        20.0,
    )
    assert settings.stats_regulators == []
    with pytest.raises(ValidationError, match=r"stats_epsilon_total_per_period \(5\) must be"):
        NodeSettings(**base, stats_epsilon_total_per_period=5.0)
