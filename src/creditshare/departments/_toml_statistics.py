"""``[statistics]`` of a department schema: what a regulator's cohort query may group by
and sum.

A dimension is a category or boolean column (its levels) or an indicator (its bands):
levels are public, so a query's cells and the size of every answer follow from the
schema alone. A sum names a number, integer or boolean column with clipping bounds and a
unit; the bounds are the sensitivity the noise is calibrated to, so they must be whole
multiples of the unit and small enough that a node's totals cannot overflow. The loader
refuses, naming the entry and key, a dimension over a column that does not exist or
cannot be grouped by, an indicator that does not exist, a name taken twice (or ``chain``
/ ``region``, which every catalogue has), bounds out of order and a cube too large to
keep.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from creditshare.departments._schema import (
    FieldSpec,
    IndicatorSpec,
    StatisticsDimension,
    StatisticsSpec,
    StatisticsSum,
    listing,
)
from creditshare.departments._toml_features import _stored
from creditshare.departments._toml_messages import _entry, _Located, _text, _toml_type

__all__ = [
    "IMPLICIT_DIMENSIONS",
    "MAX_CUBE_CELLS",
    "MAX_STAT_DIMENSIONS",
    "MAX_STAT_SUMS",
    "MAX_SUM_UNITS",
    "REGION_LEVELS",
    "RESULT_COLUMNS",
    "statistics_spec",
]

#: Dimensions every catalogue has (the node's chain, the enterprise's province).
IMPLICIT_DIMENSIONS = ("chain", "region")
#: Names a result table already uses for its own columns (``CohortResult.rows``).
RESULT_COLUMNS = ("date", "measure", "level", "value", "bound", "suppressed", "withheld_at")
#: Region levels: the chains' province codes (USCC characters 3–4), then everything else.
REGION_LEVELS = ("11", "12", "13", "31", "32", "33", "34", "44", "other")
MAX_STAT_DIMENSIONS = 8
MAX_STAT_SUMS = 8
#: Finest cells a node's cube keeps per snapshot (regions × every dimension's levels).
MAX_CUBE_CELLS = 250_000
#: Largest max(|lower|, |upper|)/unit: a node's total of 2^24 records stays far inside
#: int64 and one enterprise's sensitivity stays a whole number of units.
MAX_SUM_UNITS = 2**36
_NAME = r"^[a-z][a-z0-9_]{0,63}$"
_Name = Annotated[str, StringConstraints(pattern=_NAME)]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


class StatDimension(_Strict):
    name: _Name
    column: _Name | None = None
    indicator: _Name | None = None


class StatSum(_Strict):
    column: _Name
    # Checked in _sum (a number, not a string or boolean), so the message says which.
    lower: Any
    upper: Any
    unit: Any = 1


class StatSection(_Strict):
    dimensions: list[StatDimension] = Field(default_factory=list, max_length=MAX_STAT_DIMENSIONS)
    sums: list[StatSum] = Field(default_factory=list, max_length=MAX_STAT_SUMS)


def statistics_spec(
    section: StatSection | None,
    by_name: Mapping[str, FieldSpec],
    indicators: Sequence[IndicatorSpec],
) -> StatisticsSpec:
    """The checked ``[statistics]`` section (None: counts by chain and region only)."""
    if section is None:
        return StatisticsSpec()
    by_indicator = {i.name: i for i in indicators}
    dimensions: list[StatisticsDimension] = []
    seen: dict[str, int] = {}
    for k, entry in enumerate(section.dimensions):
        where = _entry("statistics.dimensions", k, entry.name)
        if entry.name in IMPLICIT_DIMENSIONS:
            raise _Located(
                f"{where}.name", f"{entry.name!r} is implicit in every catalogue; do not declare it"
            )
        if entry.name in RESULT_COLUMNS:
            raise _Located(
                f"{where}.name",
                f"{entry.name!r} names a column of every result table; choose another name",
            )
        if entry.name in seen:
            raise _Located(
                f"{where}.name",
                f"{entry.name!r} is declared twice "
                f"(first at statistics.dimensions[{seen[entry.name]}])",
            )
        seen[entry.name] = k
        dimensions.append(_dimension(entry, where, by_name, by_indicator))
    cells = len(REGION_LEVELS) * math.prod(len(d.levels) for d in dimensions)
    if cells > MAX_CUBE_CELLS:
        raise _Located(
            "statistics.dimensions",
            f"{cells} finest cells (regions × every dimension's levels; at most "
            f"{MAX_CUBE_CELLS}): drop a dimension or band it more coarsely",
        )
    sums: list[StatisticsSum] = []
    summed: dict[str, int] = {}
    for k, total in enumerate(section.sums):
        where = f'statistics.sums[{k}] (column "{total.column}")'
        if total.column in summed:
            raise _Located(
                f"{where}.column",
                f"{total.column!r} is summed twice "
                f"(first at statistics.sums[{summed[total.column]}])",
            )
        summed[total.column] = k
        sums.append(_sum(total, where, by_name))
    return StatisticsSpec(tuple(dimensions), tuple(sums))


def _dimension(
    entry: StatDimension,
    where: str,
    by_name: Mapping[str, FieldSpec],
    by_indicator: Mapping[str, IndicatorSpec],
) -> StatisticsDimension:
    if (entry.column is None) == (entry.indicator is None):
        raise _Located(where, "give either column (a category or boolean) or indicator, not both")
    if entry.indicator is not None:
        indicator = by_indicator.get(entry.indicator)
        if indicator is None:
            raise _Located(
                f"{where}.indicator",
                f"no indicator {entry.indicator!r} (indicators: {listing(by_indicator) or 'none'})",
            )
        derive = indicator.derive
        return StatisticsDimension(
            entry.name,
            indicator.bands,
            lambda r: int(derive(r)),
            column=indicator.column,
            indicator=indicator.name,
        )
    assert entry.column is not None
    column = by_name.get(entry.column)
    if column is None:
        raise _Located(
            f"{where}.column", f"no column {entry.column!r} (columns: {listing(by_name)})"
        )
    if column.kind == "boolean":
        return StatisticsDimension(
            entry.name,
            ("no", "yes"),
            lambda r: int(_stored(r, column, lambda v: float(int(v)))),
            column=column.name,
        )
    if column.kind != "category":
        raise _Located(
            f"{where}.column",
            f"{column.name!r} is a {column.kind} column: group by a category or boolean column, "
            "or by a banded indicator over it (indicator = ...)",
        )
    index = {level: i for i, level in enumerate(column.levels)}
    return StatisticsDimension(
        entry.name,
        column.levels,
        lambda r: int(_stored(r, column, lambda v: float(index[str(v)]))),
        column=column.name,
    )


def _number(value: object, where: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise _Located(where, f"must be a number, not {_toml_type(value)}")
    if not math.isfinite(value):
        raise _Located(where, "must be finite")
    return float(value)


def _sum(entry: StatSum, where: str, by_name: Mapping[str, FieldSpec]) -> StatisticsSum:
    column = by_name.get(entry.column)
    if column is None:
        raise _Located(
            f"{where}.column", f"no column {entry.column!r} (columns: {listing(by_name)})"
        )
    if column.kind not in ("number", "integer", "boolean"):
        raise _Located(
            f"{where}.column",
            f"{column.name!r} is a {column.kind} column: only number, integer and boolean "
            "columns are summed",
        )
    lower = _number(entry.lower, f"{where}.lower")
    upper = _number(entry.upper, f"{where}.upper")
    unit = _number(entry.unit, f"{where}.unit")
    if unit <= 0:
        raise _Located(f"{where}.unit", "must be above 0")
    if not lower < upper:
        raise _Located(where, "lower must be below upper")
    for name, bound in (("lower", lower), ("upper", upper)):
        units = bound / unit
        if abs(units - round(units)) > 1e-9 * max(1.0, abs(units)):
            raise _Located(
                f"{where}.{name}",
                f"{bound:g} is not a whole number of units ({unit:g}): the noise is calibrated "
                "to whole units",
            )
        if abs(round(units)) > MAX_SUM_UNITS:
            raise _Located(
                f"{where}.{name}",
                f"{bound:g} is {abs(round(units))} units (at most {MAX_SUM_UNITS}): use a "
                "larger unit",
            )
    _text(column.name, f"{where}.column")
    return StatisticsSum(
        column.name, lower, upper, unit, read=lambda r: _stored(r, column, column.numeric)
    )
