"""Department schemas declared in TOML: a department brings its own columns without code.

The file is checked whole before a node uses it: unknown keys (a misspelt ``levles``),
a feature or indicator over a column that does not exist, an indicator that would show
a bank a raw amount (numbers must be banded), a default that its own column would
refuse. Every error names the file and the key, so a department's data steward can
fix the schema without reading Python.
"""

from __future__ import annotations

import math
import tomllib
from collections.abc import Callable
from datetime import date
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, ValidationError

from creditshare.departments._schema import (
    PRESENCE_INDICATOR,
    ColumnKind,
    Department,
    FeatureSpec,
    FieldSpec,
    IndicatorSpec,
    Record,
    band,
    decimal_year,
)
from creditshare.errors import InvalidInputError

__all__ = ["SchemaError", "load_schema", "parse_schema"]

#: More one-hot levels than this make a shard nobody can read; map or band them instead.
MAX_ONE_HOT_LEVELS = 64
#: WOE bins: a level with fewer aligned fit rows than ``min_rows`` is pooled; a node never
#: sums a group smaller than this floor (so it never learns labels of a handful of rows).
WOE_MIN_ROWS_FLOOR = 10
WOE_MIN_ROWS_DEFAULT = 50
WOE_MIN_ROWS_MOST = 1_000_000
MAX_LEVELS = 1000
_NAME = r"^[a-z][a-z0-9_]{0,63}$"
Name = Annotated[str, StringConstraints(pattern=_NAME)]
#: Bounds a coordinator accepts from a node's Describe and a consent may name.
MAX_INDICATORS = 64
MAX_BANDS = 32
IndicatorName = Annotated[str, StringConstraints(pattern=r"^[a-z][a-z0-9_]{0,47}$")]
Text = Annotated[str, StringConstraints(max_length=500)]
Level = Annotated[str, StringConstraints(min_length=1, max_length=64, pattern=r"^[^\x00-\x1f]+$")]
Scalar = float | int | bool | str | date


class SchemaError(InvalidInputError):
    """A department schema that cannot be used: which file, which key, what is wrong."""


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class _Column(_Strict):
    name: Name
    type: ColumnKind
    description: Text = ""
    unit: Annotated[str, StringConstraints(max_length=32)] = ""
    min: float | date | None = None
    max: float | date | None = None
    levels: list[Level] = Field(default_factory=list, max_length=MAX_LEVELS)
    missing: Literal["reject", "default"] = "reject"
    default: Scalar | None = None


class _Feature(_Strict):
    name: Name
    column: Name
    description: Text = ""
    transform: Literal["identity", "log10p1", "ln1p", "year"] = "identity"
    scale: float = 1.0
    floor: float | None = None
    cap: float | None = None
    encoding: Literal["standardised", "raw", "one_hot", "map", "woe"] | None = None
    values: dict[str, float] = Field(default_factory=dict)
    min_rows: Annotated[int, Field(strict=True)] | None = None


class _Indicator(_Strict):
    name: IndicatorName
    column: Name
    description: Text = ""
    bounds: list[float] = Field(default_factory=list, max_length=32)
    bands: list[Annotated[str, StringConstraints(min_length=1, max_length=64)]] = Field(
        default_factory=list, max_length=MAX_BANDS
    )


class _Document(_Strict):
    id: Annotated[str, StringConstraints(pattern=r"^[a-z][a-z0-9_]{0,31}$")]
    display_name: Annotated[str, StringConstraints(min_length=1, max_length=100)]
    description: Text = ""
    columns: list[_Column] = Field(min_length=1, max_length=500)
    features: list[_Feature] = Field(default_factory=list, max_length=500)
    indicators: list[_Indicator] = Field(default_factory=list, max_length=MAX_INDICATORS)


def load_schema(path: Path) -> Department:
    """Read and check one schema file."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise SchemaError(f"{path}: cannot read the schema: {exc}") from None
    return parse_schema(text, str(path))


def parse_schema(text: str, source: str) -> Department:
    """Check a schema's TOML text; ``source`` names it in every message."""
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise SchemaError(f"{source}: not valid TOML: {exc}") from None
    try:
        document = _Document.model_validate(raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = _where(raw, first["loc"])
        raise SchemaError(f"{source}: {where}: {first['msg']}") from None
    try:
        return _build(document, source)
    except _Located as problem:
        raise SchemaError(f"{source}: {problem.where}: {problem.reason}") from None


class _Located(Exception):  # noqa: N818 - internal: always re-raised as SchemaError
    def __init__(self, where: str, reason: str) -> None:
        super().__init__(f"{where}: {reason}")
        self.where = where
        self.reason = reason


def _where(raw: Any, loc: tuple[int | str, ...]) -> str:
    """``features[2] (name "x").cap`` from a pydantic location: the entry by its name too."""
    parts: list[str] = []
    node = raw
    for step in loc:
        if isinstance(step, int):
            parts[-1] += f"[{step}]"
            entry = node[step] if isinstance(node, list) and step < len(node) else None
            if isinstance(entry, dict) and isinstance(entry.get("name"), str):
                parts[-1] += f' (name "{entry["name"]}")'
            node = entry
        else:
            parts.append(str(step))
            node = node.get(step) if isinstance(node, dict) else None
    return ".".join(parts) or "top level"


def _build(document: _Document, source: str) -> Department:
    fields = tuple(_field(c, k) for k, c in enumerate(document.columns))
    _unique([f.name for f in fields], "columns")
    by_name = {f.name: f for f in fields}
    if "uscc" in by_name:
        raise _Located("columns", '"uscc" is implicit (always the first column); do not declare it')
    features: list[FeatureSpec] = []
    for k, spec in enumerate(document.features):
        features.extend(_features(spec, _column(by_name, spec.column, f"features[{k}]"), k))
    _unique([f.name for f in features], "features")
    indicators = [
        _indicator(spec, _column(by_name, spec.column, f"indicators[{k}]"), k)
        for k, spec in enumerate(document.indicators)
    ]
    _unique([i.name for i in indicators], "indicators")
    return Department(
        id=document.id,
        display_name=document.display_name,
        description=document.description,
        fields=fields,
        features=tuple(features),
        indicators=tuple(indicators),
        source=source,
    )


def _unique(names: list[str], what: str) -> None:
    seen: set[str] = set()
    for name in names:
        if name in seen:
            raise _Located(what, f"{name!r} is declared twice")
        seen.add(name)


def _column(by_name: dict[str, FieldSpec], name: str, where: str) -> FieldSpec:
    try:
        return by_name[name]
    except KeyError:
        known = ", ".join(by_name)
        raise _Located(f"{where}.column", f"no column {name!r} (columns: {known})") from None


def _field(column: _Column, k: int) -> FieldSpec:
    where = f'columns[{k}] (name "{column.name}")'
    levels = tuple(column.levels)
    if column.type == "category":
        if not levels:
            raise _Located(where, "a category column needs its levels")
        folded = [level.casefold() for level in levels]
        if len(set(folded)) != len(folded):
            raise _Located(f"{where}.levels", "levels must differ in more than letter case")
    elif levels:
        raise _Located(f"{where}.levels", f"only category columns have levels, not {column.type}")
    bounds = [
        _bound(column, value, f"{where}.{key}")
        for key, value in (("min", column.min), ("max", column.max))
    ]
    if column.type in ("category", "boolean") and any(b is not None for b in bounds):
        raise _Located(where, f"a {column.type} column takes no min or max")
    if (
        None not in bounds
        and bounds[0] is not None
        and bounds[1] is not None
        and bounds[0] > bounds[1]
    ):
        raise _Located(where, "min is above max")
    spec = FieldSpec(
        name=column.name,
        kind=column.type,
        description=column.description,
        unit=column.unit,
        minimum=bounds[0],
        maximum=bounds[1],
        levels=levels,
        missing=column.missing,
    )
    if column.missing == "default":
        if column.default is None:
            raise _Located(where, 'missing = "default" needs a default value')
        try:
            value = spec.parse(_cell(column.default))
        except ValueError as exc:
            raise _Located(f"{where}.default", str(exc)) from None
        spec = FieldSpec(
            name=spec.name,
            kind=spec.kind,
            description=spec.description,
            unit=spec.unit,
            minimum=spec.minimum,
            maximum=spec.maximum,
            levels=spec.levels,
            missing="default",
            default=value,
        )
    elif column.default is not None:
        raise _Located(f"{where}.default", 'a default is used only with missing = "default"')
    return spec


def _bound(column: _Column, value: float | date | None, where: str) -> float | None:
    if value is None:
        return None
    if column.type == "date":
        if not isinstance(value, date):
            raise _Located(where, "a date column's bound is a TOML date (e.g. 1949-10-01)")
        return decimal_year(value)
    if isinstance(value, date):
        raise _Located(where, f"a {column.type} column's bound is a number")
    if not math.isfinite(value):
        raise _Located(where, "must be finite")
    return float(value)


def _cell(value: Scalar) -> str:
    """A TOML default as the text an import file would hold."""
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, date):
        return value.isoformat()
    return str(value)


def _features(spec: _Feature, column: FieldSpec, k: int) -> list[FeatureSpec]:
    where = f'features[{k}] (name "{spec.name}")'
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
            return [_dummy(spec.name, column, level, description) for level in column.levels]
        if encoding == "map":
            missing = [level for level in column.levels if level not in spec.values]
            extra = [name for name in spec.values if name not in column.levels]
            if missing or extra:
                detail = (
                    f"no value for {', '.join(missing)}"
                    if missing
                    else f"unknown level(s) {', '.join(extra)}"
                )
                raise _Located(
                    f"{where}.values", f"map every level of {column.name} exactly: {detail}"
                )
            if not all(math.isfinite(v) for v in spec.values.values()):
                raise _Located(f"{where}.values", "values must be finite")
            mapping = dict(spec.values)
            name = column.name
            return [
                FeatureSpec(
                    spec.name,
                    description,
                    lambda r: mapping[str(r[name])],
                    kind="category",
                    standardised=True,
                    column=name,
                )
            ]
        if encoding == "woe":
            return [_woe(spec, column, description, where)]
        raise _Located(
            f"{where}.encoding",
            f'a category column is encoded "one_hot", "map" or "woe", not "{encoding}"',
        )
    encoding = spec.encoding or ("raw" if column.kind == "boolean" else "standardised")
    if encoding == "woe":
        raise _Located(
            f"{where}.encoding",
            f'"woe" bins the levels of a category column; {column.name} is a {column.kind}',
        )
    if encoding not in ("standardised", "raw"):
        raise _Located(
            f"{where}.encoding",
            f'a {column.kind} column is "standardised" or "raw", not "{encoding}"',
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
        if value is not None and not math.isfinite(value):
            raise _Located(f"{where}.{key}", "must be finite")
    if spec.floor is not None and spec.cap is not None and spec.floor > spec.cap:
        raise _Located(where, "floor is above cap")
    if spec.transform in ("log10p1", "ln1p") and (column.minimum is None or column.minimum < 0):
        raise _Located(
            f"{where}.transform",
            f"{spec.transform} needs a column that cannot be negative (give {column.name} min = 0)",
        )
    return [
        FeatureSpec(
            spec.name,
            description,
            _numeric(column, spec),
            kind=column.kind,
            unit=column.unit if spec.transform == "identity" and spec.scale == 1.0 else "",
            standardised=encoding == "standardised",
            column=column.name,
        )
    ]


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
    levels = column.levels
    name = column.name
    return FeatureSpec(
        spec.name,
        description,
        lambda r: float(levels.index(str(r[name]))),
        kind="category",
        standardised=True,
        column=name,
        woe_min_rows=min_rows,
        levels=levels,
    )


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
        value = transform(column.numeric(record[column.name])) * scale
        if floor is not None:
            value = max(floor, value)
        if cap is not None:
            value = min(cap, value)
        return value

    return derive


def _dummy(name: str, column: FieldSpec, level: str, description: str) -> FeatureSpec:
    column_name = column.name
    return FeatureSpec(
        f"{name}={level}",
        f"{description}: {level} (1) or not (0)",
        lambda r: 1.0 if r[column_name] == level else 0.0,
        kind="boolean",
        standardised=False,
        column=column_name,
    )


def _indicator(spec: _Indicator, column: FieldSpec, k: int) -> IndicatorSpec:
    where = f'indicators[{k}] (name "{spec.name}")'
    if spec.name == PRESENCE_INDICATOR:
        raise _Located(f"{where}.name", f"{PRESENCE_INDICATOR!r} is reserved for the presence flag")
    description = spec.description or column.description
    name = column.name
    if column.kind in ("category", "boolean"):
        if spec.bounds:
            raise _Located(
                f"{where}.bounds", f"a {column.kind} column is shown by level, not banded"
            )
        defaults = column.levels if column.kind == "category" else ("no", "yes")
        if len(defaults) > MAX_BANDS:
            raise _Located(where, f"an indicator shows at most {MAX_BANDS} levels; band them")
        bands = tuple(spec.bands) or defaults
        if len(bands) != len(defaults):
            raise _Located(
                f"{where}.bands", f"give one label per level ({len(defaults)}), not {len(bands)}"
            )
        if column.kind == "boolean":
            return IndicatorSpec(spec.name, description, lambda r: float(r[name]), bands, name)
        levels = column.levels
        return IndicatorSpec(
            spec.name, description, lambda r: float(levels.index(str(r[name]))), bands, name
        )
    if not spec.bounds:
        raise _Located(
            f"{where}.bounds",
            f"a {column.kind} indicator is banded (bounds = [...]): banks never see raw values",
        )
    bounds = tuple(spec.bounds)
    if not all(math.isfinite(b) for b in bounds) or list(bounds) != sorted(set(bounds)):
        raise _Located(f"{where}.bounds", "bounds must be finite and strictly increasing")
    if len(spec.bands) != len(bounds) + 1:
        raise _Located(
            f"{where}.bands",
            f"{len(bounds)} bounds make {len(bounds) + 1} bands: "
            f"give that many labels, not {len(spec.bands)}",
        )
    return IndicatorSpec(
        spec.name,
        description,
        lambda r: float(band(column.numeric(r[name]), bounds)),
        tuple(spec.bands),
        name,
    )
