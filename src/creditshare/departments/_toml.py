"""Department schemas declared in TOML: a department brings its own columns without code.

The file is checked whole before a node uses it: unknown keys (a misspelt ``levles``),
a feature or indicator over a column that does not exist, an indicator that would show
a bank a raw amount (numbers must be banded), a default that its own column would
refuse. Every error names the file and the key, so a department's data steward can
fix the schema without reading Python.
"""

from __future__ import annotations

import math
import re
import tomllib
from collections.abc import Callable, Sequence
from datetime import date, datetime, time
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, ValidationError

from creditshare.departments._schema import (
    LIMIT_TEXT,
    NUMBER_LIMIT,
    PRESENCE_INDICATOR,
    ColumnKind,
    Department,
    FeatureSpec,
    FieldSpec,
    FieldValue,
    IndicatorSpec,
    Record,
    band,
    decimal_year,
    fold,
    listing,
    shown,
)
from creditshare.errors import ConfigurationError, InvalidInputError

__all__ = ["SchemaError", "load_schema", "parse_schema"]

#: More one-hot levels than this make a shard nobody can read; map or band them instead.
MAX_ONE_HOT_LEVELS = 64
MAX_LEVELS = 1000
#: A schema is a page of text; anything larger is not one (and must not fill memory).
MAX_SCHEMA_BYTES = 1_000_000
_NAME = r"^[a-z][a-z0-9_]{0,63}$"
Name = Annotated[str, StringConstraints(pattern=_NAME)]
#: Bounds a coordinator accepts from a node's Describe and a consent may name.
MAX_INDICATORS = 64
MAX_BANDS = 32
MAX_LABEL = 64
#: The longest indicator description a coordinator accepts in a node's catalogue
#: (coordinator/relay/_channels.py MAX_CATALOGUE_TEXT): longer, and the coordinator would
#: refuse the node's whole catalogue at run time.
MAX_INDICATOR_TEXT = 200
#: Model features after one-hot expansion: each is a weight in every shard and a column
#: of every training batch.
MAX_FEATURES = 1000
IndicatorName = Annotated[str, StringConstraints(pattern=r"^[a-z][a-z0-9_]{0,47}$")]
Text = Annotated[str, StringConstraints(max_length=500)]
#: Characters a level may not hold: levels are written bare in CSV cells (where a quote
#: is CSV quoting) and listed comma-separated in messages, `schema show` and the reference.
_LEVEL_FORBIDDEN = ',"'


class SchemaError(InvalidInputError):
    """A department schema that cannot be used: which file, which key, what is wrong."""


class _Strict(BaseModel):
    # strict: TOML has types, so a string where a number belongs ("5"), or a boolean
    # (true is 1 to Python), is the steward's mistake to be told about, never coerced.
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


class _Column(_Strict):
    name: Name
    type: ColumnKind
    description: Text = ""
    unit: Annotated[str, StringConstraints(max_length=32)] = ""
    # Checked against the column's type in _field (a TOML date for dates, else a number).
    min: Any = None
    max: Any = None
    levels: list[str] = Field(default_factory=list, max_length=MAX_LEVELS)
    missing: Literal["reject", "default"] = "reject"
    default: Any = None


class _Feature(_Strict):
    name: Name
    column: Name
    description: Text = ""
    transform: Literal["identity", "log10p1", "ln1p", "year"] = "identity"
    scale: float = 1.0
    floor: float | None = None
    cap: float | None = None
    encoding: Literal["standardised", "raw", "one_hot", "map"] | None = None
    values: dict[str, float] = Field(default_factory=dict, max_length=MAX_LEVELS)


class _Indicator(_Strict):
    name: IndicatorName
    column: Name
    description: Text = ""
    bounds: list[Any] = Field(default_factory=list, max_length=MAX_BANDS - 1)
    bands: list[str] = Field(default_factory=list, max_length=MAX_BANDS)


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
        with path.open("rb") as handle:
            data = handle.read(MAX_SCHEMA_BYTES + 1)
        if len(data) > MAX_SCHEMA_BYTES:
            raise SchemaError(f"{path}: larger than {MAX_SCHEMA_BYTES} bytes: not a schema")
        text = data.decode("utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise SchemaError(f"{path}: cannot read the schema: {exc}") from None
    return parse_schema(text, str(path))


def parse_schema(text: str, source: str) -> Department:
    """Check a schema's TOML text; ``source`` names it in every message."""
    if len(text) > MAX_SCHEMA_BYTES:
        raise SchemaError(f"{source}: larger than {MAX_SCHEMA_BYTES} characters: not a schema")
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise SchemaError(f"{source}: not valid TOML: {exc}") from None
    except (ValueError, RecursionError) as exc:
        # tomllib lets these through: a 5000-digit integer, arrays nested 1000 deep.
        reason = "nested too deeply" if isinstance(exc, RecursionError) else shown(str(exc), 80)
        raise SchemaError(f"{source}: not a usable TOML document: {reason}") from None
    try:
        document = _Document.model_validate(raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = _where(raw, first["loc"])
        raise SchemaError(f"{source}: {where}: {_reason(first)}") from None
    try:
        return _build(document, source)
    except _Located as problem:
        raise SchemaError(f"{source}: {problem.where}: {problem.reason}") from None


class _Located(Exception):  # noqa: N818 - internal: always re-raised as SchemaError
    def __init__(self, where: str, reason: str) -> None:
        super().__init__(f"{where}: {reason}")
        self.where = where
        self.reason = reason


def _entry(kind: str, k: int, name: object) -> str:
    """``columns[2] (name "x")``: the entry by its position and, when it has one, its name."""
    if not isinstance(name, str):
        return f"{kind}[{k}]"
    return f'{kind}[{k}] (name "{shown(name, 64)[1:-1]}")'


def _where(raw: Any, loc: tuple[int | str, ...]) -> str:
    """``features[2] (name "x").cap`` from a pydantic location: the entry by its name too."""
    parts: list[str] = []
    node = raw
    for step in loc:
        if isinstance(step, int):
            entry = node[step] if isinstance(node, list) and step < len(node) else None
            name = entry.get("name") if isinstance(entry, dict) else None
            parts[-1] = _entry(parts[-1], step, name)
            node = entry
        elif isinstance(node, dict) and step in node:
            parts.append(str(step) if re.fullmatch(r"[A-Za-z0-9_-]+", str(step)) else shown(step))
            node = node[step]
        elif not parts or isinstance(node, dict):
            # a missing key
            parts.append(str(step) if re.fullmatch(r"[A-Za-z0-9_-]+", str(step)) else shown(step))
            break
        else:
            break  # a pydantic union member ("float", "date"): not a key of the file
    return ".".join(parts) or "top level"


_EXPECTED = {
    "float_type": "a number (no quotes)",
    "int_type": "a whole number (no quotes)",
    "string_type": "a string in quotes",
    "list_type": "a list [...]",
    "dict_type": "a table { ... }",
    "model_type": "a table { ... }",
    "bool_type": "true or false",
    "literal_error": "",
}


def _toml_type(value: object) -> str:
    """What a TOML value is, as a steward wrote it."""
    if isinstance(value, bool):
        return f"the boolean {str(value).lower()}"
    if isinstance(value, int):
        return "an integer" if abs(value) > NUMBER_LIMIT else f"the integer {value}"
    if isinstance(value, float):
        return f"the float {value!r}"
    if isinstance(value, str):
        return f"the string {shown(value)}"
    if isinstance(value, datetime):
        return "a date-time"
    if isinstance(value, date):
        return f"the date {value.isoformat()}"
    if isinstance(value, time):
        return "a time of day"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "a table"
    return type(value).__name__


def _reason(error: Any) -> str:
    """One line a steward can act on, from a pydantic error (never its dump)."""
    kind, value = error["type"], error.get("input")
    if kind == "extra_forbidden":
        return "unknown key (misspelt? see docs/department-schemas.md)"
    if kind == "missing":
        return "this key is required"
    if kind == "string_pattern_mismatch":
        pattern = str(error.get("ctx", {}).get("pattern", ""))
        longest = re.search(r"\{0,([0-9]+)\}", pattern)
        size = f", at most {int(longest.group(1)) + 1} characters" if longest else ""
        return (
            f"{_toml_type(value)} is not a name: lower-case letters a-z, digits and _, "
            f"starting with a letter{size}"
        )
    if kind == "literal_error":
        expected = str(error.get("ctx", {}).get("expected", ""))
        return f"must be {expected}, not {_toml_type(value)}"
    if kind in _EXPECTED:
        return f"must be {_EXPECTED[kind]}, not {_toml_type(value)}"
    if kind in ("string_too_long", "string_too_short", "too_long", "too_short"):
        return str(error["msg"])
    if kind in ("finite_number",):
        return "must be finite"
    return f"{error['msg']} (got {_toml_type(value)})"


def _text(value: str, where: str) -> None:
    """Names, descriptions and units go into tables, messages and other parties'
    screens: one line of visible text."""
    if not value.isprintable():
        raise _Located(where, "must be one line of visible text (no control characters)")


def _label(value: str, where: str, *, level: bool) -> str:
    """A category level or a band label: short, visible and unambiguous where written."""
    if not 0 < len(value) <= MAX_LABEL:
        raise _Located(where, f"must be 1 to {MAX_LABEL} characters, not {len(value)}")
    if not value.isprintable():
        raise _Located(where, f"{shown(value)} holds an invisible or control character")
    if value != value.strip():
        raise _Located(where, f"{shown(value)} starts or ends with a space (cells are trimmed)")
    if level and any(c in value for c in _LEVEL_FORBIDDEN):
        raise _Located(
            where,
            f"{shown(value)}: a level holds no comma or double quote (levels are written "
            "bare in CSV cells and listed comma-separated)",
        )
    return value


def _build(document: _Document, source: str) -> Department:
    _text(document.display_name, "display_name")
    _text(document.description, "description")
    fields = tuple(_field(c, k) for k, c in enumerate(document.columns))
    _unique([f.name for f in fields], "columns")
    by_name = {f.name: f for f in fields}
    if "uscc" in by_name:
        raise _Located("columns", '"uscc" is implicit (always the first column); do not declare it')
    # Declared names are unique before one-hot expansion: two features "mode" would
    # otherwise both be "mode=..." or one "mode" next to another's "mode=a".
    _unique([spec.name for spec in document.features], "features")
    features: list[FeatureSpec] = []
    for k, spec in enumerate(document.features):
        features.extend(_features(spec, _column(by_name, spec.column, f"features[{k}]"), k))
    _unique([f.name for f in features], "features")
    if len(features) > MAX_FEATURES:
        raise _Located(
            "features",
            f"{len(features)} model features after one-hot expansion (at most {MAX_FEATURES}); "
            'map large categories (encoding = "map") instead',
        )
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
    seen: dict[str, int] = {}
    for k, name in enumerate(names):
        if name in seen:
            raise _Located(
                f"{what}[{k}]", f"{name!r} is declared twice (first at {what}[{seen[name]}])"
            )
        seen[name] = k


def _column(by_name: dict[str, FieldSpec], name: str, where: str) -> FieldSpec:
    try:
        return by_name[name]
    except KeyError:
        known = listing(by_name)
        raise _Located(f"{where}.column", f"no column {name!r} (columns: {known})") from None


def _field(column: _Column, k: int) -> FieldSpec:
    where = _entry("columns", k, column.name)
    _text(column.description, f"{where}.description")
    _text(column.unit, f"{where}.unit")
    levels = tuple(
        _label(level, f"{where}.levels[{i}]", level=True) for i, level in enumerate(column.levels)
    )
    if column.type == "category":
        if not levels:
            raise _Located(where, "a category column needs its levels")
        first: dict[str, str] = {}
        for level in levels:
            # Cells match levels by this key, so two levels with one key could never be told apart.
            other = first.setdefault(fold(level), level)
            if other != level:
                raise _Located(
                    f"{where}.levels",
                    f"levels must differ in more than letter case or width: {shown(other)} "
                    f"and {shown(level)}",
                )
    elif levels:
        raise _Located(f"{where}.levels", f"only category columns have levels, not {column.type}")
    if column.type in ("category", "boolean") and (column.min, column.max) != (None, None):
        raise _Located(where, f"a {column.type} column takes no min or max")
    low = _bound(column.type, column.min, f"{where}.min")
    high = _bound(column.type, column.max, f"{where}.max")
    if low is not None and high is not None and low > high:
        raise _Located(where, "min is above max")
    spec = FieldSpec(
        name=column.name,
        kind=column.type,
        description=column.description,
        unit=column.unit,
        minimum=low,
        maximum=high,
        levels=levels,
        missing=column.missing,
    )
    if column.missing == "default":
        if column.default is None:
            raise _Located(where, 'missing = "default" needs a default value')
        value = _default(spec, column.default, f"{where}.default")
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


def _a(kind: str) -> str:
    return f"an {kind}" if kind[0] in "aeiou" else f"a {kind}"


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _is_date(value: object) -> bool:
    return isinstance(value, date) and not isinstance(value, datetime)


def _bound(kind: ColumnKind, value: object, where: str) -> float | None:
    """A column's min or max: a TOML date for dates, a number (not a string, not a
    boolean, within ±NUMBER_LIMIT) for numbers and whole numbers."""
    if value is None:
        return None
    if kind == "date":
        if not _is_date(value):
            raise _Located(
                where,
                "a date column's bound is a TOML date such as 1949-10-01 (no quotes, no "
                f"time), not {_toml_type(value)}",
            )
        assert isinstance(value, date)
        return decimal_year(value)
    if not _is_number(value):
        raise _Located(where, f"{_a(kind)} column's bound is a number, not {_toml_type(value)}")
    assert isinstance(value, int | float)
    if not abs(value) <= NUMBER_LIMIT:  # also nan
        raise _Located(
            where, f"must be a finite number within ±{LIMIT_TEXT}, not {_toml_type(value)}"
        )
    return float(value)


_DEFAULT_TYPES: dict[ColumnKind, tuple[str, Callable[[object], bool]]] = {
    "number": ("a number", _is_number),
    "integer": ("a whole number", lambda v: isinstance(v, int) and not isinstance(v, bool)),
    "category": ("one of its levels, as a string", lambda v: isinstance(v, str)),
    "boolean": (
        "true or false (or 1 or 0)",
        lambda v: isinstance(v, bool) or (isinstance(v, int) and v in (0, 1)),
    ),
    "date": (
        'a TOML date such as 2020-01-01 (or the string "2020-01-01")',
        lambda v: _is_date(v) or isinstance(v, str),
    ),
}


def _default(spec: FieldSpec, value: object, where: str) -> Any:
    """The stored value of an empty cell: of the column's own TOML type, and a value
    the column itself accepts (checked by the same parser as every cell)."""
    expected, accepts = _DEFAULT_TYPES[spec.kind]
    if not accepts(value):
        raise _Located(
            where, f"{_a(spec.kind)} column's default is {expected}, not {_toml_type(value)}"
        )
    if isinstance(value, int | float) and not abs(value) <= NUMBER_LIMIT:
        raise _Located(where, f"must be a finite number within ±{LIMIT_TEXT}")
    try:
        return spec.parse(_cell(value))
    except ValueError as exc:
        raise _Located(where, str(exc)) from None


def _cell(value: object) -> str:
    """A TOML default as the text an import file would hold."""
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, float):
        return repr(value)
    return str(value)


def _features(spec: _Feature, column: FieldSpec, k: int) -> list[FeatureSpec]:
    where = _entry("features", k, spec.name)
    _text(spec.description, f"{where}.description")
    description = spec.description or column.description
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
        raise _Located(
            f"{where}.encoding",
            f'a category column is encoded "one_hot" or "map", not "{encoding}"',
        )
    encoding = spec.encoding or ("raw" if column.kind == "boolean" else "standardised")
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
            standardised=encoding == "standardised",
            column=column.name,
            bounds=bounds,
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
        standardised=True,
        column=name,
        bounds=(low, high),
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
    one the schema cannot read was imported under another schema (a column since added,
    a level renamed): say so, instead of a KeyError out of a query."""
    try:
        value = record[column.name]
        column.check(value)
        return use(value)
    except (KeyError, ValueError, TypeError, IndexError):
        held = shown(str(record[column.name])) if column.name in record else "nothing"
        raise ConfigurationError(
            f"a stored record holds {held} for {column.name}, which this node's schema "
            "does not accept: its records were imported under another schema; import the "
            "department's data again"
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
        f"{description}: {level} (1) or not (0)",
        lambda r: _stored(r, column, lambda v: 1.0 if v == level else 0.0),
        kind="boolean",
        standardised=False,
        column=column_name,
        bounds=(0.0, 1.0),
    )


def _indicator(spec: _Indicator, column: FieldSpec, k: int) -> IndicatorSpec:
    where = _entry("indicators", k, spec.name)
    if spec.name == PRESENCE_INDICATOR:
        raise _Located(f"{where}.name", f"{PRESENCE_INDICATOR!r} is reserved for the presence flag")
    _text(spec.description, f"{where}.description")
    labels = tuple(
        _label(label, f"{where}.bands[{i}]", level=False) for i, label in enumerate(spec.bands)
    )
    if len(set(labels)) != len(labels):
        raise _Located(
            f"{where}.bands", "two bands have the same label: a bank could not tell them apart"
        )
    description = spec.description or column.description
    if len(description) > MAX_INDICATOR_TEXT:
        raise _Located(
            f"{where}.description",
            f"an indicator's description (its own, or its column's) is at most "
            f"{MAX_INDICATOR_TEXT} characters, not {len(description)}: banks read it in "
            "profiles, and a coordinator refuses longer ones",
        )
    name = column.name
    if column.kind in ("category", "boolean"):
        if spec.bounds:
            raise _Located(
                f"{where}.bounds", f"a {column.kind} column is shown by level, not banded"
            )
        defaults = column.levels if column.kind == "category" else ("no", "yes")
        if len(defaults) > MAX_BANDS:
            raise _Located(where, f"an indicator shows at most {MAX_BANDS} levels; band them")
        bands = labels or defaults
        if len(bands) != len(defaults):
            raise _Located(
                f"{where}.bands", f"give one label per level ({len(defaults)}), not {len(bands)}"
            )
        if column.kind == "boolean":
            return IndicatorSpec(
                spec.name, description, lambda r: _stored(r, column, _flag), bands, name
            )
        levels = column.levels
        return IndicatorSpec(
            spec.name,
            description,
            lambda r: _stored(r, column, lambda v: float(levels.index(str(v)))),
            bands,
            name,
        )
    if not spec.bounds:
        raise _Located(
            f"{where}.bounds",
            f"a {column.kind} indicator is banded (bounds = [...]): banks never see raw values",
        )
    bounds = _band_bounds(column, spec.bounds, f"{where}.bounds")
    if len(labels) != len(bounds) + 1:
        raise _Located(
            f"{where}.bands",
            f"{len(bounds)} bounds make {len(bounds) + 1} bands: "
            f"give that many labels, not {len(labels)}",
        )
    return IndicatorSpec(
        spec.name,
        description,
        lambda r: float(band(_stored(r, column, column.numeric), bounds)),
        labels,
        name,
    )


def _band_bounds(column: FieldSpec, given: Sequence[object], where: str) -> tuple[float, ...]:
    """Band bounds: numbers; for a date column also TOML dates (as decimal years)."""
    bounds: list[float] = []
    for i, value in enumerate(given):
        if column.kind == "date" and _is_date(value):
            assert isinstance(value, date)
            bounds.append(decimal_year(value))
        elif _is_number(value):
            assert isinstance(value, int | float)
            if not math.isfinite(value):
                raise _Located(f"{where}[{i}]", "must be finite")
            bounds.append(float(value))
        else:
            what = "a number or a TOML date" if column.kind == "date" else "a number"
            raise _Located(f"{where}[{i}]", f"must be {what}, not {_toml_type(value)}")
    if bounds != sorted(set(bounds)):
        raise _Located(where, "bounds must be finite and strictly increasing")
    return tuple(bounds)
