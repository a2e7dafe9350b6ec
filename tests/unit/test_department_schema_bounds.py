"""Every feature and indicator a schema derives is finite and within its declared range
for EVERY value its column accepts: the schema loader proves a range for each feature
(``FeatureSpec.bounds``) and refuses one that could overflow or never varies; this checks
the proof against the derive functions, over values hypothesis draws from each column's
accepted domain (its edges included), for every built-in schema and extreme custom ones.
"""

from __future__ import annotations

import math
import sys
import textwrap
from datetime import date

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from creditshare.departments import DEPARTMENTS, Department, FieldSpec, parse_schema
from creditshare.departments._schema import NUMBER_LIMIT, _date_of

from .test_department_schemas import CUSTOMS, EVERY_TYPE

#: Custom schemas at the edges of what loads: unbounded columns, transforms at their
#: bounds, negative and huge scales, clamps, the first and last dates.
EXTREMES = textwrap.dedent(
    """
    id = "extremes"
    display_name = "Extremes"

    [[columns]]
    name = "free"
    type = "number"

    [[columns]]
    name = "amount"
    type = "number"
    min = 0

    [[columns]]
    name = "tiny"
    type = "number"
    min = -1
    max = 1

    [[columns]]
    name = "count"
    type = "integer"

    [[columns]]
    name = "day"
    type = "date"
    missing = "default"
    default = 9999-12-31

    [[columns]]
    name = "flag"
    type = "boolean"

    [[columns]]
    name = "grade"
    type = "category"
    levels = ["A", "b", "Ｃ", "straße", "é"]

    [[features]]
    name = "free"
    column = "free"

    [[features]]
    name = "free_negated"
    column = "free"
    scale = -1

    [[features]]
    name = "amount_log10"
    column = "amount"
    transform = "log10p1"

    [[features]]
    name = "amount_ln"
    column = "amount"
    transform = "ln1p"
    scale = -1e13

    [[features]]
    name = "amount_clamped"
    column = "amount"
    scale = 1e6
    floor = 10
    cap = 1e15

    [[features]]
    name = "tiny_scaled"
    column = "tiny"
    scale = 1e15

    [[features]]
    name = "count"
    column = "count"
    encoding = "unclipped"

    [[features]]
    name = "day_year"
    column = "day"
    transform = "year"

    [[features]]
    name = "flag_ln"
    column = "flag"
    transform = "ln1p"

    [[features]]
    name = "grade"
    column = "grade"

    [[features]]
    name = "grade_risk"
    column = "grade"
    encoding = "map"
    values = { a = -1e15, B = 0, c = 1e15, STRASSE = 0.5, "é" = 2 }

    [[indicators]]
    name = "free_band"
    column = "free"
    bounds = [-1e300, 0, 1e300]
    bands = ["very low", "low", "high", "very high"]

    [[indicators]]
    name = "day_band"
    column = "day"
    bounds = [1000-01-01, 9999-12-31]
    bands = ["ancient", "recent", "last day"]

    [[indicators]]
    name = "grade"
    column = "grade"

    [[indicators]]
    name = "flag"
    column = "flag"
    """
)


def _departments() -> list[Department]:
    custom = [parse_schema(t, f"{k}.toml") for k, t in enumerate((EXTREMES, CUSTOMS, EVERY_TYPE))]
    return [*DEPARTMENTS.values(), *custom]


def _number_cells(spec: FieldSpec) -> st.SearchStrategy[str]:
    low = spec.minimum if spec.minimum is not None else -NUMBER_LIMIT
    high = spec.maximum if spec.maximum is not None else NUMBER_LIMIT
    if spec.kind == "integer":
        first, last = math.ceil(low), math.floor(high)
        whole = [first, last, first + 1, last - 1, 0]
        inside = [e for e in whole if first <= e <= last]
        return st.one_of(st.sampled_from(inside), st.integers(first, last)).map(str)
    edges: list[float] = [
        low,
        high,
        math.nextafter(low, high),
        math.nextafter(high, low),
        0.0,
        -0.0,
        1.0,
    ]
    # Subnormals are refused as cells (too small to store), so they are no edge.
    inside_floats = [
        e for e in edges if low <= e <= high and (e == 0 or abs(e) >= sys.float_info.min)
    ]
    floats = st.floats(low, high, allow_nan=False, allow_infinity=False, allow_subnormal=False)
    return st.one_of(st.sampled_from(inside_floats), floats).map(repr)


def _date_cells(spec: FieldSpec) -> st.SearchStrategy[str]:
    first = date.fromisoformat(_date_of(spec.minimum)) if spec.minimum is not None else date.min
    last = date.fromisoformat(_date_of(spec.maximum)) if spec.maximum is not None else date.max
    return st.dates(first, last).map(date.isoformat)


def _cells(spec: FieldSpec) -> st.SearchStrategy[str]:
    if spec.kind == "category":
        cells = st.sampled_from(spec.levels).flatmap(
            lambda level: st.sampled_from([level, level.upper(), level.lower(), f" {level}\t"])
        )
    elif spec.kind == "boolean":
        cells = st.sampled_from(["0", "1", "yes", "NO", "true", "F"])
    elif spec.kind == "date":
        cells = _date_cells(spec)
    else:
        cells = _number_cells(spec)
    return st.one_of(cells, st.just("")) if spec.missing == "default" else cells


def _records(department: Department) -> st.SearchStrategy[dict[str, object]]:
    return st.fixed_dictionaries({spec.name: _cells(spec) for spec in department.fields}).map(
        lambda cells: {spec.name: spec.parse(cells[spec.name]) for spec in department.fields}
    )


DEPARTMENT_IDS = [d.id for d in _departments()]


@pytest.mark.parametrize("department_id", DEPARTMENT_IDS)
def test_every_accepted_value_gives_finite_features_within_bounds(department_id: str) -> None:
    department = next(d for d in _departments() if d.id == department_id)
    assert all(f.bounds is not None for f in department.features)

    @settings(
        max_examples=300,
        derandomize=True,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow],
        database=None,
    )
    @given(_records(department))
    def check(record: dict[str, object]) -> None:
        values = department.feature_values(record)  # type: ignore[arg-type]
        for feature in department.features:
            value = values[feature.name]
            assert feature.bounds is not None
            low, high = feature.bounds
            assert math.isfinite(value) and low <= value <= high, (feature.name, record, value)
            assert abs(value) <= NUMBER_LIMIT
        shown = department.indicator_values(record)  # type: ignore[arg-type]
        for indicator in department.indicators:
            index = shown[indicator.name]
            assert index == int(index) and 0 <= index < len(indicator.bands), (
                indicator.name,
                index,
            )

    check()


def test_the_bounds_are_reached() -> None:
    """The proved ranges are the real ones, not just safe ones: the ends are derived."""
    extremes = parse_schema(EXTREMES, "extremes.toml")
    bounds = {f.name: f.bounds for f in extremes.features}
    assert bounds["free"] == (-NUMBER_LIMIT, NUMBER_LIMIT)
    assert bounds["free_negated"] == (-NUMBER_LIMIT, NUMBER_LIMIT)
    assert bounds["amount_log10"] == (0.0, 15.0)
    assert bounds["amount_clamped"] == (10.0, 1e15)
    assert bounds["grade_risk"] == (-1e15, 1e15)
    assert bounds["grade=A"] == (0.0, 1.0)
    low, high = bounds["day_year"] or (0.0, 0.0)
    assert low == 1.0 and 9999.99 < high < 10000
