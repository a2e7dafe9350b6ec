"""The published default scorecard ("sme-scorecard-v1").

A logistic model of the log-odds of default: positive weights raise risk. Each
department's weights are copied into that department's node configuration (the
node is the only place they are used); the intercept and the score scale go into
the coordinator's. Federated training replaces this with learnt shards.
"""

from __future__ import annotations

from types import MappingProxyType
from typing import Final

__all__ = ["DEFAULT_INTERCEPT", "DEFAULT_MODEL_ID", "DEFAULT_WEIGHTS"]

DEFAULT_MODEL_ID: Final = "sme-scorecard-v1"
DEFAULT_INTERCEPT: Final = -1.0

DEFAULT_WEIGHTS: Final = MappingProxyType(
    {
        "tax": {"tax_paid_log10": -0.15, "tax_grade_risk": 0.35, "tax_arrears_months": 0.08},
        "market": {
            "registered_capital_log10": -0.05,
            "years_operating": -0.03,
            "penalties": 0.25,
            "abnormal_operations": 1.1,
        },
        "social": {"headcount_log10": -0.2, "social_arrears_months": 0.1},
        "court": {"judgments": 0.3, "dishonest_debtor": 1.6},
        "utility": {"electricity_trend": -0.6, "late_payments": 0.15},
    }
)
