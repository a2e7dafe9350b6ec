"""The risk signals a bank may watch for, and what a threshold means for each.

The vocabulary is fixed (a bank chooses among these names); which column of which
department raises each one is the department's to declare in its schema
(``[[signals]]``), so a department that brings its own schema brings its own events.
Each signal type has one detection rule, and the rule says which column types fit it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from creditshare.errors import InvalidInputError

__all__ = [
    "COLUMN_SIGNALS",
    "MAX_SIGNALS",
    "SIGNAL_RULES",
    "Rule",
    "Severity",
    "Signal",
    "SignalChoice",
    "SignalRule",
    "choices_from_json",
]


class Signal(StrEnum):
    COURT_JUDGMENT = "court_judgment"
    DISHONEST_DEBTOR = "dishonest_debtor"
    ADMINISTRATIVE_PENALTY = "administrative_penalty"
    ABNORMAL_OPERATION = "abnormal_operation"
    TAX_DOWNGRADE = "tax_downgrade"
    TAX_ARREARS = "tax_arrears"
    HEADCOUNT_DROP = "headcount_drop"
    UTILITY_ARREARS = "utility_arrears"
    SCORE_CHANGE = "score_change"


class Severity(StrEnum):
    LOW = "low"
    MEDIUM = "medium"
    HIGH = "high"


class Rule(StrEnum):
    """How a node compares a watched enterprise's value with the previous snapshot's."""

    #: The value rose by at least the threshold (an absent record counts as 0).
    INCREASE = "increase"
    #: A boolean went from false (or absent) to true; no threshold.
    BECOMES_TRUE = "becomes_true"
    #: A category moved at least ``threshold`` levels later in its declared order (the
    #: schema lists levels from best to worst); absent before or after: no event.
    DOWNGRADE = "downgrade"
    #: The value fell by at least ``threshold`` percent of the previous value (previous
    #: value > 0; absent before or after: no event).
    DROP_PERCENT = "drop_percent"
    #: The enterprise's score under the subscription's model moved by at least
    #: ``threshold`` points since the previous cycle's. No department knows the score (it
    #: is the sum of every node's share), so no schema declares it: each node in scope
    #: answers its encrypted share every cycle, the coordinator adds them, and the bank,
    #: decrypting, compares. Nobody else learns the score or whether it moved.
    SCORE_CHANGE = "score_change"


@dataclass(frozen=True, slots=True)
class SignalRule:
    rule: Rule
    severity: Severity
    #: Inclusive bounds of the threshold, and its default; None: takes no threshold.
    threshold: tuple[int, int, int] | None
    #: Column types the rule applies to.
    column_types: tuple[str, ...]
    description: str


_COUNTS = ("integer", "number")
SIGNAL_RULES: Mapping[Signal, SignalRule] = {
    Signal.COURT_JUDGMENT: SignalRule(
        Rule.INCREASE,
        Severity.HIGH,
        (1, 1000, 1),
        _COUNTS,
        "new court judgments or enforcements against the enterprise (threshold: how many)",
    ),
    Signal.DISHONEST_DEBTOR: SignalRule(
        Rule.BECOMES_TRUE,
        Severity.HIGH,
        None,
        ("boolean",),
        "listed as a dishonest judgment debtor",
    ),
    Signal.ADMINISTRATIVE_PENALTY: SignalRule(
        Rule.INCREASE,
        Severity.MEDIUM,
        (1, 1000, 1),
        _COUNTS,
        "new administrative penalties (threshold: how many)",
    ),
    Signal.ABNORMAL_OPERATION: SignalRule(
        Rule.BECOMES_TRUE,
        Severity.MEDIUM,
        None,
        ("boolean",),
        "listed for abnormal operation",
    ),
    Signal.TAX_DOWNGRADE: SignalRule(
        Rule.DOWNGRADE,
        Severity.MEDIUM,
        (1, 16, 1),
        ("category",),
        "tax credit grade downgraded (threshold: by how many grades)",
    ),
    Signal.TAX_ARREARS: SignalRule(
        Rule.INCREASE,
        Severity.MEDIUM,
        (1, 120, 1),
        _COUNTS,
        "tax arrears grew (threshold: by how many months)",
    ),
    Signal.HEADCOUNT_DROP: SignalRule(
        Rule.DROP_PERCENT,
        Severity.MEDIUM,
        (1, 100, 20),
        _COUNTS,
        "social-insurance headcount fell (threshold: by at least this percent)",
    ),
    Signal.UTILITY_ARREARS: SignalRule(
        Rule.INCREASE,
        Severity.LOW,
        (1, 1000, 1),
        _COUNTS,
        "new late utility payments (threshold: how many)",
    ),
    Signal.SCORE_CHANGE: SignalRule(
        Rule.SCORE_CHANGE,
        Severity.MEDIUM,
        (1, 1000, 50),
        (),
        "the enterprise's score under the subscription's model moved since the previous "
        "cycle (threshold: by at least this many points; computed by the bank)",
    ),
}

#: Signal types one subscription may choose (all of them, once each).
MAX_SIGNALS = len(Signal)
#: Signals a department schema may declare (raised from a column); the rest are not.
COLUMN_SIGNALS = tuple(s for s in Signal if SIGNAL_RULES[s].column_types)


@dataclass(frozen=True, slots=True, order=True)
class SignalChoice:
    """One signal a bank watches for, with its threshold (None: the rule takes none)."""

    signal: Signal
    threshold: int | None

    @classmethod
    def of(cls, name: str, threshold: int | None = None) -> SignalChoice:
        """Validated: a known signal, and a threshold within its bounds (default filled)."""
        try:
            signal = Signal(name)
        except ValueError:
            known = ", ".join(s.value for s in Signal)
            raise InvalidInputError(
                f"unknown signal type {name[:40]!r}; known types: {known}"
            ) from None
        bounds = SIGNAL_RULES[signal].threshold
        if bounds is None:
            if threshold is not None:
                raise InvalidInputError(f"signal {signal.value} takes no threshold")
            return cls(signal, None)
        low, high, default = bounds
        if threshold is None:
            return cls(signal, default)
        if isinstance(threshold, bool) or not isinstance(threshold, int):
            raise InvalidInputError(f"signal {signal.value}: threshold must be an integer")
        if not low <= threshold <= high:
            raise InvalidInputError(
                f"signal {signal.value}: threshold {threshold} is outside {low}..{high}"
            )
        return cls(signal, threshold)

    def to_json(self) -> dict[str, Any]:
        return {"type": self.signal.value, "threshold": self.threshold}


def choices_from_json(items: Any, where: str = "signals") -> tuple[SignalChoice, ...]:
    """A subscription's signals from JSON: a non-empty list of {type, threshold}, each type
    once; returned sorted, so equal choices have one canonical form."""
    if not isinstance(items, list) or not 0 < len(items) <= MAX_SIGNALS:
        raise InvalidInputError(f"{where} must list 1 to {MAX_SIGNALS} signal types")
    out: list[SignalChoice] = []
    for item in items:
        if (
            not isinstance(item, dict)
            or not set(item) <= {"type", "threshold"}
            or "type" not in item
        ):
            raise InvalidInputError(f"each of {where} is {{type, threshold}}")
        if not isinstance(item["type"], str):
            raise InvalidInputError(f"{where}: type must be a string")
        out.append(SignalChoice.of(item["type"], item.get("threshold")))
    types = [c.signal for c in out]
    if len(set(types)) != len(types):
        raise InvalidInputError(f"{where} names a signal type more than once")
    return tuple(sorted(out))
