"""The shape of a department's data: raw columns, model features, published indicators.

A department node stores raw columns exactly as imported, but only two things
ever leave it, both encrypted: model features (folded into a partial linear
score with the node's own weights) and indicators, which are bands or levels
chosen so that a bank learns "3–12 months of tax arrears", never the underlying
row. Departments are declared in TOML (``_toml.py``); these are the checked,
executable forms the loader builds.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import date
from typing import Literal

__all__ = [
    "COLUMN_KINDS",
    "PRESENCE_INDICATOR",
    "ColumnKind",
    "Department",
    "FeatureSpec",
    "FieldSpec",
    "FieldValue",
    "IndicatorSpec",
    "Record",
    "band",
    "decimal_year",
]

FieldValue = float | int | str

#: Name under which each node's Enc(presence flag) travels among a profile's indicators;
#: reserved, so no department may publish an indicator of that name.
PRESENCE_INDICATOR = "record_present"
Record = Mapping[str, FieldValue]
ColumnKind = Literal["number", "integer", "category", "boolean", "date"]
COLUMN_KINDS: tuple[ColumnKind, ...] = ("number", "integer", "category", "boolean", "date")
MissingRule = Literal["reject", "default"]

_ISO_DATE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")
_TRUE = frozenset({"1", "true", "yes", "y", "t"})
_FALSE = frozenset({"0", "false", "no", "n", "f"})


@dataclass(frozen=True, slots=True)
class FieldSpec:
    """One raw column of a department's import file, and how a cell of it is checked.

    ``minimum``/``maximum`` bound numbers and integers, and dates as decimal years (so a
    schema can say "not before 1949"); categories are matched case-insensitively and
    stored as the level's canonical spelling, so "a" and "A" never become two levels.
    """

    name: str
    kind: ColumnKind
    description: str
    unit: str = ""
    minimum: float | None = None
    maximum: float | None = None
    levels: tuple[str, ...] = ()
    missing: MissingRule = "reject"
    #: The stored value of an empty cell when ``missing`` is "default" (already parsed).
    default: FieldValue | None = None

    def parse(self, text: str) -> FieldValue:
        """Parse and range-check one cell; the message names the column and the problem."""
        raw = text.strip()
        if raw == "":
            if self.missing == "default" and self.default is not None:
                return self.default
            raise ValueError(f"{self.name} is empty")
        value = self._convert(raw)
        self._check_range(value, raw)
        return value

    def _convert(self, raw: str) -> FieldValue:
        if self.kind == "category":
            folded = raw.casefold()
            for level in self.levels:
                if level.casefold() == folded:
                    return level
            raise ValueError(f"{self.name} must be one of {', '.join(self.levels)}, got {raw!r}")
        if self.kind == "boolean":
            folded = raw.casefold()
            if folded in _TRUE:
                return 1
            if folded in _FALSE:
                return 0
            raise ValueError(f"{self.name} must be 0 or 1 (or true/false, yes/no), got {raw!r}")
        if self.kind == "integer":
            try:
                return int(raw)
            except ValueError:
                raise ValueError(f"{self.name} must be a whole number, got {raw!r}") from None
        if self.kind == "date":
            try:
                if not _ISO_DATE.fullmatch(raw):
                    raise ValueError(raw)
                return date.fromisoformat(raw).isoformat()
            except ValueError:
                raise ValueError(f"{self.name} must be a date YYYY-MM-DD, got {raw!r}") from None
        try:
            number = float(raw)
        except ValueError:
            raise ValueError(f"{self.name} must be a number, got {raw!r}") from None
        if not math.isfinite(number):
            raise ValueError(f"{self.name} must be finite, got {raw!r}")
        return number

    def _check_range(self, value: FieldValue, raw: str) -> None:
        if self.kind in ("category", "boolean"):
            return
        # Integers compare exactly: a 400-digit count must be refused, not overflow a float.
        number = value if isinstance(value, int) else self.numeric(value)
        if self.minimum is not None and number < self.minimum:
            raise ValueError(f"{self.name} must be at least {self._bound(self.minimum)}, got {raw}")
        if self.maximum is not None and number > self.maximum:
            raise ValueError(f"{self.name} must be at most {self._bound(self.maximum)}, got {raw}")

    def _bound(self, bound: float) -> str:
        if self.kind == "date":
            return _date_of(bound)
        return f"{bound:g}"

    def numeric(self, value: FieldValue) -> float:
        """The stored value as a number: dates as decimal years, booleans 0/1."""
        if self.kind == "date":
            return decimal_year(date.fromisoformat(str(value)))
        if self.kind == "category":
            return float(self.levels.index(str(value)))
        return float(value)


def decimal_year(day: date) -> float:
    """2024-07-02 → 2024.5: a date as a number that orders and subtracts like time."""
    start = date(day.year, 1, 1)
    length = (date(day.year + 1, 1, 1) - start).days
    return day.year + (day - start).days / length


def _date_of(year: float) -> str:
    """The first day of a decimal year bound, for messages (bounds are whole days)."""
    whole = math.floor(year)
    length = (date(whole + 1, 1, 1) - date(whole, 1, 1)).days
    return date.fromordinal(
        date(whole, 1, 1).toordinal() + round((year - whole) * length)
    ).isoformat()


@dataclass(frozen=True, slots=True)
class FeatureSpec:
    """A numeric model input derived from the raw columns of one record.

    ``standardised`` tells training how to encode it: centred, scaled over the node's
    records and clipped (amounts, counts, mapped grades), or used exactly as derived
    (0/1 flags and one-hot level dummies, which standardising would only distort).
    """

    name: str
    description: str
    derive: Callable[[Record], float]
    kind: ColumnKind = "number"
    unit: str = ""
    standardised: bool = True
    #: The raw column it is derived from (for references and change detection).
    column: str = ""
    #: A WOE-binned category (``encoding = "woe"``): ``derive`` gives the level's index in
    #: ``levels``, and each training job maps levels to their weight of evidence over its
    #: fit rows (levels with fewer than this many rows pooled); 0: not WOE-binned.
    woe_min_rows: int = 0
    #: The category's levels, in index order (WOE-binned features only).
    levels: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class IndicatorSpec:
    """A value a bank may see (encrypted to it): the index of a band or of a level."""

    name: str
    description: str
    derive: Callable[[Record], float]
    bands: tuple[str, ...] = ()
    column: str = ""


@dataclass(frozen=True, slots=True)
class Department:
    """Everything a node needs to import, score and describe one department's data."""

    id: str
    display_name: str
    fields: tuple[FieldSpec, ...]
    features: tuple[FeatureSpec, ...]
    indicators: tuple[IndicatorSpec, ...] = field(default=())
    description: str = ""
    #: Where it was declared (a package resource or a file), for messages.
    source: str = ""

    @property
    def columns(self) -> tuple[str, ...]:
        return ("uscc", *(f.name for f in self.fields))

    def feature_values(self, record: Record) -> dict[str, float]:
        return {f.name: float(f.derive(record)) for f in self.features}

    def indicator_values(self, record: Record) -> dict[str, float]:
        return {i.name: float(i.derive(record)) for i in self.indicators}

    def partial_score(self, record: Record, weights: Mapping[str, float]) -> float:
        """This department's share of a linear score: the sum of weight × feature."""
        values = self.feature_values(record)
        return math.fsum(weights[name] * values[name] for name in weights)


def band(value: float, upper_bounds: tuple[float, ...]) -> int:
    """Index of the first band whose exclusive upper bound exceeds ``value``."""
    for index, bound in enumerate(upper_bounds):
        if value < bound:
            return index
    return len(upper_bounds)
