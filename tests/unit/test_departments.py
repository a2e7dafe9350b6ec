"""Department schemas: field parsing, derived features, banded indicators, default scorecard."""

from __future__ import annotations

import math
from collections.abc import Mapping

import pytest

from creditshare.departments import (
    DEFAULT_INTERCEPT,
    DEFAULT_MODEL_ID,
    DEFAULT_WEIGHTS,
    DEPARTMENTS,
    Department,
    FieldSpec,
    FieldValue,
    Record,
    band,
    get_department,
)
from creditshare.errors import InvalidInputError
from creditshare.federated import ModelShard

DEPARTMENT_IDS = ("tax", "market", "social", "court", "utility")


def _field(department_id: str, name: str) -> FieldSpec:
    for spec in get_department(department_id).fields:
        if spec.name == name:
            return spec
    raise AssertionError(f"{department_id} has no field {name}")


def _label(department: Department, indicator: str, record: Record) -> str:
    for spec in department.indicators:
        if spec.name == indicator:
            value = spec.derive(record)
            assert value == int(value)
            return spec.bands[int(value)]
    raise AssertionError(f"{department.id} has no indicator {indicator}")


# --------------------------------------------------------------------------- band()


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (-1000.0, 0),
        (0.0, 0),
        (0.999, 0),
        (1.0, 1),  # equal to a bound: next band
        (3.999, 1),
        (4.0, 2),
        (12.0, 2),
        (13.0, 3),
        (1e9, 3),
        (math.inf, 3),
    ],
)
def test_band_boundaries(value: float, expected: int) -> None:
    assert band(value, (1, 4, 13)) == expected


def test_band_with_negative_bounds() -> None:
    bounds = (-30.0, -10.0, 10.0, 50.0)
    assert band(-30.0001, bounds) == 0
    assert band(-30.0, bounds) == 1
    assert band(-10.0, bounds) == 2
    assert band(9.99, bounds) == 2
    assert band(10.0, bounds) == 3
    assert band(50.0, bounds) == 4


def test_band_without_bounds_is_always_zero() -> None:
    assert band(-5.0, ()) == 0
    assert band(5.0, ()) == 0


# --------------------------------------------------------------------------- FieldSpec.parse


@pytest.mark.parametrize(
    ("department_id", "name", "text", "expected"),
    [
        ("tax", "annual_tax_paid", "12345.5", 12345.5),
        ("tax", "annual_tax_paid", "  0 ", 0.0),
        ("tax", "annual_tax_paid", "1e6", 1_000_000.0),
        ("tax", "tax_credit_grade", "A", "A"),
        ("tax", "tax_credit_grade", " m ", "M"),
        ("tax", "tax_credit_grade", "d", "D"),
        ("tax", "months_in_arrears", "600", 600),
        ("tax", "months_in_arrears", "0", 0),
        ("market", "abnormal_operations", "0", 0),
        ("market", "abnormal_operations", "1", 1),
        ("market", "abnormal_operations", "Yes", 1),
        ("court", "dishonest_debtor", "false", 0),
        ("market", "years_operating", "200", 200.0),
        ("utility", "electricity_kwh_trend", "-100", -100.0),
        ("utility", "electricity_kwh_trend", "1000", 1000.0),
        ("utility", "late_payments", "12", 12),
    ],
)
def test_parse_accepts_good_values(
    department_id: str, name: str, text: str, expected: FieldValue
) -> None:
    value = _field(department_id, name).parse(text)
    assert value == expected
    assert type(value) is type(expected)


@pytest.mark.parametrize(
    ("department_id", "name", "text", "fragment"),
    [
        ("tax", "annual_tax_paid", "", "is empty"),
        ("tax", "annual_tax_paid", "   ", "is empty"),
        ("tax", "annual_tax_paid", "lots", "must be a number"),
        ("tax", "annual_tax_paid", "1,000", "must be a number"),
        ("tax", "annual_tax_paid", "-0.01", "at least 0"),
        ("tax", "annual_tax_paid", "nan", "finite"),
        ("tax", "annual_tax_paid", "inf", "finite"),
        ("tax", "annual_tax_paid", "-Infinity", "finite"),
        ("tax", "annual_tax_paid", "1e400", "finite"),
        ("tax", "months_in_arrears", "", "is empty"),
        ("tax", "months_in_arrears", "1.5", "whole number"),
        ("tax", "months_in_arrears", "three", "whole number"),
        ("tax", "months_in_arrears", "nan", "whole number"),
        ("tax", "months_in_arrears", "inf", "whole number"),
        ("tax", "months_in_arrears", "-1", "at least 0"),
        ("tax", "months_in_arrears", "601", "at most 600"),
        ("tax", "tax_credit_grade", "", "is empty"),
        ("tax", "tax_credit_grade", "E", "must be one of A, B, M, C, D"),
        ("tax", "tax_credit_grade", "AA", "must be one of"),
        ("tax", "tax_credit_grade", "nan", "must be one of"),
        ("market", "abnormal_operations", "2", "must be 0 or 1"),
        ("market", "abnormal_operations", "-1", "must be 0 or 1"),
        ("market", "abnormal_operations", "maybe", "must be 0 or 1"),
        ("market", "abnormal_operations", "", "is empty"),
        ("market", "years_operating", "200.5", "at most 200"),
        ("utility", "electricity_kwh_trend", "-100.5", "at least -100"),
        ("utility", "electricity_kwh_trend", "1000.1", "at most 1000"),
        ("utility", "late_payments", "13", "at most 12"),
    ],
)
def test_parse_refuses_bad_values_naming_the_field(
    department_id: str, name: str, text: str, fragment: str
) -> None:
    with pytest.raises(ValueError) as caught:
        _field(department_id, name).parse(text)
    message = str(caught.value)
    assert message.startswith(name)
    assert fragment in message


def test_parse_of_standalone_spec_without_limits() -> None:
    spec = FieldSpec("x", "number", "free number")
    assert spec.parse("-1e9") == -1e9
    with pytest.raises(ValueError, match=r"^x must be finite"):
        spec.parse("NaN")


# --------------------------------------------------------------------------- catalogue


def test_builtin_departments() -> None:
    # The five public-record departments, plus the default_credit benchmark's host data.
    assert tuple(DEPARTMENTS) == DEPARTMENT_IDS
    for department_id, department in DEPARTMENTS.items():
        assert department.id == department_id
        assert get_department(department_id) is department
        assert department.display_name


def test_unknown_department_lists_the_known_ones() -> None:
    with pytest.raises(KeyError) as caught:
        get_department("finance")
    message = str(caught.value.args[0])
    assert "finance" in message
    for department_id in DEPARTMENT_IDS:
        assert department_id in message


@pytest.mark.parametrize("department_id", DEPARTMENT_IDS)
def test_columns_start_with_uscc_and_names_are_unique(department_id: str) -> None:
    department = get_department(department_id)
    assert department.columns[0] == "uscc"
    assert department.columns[1:] == tuple(f.name for f in department.fields)
    assert len(set(department.columns)) == len(department.columns)
    features = [f.name for f in department.features]
    indicators = [i.name for i in department.indicators]
    assert len(set(features)) == len(features)
    assert len(set(indicators)) == len(indicators)


def test_column_headers() -> None:
    assert get_department("tax").columns == (
        "uscc",
        "annual_tax_paid",
        "tax_credit_grade",
        "months_in_arrears",
        "industry",
    )
    assert get_department("court").columns == ("uscc", "judgments_as_defendant", "dishonest_debtor")


def test_default_scorecard_covers_every_department() -> None:
    assert DEFAULT_MODEL_ID == "sme-scorecard-v1"
    assert DEFAULT_INTERCEPT == -1.0
    assert set(DEFAULT_WEIGHTS) == set(DEPARTMENT_IDS)


@pytest.mark.parametrize("department_id", DEPARTMENT_IDS)
def test_every_default_weight_names_a_feature_of_its_department(department_id: str) -> None:
    features = {f.name for f in get_department(department_id).features}
    weights = DEFAULT_WEIGHTS[department_id]
    assert weights
    assert set(weights) <= features
    assert all(math.isfinite(w) for w in weights.values())


# --------------------------------------------------------------------------- hand-computed

TAX_RECORD: Record = {"annual_tax_paid": 99999.0, "tax_credit_grade": "C", "months_in_arrears": 40}
MARKET_RECORD: Record = {
    "registered_capital": 999.0,
    "years_operating": 45.0,
    "administrative_penalties": 25,
    "abnormal_operations": 1,
}
SOCIAL_RECORD: Record = {"insured_headcount": 99, "months_in_arrears": 3}
COURT_RECORD: Record = {"judgments_as_defendant": 4, "dishonest_debtor": 1}
UTILITY_RECORD: Record = {"electricity_kwh_trend": 250.0, "late_payments": 7}

CASES: list[tuple[str, Record, dict[str, float], dict[str, float], float]] = [
    (
        "tax",
        TAX_RECORD,
        {"tax_paid_log10": 5.0, "tax_grade_risk": 3.0, "tax_arrears_months": 36.0},
        {"tax_credit_grade": 3.0, "tax_paid_band": 1.0, "months_in_arrears_band": 3.0},
        -0.15 * 5.0 + 0.35 * 3.0 + 0.08 * 36.0,  # 3.18
    ),
    (
        "market",
        MARKET_RECORD,
        {
            "registered_capital_log10": 3.0,
            "years_operating": 30.0,
            "penalties": 20.0,
            "abnormal_operations": 1.0,
        },
        {"years_operating_band": 4.0, "penalties_band": 3.0, "abnormal_operations": 1.0},
        -0.05 * 3.0 - 0.03 * 30.0 + 0.25 * 20.0 + 1.1 * 1.0,  # 5.05
    ),
    (
        "social",
        SOCIAL_RECORD,
        {"headcount_log10": 2.0, "social_arrears_months": 3.0},
        {"headcount_band": 3.0, "months_in_arrears_band": 1.0},
        -0.2 * 2.0 + 0.1 * 3.0,  # -0.1
    ),
    (
        "court",
        COURT_RECORD,
        {"judgments": 4.0, "dishonest_debtor": 1.0},
        {"judgments_band": 2.0, "dishonest_debtor": 1.0},
        0.3 * 4.0 + 1.6 * 1.0,  # 2.8
    ),
    (
        "utility",
        UTILITY_RECORD,
        {"electricity_trend": 2.0, "late_payments": 7.0},
        {"electricity_trend_band": 4.0, "late_payments_band": 3.0},
        -0.6 * 2.0 + 0.15 * 7.0,  # -0.15
    ),
]


@pytest.mark.parametrize(
    ("department_id", "record", "features", "indicators", "partial"),
    CASES,
    ids=[c[0] for c in CASES],
)
def test_hand_computed_features_indicators_and_partial_score(
    department_id: str,
    record: Record,
    features: dict[str, float],
    indicators: dict[str, float],
    partial: float,
) -> None:
    department = get_department(department_id)
    assert department.feature_values(record) == features
    assert department.indicator_values(record) == indicators
    score = _partial(department_id, record, DEFAULT_WEIGHTS[department_id])
    assert score == pytest.approx(partial, abs=1e-12)


def _partial(department_id: str, record: Record, weights: Mapping[str, float]) -> float:
    """A configured scorecard's share, through the one scoring computation nodes use."""
    return ModelShard(weights).partial_score(get_department(department_id).feature_values(record))


def test_partial_score_literal_values() -> None:
    assert _partial("tax", TAX_RECORD, DEFAULT_WEIGHTS["tax"]) == pytest.approx(3.18, abs=1e-12)
    market = _partial("market", MARKET_RECORD, DEFAULT_WEIGHTS["market"])
    assert market == pytest.approx(5.05, abs=1e-12)
    utility = _partial("utility", UTILITY_RECORD, DEFAULT_WEIGHTS["utility"])
    assert utility == pytest.approx(-0.15, abs=1e-12)


def test_partial_score_uses_only_the_weighted_features() -> None:
    assert _partial("tax", TAX_RECORD, {"tax_arrears_months": 0.5}) == 18.0
    assert _partial("tax", TAX_RECORD, {}) == 0.0


def test_partial_score_with_unknown_feature_raises() -> None:
    with pytest.raises(InvalidInputError, match="no_such_feature"):
        _partial("tax", TAX_RECORD, {"no_such_feature": 1.0})


@pytest.mark.parametrize(
    ("grade", "risk", "index"),
    [("A", 0.0, 0), ("B", 1.0, 1), ("M", 1.5, 2), ("C", 3.0, 3), ("D", 4.0, 4)],
)
def test_tax_grade_risk_and_indicator(grade: str, risk: float, index: int) -> None:
    tax = get_department("tax")
    record: Record = {**TAX_RECORD, "tax_credit_grade": grade}
    assert tax.feature_values(record)["tax_grade_risk"] == risk
    assert tax.indicator_values(record)["tax_credit_grade"] == index
    assert _label(tax, "tax_credit_grade", record) == grade


@pytest.mark.parametrize(
    ("paid", "label"),
    [
        (0.0, "under 10k"),
        (9999.99, "under 10k"),
        (10_000.0, "10k–100k"),
        (99_999.0, "10k–100k"),
        (100_000.0, "100k–1M"),
        (1_000_000.0, "1M–10M"),
        (10_000_000.0, "10M or more"),
    ],
)
def test_tax_paid_band_labels(paid: float, label: str) -> None:
    tax = get_department("tax")
    assert _label(tax, "tax_paid_band", {**TAX_RECORD, "annual_tax_paid": paid}) == label


@pytest.mark.parametrize(
    ("months", "label", "capped"),
    [
        (0, "none", 0.0),
        (1, "1–3 months", 1.0),
        (3, "1–3 months", 3.0),
        (4, "4–12 months", 4.0),
        (12, "4–12 months", 12.0),
        (13, "over 12 months", 13.0),
        (36, "over 12 months", 36.0),
        (37, "over 12 months", 36.0),
        (600, "over 12 months", 36.0),
    ],
)
@pytest.mark.parametrize("department_id", ["tax", "social"])
def test_arrears_bands_and_cap(department_id: str, months: int, label: str, capped: float) -> None:
    department = get_department(department_id)
    base = TAX_RECORD if department_id == "tax" else SOCIAL_RECORD
    record: Record = {**base, "months_in_arrears": months}
    assert _label(department, "months_in_arrears_band", record) == label
    feature = "tax_arrears_months" if department_id == "tax" else "social_arrears_months"
    assert department.feature_values(record)[feature] == capped


@pytest.mark.parametrize(
    ("trend", "feature", "label"),
    [
        (-100.0, -1.0, "falling over 30%"),
        (-30.0, -0.3, "falling 10–30%"),
        (-10.0, -0.1, "stable (±10%)"),
        (0.0, 0.0, "stable (±10%)"),
        (10.0, 0.1, "rising 10–50%"),
        (50.0, 0.5, "rising over 50%"),
        (200.0, 2.0, "rising over 50%"),
        (1000.0, 2.0, "rising over 50%"),
    ],
)
def test_utility_trend_feature_and_band(trend: float, feature: float, label: str) -> None:
    utility = get_department("utility")
    record: Record = {**UTILITY_RECORD, "electricity_kwh_trend": trend}
    assert utility.feature_values(record)["electricity_trend"] == pytest.approx(feature)
    assert _label(utility, "electricity_trend_band", record) == label


@pytest.mark.parametrize(
    ("count", "label"), [(0, "none"), (1, "1"), (2, "2–4"), (4, "2–4"), (5, "5 or more")]
)
def test_count_bands(count: int, label: str) -> None:
    court = get_department("court")
    market = get_department("market")
    assert (
        _label(court, "judgments_band", {**COURT_RECORD, "judgments_as_defendant": count}) == label
    )
    assert (
        _label(market, "penalties_band", {**MARKET_RECORD, "administrative_penalties": count})
        == label
    )


@pytest.mark.parametrize(
    ("years", "label"),
    [
        (0.0, "under 1"),
        (1.0, "1–3"),
        (3.0, "3–5"),
        (5.0, "5–10"),
        (9.9, "5–10"),
        (10.0, "10 or more"),
    ],
)
def test_years_operating_band(years: float, label: str) -> None:
    market = get_department("market")
    record: Record = {**MARKET_RECORD, "years_operating": years}
    assert _label(market, "years_operating_band", record) == label


@pytest.mark.parametrize(
    ("headcount", "label", "log10"),
    [(0, "none", 0.0), (9, "1–9", 1.0), (10, "10–49", math.log10(11)), (299, "50–299", None)],
)
def test_headcount_band_and_log(headcount: int, label: str, log10: float | None) -> None:
    social = get_department("social")
    record: Record = {**SOCIAL_RECORD, "insured_headcount": headcount}
    assert _label(social, "headcount_band", record) == label
    if log10 is not None:
        assert social.feature_values(record)["headcount_log10"] == log10


def test_flags_map_to_labels() -> None:
    court = get_department("court")
    market = get_department("market")
    assert _label(court, "dishonest_debtor", {**COURT_RECORD, "dishonest_debtor": 0}) == (
        "not listed"
    )
    assert _label(court, "dishonest_debtor", COURT_RECORD) == "listed"
    assert _label(market, "abnormal_operations", {**MARKET_RECORD, "abnormal_operations": 0}) == (
        "not listed"
    )


def test_money_logs_of_zero_are_zero() -> None:
    market = get_department("market")
    record: Record = {**MARKET_RECORD, "registered_capital": 0.0}
    assert market.feature_values(record)["registered_capital_log10"] == 0.0
    tax = get_department("tax")
    assert tax.feature_values({**TAX_RECORD, "annual_tax_paid": 0.0})["tax_paid_log10"] == 0.0


def _extreme_records(department: Department) -> list[dict[str, FieldValue]]:
    """Every field at its minimum, then at a large or maximum value."""
    low: dict[str, FieldValue] = {}
    high: dict[str, FieldValue] = {}
    for spec in department.fields:
        if spec.kind == "category":
            low[spec.name], high[spec.name] = spec.levels[0], spec.levels[-1]
        elif spec.kind == "boolean":
            low[spec.name], high[spec.name] = 0, 1
        else:
            low[spec.name] = spec.minimum if spec.minimum is not None else 0.0
            high[spec.name] = spec.maximum if spec.maximum is not None else 1e12
    return [low, high]


@pytest.mark.parametrize("department_id", DEPARTMENT_IDS)
def test_banded_indicators_stay_within_their_labels(department_id: str) -> None:
    department = get_department(department_id)
    for record in _extreme_records(department):
        values = department.indicator_values(record)
        for spec in department.indicators:
            value = values[spec.name]
            assert spec.bands, spec.name
            assert value == int(value)
            assert 0 <= int(value) < len(spec.bands)
        features = department.feature_values(record)
        assert all(math.isfinite(v) for v in features.values())


@pytest.mark.parametrize(
    ("department", "field"),
    [
        ("market", "administrative_penalties"),
        ("court", "judgments_as_defendant"),
        ("social", "insured_headcount"),
        ("tax", "annual_tax_paid"),
        ("market", "registered_capital"),
    ],
)
def test_absurdly_large_values_are_refused_at_import(department: str, field: str) -> None:
    """A 400-digit count would overflow the scoring maths later; refuse it with the field."""
    spec = next(f for f in get_department(department).fields if f.name == field)
    with pytest.raises(ValueError, match=f"{field} must be (at most|finite)"):
        spec.parse("1" + "0" * 400)


def test_money_above_the_bound_is_refused() -> None:
    spec = next(f for f in get_department("tax").fields if f.name == "annual_tax_paid")
    with pytest.raises(ValueError, match="annual_tax_paid must be at most"):
        spec.parse("2e13")
