"""Department data schemas, derived features, published indicators and the default scorecard."""

from creditshare.departments._builtin import DEPARTMENTS, get_department
from creditshare.departments._schema import (
    PRESENCE_INDICATOR,
    Department,
    FeatureSpec,
    FieldSpec,
    FieldValue,
    IndicatorSpec,
    Record,
    band,
)
from creditshare.departments._scorecard import (
    DEFAULT_INTERCEPT,
    DEFAULT_MODEL_ID,
    DEFAULT_WEIGHTS,
)

__all__ = [
    "DEFAULT_INTERCEPT",
    "DEFAULT_MODEL_ID",
    "DEFAULT_WEIGHTS",
    "DEPARTMENTS",
    "PRESENCE_INDICATOR",
    "Department",
    "FeatureSpec",
    "FieldSpec",
    "FieldValue",
    "IndicatorSpec",
    "Record",
    "band",
    "get_department",
]
