"""The privacy budget a node keeps per period, and spends before it answers.

Every statistics query a node answers releases noisy figures about its enterprises at
some ε; what a regulator learns about one enterprise grows with the ε it spent, so each
node caps the sum per period (``stats_budget_period``, UTC, of the ledger record's
time) twice: per regulator (``stats_epsilon_per_period``) and over every regulator
together (``stats_epsilon_total_per_period``). The second cap is what bounds a node's
release: a regulator's identity is only a credential, and whoever runs the chain's CA
can certify ``regulator-2``, ``regulator-3``, ... each with an allowance of its own,
but not a node-wide allowance of its own. The node keeps both caps itself, from the
records it answered: the coordinator cannot raise them, and the ledger shows every
query's ε to anyone who audits it.

A query's ε is spent in the same transaction as its receipt's once-only claim, keyed by
the record's ledger index: a receipt is spent at most once, an answer is never given
without its spend on record, and a query refused for budget spends nothing (and leaves
its receipt unclaimed). Both caps are checked under one lock, so concurrent queries of
different regulators cannot together pass the node's total. Amounts are compared in
thousandths of ε (a query's ε has at most three decimals), so ten queries of 0.1 fit
an allowance of 1 exactly.
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import insert, select, text
from sqlalchemy.engine import Connection, Engine
from sqlmodel import Session, col

from creditshare.errors import PrivacyBudgetExceededError
from creditshare.node._stats_tables import SPEND, PrivacySpendRow

__all__ = ["BudgetTotal", "PeriodTotal", "PrivacyBudget", "PrivacySpendRow", "milli"]


_SPEND = SPEND
_INSERT = insert(_SPEND)
#: PostgreSQL advisory lock serialising budget checks across processes on one database.
_BUDGET_LOCK = int.from_bytes(
    hashlib.sha256(b"creditshare.node.privacy_budget").digest()[:8], "big", signed=True
)


def milli(epsilon: float) -> int:
    """ε in whole thousandths (the precision a query's ε is given in)."""
    return round(epsilon * 1000)


@dataclass(frozen=True, slots=True)
class BudgetTotal:
    """What one regulator spent on this node in one period, over how many queries."""

    regulator: str
    period: str
    queries: int
    spent: float


@dataclass(frozen=True, slots=True)
class PeriodTotal:
    """What every regulator together spent on this node in one period."""

    period: str
    queries: int
    spent: float


def _shown(thousandths: int) -> str:
    return f"{thousandths / 1000:g}"


class PrivacyBudget:
    """``allowance`` ε per regulator and ``total`` ε over all regulators, per period,
    spent within a receipt's claim."""

    def __init__(
        self,
        engine: Engine,
        allowance: float,
        clock: Callable[[], datetime],
        *,
        total: float,
    ) -> None:
        if milli(total) < milli(allowance):
            raise ValueError(
                f"the node-wide allowance ({total:g}) is below the per-regulator one "
                f"({allowance:g})"
            )
        self._engine = engine
        self._allowance = milli(allowance)
        self._total = milli(total)
        self._clock = clock
        #: Check-then-insert must not interleave within this process (PostgreSQL's
        #: advisory lock does the same across processes; SQLite has one writer at a time).
        self._lock = threading.Lock()

    @property
    def allowance(self) -> float:
        """The ε each regulator may spend per period."""
        return self._allowance / 1000

    @property
    def total(self) -> float:
        """The ε all regulators together may spend per period."""
        return self._total / 1000

    def guarded(self) -> threading.Lock:
        """Hold this around the transaction that calls ``spend`` (until it commits)."""
        return self._lock

    def spend(
        self, conn: Connection, leaf_index: int, requester: str, period: str, epsilon: float
    ) -> None:
        """Record ``epsilon`` for ``requester`` in ``period`` within ``conn``'s transaction,
        or raise PrivacyBudgetExceededError naming the cap it would pass (this regulator's
        or the node's total; the caller's transaction then rolls back)."""
        if conn.dialect.name == "postgresql":
            conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _BUDGET_LOCK})
        mine = everyone = 0
        rows = conn.execute(
            select(_SPEND.c.requester, _SPEND.c.epsilon).where(_SPEND.c.period == period)
        )
        for who, spent_epsilon in rows:
            everyone += milli(spent_epsilon)
            if who == requester:
                mine += milli(spent_epsilon)
        asked = milli(epsilon)
        if mine + asked > self._allowance:
            raise PrivacyBudgetExceededError(
                f"privacy budget for regulator {requester} in {period} would be exceeded: "
                f"spent {_shown(mine)} of {_shown(self._allowance)}, asked {_shown(asked)}"
            )
        if everyone + asked > self._total:
            raise PrivacyBudgetExceededError(
                f"this node's total privacy budget (all regulators together) in {period} "
                f"would be exceeded: spent {_shown(everyone)} of {_shown(self._total)}, "
                f"asked {_shown(asked)}"
            )
        conn.execute(
            _INSERT,
            {
                "leaf_index": leaf_index,
                "requester": requester,
                "period": period,
                "epsilon": asked / 1000,
                "spent_at": self._clock(),
            },
        )

    def spent(self, requester: str, period: str) -> float:
        """The ε ``requester`` spent on this node in ``period``."""
        with self._engine.connect() as conn:
            rows = conn.execute(
                select(_SPEND.c.epsilon).where(
                    _SPEND.c.requester == requester, _SPEND.c.period == period
                )
            ).scalars()
            return sum(milli(e) for e in rows) / 1000

    def spent_in_all(self, period: str) -> float:
        """The ε every regulator together spent on this node in ``period``."""
        with self._engine.connect() as conn:
            rows = conn.execute(select(_SPEND.c.epsilon).where(_SPEND.c.period == period)).scalars()
            return sum(milli(e) for e in rows) / 1000

    def period_totals(self) -> list[PeriodTotal]:
        """Per period (sorted), the queries of all regulators answered and their ε."""
        sums: dict[str, list[int]] = {}
        for total in self.totals():
            found = sums.setdefault(total.period, [0, 0])
            found[0] += total.queries
            found[1] += milli(total.spent)
        return [
            PeriodTotal(period, queries, spent / 1000)
            for period, (queries, spent) in sorted(sums.items())
        ]

    def totals(self) -> list[BudgetTotal]:
        """Per regulator and period (sorted), the queries answered and the ε spent."""
        sums: dict[tuple[str, str], list[int]] = {}
        with self._engine.connect() as conn:
            rows = conn.execute(select(_SPEND.c.requester, _SPEND.c.period, _SPEND.c.epsilon))
            for requester, period, epsilon in rows:
                total = sums.setdefault((requester, period), [0, 0])
                total[0] += 1
                total[1] += milli(epsilon)
        return [
            BudgetTotal(regulator, period, queries, spent / 1000)
            for (regulator, period), (queries, spent) in sorted(sums.items())
        ]

    def entries(self, limit: int = 1000) -> list[PrivacySpendRow]:
        """The spends recorded, newest first."""
        with Session(self._engine) as session:
            query = select(PrivacySpendRow).order_by(col(PrivacySpendRow.leaf_index).desc())
            return list(session.exec(query.limit(limit)).scalars())  # type: ignore[call-overload]
