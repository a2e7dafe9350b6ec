"""Department schemas declared in TOML: a department brings its own columns without code.

The file is checked whole before a node uses it: unknown keys (a misspelt ``levles``),
a feature or indicator over a column that does not exist, an indicator that would show
a bank a raw amount (numbers must be banded), a default that its own column would
refuse. Every error names the file and the key, so a department's data steward can
fix the schema without reading Python. ``_toml_messages`` words the refusals (and checks
labels and texts); ``_toml_features`` derives the model features and proves their ranges.
"""

from __future__ import annotations

import math
import tomllib
from collections.abc import Callable, Sequence
from datetime import date, datetime
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, ValidationError

from creditshare.departments._schema import (
    LIMIT_TEXT,
    NUMBER_LIMIT,
    PRESENCE_INDICATOR,
    ColumnKind,
    Department,
    FeatureSpec,
    FieldSpec,
    IndicatorSpec,
    band,
    decimal_year,
    fold,
    listing,
    shown,
)
from creditshare.departments._toml_features import _features, _flag, _stored
from creditshare.departments._toml_messages import (
    _entry,
    _label,
    _Located,
    _reason,
    _text,
    _toml_type,
    _where,
)
from creditshare.departments._toml_signals import Word, signal_specs
from creditshare.departments._toml_statistics import StatSection, statistics_spec
from creditshare.errors import InvalidInputError
from creditshare.monitoring import Signal

__all__ = ["SchemaError", "load_schema", "parse_schema"]

MAX_LEVELS = 1000
#: A schema is a page of text; anything larger is not one (and must not fill memory).
MAX_SCHEMA_BYTES = 1_000_000
_NAME = r"^[a-z][a-z0-9_]{0,63}$"
Name = Annotated[str, StringConstraints(pattern=_NAME)]
#: Bounds a coordinator accepts from a node's Describe and a consent may name.
MAX_INDICATORS = 64
MAX_BANDS = 32
#: The longest indicator description a coordinator accepts in a node's catalogue
#: (coordinator/relay/_channels.py MAX_CATALOGUE_TEXT): longer, and the coordinator would
#: refuse the node's whole catalogue at run time.
MAX_INDICATOR_TEXT = 200
#: Model features after one-hot expansion: each is a weight in every shard and a column
#: of every training batch.
MAX_FEATURES = 1000
IndicatorName = Annotated[str, StringConstraints(pattern=r"^[a-z][a-z0-9_]{0,47}$")]
Text = Annotated[str, StringConstraints(max_length=500)]


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
    encoding: Literal["standardised", "unclipped", "one_hot", "map", "woe"] | None = None
    values: dict[str, float] = Field(default_factory=dict, max_length=MAX_LEVELS)
    min_rows: Annotated[int, Field(strict=True)] | None = None


class _Indicator(_Strict):
    name: IndicatorName
    column: Name
    description: Text = ""
    bounds: list[Any] = Field(default_factory=list, max_length=MAX_BANDS - 1)
    bands: list[str] = Field(default_factory=list, max_length=MAX_BANDS)


class _Signal(_Strict):
    type: Word
    column: Name
    indicator: IndicatorName | None = None
    severity: Word | None = None


class _Document(_Strict):
    id: Annotated[str, StringConstraints(pattern=r"^[a-z][a-z0-9_]{0,31}$")]
    display_name: Annotated[str, StringConstraints(min_length=1, max_length=100)]
    description: Text = ""
    columns: list[_Column] = Field(min_length=1, max_length=500)
    features: list[_Feature] = Field(default_factory=list, max_length=500)
    indicators: list[_Indicator] = Field(default_factory=list, max_length=MAX_INDICATORS)
    signals: list[_Signal] = Field(default_factory=list, max_length=len(Signal))
    statistics: StatSection | None = None


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
    signals = signal_specs(
        [(s.type, s.column, s.indicator, s.severity) for s in document.signals],
        by_name,
        indicators,
    )
    statistics = statistics_spec(document.statistics, by_name, indicators)
    return Department(
        id=document.id,
        display_name=document.display_name,
        description=document.description,
        fields=fields,
        features=tuple(features),
        indicators=tuple(indicators),
        source=source,
        signals=signals,
        statistics=statistics,
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
