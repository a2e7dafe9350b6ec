"""The shape of a department's data: raw fields, model features, published indicators.

A department node stores raw fields exactly as imported, but only two things
ever leave it, both encrypted: model features (folded into a partial linear
score with the node's own weights) and indicators, which are bands or derived
values chosen so that a bank learns "3–12 months of tax arrears", never the
underlying row.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Literal

__all__ = [
    "PRESENCE_INDICATOR",
    "Department",
    "FeatureSpec",
    "FieldSpec",
    "FieldValue",
    "IndicatorSpec",
    "Record",
    "band",
]

FieldValue = float | int | str

#: Name under which each node's Enc(presence flag) travels among a profile's indicators;
#: reserved, so no department may publish an indicator of that name.
PRESENCE_INDICATOR = "record_present"
Record = Mapping[str, FieldValue]
FieldKind = Literal["number", "count", "flag", "grade"]


@dataclass(frozen=True, slots=True)
class FieldSpec:
    """One raw column of a department's import file."""

    name: str
    kind: FieldKind
    description: str
    unit: str = ""
    minimum: float | None = None
    maximum: float | None = None
    choices: tuple[str, ...] = ()

    def parse(self, text: str) -> FieldValue:
        """Parse and range-check one cell; the message says what is wrong with it."""
        raw = text.strip()
        if raw == "":
            raise ValueError(f"{self.name} is empty")
        value: FieldValue
        if self.kind == "grade":
            value = raw.upper()
            if value not in self.choices:
                raise ValueError(
                    f"{self.name} must be one of {', '.join(self.choices)}, got {raw!r}"
                )
            return value
        if self.kind in ("count", "flag"):
            try:
                value = int(raw)
            except ValueError:
                raise ValueError(f"{self.name} must be a whole number, got {raw!r}") from None
            if self.kind == "flag" and value not in (0, 1):
                raise ValueError(f"{self.name} must be 0 or 1, got {raw!r}")
        else:
            try:
                value = float(raw)
            except ValueError:
                raise ValueError(f"{self.name} must be a number, got {raw!r}") from None
            if not math.isfinite(value):
                raise ValueError(f"{self.name} must be finite, got {raw!r}")
        if self.minimum is not None and value < self.minimum:
            raise ValueError(f"{self.name} must be at least {self.minimum:g}, got {raw}")
        if self.maximum is not None and value > self.maximum:
            raise ValueError(f"{self.name} must be at most {self.maximum:g}, got {raw}")
        return value


@dataclass(frozen=True, slots=True)
class FeatureSpec:
    """A numeric model input derived from the raw fields of one record."""

    name: str
    description: str
    derive: Callable[[Record], float]
    kind: FieldKind = "number"
    unit: str = ""


@dataclass(frozen=True, slots=True)
class IndicatorSpec:
    """A value a bank may see (encrypted to it): a band index or a derived number."""

    name: str
    description: str
    derive: Callable[[Record], float]
    bands: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Department:
    """Everything a node needs to import, score and describe one department's data."""

    id: str
    display_name: str
    fields: tuple[FieldSpec, ...]
    features: tuple[FeatureSpec, ...]
    indicators: tuple[IndicatorSpec, ...] = field(default=())

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
