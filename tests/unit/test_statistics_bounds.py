"""Error bounds: they hold at their confidence, and are never narrower than the truth.

The bound of a figure is a Chernoff bound on the noise of the k nodes that released its
cell. It must cover the exact tail (k = 1 has a closed form; k > 1 is sampled from
OpenDP itself), and over many full releases (three nodes, grouped by industry, counts,
sums, means and distributions) the true figures of released cells must lie within
value ± bound at least as often as the confidence says. Sums are of clipped values
(not rounded to units: the bound allows for rounding), means of clipped values.
"""

from __future__ import annotations

import math
import random
from datetime import UTC, datetime

import numpy as np
import pytest

from creditshare.departments import Record, get_department
from creditshare.identity import make_uscc
from creditshare.statistics import (
    Catalogue,
    CohortQuery,
    CubeBuilder,
    Figure,
    decode,
    noise_bound,
    noise_scales,
    release,
    tail_bound,
)
from creditshare.statistics._bounds import _chernoff_bound, _exact_bound
from creditshare.statistics._layout import cell_values
from creditshare.statistics._noise import noisy

TAX = get_department("tax")
CATALOGUE = Catalogue.of(TAX)
CONFIDENCE = 0.9
DRAWS = 150


def test_one_node_bound_is_the_exact_tail() -> None:
    for b in (0.3, 1.0, 3.0, 36.0, 1000.0, 1e6):
        alpha = math.exp(-1 / b)
        for confidence in (0.8, 0.95, 0.99):
            bound = noise_bound(1, b, confidence)

            # P(|Z| > B) = 2α^(B+1) / (1 + α): B is the least whole number with it ≤ 1 - γ.
            def tail(x: float, alpha: float = alpha) -> float:
                return float(2 * alpha ** (x + 1) / (1 + alpha))

            assert tail(bound) <= 1 - confidence
            assert bound == 0 or tail(bound - 1) > 1 - confidence


@pytest.mark.parametrize("k", [2, 3, 15])
@pytest.mark.parametrize("b", [1.0, 36.0, 1e4, 3e5])
def test_many_nodes_bound_covers_sampled_noise_and_is_tight(k: int, b: float) -> None:
    """Exact where the noise's range fits the grid (up to 1e4 here): about the sampled
    quantile; Chernoff beyond it (3e5): wider, never narrower. Either way the sampled
    noise exceeds the bound at most 5 % of the time, up to sampling error."""
    bound = noise_bound(k, b, 0.95)
    exact = _exact_bound(k, b, 0.05)
    assert (exact is None) == (b > 1e5)
    assert bound == (exact if exact is not None else _chernoff(k, b))
    assert exact is not None or tail_bound(bound, k, b) <= 0.05
    totals = np.abs(np.array([sum(noisy([0] * k, b)) for _ in range(3000)]))
    assert np.mean(totals > bound) <= 0.05 + 4 * math.sqrt(0.05 * 0.95 / 3000)
    quantile = float(np.quantile(totals, 0.95))
    assert bound <= (1.2 if exact is not None else 2.0) * quantile + 2  # not vacuous


def _chernoff(k: int, b: float) -> float:
    return float(_chernoff_bound(k, b, 0.05))


def _query(min_cell: int) -> CohortQuery:
    return CohortQuery(
        department="tax",
        chains=("bth", "prd", "yrd"),
        group_by=("industry",),
        measures=(
            "count",
            "sum:annual_tax_paid",
            "mean:annual_tax_paid",
            "distribution:tax_credit_grade",
        ),
        dates=(),
        epsilon=2.0,
        min_cell=min_cell,
        key_fingerprint="ab" * 16,
        catalogue_digest=CATALOGUE.digest,
        request_id="cd" * 16,
        regulator="pboc-shanghai",
        time=datetime(2026, 11, 30, tzinfo=UTC),
    )


def _node_rows(seed: int, sizes: dict[str, int]) -> list[tuple[str, Record]]:
    rng = random.Random(seed)
    rows: list[tuple[str, Record]] = []
    for industry, size in sizes.items():
        for _ in range(size):
            uscc = make_uscc("9", "1", "440101", f"MA{len(rows):03d}{seed:03d}").code
            rows.append(
                (
                    uscc,
                    {
                        # Beyond the 10M clipping bound now and then: the mean is of clipped values.
                        "annual_tax_paid": rng.choice([0.0, rng.uniform(0, 2e6), 1.5e7]),
                        "tax_credit_grade": rng.choice("ABMCD"),
                        "months_in_arrears": 0,
                        "industry": industry,
                    },
                )
            )
    return rows


def _held(
    nodes: list[list[tuple[str, Record]]],
    withheld_by: list[set[tuple[str, str]]],
    industry: str,
    part: str,
) -> list[Record]:
    """The records of ``industry`` (its ``part``: a grade, or "" for the cell) at the
    nodes that released it."""
    return [
        record
        for n, node_rows in enumerate(nodes)
        if (industry, "") not in withheld_by[n] and (industry, part) not in withheld_by[n]
        for _, record in node_rows
        if record["industry"] == industry
    ]


def test_bounds_hold_at_their_confidence_over_many_releases() -> None:
    # Three nodes; cells from far above the threshold down to below it.
    nodes = [
        _node_rows(1, {"trade": 120, "manufacturing": 40, "services": 12, "transport": 3}),
        _node_rows(2, {"trade": 80, "manufacturing": 25, "services": 9}),
        _node_rows(3, {"trade": 60, "information": 30, "services": 14}),
    ]
    cubes = []
    for node_rows in nodes:
        builder = CubeBuilder(CATALOGUE, TAX)
        for uscc, record in node_rows:
            builder.add(uscc, record)
        cubes.append(builder.finish())
    query = _query(min_cell=10)
    scales = noise_scales(query, CATALOGUE)
    assert scales["sum:annual_tax_paid"] > 1000  # the sum's noise is real, in units
    levels = CATALOGUE.dimension("industry").levels
    per_cell = cell_values(query, CATALOGUE)
    assert per_cell == 2 + 1 + 2 * 5  # count, flag, one sum, five grades with their flags
    released: dict[str, int] = {}
    misses: dict[str, int] = {}
    for _ in range(DRAWS):
        answers = [release([cube], query, CATALOGUE, min_cell=10) for cube in cubes]
        # Per node, the (industry, grade or "") parts it withheld: a cell's flag, then
        # each grade's own flag (a level of a released cell may be withheld alone).
        withheld_by = [
            {
                (levels[c], part)
                for c in range(len(levels))
                for part, flag in [("", answer[c * per_cell + 1])]
                + [(g, answer[c * per_cell + 4 + 2 * i]) for i, g in enumerate("ABMCD")]
                if flag
            }
            for answer in answers
        ]
        summed = [sum(column) for column in zip(*answers, strict=True)]
        result = decode(summed, query, CATALOGUE, nodes=3, confidence=CONFIDENCE)
        for cell in result.cells:
            if cell.suppressed:
                continue
            industry = cell.group["industry"]

            rows = _held(nodes, withheld_by, industry, "")
            paid = [min(float(r["annual_tax_paid"]), 1e7) for r in rows]
            truths: dict[str, tuple[object, float]] = {
                "count": (cell.count, len(rows)),
                "sum": (cell.measures["sum:annual_tax_paid"], sum(paid)),
                "mean": (cell.measures["mean:annual_tax_paid"], sum(paid) / max(len(paid), 1)),
            }
            distribution = cell.measures["distribution:tax_credit_grade"]
            assert isinstance(distribution, dict)
            for grade in "ABMCD":
                graded = sum(
                    1
                    for r in _held(nodes, withheld_by, industry, grade)
                    if r["tax_credit_grade"] == grade
                )
                truths[f"grade {grade}"] = (distribution[grade], graded)
            for name, (figure, truth) in truths.items():
                assert isinstance(figure, Figure)
                if figure.suppressed:
                    continue
                released[name] = released.get(name, 0) + 1
                if abs(figure.value - truth) > figure.bound + 1e-6 * abs(truth):
                    misses[name] = misses.get(name, 0) + 1
    assert sum(released.values()) > DRAWS * 8 * 2
    assert all(released.get(f"grade {g}", 0) > DRAWS for g in "ABMCD"), released
    assert sum(misses.values()) / sum(released.values()) <= 1 - CONFIDENCE, misses
    # Per measure too, up to four standard errors of sampling.
    for name, count in released.items():
        slack = 4 * math.sqrt(CONFIDENCE * (1 - CONFIDENCE) / count)
        assert misses.get(name, 0) / count <= 1 - CONFIDENCE + slack, (name, misses, released)
