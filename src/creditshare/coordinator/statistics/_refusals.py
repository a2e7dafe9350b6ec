"""The reason a statistics ``refusal`` record carries: one fixed form, written and read here.

The ledger record has a free-text ``reason`` (at most ``MAX_REASON`` characters) and no
field for counts, so the form is fixed and documented (coordinator/README.md, "Regulator
statistics"), and its counts come first, where truncation never reaches::

    privacy budget: 3 of 3 nodes asked refused (bth-tax, prd-tax, yrd-tax): <first reason>
    refused: 2 of 3 nodes asked refused (bth-tax, prd-tax): <first reason>

the first when any of them refused for the privacy budget, the second when all refused by
their own rules (an ε over a node's per-query cap, a regulator it does not serve).
``GET /v1/statistics/budget`` reads it back with ``parse_refusal_reason`` to tell a query
every node refused (nothing spent anywhere) from one only some refused.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from creditshare.ledger import MAX_REASON

__all__ = ["BudgetRefusal", "parse_refusal_reason", "refusal_reason"]

_FORM = re.compile(r"(?:privacy budget|refused): (\d{1,6}) of (\d{1,6}) nodes asked refused(?: |$)")


@dataclass(frozen=True, slots=True)
class BudgetRefusal:
    """How many of the nodes a statistics query asked refused it (for the privacy budget
    or by their own rules: either way they spent nothing on it)."""

    refused: int
    asked: int

    @property
    def by_every_node(self) -> bool:
        return self.refused == self.asked


def refusal_reason(
    refused: Sequence[str], asked: int, first_reason: str, *, budget: bool = True
) -> str:
    """The refusal record's reason: ``refused`` (node ids) of ``asked`` nodes, and the
    first refusing node's own words; cut to ``MAX_REASON`` (the counts survive).
    ``budget``: whether any of them refused for the privacy budget."""
    reason = (
        f"{'privacy budget' if budget else 'refused'}: {len(refused)} of {asked} nodes "
        "asked refused "
        f"({', '.join(refused)}): {first_reason}"
    )
    return reason[:MAX_REASON]


def parse_refusal_reason(reason: str) -> BudgetRefusal | None:
    """The counts of a reason ``refusal_reason`` wrote, or None for any other reason."""
    match = _FORM.match(reason)
    if match is None:
        return None
    refused, asked = int(match[1]), int(match[2])
    if not 0 < refused <= asked:
        return None
    return BudgetRefusal(refused, asked)
