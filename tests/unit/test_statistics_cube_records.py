"""A cube reads every stored record through the schema's reader: a column absent from a
record (imported before the column was added) reads as its default when it has one, and
otherwise stops the build with a StaleRecordError naming the column — dimensions and
sums alike, never a raw KeyError or TypeError out of a lazily built cube."""

from __future__ import annotations

import textwrap

import pytest

from creditshare.departments import Record, parse_schema
from creditshare.errors import StaleRecordError
from creditshare.identity import make_uscc
from creditshare.statistics import REGION_LEVELS, Catalogue, CubeBuilder

SCHEMA = textwrap.dedent(
    """
    id = "probe"
    display_name = "Probe"

    [[columns]]
    name = "amount"
    type = "number"
    min = 0

    [[columns]]
    name = "staff"
    type = "integer"
    min = 0
    missing = "default"
    default = 3

    [[columns]]
    name = "grade"
    type = "category"
    levels = ["A", "B", "C"]

    [[columns]]
    name = "sector"
    type = "category"
    levels = ["farm", "shop", "unknown"]
    missing = "default"
    default = "unknown"

    [[statistics.dimensions]]
    name = "grade"
    column = "grade"

    [[statistics.dimensions]]
    name = "sector"
    column = "sector"

    [[statistics.sums]]
    column = "amount"
    lower = 0
    upper = 1000

    [[statistics.sums]]
    column = "staff"
    lower = 0
    upper = 100
    """
)
PROBE = parse_schema(SCHEMA, "probe.toml")
CATALOGUE = Catalogue.of(PROBE)
USCC = make_uscc("9", "1", "310101", "MA1FL0QX").code


def build(record: Record) -> tuple[list[int], list[int]]:
    builder = CubeBuilder(CATALOGUE, PROBE)
    builder.add(USCC, record)
    cube = builder.finish()
    return [int(v) for v in cube.counts.reshape(-1)], [
        int(v) for v in cube.sums.sum(axis=(1, 2, 3))
    ]


def test_columns_with_a_default_read_as_it_when_absent() -> None:
    counts, sums = build({"amount": 250.0, "grade": "B"})
    assert sum(counts) == 1
    # staff absent → its default 3; sector absent → "unknown" (the last level).
    assert sums == [250, 3]
    builder = CubeBuilder(CATALOGUE, PROBE)
    builder.add(USCC, {"amount": 250.0, "grade": "B"})
    cube = builder.finish()
    # region 31, grade B, sector unknown
    assert int(cube.counts[REGION_LEVELS.index("31"), 1, 2]) == 1


@pytest.mark.parametrize(
    ("record", "column"),
    [
        ({"grade": "B"}, "amount"),  # a summed column without a default, absent
        ({"amount": 250.0}, "grade"),  # a dimension's column without a default, absent
        ({"amount": "many", "grade": "B"}, "amount"),  # a value the schema does not accept
        ({"amount": None, "grade": "B"}, "amount"),
        ({"amount": 1.0, "staff": "x", "grade": "B"}, "staff"),
        ({"amount": 1.0, "grade": "Z"}, "grade"),
    ],
)
def test_a_stale_record_stops_the_build_naming_the_column(record: Record, column: str) -> None:
    builder = CubeBuilder(CATALOGUE, PROBE)
    builder.add(USCC, {"amount": 1.0, "grade": "A"})
    with pytest.raises(StaleRecordError, match=f"for {column} that this node's schema") as info:
        builder.add(USCC, record)
    assert "many" not in str(info.value)  # the column is named, never the value
    # Nothing of the failed record was counted.
    assert builder.finish().records == 1
