"""A regulator's cohort query: the document it signs, checked field by field.

Every field is bounded (names, counts, ε with three decimals) so a query fits a ledger
record and a node can check it before computing anything; ``check_against`` then holds
it to one department's catalogue. ε travels as a decimal string ("0.5"), never a binary
float, so the signed bytes and the budget arithmetic mean the same number everywhere.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, date, datetime
from decimal import Decimal, InvalidOperation
from typing import Any

from creditshare._canonical import format_time, parse_time
from creditshare.errors import InvalidInputError
from creditshare.identity import Chain
from creditshare.statistics._catalogue import Catalogue

__all__ = [
    "EARLIEST_DATE",
    "LATEST_DATE",
    "MAX_DATES",
    "MAX_EPSILON",
    "MAX_GROUP_BY",
    "MAX_MEASURES",
    "MAX_MIN_CELL",
    "PERIODS",
    "CohortQuery",
    "format_epsilon",
    "period_of",
]

MAX_GROUP_BY = 4
MAX_MEASURES = 8
MAX_DATES = 12
MAX_EPSILON = Decimal(10)
MAX_MIN_CELL = 1000
#: The oldest date a query may ask about (no snapshot predates the platform).
EARLIEST_DATE = "2000-01-01"
#: The newest date any query may ask about: the end of the day after it still exists.
LATEST_DATE = "9999-12-30"
PERIODS = ("month", "quarter", "year")
_FIELDS = {
    "v",
    "type",
    "department",
    "chains",
    "group_by",
    "measures",
    "dates",
    "epsilon",
    "min_cell",
    "key_fingerprint",
    "catalogue_digest",
    "request_id",
    "regulator",
    "time",
}
_NAME = re.compile(r"[a-z][a-z0-9_]{0,63}")
_DEPARTMENT = re.compile(r"[a-z][a-z0-9_]{0,31}")
_MEASURE = re.compile(r"count|(sum|mean|distribution):[a-z][a-z0-9_]{0,63}")
_EPSILON = re.compile(r"(0|[1-9][0-9]?)(\.[0-9]{1,3})?")
_ID = re.compile(r"[a-z0-9][a-z0-9._-]{0,63}")
_HEX32 = re.compile(r"[0-9a-f]{32}")
_SHA256 = re.compile(r"[0-9a-f]{64}")
_FINGERPRINT = re.compile(r"[0-9a-f]{16,64}")
_DATE = re.compile(r"[0-9]{4}-[0-9]{2}-[0-9]{2}")
_CHAINS = tuple(c.value for c in Chain)


def format_epsilon(epsilon: float | str | Decimal) -> str:
    """ε as the query document writes it: 0 < ε ≤ 10, at most three decimals, no
    trailing zeros ("1", "0.25"); InvalidInputError otherwise."""
    try:
        value = Decimal(str(epsilon))
    except InvalidOperation:
        raise InvalidInputError(f"epsilon must be a number, got {str(epsilon)[:20]!r}") from None
    if not value.is_finite() or not 0 < value <= MAX_EPSILON:
        raise InvalidInputError(f"epsilon must be above 0 and at most {MAX_EPSILON}")
    if value != value.quantize(Decimal("0.001")):
        raise InvalidInputError("epsilon has at most three decimals (e.g. 0.125)")
    text = format(value.quantize(Decimal("0.001")).normalize(), "f")
    return text


def period_of(time: datetime, period: str) -> str:
    """The budget period ``time`` (UTC) falls in: "2026-12", "2026-Q4" or "2026"."""
    moment = time.astimezone(UTC) if time.tzinfo is not None else time
    if period == "month":
        return f"{moment.year:04d}-{moment.month:02d}"
    if period == "quarter":
        return f"{moment.year:04d}-Q{(moment.month - 1) // 3 + 1}"
    if period == "year":
        return f"{moment.year:04d}"
    raise InvalidInputError(f"budget period must be one of {', '.join(PERIODS)}, got {period!r}")


def _fail(key: str, what: str) -> InvalidInputError:
    return InvalidInputError(f"cohort query field {key!r} must be {what}")


def _text(doc: dict[str, Any], key: str, pattern: re.Pattern[str], what: str) -> str:
    value = doc.get(key)
    if not isinstance(value, str) or not pattern.fullmatch(value):
        raise _fail(key, what)
    return value


def _names(
    doc: dict[str, Any], key: str, pattern: re.Pattern[str], limit: int, what: str
) -> tuple[str, ...]:
    value = doc.get(key)
    if (
        not isinstance(value, list)
        or len(value) > limit
        or not all(isinstance(v, str) and pattern.fullmatch(v) for v in value)
        or len(set(value)) != len(value)
    ):
        raise _fail(key, f"a list of at most {limit} distinct {what}")
    return tuple(value)


def _check_date_range(dates: tuple[str, ...], time: datetime) -> None:
    """Every date within ``EARLIEST_DATE`` .. the query's own (UTC) day (and
    ``LATEST_DATE``): a snapshot is
    never in force in the future, and a node turns a date into the end of that day (a
    date near 9999-12-31 would overflow there, after the budget was spent)."""
    moment = time.astimezone(UTC) if time.tzinfo is not None else time
    latest = moment.date().isoformat()
    for day in dates:
        if day < EARLIEST_DATE:
            raise _fail("dates", f"on or after {EARLIEST_DATE}, not {day!r}")
        if day > latest:
            raise _fail("dates", f"on or before the query's time ({latest}), not {day!r}")
        if day > LATEST_DATE:  # only reached by a query timed in the year 9999
            raise _fail("dates", f"on or before {LATEST_DATE}, not {day!r}")


@dataclass(frozen=True, slots=True)
class CohortQuery:
    """What a regulator asks of every node of one department in the chains it names.

    ``dates`` empty: each node's latest snapshot; otherwise the snapshot in force at the
    end of each (UTC) day at each node. ``epsilon`` is the whole query's ε: split evenly
    over the dates and the releases of each (``noise_scales``).
    """

    department: str
    chains: tuple[str, ...]
    group_by: tuple[str, ...]
    measures: tuple[str, ...]
    dates: tuple[str, ...]
    epsilon: float
    min_cell: int
    key_fingerprint: str
    catalogue_digest: str
    request_id: str
    regulator: str
    time: datetime

    def __post_init__(self) -> None:
        # Every instance is a valid document: build it once through the checks.
        CohortQuery.from_document(self.document())

    def document(self) -> dict[str, Any]:
        """The document the regulator signs (``signed.SignedCohortQuery``)."""
        return {
            "v": 1,
            "type": "cohort",
            "department": self.department,
            "chains": list(self.chains),
            "group_by": list(self.group_by),
            "measures": list(self.measures),
            "dates": list(self.dates),
            "epsilon": format_epsilon(self.epsilon),
            "min_cell": self.min_cell,
            "key_fingerprint": self.key_fingerprint,
            "catalogue_digest": self.catalogue_digest,
            "request_id": self.request_id,
            "regulator": self.regulator,
            "time": format_time(self.time),
        }

    @classmethod
    def from_document(cls, doc: Any) -> CohortQuery:
        """The query a document states (InvalidInputError naming the field otherwise)."""
        if not isinstance(doc, dict):
            raise InvalidInputError("a cohort query document must be a JSON object")
        if set(doc) != _FIELDS:
            missing, extra = sorted(_FIELDS - set(doc)), sorted(set(doc) - _FIELDS)
            raise InvalidInputError(
                f"cohort query fields: missing {missing or 'none'}, unexpected {extra or 'none'}"
            )
        if doc["type"] != "cohort" or doc["v"] != 1:
            raise InvalidInputError("not a version 1 cohort query (type cohort, v 1)")
        department = _text(doc, "department", _DEPARTMENT, "a department id")
        chains = _names(doc, "chains", re.compile("|".join(_CHAINS)), len(_CHAINS), "chains")
        if not chains or list(chains) != sorted(chains):
            raise _fail("chains", f"a sorted, non-empty list of chains ({', '.join(_CHAINS)})")
        group_by = _names(doc, "group_by", _NAME, MAX_GROUP_BY, "dimension names")
        measures = _names(doc, "measures", _MEASURE, MAX_MEASURES, "measures")
        if not measures:
            raise _fail("measures", "a non-empty list (count, sum:<column>, ...)")
        time = parse_time(doc["time"], "cohort query field 'time'")
        dates = _names(doc, "dates", _DATE, MAX_DATES, "ISO dates")
        for day in dates:
            try:
                date.fromisoformat(day)
            except ValueError:
                raise _fail("dates", f"ISO dates that exist, not {day!r}") from None
        if list(dates) != sorted(dates):
            raise _fail("dates", "sorted (oldest first)")
        _check_date_range(dates, time)
        raw_epsilon = doc["epsilon"]
        if not isinstance(raw_epsilon, str) or not _EPSILON.fullmatch(raw_epsilon):
            raise _fail("epsilon", 'a decimal string such as "1" or "0.25"')
        try:
            epsilon = format_epsilon(raw_epsilon)
        except InvalidInputError as exc:
            raise _fail("epsilon", str(exc).removeprefix("epsilon must be ")) from None
        if epsilon != raw_epsilon:
            raise _fail("epsilon", f"written without trailing zeros ({epsilon!r})")
        min_cell = doc["min_cell"]
        if isinstance(min_cell, bool) or not isinstance(min_cell, int):
            raise _fail("min_cell", "a whole number")
        if not 1 <= min_cell <= MAX_MIN_CELL:
            raise _fail("min_cell", f"within 1..{MAX_MIN_CELL}")
        for name in measures:
            kind, _, target = name.partition(":")
            if kind == "distribution" and target in group_by:
                raise _fail("measures", f"distributions over dimensions not grouped by ({name})")
        return cls.__new__(cls)._fill(
            department=department,
            chains=chains,
            group_by=group_by,
            measures=measures,
            dates=dates,
            epsilon=float(epsilon),
            min_cell=min_cell,
            key_fingerprint=_text(doc, "key_fingerprint", _FINGERPRINT, "a key fingerprint"),
            catalogue_digest=_text(doc, "catalogue_digest", _SHA256, "64 lowercase hex digits"),
            request_id=_text(doc, "request_id", _HEX32, "32 lowercase hex digits"),
            regulator=_text(doc, "regulator", _ID, "a participant id"),
            time=time,
        )

    def _fill(self, **values: Any) -> CohortQuery:
        for key, value in values.items():
            object.__setattr__(self, key, value)
        return self

    @property
    def epsilon_text(self) -> str:
        """ε as the document writes it (exact: budgets add these as decimals)."""
        return format_epsilon(self.epsilon)

    @property
    def snapshots(self) -> int:
        """S: how many snapshots the query reads (1 when ``dates`` is empty: the latest)."""
        return max(1, len(self.dates))

    @property
    def summed_columns(self) -> tuple[str, ...]:
        """Columns whose clipped sum is released (once per column for sum: and mean:)."""
        out: list[str] = []
        for name in self.measures:
            kind, _, target = name.partition(":")
            if kind in ("sum", "mean") and target not in out:
                out.append(target)
        return tuple(out)

    @property
    def distributions(self) -> tuple[str, ...]:
        return tuple(m.partition(":")[2] for m in self.measures if m.startswith("distribution:"))

    @property
    def releases(self) -> int:
        """R: releases per snapshot (the count, each summed column, each distribution)."""
        return 1 + len(self.summed_columns) + len(self.distributions)

    def check_against(self, catalogue: Catalogue) -> None:
        """InvalidInputError unless every name is the catalogue's and the digest is its."""
        if self.department != catalogue.department:
            raise InvalidInputError(
                f"query is for department {self.department}, catalogue for {catalogue.department}"
            )
        if self.catalogue_digest != catalogue.digest:
            raise InvalidInputError(
                "query was signed against another catalogue (catalogue_digest differs): "
                "read the department's catalogue again"
            )
        for name in self.group_by:
            catalogue.dimension(name)
        for column in self.summed_columns:
            catalogue.sum_column(column)
        for name in self.distributions:
            catalogue.dimension(name)
