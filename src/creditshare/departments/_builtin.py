"""The five departments that ship with creditshare and their published indicators.

Feature transforms are deliberately simple (logs of money, capped counts) so a
scorecard over them stays explainable to a loan officer and to the enterprise.
"""

from __future__ import annotations

import math

from creditshare.departments._schema import (
    Department,
    FeatureSpec,
    FieldSpec,
    IndicatorSpec,
    Record,
    band,
)

__all__ = ["DEPARTMENTS", "get_department"]

_GRADES = ("A", "B", "M", "C", "D")
#: Upper bounds keep every derived value finite and every import honest: a row
#: beyond them is a data error, refused with its line, not a number to score.
_MONEY_MAX = 1e13  # CNY; about ten times the largest single taxpayer
_COUNT_MAX = 100_000
_GRADE_RISK = {"A": 0.0, "B": 1.0, "M": 1.5, "C": 3.0, "D": 4.0}
_ARREARS_BANDS = ("none", "1–3 months", "4–12 months", "over 12 months")
_COUNT_BANDS = ("none", "1", "2–4", "5 or more")


def _num(record: Record, name: str) -> float:
    return float(record[name])


def _log_money(name: str) -> FeatureSpec:
    return FeatureSpec(
        name=f"{name}_log10",
        description=f"log10(1 + {name.replace('_', ' ')})",
        derive=lambda r: math.log10(1.0 + _num(r, name)),
    )


def _capped(name: str, feature: str, cap: float, description: str) -> FeatureSpec:
    return FeatureSpec(feature, description, lambda r: min(_num(r, name), cap), kind="count")


def _arrears_band(name: str) -> IndicatorSpec:
    return IndicatorSpec(
        name=f"{name}_band",
        description="months in arrears, banded",
        derive=lambda r: band(_num(r, name), (1, 4, 13)),
        bands=_ARREARS_BANDS,
    )


def _flag(name: str, description: str, labels: tuple[str, str]) -> IndicatorSpec:
    return IndicatorSpec(name, description, lambda r: _num(r, name), bands=labels)


TAX = Department(
    id="tax",
    display_name="Tax administration",
    fields=(
        FieldSpec(
            "annual_tax_paid", "number", "tax paid in the last fiscal year", "CNY", 0, _MONEY_MAX
        ),
        FieldSpec(
            "tax_credit_grade",
            "grade",
            "tax credit grade (A best, D worst, M new)",
            choices=_GRADES,
        ),
        FieldSpec("months_in_arrears", "count", "months with tax in arrears", "months", 0, 600),
    ),
    features=(
        FeatureSpec(
            "tax_paid_log10",
            "log10(1 + annual tax paid in CNY)",
            lambda r: math.log10(1.0 + _num(r, "annual_tax_paid")),
        ),
        FeatureSpec(
            "tax_grade_risk",
            "tax credit grade as risk points (A 0 … D 4)",
            lambda r: _GRADE_RISK[str(r["tax_credit_grade"])],
            kind="grade",
        ),
        _capped(
            "months_in_arrears", "tax_arrears_months", 36, "tax arrears in months, capped at 36"
        ),
    ),
    indicators=(
        IndicatorSpec(
            "tax_credit_grade",
            "tax credit grade",
            lambda r: float(_GRADES.index(str(r["tax_credit_grade"]))),
            bands=_GRADES,
        ),
        IndicatorSpec(
            "tax_paid_band",
            "annual tax paid, banded",
            lambda r: band(_num(r, "annual_tax_paid"), (1e4, 1e5, 1e6, 1e7)),
            bands=("under 10k", "10k–100k", "100k–1M", "1M–10M", "10M or more"),
        ),
        _arrears_band("months_in_arrears"),
    ),
)

MARKET = Department(
    id="market",
    display_name="Market supervision",
    fields=(
        FieldSpec("registered_capital", "number", "registered capital", "CNY", 0, _MONEY_MAX),
        FieldSpec("years_operating", "number", "years since registration", "years", 0, 200),
        FieldSpec(
            "administrative_penalties",
            "count",
            "administrative penalties on file",
            "",
            0,
            _COUNT_MAX,
        ),
        FieldSpec("abnormal_operations", "flag", "listed for abnormal operations"),
    ),
    features=(
        _log_money("registered_capital"),
        _capped("years_operating", "years_operating", 30, "years operating, capped at 30"),
        _capped("administrative_penalties", "penalties", 20, "penalties, capped at 20"),
        FeatureSpec(
            "abnormal_operations",
            "abnormal-operations listing (0/1)",
            lambda r: _num(r, "abnormal_operations"),
            kind="flag",
        ),
    ),
    indicators=(
        IndicatorSpec(
            "years_operating_band",
            "years operating, banded",
            lambda r: band(_num(r, "years_operating"), (1, 3, 5, 10)),
            bands=("under 1", "1–3", "3–5", "5–10", "10 or more"),
        ),
        IndicatorSpec(
            "penalties_band",
            "administrative penalties, banded",
            lambda r: band(_num(r, "administrative_penalties"), (1, 2, 5)),
            bands=_COUNT_BANDS,
        ),
        _flag("abnormal_operations", "abnormal-operations listing", ("not listed", "listed")),
    ),
)

SOCIAL = Department(
    id="social",
    display_name="Social security",
    fields=(
        FieldSpec(
            "insured_headcount", "count", "employees with social insurance", "people", 0, 10_000_000
        ),
        FieldSpec(
            "months_in_arrears", "count", "months with contributions in arrears", "months", 0, 600
        ),
    ),
    features=(
        FeatureSpec(
            "headcount_log10",
            "log10(1 + insured headcount)",
            lambda r: math.log10(1.0 + _num(r, "insured_headcount")),
        ),
        _capped(
            "months_in_arrears",
            "social_arrears_months",
            36,
            "contribution arrears in months, capped at 36",
        ),
    ),
    indicators=(
        IndicatorSpec(
            "headcount_band",
            "insured headcount, banded",
            lambda r: band(_num(r, "insured_headcount"), (1, 10, 50, 300)),
            bands=("none", "1–9", "10–49", "50–299", "300 or more"),
        ),
        _arrears_band("months_in_arrears"),
    ),
)

COURT = Department(
    id="court",
    display_name="People's courts",
    fields=(
        FieldSpec(
            "judgments_as_defendant",
            "count",
            "judgments against it as defendant",
            "",
            0,
            _COUNT_MAX,
        ),
        FieldSpec("dishonest_debtor", "flag", "on the dishonest judgment-debtor list"),
    ),
    features=(
        _capped("judgments_as_defendant", "judgments", 20, "judgments as defendant, capped at 20"),
        FeatureSpec(
            "dishonest_debtor",
            "dishonest judgment-debtor listing (0/1)",
            lambda r: _num(r, "dishonest_debtor"),
            kind="flag",
        ),
    ),
    indicators=(
        IndicatorSpec(
            "judgments_band",
            "judgments as defendant, banded",
            lambda r: band(_num(r, "judgments_as_defendant"), (1, 2, 5)),
            bands=_COUNT_BANDS,
        ),
        _flag("dishonest_debtor", "dishonest judgment-debtor listing", ("not listed", "listed")),
    ),
)

UTILITY = Department(
    id="utility",
    display_name="Utilities (electricity)",
    fields=(
        FieldSpec(
            "electricity_kwh_trend",
            "number",
            "year-on-year change in electricity use",
            "%",
            -100,
            1000,
        ),
        FieldSpec("late_payments", "count", "late bill payments in the last 12 months", "", 0, 12),
    ),
    features=(
        FeatureSpec(
            "electricity_trend",
            "electricity use change as a fraction, within [-1, 2]",
            lambda r: max(-1.0, min(2.0, _num(r, "electricity_kwh_trend") / 100.0)),
        ),
        FeatureSpec(
            "late_payments",
            "late payments in 12 months",
            lambda r: _num(r, "late_payments"),
            kind="count",
        ),
    ),
    indicators=(
        IndicatorSpec(
            "electricity_trend_band",
            "electricity use trend, banded",
            lambda r: band(_num(r, "electricity_kwh_trend"), (-30, -10, 10, 50)),
            bands=(
                "falling over 30%",
                "falling 10–30%",
                "stable (±10%)",
                "rising 10–50%",
                "rising over 50%",
            ),
        ),
        IndicatorSpec(
            "late_payments_band",
            "late utility payments, banded",
            lambda r: band(_num(r, "late_payments"), (1, 3, 7)),
            bands=("none", "1–2", "3–6", "7 or more"),
        ),
    ),
)


def _passthrough(name: str, description: str) -> FeatureSpec:
    return FeatureSpec(name, f"{description}, standardised", lambda r: _num(r, name))


def _standardised(name: str, description: str) -> FieldSpec:
    return FieldSpec(name, "number", description, "std", -100, 100)


#: The host half of the public default_credit set (credit limit, demographics and
#: repayment status, already standardised): a node imports it to take part in the
#: training benchmark on real data. It publishes no indicators.
_CARD_COLUMNS = (
    ("x0", "credit limit (LIMIT_BAL)"),
    ("x1", "sex (SEX)"),
    ("x2", "education (EDUCATION)"),
    ("x3", "marital status (MARRIAGE)"),
    ("x4", "age (AGE)"),
    ("x5", "repayment status, September (PAY_0)"),
    ("x6", "repayment status, August (PAY_2)"),
    ("x7", "repayment status, July (PAY_3)"),
    ("x8", "repayment status, June (PAY_4)"),
    ("x9", "repayment status, May (PAY_5)"),
)
CARD_HISTORY = Department(
    id="card_history",
    display_name="Card credit history (default_credit host features)",
    fields=tuple(_standardised(name, text) for name, text in _CARD_COLUMNS),
    features=tuple(_passthrough(name, text) for name, text in _CARD_COLUMNS),
)

DEPARTMENTS: dict[str, Department] = {
    d.id: d for d in (TAX, MARKET, SOCIAL, COURT, UTILITY, CARD_HISTORY)
}


def get_department(department_id: str) -> Department:
    try:
        return DEPARTMENTS[department_id]
    except KeyError:
        known = ", ".join(DEPARTMENTS)
        raise KeyError(f"unknown department {department_id!r}; known: {known}") from None
