"""The plaintext check the demo's ``--verify`` and the e2e test rely on.

``PlaintextCohort`` recomputes cohort figures from the raw synthetic files with its own
code; the nodes' side (``statistics.CubeBuilder`` and ``release``, with real OpenDP noise)
is a second implementation. Honest answers from that side must pass ``check_rows``, and
an answer with one figure moved outside its bound, a cell released by a node that holds
far too few enterprises, or a cell no node released shown as a figure must fail it:
otherwise a check that passes would prove nothing.
"""

from __future__ import annotations

import csv
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from creditshare.client import cohort_rows
from creditshare.demo import NodeLayout, PlaintextCohort, check_rows
from creditshare.demo._statistics import VERIFY_CONFIDENCE
from creditshare.departments import get_department
from creditshare.identity import Chain
from creditshare.statistics import Catalogue, CohortQuery, Cube, CubeBuilder, decode, release

NODE_MIN_CELL = 10


def _nodes(data_dir: Path) -> list[NodeLayout]:
    return [
        NodeLayout(f"{c.value}-tax", c, "tax", 0, Path("-"), data_dir / c.value / "tax.csv")
        for c in Chain
    ]


def _cube(node: NodeLayout, catalogue: Catalogue) -> Cube:
    department = get_department("tax")
    builder = CubeBuilder(catalogue, department)
    with node.data_file.open(encoding="utf-8", newline="") as handle:
        for row in csv.DictReader(handle):
            record = {f.name: f.parse(row[f.name]) for f in department.fields if f.name in row}
            builder.add(row["uscc"], record)
    return builder.finish()


def _query(
    catalogue: Catalogue, group_by: tuple[str, ...], measures: tuple[str, ...], epsilon: float
) -> CohortQuery:
    return CohortQuery(
        department="tax",
        chains=("bth", "prd", "yrd"),
        group_by=group_by,
        measures=measures,
        dates=(),
        epsilon=epsilon,
        min_cell=NODE_MIN_CELL,
        key_fingerprint="ab" * 16,
        catalogue_digest=catalogue.digest,
        request_id="cd" * 16,
        regulator="regulator-1",
        time=datetime(2026, 12, 1, tzinfo=UTC),
    )


def _answer(data_dir: Path, query: CohortQuery, catalogue: Catalogue) -> list[dict[str, Any]]:
    """The rows a regulator reads: each tax node's real noisy release, summed, decoded."""
    nodes = _nodes(data_dir)
    parts = [
        release(
            [_cube(n, catalogue)], query, catalogue, min_cell=NODE_MIN_CELL, chain=n.chain.value
        )
        for n in nodes
    ]
    total = [sum(v) for v in zip(*parts, strict=True)]
    result = decode(total, query, catalogue, nodes=len(nodes), confidence=VERIFY_CONFIDENCE)
    return cohort_rows(result)


@pytest.fixture(scope="module")
def catalogue() -> Catalogue:
    return Catalogue.of(get_department("tax"))


@pytest.mark.parametrize(
    ("group_by", "measures", "epsilon"),
    [
        (("region",), ("count", "mean:annual_tax_paid", "distribution:tax_credit_grade"), 1.0),
        (("chain", "industry"), ("count", "sum:months_in_arrears"), 2.0),
        (("region",), ("count",), 10.0),
    ],
)
def test_honest_answers_pass(
    data_dir: Path,
    catalogue: Catalogue,
    group_by: tuple[str, ...],
    measures: tuple[str, ...],
    epsilon: float,
) -> None:
    query = _query(catalogue, group_by, measures, epsilon)
    rows = _answer(data_dir, query, catalogue)
    plain = PlaintextCohort(_nodes(data_dir), catalogue, query)
    assert check_rows(rows, plain, [n.node_id for n in _nodes(data_dir)], NODE_MIN_CELL) == []
    # The data gives both kinds of cells, or the check would be idle.
    assert any(r["suppressed"] for r in rows) and not all(r["suppressed"] for r in rows)


@pytest.fixture(scope="module")
def sharp(data_dir: Path, catalogue: Catalogue) -> tuple[list[dict[str, Any]], PlaintextCohort]:
    """Counts by region at ε 10: noise so small that suppression is certain both ways."""
    query = _query(catalogue, ("region",), ("count",), 10.0)
    return _answer(data_dir, query, catalogue), PlaintextCohort(_nodes(data_dir), catalogue, query)


NODES = ["yrd-tax", "prd-tax", "bth-tax"]


def test_a_figure_outside_its_bound_fails(
    sharp: tuple[list[dict[str, Any]], PlaintextCohort],
) -> None:
    rows, plain = sharp
    moved = [dict(r) for r in rows]
    row = next(r for r in moved if not r["suppressed"])
    row["value"] += 2 * row["bound"] + 1
    problems = check_rows(moved, plain, NODES, NODE_MIN_CELL)
    assert len(problems) == 1 and f"'region': '{row['region']}'" in problems[0]
    assert "count:" in problems[0]


def test_a_cell_released_by_a_node_holding_far_too_few_fails(
    sharp: tuple[list[dict[str, Any]], PlaintextCohort],
) -> None:
    rows, plain = sharp
    # "other": no tax node holds an enterprise registered outside the chains' provinces.
    assert all(plain.part(n, {"region": "other"}).count == 0 for n in NODES)
    other = next(r for r in rows if r["region"] == "other")
    assert other["suppressed"] and other["withheld_at"] == 3
    for change in (
        {"withheld_at": 2},
        {"withheld_at": 3, "suppressed": False, "value": 0.0, "bound": 1.0},
    ):
        moved = [dict(r) | change if r["region"] == "other" else r for r in rows]
        problems = check_rows(moved, plain, NODES, NODE_MIN_CELL)
        assert problems and "'other'" in problems[0], change


def test_a_missing_cell_fails(sharp: tuple[list[dict[str, Any]], PlaintextCohort]) -> None:
    rows, plain = sharp
    problems = check_rows(rows[1:], plain, NODES, NODE_MIN_CELL)
    assert problems and "cells" in problems[0]
