"""``decode``: per-level suppression of distributions and the checks on what it is given."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import numpy as np
import pytest

from creditshare.departments import get_department
from creditshare.errors import InvalidInputError
from creditshare.statistics import Catalogue, CohortQuery, Figure, decode

TAX = get_department("tax")
CATALOGUE = Catalogue.of(TAX)
QUERY = CohortQuery(
    department="tax",
    chains=("bth", "prd", "yrd"),
    group_by=(),
    measures=("count", "mean:annual_tax_paid", "distribution:tax_credit_grade"),
    dates=(),
    epsilon=1.0,
    min_cell=10,
    key_fingerprint="ab" * 16,
    catalogue_digest=CATALOGUE.digest,
    request_id="cd" * 16,
    regulator="pboc-shanghai",
    time=datetime(2026, 11, 30, tzinfo=UTC),
)
# Two nodes' summed values: count 100 (released by both), the sum (in units), then per
# grade (A, B, M, C, D) its count and how many nodes withheld it.
VALUES = [100, 0, 400_000, 50, 0, 30, 0, 0, 2, 12, 1, 5, 0]


def test_a_level_is_suppressed_on_its_own_and_partial_when_some_nodes_withheld_it() -> None:
    result = decode(VALUES, QUERY, CATALOGUE, nodes=2)
    (cell,) = result.cells
    assert not cell.suppressed and cell.withheld_at == 0
    grades = cell.measures["distribution:tax_credit_grade"]
    assert isinstance(grades, dict)
    assert grades["A"].value == 50 and not grades["A"].suppressed and grades["A"].bound > 0
    # Withheld by every node: suppressed, 0 ± 0.
    assert grades["M"] == Figure(0.0, 0.0, suppressed=True, withheld_at=2)
    # Withheld by one node: released by the other, with one node's noise in its bound.
    assert grades["C"].value == 12 and not grades["C"].suppressed
    assert grades["C"].withheld_at == 1 and grades["C"].bound < grades["A"].bound
    # Released, but its total is below the query's min_cell: suppressed.
    assert grades["D"] == Figure(0.0, 0.0, suppressed=True, withheld_at=0)
    mean = cell.measures["mean:annual_tax_paid"]
    assert isinstance(mean, Figure) and not mean.suppressed
    rows = {(r["measure"], r["level"]): r for r in result.rows()}
    assert rows[("distribution:tax_credit_grade", "M")]["suppressed"] is True
    assert rows[("distribution:tax_credit_grade", "M")]["withheld_at"] == 2
    assert rows[("distribution:tax_credit_grade", "C")]["withheld_at"] == 1
    assert rows[("distribution:tax_credit_grade", "A")]["suppressed"] is False
    assert rows[("count", "")]["suppressed"] is False


def test_a_suppressed_cell_suppresses_every_figure() -> None:
    values = [4, 1, 0, 0, 2, 0, 2, 0, 2, 0, 2, 0, 2]
    (cell,) = decode(values, QUERY, CATALOGUE, nodes=2).cells
    assert cell.suppressed and cell.count == Figure(0.0, 0.0, True, 1)
    grades = cell.measures["distribution:tax_credit_grade"]
    assert isinstance(grades, dict) and all(f.suppressed for f in grades.values())
    assert all(r["suppressed"] for r in decode(values, QUERY, CATALOGUE, nodes=2).rows())


@pytest.mark.parametrize(
    ("values", "kwargs", "message"),
    [
        (VALUES[:-1], {}, r"expected 13 values \(the layout's: 1 cells of 13\), got 12"),
        ([*VALUES, 0], {}, "expected 13 values"),
        (VALUES, {"nodes": 0}, "nodes .* must be within 1..64, not 0"),
        (VALUES, {"nodes": 65}, "nodes .* must be within 1..64, not 65"),
        (VALUES, {"nodes": True}, "nodes .* must be a whole number"),
        (VALUES, {"nodes": 2.0}, "nodes .* must be a whole number"),
        (VALUES, {"confidence": 1.0}, "confidence must be at least 0.5 and below 1"),
        ([1.5, *VALUES[1:]], {}, "value 0 is not a whole number"),
        ([*VALUES[:3], True, *VALUES[4:]], {}, "value 3 is not a whole number"),
        ([100, 3, *VALUES[2:]], {}, "says 3 of 2 nodes withheld it"),
        ([100, -1, *VALUES[2:]], {}, "says -1 of 2 nodes withheld it"),
        ([*VALUES[:8], 3, *VALUES[9:]], {}, "level M of distribution:tax_credit_grade says 3"),
        # A node that withholds a cell withholds its levels: a level's flag ≥ its cell's.
        ([100, 1, *VALUES[2:]], {}, "level A of distribution:tax_credit_grade says 0 of 2"),
    ],
)
def test_decode_refuses_what_is_not_an_answer(
    values: list[Any], kwargs: dict[str, Any], message: str
) -> None:
    with pytest.raises(InvalidInputError, match=message):
        decode(values, QUERY, CATALOGUE, **({"nodes": 2} | kwargs))


def test_numpy_integers_are_whole_numbers_too() -> None:
    (cell,) = decode(list(np.asarray(VALUES, dtype=np.int64)), QUERY, CATALOGUE, nodes=2).cells
    assert cell.count.value == 100
