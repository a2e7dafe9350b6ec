"""Department schemas (declared in TOML), derived features, published indicators and the
default scorecard."""

from creditshare.departments._builtin import (
    DEPARTMENTS,
    builtin_schema_text,
    get_department,
    resolve_department,
)
from creditshare.departments._derivation import derivation, derivation_change
from creditshare.departments._reference import domain, reference_markdown, schema_tables
from creditshare.departments._schema import (
    COLUMN_KINDS,
    PRESENCE_INDICATOR,
    ColumnKind,
    Department,
    FeatureSpec,
    FieldSpec,
    FieldValue,
    IndicatorSpec,
    Record,
    SignalSpec,
    StatisticsDimension,
    StatisticsSpec,
    StatisticsSum,
    band,
    decimal_year,
    listing,
)
from creditshare.departments._scorecard import (
    DEFAULT_INTERCEPT,
    DEFAULT_MODEL_ID,
    DEFAULT_WEIGHTS,
)
from creditshare.departments._toml import SchemaError, load_schema, parse_schema
from creditshare.departments._toml_statistics import (
    IMPLICIT_DIMENSIONS,
    MAX_CUBE_CELLS,
    MAX_SUM_UNITS,
    REGION_LEVELS,
    RESULT_COLUMNS,
)

__all__ = [
    "COLUMN_KINDS",
    "DEFAULT_INTERCEPT",
    "DEFAULT_MODEL_ID",
    "DEFAULT_WEIGHTS",
    "DEPARTMENTS",
    "IMPLICIT_DIMENSIONS",
    "MAX_CUBE_CELLS",
    "MAX_SUM_UNITS",
    "PRESENCE_INDICATOR",
    "REGION_LEVELS",
    "RESULT_COLUMNS",
    "ColumnKind",
    "Department",
    "FeatureSpec",
    "FieldSpec",
    "FieldValue",
    "IndicatorSpec",
    "Record",
    "SchemaError",
    "SignalSpec",
    "StatisticsDimension",
    "StatisticsSpec",
    "StatisticsSum",
    "band",
    "builtin_schema_text",
    "decimal_year",
    "derivation",
    "derivation_change",
    "domain",
    "get_department",
    "listing",
    "load_schema",
    "parse_schema",
    "reference_markdown",
    "resolve_department",
    "schema_tables",
]
