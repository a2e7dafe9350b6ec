"""The catalogue: what a regulator may group by and sum in one department, made public.

Every node of a department derives the same catalogue from its schema (its
``[statistics]`` section plus the implicit ``chain`` and ``region``), publishes it with
its SHA-256 digest, and refuses a query signed against another digest: the regulator
knows exactly which levels and clipping bounds its figures mean, and a query's cells
(hence every answer's size) follow from the catalogue and the query alone.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from dataclasses import dataclass, field
from typing import Any

from creditshare._canonical import canonical_json
from creditshare.departments import (
    IMPLICIT_DIMENSIONS,
    MAX_CUBE_CELLS,
    MAX_SUM_UNITS,
    REGION_LEVELS,
    RESULT_COLUMNS,
    Department,
)
from creditshare.errors import InvalidInputError
from creditshare.identity import Chain

__all__ = [
    "CHAIN_LEVELS",
    "MAX_CATALOGUE_BYTES",
    "REGION_LEVELS",
    "Catalogue",
    "Dimension",
    "SumColumn",
]

#: The chains, in their fixed order (the ``chain`` dimension's levels).
CHAIN_LEVELS: tuple[str, ...] = tuple(c.value for c in Chain)
#: A catalogue is a page of names and levels; a node's answer larger than this is not one.
MAX_CATALOGUE_BYTES = 256_000
_NAME = re.compile(r"[a-z][a-z0-9_]{0,63}")
_MAX_LEVELS = 1000
_MAX_LEVEL_CHARS = 64


@dataclass(frozen=True, slots=True)
class Dimension:
    """A name a query may group by, with its public levels in their fixed order."""

    name: str
    levels: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class SumColumn:
    """A column a query may sum or average: values clipped to ``lower``..``upper``,
    then rounded to whole ``unit``s (every released number is an integer of units)."""

    column: str
    lower: float
    upper: float
    unit: float

    @property
    def sensitivity(self) -> int:
        """Whole units one enterprise can move a sum by."""
        return round(max(abs(self.lower), abs(self.upper)) / self.unit)

    @property
    def lower_units(self) -> int:
        return round(self.lower / self.unit)

    @property
    def upper_units(self) -> int:
        return round(self.upper / self.unit)

    def units(self, value: float) -> int:
        """One record's contribution: clipped, then rounded to whole units."""
        clipped = min(max(float(value), self.lower), self.upper)
        return min(max(round(clipped / self.unit), self.lower_units), self.upper_units)


def _number(value: float) -> int | float:
    """Numbers as canonical JSON writes them one way: whole ones as integers."""
    return int(value) if float(value).is_integer() else float(value)


@dataclass(frozen=True, slots=True)
class Catalogue:
    """One department's dimensions (``chain`` and ``region`` first) and summable columns."""

    department: str
    dimensions: tuple[Dimension, ...]
    sums: tuple[SumColumn, ...]
    _digest: str = field(default="", init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        _validate(self)
        object.__setattr__(self, "_digest", hashlib.sha256(self.to_bytes()).hexdigest())

    @classmethod
    def of(cls, department: Department) -> Catalogue:
        """The catalogue a node of ``department`` publishes."""
        spec = department.statistics
        return cls(
            department=department.id,
            dimensions=(
                Dimension("chain", CHAIN_LEVELS),
                Dimension("region", REGION_LEVELS),
                *(Dimension(d.name, d.levels) for d in spec.dimensions),
            ),
            sums=tuple(SumColumn(s.column, s.lower, s.upper, s.unit) for s in spec.sums),
        )

    def document(self) -> dict[str, Any]:
        return {
            "v": 1,
            "department": self.department,
            "dimensions": [{"name": d.name, "levels": list(d.levels)} for d in self.dimensions],
            "sums": [
                {
                    "column": s.column,
                    "lower": _number(s.lower),
                    "upper": _number(s.upper),
                    "unit": _number(s.unit),
                }
                for s in self.sums
            ],
        }

    def to_bytes(self) -> bytes:
        """Canonical JSON: the bytes the digest is taken over."""
        return canonical_json(self.document())

    @property
    def digest(self) -> str:
        """SHA-256 (hex) of ``to_bytes()``: what a query names as ``catalogue_digest``."""
        return self._digest

    @classmethod
    def from_bytes(cls, data: bytes) -> Catalogue:
        """A catalogue a node published (InvalidInputError saying what is wrong)."""
        if len(data) > MAX_CATALOGUE_BYTES:
            raise InvalidInputError(f"catalogue is over {MAX_CATALOGUE_BYTES} bytes")
        try:
            doc = json.loads(data.decode("utf-8"))
        except (ValueError, UnicodeDecodeError) as exc:
            raise InvalidInputError(f"catalogue is not JSON: {str(exc)[:80]}") from None
        return cls.from_document(doc)

    @classmethod
    def from_document(cls, doc: Any) -> Catalogue:
        if not isinstance(doc, dict) or set(doc) != {"v", "department", "dimensions", "sums"}:
            raise InvalidInputError("catalogue must be {v, department, dimensions, sums}")
        if doc["v"] != 1:
            raise InvalidInputError("catalogue is not version 1")
        dims, sums = doc["dimensions"], doc["sums"]
        if not isinstance(dims, list) or not isinstance(sums, list):
            raise InvalidInputError("catalogue dimensions and sums must be lists")
        dimensions = []
        for k, d in enumerate(dims):
            if (
                not isinstance(d, dict)
                or set(d) != {"name", "levels"}
                or not isinstance(d["levels"], list)
            ):
                raise InvalidInputError(f"catalogue dimensions[{k}] must be {{name, levels}}")
            dimensions.append(Dimension(d["name"], tuple(d["levels"])))
        columns = []
        for k, s in enumerate(sums):
            if not isinstance(s, dict) or set(s) != {"column", "lower", "upper", "unit"}:
                raise InvalidInputError(
                    f"catalogue sums[{k}] must be {{column, lower, upper, unit}}"
                )
            for key in ("lower", "upper", "unit"):
                value = s[key]
                if isinstance(value, bool) or not isinstance(value, int | float):
                    raise InvalidInputError(f"catalogue sums[{k}].{key} must be a number")
            columns.append(
                SumColumn(s["column"], float(s["lower"]), float(s["upper"]), float(s["unit"]))
            )
        return cls(doc["department"], tuple(dimensions), tuple(columns))

    def dimension(self, name: str) -> Dimension:
        for d in self.dimensions:
            if d.name == name:
                return d
        raise InvalidInputError(
            f"department {self.department} has no dimension {name!r} "
            f"(dimensions: {', '.join(d.name for d in self.dimensions)})"
        )

    def sum_column(self, column: str) -> SumColumn:
        for s in self.sums:
            if s.column == column:
                return s
        known = ", ".join(s.column for s in self.sums) or "none"
        raise InvalidInputError(
            f"department {self.department} has no summable column {column!r} (columns: {known})"
        )

    @property
    def own_dimensions(self) -> tuple[Dimension, ...]:
        """The department's dimensions (without chain and region): the cube's axes."""
        return self.dimensions[len(IMPLICIT_DIMENSIONS) :]


def _validate(catalogue: Catalogue) -> None:
    if not isinstance(catalogue.department, str) or not re.fullmatch(
        r"[a-z][a-z0-9_]{0,31}", catalogue.department
    ):
        raise InvalidInputError("catalogue department must be a department id")
    names = [d.name for d in catalogue.dimensions]
    if tuple(names[:2]) != IMPLICIT_DIMENSIONS:
        raise InvalidInputError("a catalogue's first dimensions are chain and region")
    if catalogue.dimensions[0].levels != CHAIN_LEVELS:
        raise InvalidInputError(f"the chain dimension's levels are {', '.join(CHAIN_LEVELS)}")
    if catalogue.dimensions[1].levels != REGION_LEVELS:
        raise InvalidInputError(f"the region dimension's levels are {', '.join(REGION_LEVELS)}")
    if set(names) & set(RESULT_COLUMNS):
        raise InvalidInputError(f"catalogue dimension names may not be {', '.join(RESULT_COLUMNS)}")
    if len(names) != len(set(names)) or len(names) > 2 + 8:
        raise InvalidInputError("catalogue dimensions must be at most 10 distinct names")
    cells = 1
    for d in catalogue.dimensions:
        if not isinstance(d.name, str) or not _NAME.fullmatch(d.name):
            raise InvalidInputError(f"catalogue dimension name {str(d.name)[:40]!r} is not a name")
        if (
            not 1 <= len(d.levels) <= _MAX_LEVELS
            or len(set(d.levels)) != len(d.levels)
            or not all(
                isinstance(v, str) and 0 < len(v) <= _MAX_LEVEL_CHARS and v.isprintable()
                for v in d.levels
            )
        ):
            raise InvalidInputError(
                f"catalogue dimension {d.name!r} needs 1 to {_MAX_LEVELS} distinct levels of 1 "
                f"to {_MAX_LEVEL_CHARS} visible characters"
            )
        cells *= len(d.levels)
    if cells > len(CHAIN_LEVELS) * MAX_CUBE_CELLS:
        raise InvalidInputError(f"catalogue has {cells} finest cells (too many to keep)")
    columns = [s.column for s in catalogue.sums]
    if len(columns) != len(set(columns)) or len(columns) > 8:
        raise InvalidInputError("catalogue sums must be at most 8 distinct columns")
    for s in catalogue.sums:
        if not isinstance(s.column, str) or not _NAME.fullmatch(s.column):
            raise InvalidInputError(f"catalogue sum column {str(s.column)[:40]!r} is not a name")
        if not all(math.isfinite(v) for v in (s.lower, s.upper, s.unit)):
            raise InvalidInputError(f"catalogue sum {s.column!r}: bounds must be finite")
        if not (s.unit > 0 and s.lower < s.upper):
            raise InvalidInputError(f"catalogue sum {s.column!r}: needs unit > 0, lower < upper")
        for bound in (s.lower, s.upper):
            units = bound / s.unit
            if abs(units - round(units)) > 1e-9 * max(1.0, abs(units)):
                raise InvalidInputError(
                    f"catalogue sum {s.column!r}: bounds must be whole numbers of units"
                )
            if abs(round(units)) > MAX_SUM_UNITS:
                raise InvalidInputError(
                    f"catalogue sum {s.column!r}: bounds over {MAX_SUM_UNITS} units"
                )
