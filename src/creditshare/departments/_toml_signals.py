"""``[[signals]]`` of a department schema: which column raises which monitoring signal.

A bank chooses signal types from a fixed vocabulary (``creditshare.monitoring``); the
department says which of its columns each one watches, so a department that brings its
own schema brings its own events. The loader refuses, naming the entry and key, a type
outside the vocabulary, a column that does not exist or whose type the signal's rule
cannot compare, an indicator that is not on that column (its bands are what a bank sees
of the before/after values), a severity outside low/medium/high and a type declared
twice.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Annotated

from pydantic import StringConstraints

from creditshare.departments._schema import FieldSpec, IndicatorSpec, SignalSpec, listing, shown
from creditshare.departments._toml_messages import _Located
from creditshare.monitoring import SIGNAL_RULES, Severity, Signal

__all__ = ["signal_specs"]

#: A signal entry's ``type``/``severity`` as written (checked against the vocabulary here,
#: so the message lists the known ones rather than a pydantic pattern).
Word = Annotated[str, StringConstraints(max_length=64)]


def _where(k: int, kind: str) -> str:
    return f'signals[{k}] (type "{shown(kind, 64)[1:-1]}")'


def signal_specs(
    entries: Sequence[tuple[str, str, str | None, str | None]],
    by_name: Mapping[str, FieldSpec],
    indicators: Sequence[IndicatorSpec],
) -> tuple[SignalSpec, ...]:
    """The checked signals of ``entries`` (type, column, indicator, severity as written)."""
    specs: list[SignalSpec] = []
    first: dict[Signal, int] = {}
    for k, (kind, column_name, indicator, severity) in enumerate(entries):
        where = _where(k, kind)
        try:
            signal = Signal(kind)
        except ValueError:
            raise _Located(
                f"{where}.type",
                f"unknown signal type {shown(kind)} (known: {listing(s.value for s in Signal)})",
            ) from None
        if not SIGNAL_RULES[signal].column_types:
            raise _Located(
                f"{where}.type",
                f"{signal.value!r} is not raised from a column (the bank computes it from the "
                "model's encrypted score each cycle); no schema declares it",
            )
        if signal in first:
            raise _Located(
                f"{where}.type",
                f"{signal.value!r} is declared twice (first at signals[{first[signal]}]); "
                "one column raises each signal type",
            )
        first[signal] = k
        rule = SIGNAL_RULES[signal]
        column = by_name.get(column_name)
        if column is None:
            raise _Located(
                f"{where}.column", f"no column {column_name!r} (columns: {listing(by_name)})"
            )
        if column.kind not in rule.column_types:
            accepted = " or ".join(rule.column_types)
            raise _Located(
                f"{where}.column",
                f"{signal.value} ({rule.rule.value}) watches {accepted} columns; "
                f"{column.name!r} is {column.kind}",
            )
        on_column = [i.name for i in indicators if i.column == column.name]
        if indicator is None:
            # The column's own indicator, when there is exactly one to choose.
            chosen = on_column[0] if len(on_column) == 1 else ""
        elif indicator in on_column:
            chosen = indicator
        else:
            theirs = listing(on_column) if on_column else "none"
            raise _Located(
                f"{where}.indicator",
                f"no indicator {indicator!r} on column {column.name!r} (its indicators: "
                f"{theirs}): an event shows its before/after values in that indicator's bands",
            )
        try:
            level = rule.severity if severity is None else Severity(severity)
        except ValueError:
            raise _Located(
                f"{where}.severity",
                f"must be one of {listing(s.value for s in Severity)}, not {shown(severity or '')}",
            ) from None
        specs.append(SignalSpec(signal, column.name, chosen, level, rule.rule))
    return tuple(specs)
