"""The shape of a department's data: raw columns, model features, published indicators.

A department node stores raw columns exactly as imported, but only two things
ever leave it, both encrypted: model features (folded into a partial linear
score with the node's own weights) and indicators, which are bands or levels
chosen so that a bank learns "3–12 months of tax arrears", never the underlying
row. Departments are declared in TOML (``_toml.py``); these are the checked,
executable forms the loader builds.
"""

from __future__ import annotations

import calendar
import functools
import math
import re
import sys
import unicodedata
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import date
from typing import Literal

from creditshare.monitoring import Rule, Severity, Signal

__all__ = [
    "COLUMN_KINDS",
    "LIMIT_TEXT",
    "NUMBER_LIMIT",
    "PRESENCE_INDICATOR",
    "ColumnKind",
    "Department",
    "FeatureSpec",
    "FieldSpec",
    "FieldValue",
    "IndicatorSpec",
    "Record",
    "SignalSpec",
    "StatisticsDimension",
    "StatisticsSpec",
    "StatisticsSum",
    "band",
    "decimal_year",
    "fold",
    "listing",
    "shown",
]

FieldValue = float | int | str

#: Name under which each node's Enc(presence flag) travels among a profile's indicators;
#: reserved, so no department may publish an indicator of that name.
PRESENCE_INDICATOR = "record_present"
Record = Mapping[str, FieldValue]
ColumnKind = Literal["number", "integer", "category", "boolean", "date"]
COLUMN_KINDS: tuple[ColumnKind, ...] = ("number", "integer", "category", "boolean", "date")
MissingRule = Literal["reject", "default"]

#: Every number and whole number a cell may hold lies within ±NUMBER_LIMIT (a quadrillion:
#: more than any amount in credit data, and below 2**53, so whole numbers stay exact as
#: floats). A schema's own min/max must lie within it; features derived from a column are
#: refused at load unless they stay within it too, so nothing a cell holds can overflow a
#: feature, its standardisation or an encrypted score.
NUMBER_LIMIT = 1e15
LIMIT_TEXT = "1e15"
# The accepted syntax, ASCII only: str.isdigit, int() and float() also take full-width
# and other scripts' digits, "1_000", "+5", "0x..." (int(x, 0)), "inf", "nan" and
# surrounding Unicode spaces; a steward's export never means any of them on purpose.
_ISO_DATE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")
_INTEGER = re.compile(r"-?(?:0|[1-9][0-9]*)")
_NUMBER = re.compile(r"-?(?:0|[1-9][0-9]*)(?:\.([0-9]+))?(?:[eE][+-]?[0-9]+)?")
#: Cells are trimmed of these only (a CSV writer's padding), never of Unicode spaces.
_PADDING = " \t"
#: Longest whole number int() is asked to read (Python refuses beyond 4300 digits anyway).
_MAX_DIGITS = 4000
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
        raw = text.strip(_PADDING)
        if raw == "":
            if self.missing == "default" and self.default is not None:
                return self.default
            raise ValueError(f"{self.name} is empty")
        value = self._convert(raw)
        self._check_range(value, raw)
        return value

    def _convert(self, raw: str) -> FieldValue:
        if self.kind == "category":
            level = _level_index(self.levels).get(fold(raw))
            if level is None:
                raise ValueError(
                    f"{self.name} must be one of {listing(self.levels)}, got {shown(raw)}"
                )
            return level
        if self.kind == "boolean":
            folded = raw.casefold()
            if folded in _TRUE:
                return 1
            if folded in _FALSE:
                return 0
            raise ValueError(
                f"{self.name} must be 0 or 1 (or true/false, yes/no), got {shown(raw)}"
            )
        if self.kind == "integer":
            if len(raw) > _MAX_DIGITS or not _INTEGER.fullmatch(raw):
                raise ValueError(
                    f"{self.name} must be a whole number written with the digits 0-9 (an "
                    f"optional minus sign, no leading zeros, no + or _), got {shown(raw)}"
                )
            return int(raw)
        if self.kind == "date":
            try:
                if not _ISO_DATE.fullmatch(raw):
                    raise ValueError(raw)
                return date.fromisoformat(raw).isoformat()
            except ValueError:
                raise ValueError(
                    f"{self.name} must be a date YYYY-MM-DD that exists, got {shown(raw)}"
                ) from None
        match = _NUMBER.fullmatch(raw)
        if match is None and raw.lstrip("+-").casefold() in ("inf", "infinity", "nan"):
            raise ValueError(f"{self.name} must be finite, got {shown(raw)}")
        if match is None:
            raise ValueError(
                f"{self.name} must be a number like 1234.5 or 1.5e6 written with the digits "
                f"0-9 (an optional minus sign, no leading zeros, no + or _ or thousands "
                f"separators), got {shown(raw)}"
            )
        number = float(raw)
        mantissa = raw.split("e")[0].split("E")[0]
        if abs(number) < sys.float_info.min and mantissa.strip("-0.") != "":
            raise ValueError(f"{self.name}: {shown(raw)} is too small to store (it would be 0)")
        if not math.isfinite(number):
            raise ValueError(f"{self.name} must be finite, got {shown(raw)}")
        return number

    def check(self, value: FieldValue) -> None:
        """Raise ValueError unless ``value`` is one ``parse`` could have returned: a stored
        value read back (records imported under an older schema may not be)."""
        if self.kind == "category":
            ok = isinstance(value, str) and value in self.levels
        elif self.kind == "boolean":
            ok = isinstance(value, int) and value in (0, 1)
        elif self.kind == "date":
            ok = isinstance(value, str) and _ISO_DATE.fullmatch(value) is not None
        else:  # numbers; whole numbers may come back from JSON or callers as 3.0
            ok = isinstance(value, int | float) and math.isfinite(value)
            ok = ok and (self.kind == "number" or float(value).is_integer())
        if not ok:
            raise ValueError(f"{self.name} cannot hold {shown(str(value))}")
        self._check_range(value, str(value))

    def _check_range(self, value: FieldValue, raw: str) -> None:
        if self.kind in ("category", "boolean"):
            return
        # Integers compare exactly: a 400-digit count must be refused, not overflow a float.
        number = value if isinstance(value, int) else self.numeric(value)
        if self.minimum is not None and number < self.minimum:
            raise ValueError(
                f"{self.name} must be at least {self._bound(self.minimum)}, got {shown(raw)}"
            )
        if self.maximum is not None and number > self.maximum:
            raise ValueError(
                f"{self.name} must be at most {self._bound(self.maximum)}, got {shown(raw)}"
            )
        if abs(number) > NUMBER_LIMIT:  # after the schema's own bounds: theirs say more
            raise ValueError(f"{self.name} must be within ±{LIMIT_TEXT}, got {shown(raw)}")

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
    """2024-07-02 → 2024.5: a date as a number that orders and subtracts like time.

    The year's length comes from the calendar, not from 1 January of the next year,
    which does not exist for 9999-12-31 (the last date a cell may hold).
    """
    length = 366 if calendar.isleap(day.year) else 365
    return day.year + (day.timetuple().tm_yday - 1) / length


def _date_of(year: float) -> str:
    """The first day of a decimal year bound, for messages (bounds are whole days)."""
    whole = min(max(math.floor(year), date.min.year), date.max.year)
    length = 366 if calendar.isleap(whole) else 365
    ordinal = date(whole, 1, 1).toordinal() + round((year - whole) * length)
    ordinal = min(max(ordinal, date.min.toordinal()), date.max.toordinal())
    return date.fromordinal(ordinal).isoformat()


def fold(text: str) -> str:
    """The key a category level or cell is matched by: letter case and width folded
    (NFKC), so "Ａ", "a" and "A" are one level and a schema cannot declare two levels
    a steward could not tell apart."""
    return unicodedata.normalize("NFKC", unicodedata.normalize("NFKC", text).casefold())


@functools.lru_cache(maxsize=256)
def _level_index(levels: tuple[str, ...]) -> dict[str, str]:
    """Folded key → canonical level, built once per column (imports parse millions of cells)."""
    return {fold(level): level for level in levels}


def shown(text: str, limit: int = 40) -> str:
    """A value for a message: quoted, its invisible characters escaped, cut to ``limit``
    characters (a 100 kB cell must not become a 100 kB error)."""
    cut = text if len(text) <= limit else text[:limit] + "…"
    return repr(cut)


def listing(names: Iterable[str], limit: int = 12) -> str:
    """Names for a message, comma-separated, the first ``limit`` of them and a count."""
    items = list(names)
    if len(items) <= limit:
        return ", ".join(items)
    return f"{', '.join(items[:limit])}, … ({len(items)} in all)"


@dataclass(frozen=True, slots=True)
class FeatureSpec:
    """A numeric model input derived from the raw columns of one record.

    Training centres and scales every feature over the node's records; ``clipped`` ones
    (amounts, counts, mapped grades: schema encoding "standardised") are then winsorised
    at the job's clip, while 0/1 flags, one-hot level dummies and "unclipped" features
    keep their whole range (a flag has no tail to cut).
    """

    name: str
    description: str
    derive: Callable[[Record], float]
    kind: ColumnKind = "number"
    unit: str = ""
    clipped: bool = True
    #: The raw column it is derived from (for references and change detection).
    column: str = ""
    #: The least and greatest value ``derive`` returns for any value its column accepts
    #: (checked at schema load to be finite and within ±NUMBER_LIMIT); None if unknown.
    bounds: tuple[float, float] | None = None
    #: A WOE-binned category (``encoding = "woe"``): ``derive`` gives the level's index in
    #: ``levels``, and each training job maps levels to their weight of evidence over its
    #: fit rows (levels with fewer than this many rows pooled); 0: not WOE-binned.
    woe_min_rows: int = 0
    #: The category's levels, in index order (WOE-binned features only).
    levels: tuple[str, ...] = ()
    #: How ``derive`` turns the column's value into this feature, as declared (kept so a
    #: stored model shard can tell whether the schema still derives it the same way:
    #: ``departments.derivation``): transform, scale and clamp of a numeric feature, the
    #: schema encoding, a mapped category's level → number, a one-hot dummy's level.
    transform: str = "identity"
    scale: float = 1.0
    floor: float | None = None
    cap: float | None = None
    encoding: str = ""
    mapping: tuple[tuple[str, float], ...] = ()
    level: str = ""


@dataclass(frozen=True, slots=True)
class IndicatorSpec:
    """A value a bank may see (encrypted to it): the index of a band or of a level."""

    name: str
    description: str
    derive: Callable[[Record], float]
    bands: tuple[str, ...] = ()
    column: str = ""


@dataclass(frozen=True, slots=True)
class SignalSpec:
    """A monitoring signal this department raises: which column a rule watches.

    ``indicator`` names the published indicator whose bands show an event's before and
    after values (empty: none; events then carry no values). ``rule`` is the signal
    type's (``monitoring.SIGNAL_RULES``), repeated here for references and detection.
    """

    signal: Signal
    column: str
    indicator: str
    severity: Severity
    rule: Rule


@dataclass(frozen=True, slots=True)
class StatisticsDimension:
    """A dimension a regulator's cohort query may group by (``[[statistics.dimensions]]``).

    Its levels are public (a category column's levels, a boolean's no/yes, an indicator's
    bands); ``derive`` gives the index of a record's level, so the node's cube counts
    records per level and never keeps a row.
    """

    name: str
    levels: tuple[str, ...]
    derive: Callable[[Record], int]
    column: str = ""
    indicator: str = ""


@dataclass(frozen=True, slots=True)
class StatisticsSum:
    """A column a cohort query may sum (``[[statistics.sums]]``): each record's value is
    clipped to ``lower``..``upper`` and rounded to whole ``unit``s, so one enterprise moves
    a sum by at most max(|lower|, |upper|)/unit units (the noise is calibrated to that)."""

    column: str
    lower: float
    upper: float
    unit: float
    #: The record's stored value of ``column`` as a number, read like every feature and
    #: indicator: a column absent from a record reads as its default when it has
    #: ``missing = "default"``; otherwise (or a value the schema does not accept) a
    #: StaleRecordError naming the column, never a KeyError out of a cube build.
    read: Callable[[Record], float] = field(repr=False, compare=False, kw_only=True)


@dataclass(frozen=True, slots=True)
class StatisticsSpec:
    """What a department lets a regulator group by and sum (empty: counts by chain and
    region only)."""

    dimensions: tuple[StatisticsDimension, ...] = ()
    sums: tuple[StatisticsSum, ...] = ()


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
    #: The post-loan monitoring signals it raises (``[[signals]]``), in declared order.
    signals: tuple[SignalSpec, ...] = ()
    #: The regulator's cohort statistics catalogue (``[statistics]``).
    statistics: StatisticsSpec = field(default=StatisticsSpec())

    @property
    def columns(self) -> tuple[str, ...]:
        return ("uscc", *(f.name for f in self.fields))

    def feature_values(self, record: Record) -> dict[str, float]:
        return {f.name: float(f.derive(record)) for f in self.features}

    def indicator_values(self, record: Record) -> dict[str, float]:
        return {i.name: float(i.derive(record)) for i in self.indicators}


def band(value: float, upper_bounds: tuple[float, ...]) -> int:
    """Index of the first band whose exclusive upper bound exceeds ``value``."""
    for index, bound in enumerate(upper_bounds):
        if value < bound:
            return index
    return len(upper_bounds)
