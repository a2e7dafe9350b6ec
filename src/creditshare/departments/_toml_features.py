"""Model features from a schema's ``[[features]]``: how each is derived from a stored
record, and the range it can take for every value its column accepts (proved here, at
load, so that no accepted cell can overflow a feature, its standardisation or a score)."""

from __future__ import annotations

import math
from collections.abc import Callable
from datetime import date
from typing import TYPE_CHECKING, TypeVar

from creditshare.departments._schema import (
    LIMIT_TEXT,
    NUMBER_LIMIT,
    FeatureSpec,
    FieldSpec,
    FieldValue,
    Record,
    decimal_year,
    fold,
    listing,
    shown,
)
from creditshare.departments._toml_messages import _entry, _Located, _text
from creditshare.errors import StaleRecordError

if TYPE_CHECKING:
    from creditshare.departments._toml import _Feature

__all__ = ["MAX_ONE_HOT_LEVELS", "WOE_MIN_ROWS_DEFAULT", "WOE_MIN_ROWS_FLOOR"]

#: More one-hot levels than this make a shard nobody can read; map or band them instead.
MAX_ONE_HOT_LEVELS = 64
#: WOE bins: a level with fewer aligned fit rows than ``min_rows`` is pooled; a node never
#: sums a group smaller than this floor (so it never learns labels of a handful of rows).
WOE_MIN_ROWS_FLOOR = 10
WOE_MIN_ROWS_DEFAULT = 50
WOE_MIN_ROWS_MOST = 1_000_000


def _features(spec: _Feature, column: FieldSpec, k: int) -> list[FeatureSpec]:
    where = _entry("features", k, spec.name)
    _text(spec.description, f"{where}.description")
    description = spec.description or column.description
    if spec.min_rows is not None and spec.encoding != "woe":
        raise _Located(f"{where}.min_rows", 'min_rows is for encoding = "woe" only')
    if column.kind == "category":
        encoding = spec.encoding or "one_hot"
        if (
            spec.transform != "identity"
            or spec.scale != 1.0
            or spec.floor is not None
            or spec.cap is not None
        ):
            raise _Located(
                where, "a category column's feature takes no transform, scale, floor or cap"
            )
        if encoding == "one_hot":
            if spec.values:
                raise _Located(f"{where}.values", 'values are for encoding = "map"')
            if len(column.levels) > MAX_ONE_HOT_LEVELS:
                raise _Located(
                    where,
                    f"one-hot encoding of {len(column.levels)} levels (at most "
                    f'{MAX_ONE_HOT_LEVELS}); use encoding = "map"',
                )
            if len(column.levels) < 2:
                raise _Located(where, "one level only: its one-hot feature would always be 1")
            return [_dummy(spec.name, column, level, description) for level in column.levels]
        if encoding == "map":
            return [_mapped(spec, column, where, description)]
        if encoding == "woe":
            return [_woe(spec, column, description, where)]
        raise _Located(
            f"{where}.encoding",
            f'a category column is encoded "one_hot", "map" or "woe", not "{encoding}"',
        )
    encoding = spec.encoding or ("unclipped" if column.kind == "boolean" else "standardised")
    if encoding == "woe":
        raise _Located(
            f"{where}.encoding",
            f'"woe" bins the levels of a category column; {column.name} is a {column.kind}',
        )
    if encoding not in ("standardised", "unclipped"):
        raise _Located(
            f"{where}.encoding",
            f'a {column.kind} column is "standardised" or "unclipped", not "{encoding}"',
        )
    if spec.values:
        raise _Located(f"{where}.values", 'values are for encoding = "map" of a category column')
    if (spec.transform == "year") != (column.kind == "date"):
        raise _Located(
            f"{where}.transform",
            'a date column takes transform = "year" (decimal year); '
            "other columns identity, log10p1 or ln1p",
        )
    for key, value in (("scale", spec.scale), ("floor", spec.floor), ("cap", spec.cap)):
        if value is not None and not abs(value) <= NUMBER_LIMIT:
            raise _Located(f"{where}.{key}", f"must be a finite number within ±{LIMIT_TEXT}")
    if spec.scale == 0:
        raise _Located(f"{where}.scale", "a scale of 0 makes a feature that is always 0")
    if spec.floor is not None and spec.cap is not None and spec.floor > spec.cap:
        raise _Located(where, "floor is above cap")
    low, high = _domain(column)
    if spec.transform in ("log10p1", "ln1p") and low < 0:
        raise _Located(
            f"{where}.transform",
            f"{spec.transform} needs a column that cannot be negative (give {column.name} min = 0)",
        )
    bounds = _derived_bounds(spec, low, high)
    if not max(abs(bounds[0]), abs(bounds[1])) <= NUMBER_LIMIT:
        raise _Located(
            where,
            f"can reach {bounds[0]:g} to {bounds[1]:g} for values {column.name} accepts: give "
            f"{column.name} a min and max, or this feature a floor and cap, so that it stays "
            f"within ±{LIMIT_TEXT}",
        )
    if bounds[0] == bounds[1]:
        raise _Located(
            where,
            f"is always {bounds[0]:g} for the values {column.name} accepts (check its min "
            "and max, and this feature's floor and cap): a constant feature carries nothing",
        )
    return [
        FeatureSpec(
            spec.name,
            description,
            _numeric(column, spec),
            kind=column.kind,
            unit=column.unit if spec.transform == "identity" and spec.scale == 1.0 else "",
            clipped=encoding == "standardised",
            column=column.name,
            bounds=bounds,
            transform=spec.transform,
            scale=spec.scale,
            floor=spec.floor,
            cap=spec.cap,
            encoding=encoding,
        )
    ]


def _mapped(spec: _Feature, column: FieldSpec, where: str, description: str) -> FeatureSpec:
    """encoding = "map": one number per level; keys match levels as cells do (letter
    case and width folded), so ``{a = 0}`` maps the level "A"."""
    levels = {fold(level): level for level in column.levels}
    mapping: dict[str, float] = {}
    unknown = []
    for key, value in spec.values.items():
        level = levels.get(fold(key))
        if level is None:
            unknown.append(key)
            continue
        if level in mapping:
            raise _Located(f"{where}.values", f"level {level!r} is mapped twice")
        if not abs(value) <= NUMBER_LIMIT:
            raise _Located(
                f"{where}.values.{level}", f"must be a finite number within ±{LIMIT_TEXT}"
            )
        mapping[level] = float(value)
    missing = [level for level in column.levels if level not in mapping]
    if missing or unknown:
        detail = (
            f"no value for {listing(missing)}"
            if missing
            else f"unknown level(s) {listing(shown(u) for u in unknown)}"
        )
        raise _Located(f"{where}.values", f"map every level of {column.name} exactly: {detail}")
    low, high = min(mapping.values()), max(mapping.values())
    if low == high:
        raise _Located(
            f"{where}.values", f"every level maps to {low:g}: a constant feature carries nothing"
        )
    name = column.name
    return FeatureSpec(
        spec.name,
        description,
        lambda r: _stored(r, column, lambda v: mapping[str(v)]),
        kind="category",
        clipped=True,
        column=name,
        bounds=(low, high),
        encoding="map",
        mapping=tuple(sorted(mapping.items())),
    )


def _woe(spec: _Feature, column: FieldSpec, description: str, where: str) -> FeatureSpec:
    """One feature whose derived value is the level's index; its number is the weight of
    evidence each training job computes for that level (``creditshare.federated``)."""
    if spec.values:
        raise _Located(f"{where}.values", 'values are for encoding = "map"')
    min_rows = WOE_MIN_ROWS_DEFAULT if spec.min_rows is None else spec.min_rows
    if not WOE_MIN_ROWS_FLOOR <= min_rows <= WOE_MIN_ROWS_MOST:
        raise _Located(
            f"{where}.min_rows",
            f"must be within {WOE_MIN_ROWS_FLOOR}..{WOE_MIN_ROWS_MOST} (a smaller group would "
            f"tell the node the labels of a handful of enterprises), not {min_rows}",
        )
    if len(column.levels) < 2:
        raise _Located(where, "one level only: its weight of evidence would be constant")
    levels = column.levels
    return FeatureSpec(
        spec.name,
        description,
        lambda r: _stored(r, column, lambda v: float(levels.index(str(v)))),
        kind="category",
        clipped=True,
        column=column.name,
        bounds=(0.0, float(len(levels) - 1)),
        woe_min_rows=min_rows,
        levels=levels,
        encoding="woe",
    )


def _domain(column: FieldSpec) -> tuple[float, float]:
    """The least and greatest number a column's cells give (dates as decimal years)."""
    if column.kind == "boolean":
        return 0.0, 1.0
    if column.kind == "date":
        first, last = 1.0, decimal_year(date.max)
    else:
        first, last = -NUMBER_LIMIT, NUMBER_LIMIT
    low = column.minimum if column.minimum is not None else first
    high = column.maximum if column.maximum is not None else last
    return low, high


def _derived_bounds(spec: _Feature, low: float, high: float) -> tuple[float, float]:
    """The range of ``_numeric``'s derive over [low, high]: every step is monotone, so
    the ends map to the ends (a negative scale swaps them)."""
    transform = _TRANSFORMS[spec.transform]
    ends = sorted((transform(low) * spec.scale, transform(high) * spec.scale))
    return _clamp(ends[0], spec.floor, spec.cap), _clamp(ends[1], spec.floor, spec.cap)


def _clamp(value: float, floor: float | None, cap: float | None) -> float:
    if floor is not None:
        value = max(floor, value)
    if cap is not None:
        value = min(cap, value)
    return value


_T = TypeVar("_T")


def _flag(value: FieldValue) -> float:
    if value not in (0, 1):
        raise ValueError(value)
    return float(value)


def _stored(record: Record, column: FieldSpec, use: Callable[[FieldValue], _T]) -> _T:
    """``use`` of a stored record's value of ``column``. Records are checked when imported;
    one the schema cannot read was imported under another schema (a column since added
    without missing = "default": one with it reads as its default;
    a level renamed): say so, instead of a KeyError out of a query.

    The error names the column, never the value: raised mid-query or mid-training, its
    text leaves the node (a gRPC status, then a bank's coverage or a job's error)."""
    try:
        if column.name in record or column.missing != "default" or column.default is None:
            value = record[column.name]
        else:  # a file without the optional column, or imported before it was added
            value = column.default
        column.check(value)
        return use(value)
    except (KeyError, ValueError, TypeError, IndexError):
        what = "a value" if column.name in record else "no value"
        raise StaleRecordError(
            f"a stored record holds {what} for {column.name} that this node's schema does "
            "not accept: this node's records must be re-imported under its schema"
        ) from None


_TRANSFORMS: dict[str, Callable[[float], float]] = {
    "identity": lambda x: x,
    "year": lambda x: x,  # FieldSpec.numeric already turned the date into a decimal year
    "log10p1": lambda x: math.log10(1.0 + x),
    "ln1p": math.log1p,
}


def _numeric(column: FieldSpec, spec: _Feature) -> Callable[[Record], float]:
    transform = _TRANSFORMS[spec.transform]
    scale, floor, cap = spec.scale, spec.floor, spec.cap

    def derive(record: Record) -> float:
        value = _stored(record, column, lambda v: transform(column.numeric(v)))
        return _clamp(value * scale, floor, cap)

    return derive


def _dummy(name: str, column: FieldSpec, level: str, description: str) -> FeatureSpec:
    column_name = column.name
    return FeatureSpec(
        f"{name}={level}",
        f"{description or column.name}: {level} (1) or not (0)",
        lambda r: _stored(r, column, lambda v: 1.0 if v == level else 0.0),
        kind="boolean",
        clipped=False,
        column=column_name,
        bounds=(0.0, 1.0),
        encoding="one_hot",
        level=level,
    )
