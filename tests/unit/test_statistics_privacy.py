"""The empirical privacy check: neighbouring data sets give output distributions within ε.

Two cubes that differ in one enterprise (add/remove-one, the unit of privacy), whose
record sits where it matters most: its summed value at the clipping bound (the largest
Δ), its level in a distribution, and, in one pair, its cell's count at the suppression
threshold (so the withhold decision flips), in another its distribution level's count
at the threshold (so that level's own withhold decision flips). ``release`` runs many
times on each; for
every released value of that cell, for tail events {v ≥ t}, {v ≤ t} and point events
{v = x} with enough mass, the log ratio of the two probabilities must stay within the ε
the value spends, up to sampling error: ε_r for the count and the withhold flag; for a
sum or a distribution level ε_r of its own release plus ε_r of the count when the cell
can be withheld (the value shown is 0 then: it reads both releases). Tail events are
where discrete Laplace is tight (the ratio is exactly e^ε_r there), so the same check,
run on a release whose noise was halved, must find a violation: the test's power,
checked too.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import numpy as np
import pytest

from creditshare.departments import Record, get_department
from creditshare.identity import make_uscc
from creditshare.statistics import (
    Catalogue,
    CohortQuery,
    Cube,
    CubeBuilder,
    _noise,
    noise_scales,
    release,
    release_epsilon,
)

TAX = get_department("tax")
CATALOGUE = Catalogue.of(TAX)
REPETITIONS = 3000
#: Standard errors of sampling slack per event (many events are checked: Bonferroni-wide).
Z = 5.0
MIN_MASS = 0.03
THRESHOLD = 10
#: ε of the query: three releases (count, sum, distribution) of ε_r = 1 each.
EPSILON = 3.0
GRADES = "ABMCD"
#: One cell's values: count, its flag, the sum, then per grade its count and its own flag.
VALUES = (
    "count",
    "withheld",
    "sum",
    *(name for g in GRADES for name in (f"grade {g}", f"grade {g} withheld")),
)


def _query() -> CohortQuery:
    return CohortQuery(
        department="tax",
        chains=("bth", "prd", "yrd"),
        group_by=(),
        measures=("count", "sum:months_in_arrears", "distribution:tax_credit_grade"),
        dates=(),
        epsilon=EPSILON,
        min_cell=THRESHOLD,
        key_fingerprint="ab" * 16,
        catalogue_digest=CATALOGUE.digest,
        request_id="cd" * 16,
        regulator="pboc-shanghai",
        time=datetime(2026, 11, 30, tzinfo=UTC),
    )


def _record(i: int, arrears: int, grade: str) -> tuple[str, Record]:
    uscc = make_uscc("9", "1", "310101", f"MA{i:06d}").code
    return uscc, {
        "annual_tax_paid": 1000.0,
        "tax_credit_grade": grade,
        "months_in_arrears": arrears,
        "industry": "trade",
    }


def _neighbours(size: int, grade_a: int | None = None) -> tuple[Cube, Cube]:
    """D: ``size`` enterprises; D': D and one more, of grade A, at the sum's clipping
    bound. ``grade_a``: how many of D are of grade A (the others B, M, C, D in turn);
    None: every grade in turn."""
    if grade_a is None:
        grades = [GRADES[i % 5] for i in range(size)]
    else:
        grades = ["A"] * grade_a + [GRADES[1 + i % 4] for i in range(size - grade_a)]
    base = [_record(i, i % 5, grade) for i, grade in enumerate(grades)]
    extra = _record(999, 40, "A")  # 40 months: clipped to 36, the sum's full Δ
    cubes = []
    for rows in (base, [*base, extra]):
        builder = CubeBuilder(CATALOGUE, TAX)
        for uscc, record in rows:
            builder.add(uscc, record)
        cubes.append(builder.finish())
    return cubes[0], cubes[1]


Samples = np.ndarray[Any, np.dtype[np.int64]]


def _samples(cube: Cube) -> Samples:
    query = _query()
    return np.array(
        [release([cube], query, CATALOGUE, min_cell=THRESHOLD) for _ in range(REPETITIONS)],
        dtype=np.int64,
    )


def _compare(op: Any, t: int, values: Samples) -> Any:
    return op(values, t)


def _events(a: Samples, b: Samples) -> list[Callable[[Samples], Any]]:
    pooled = np.concatenate([a, b])
    events: list[Callable[[Samples], Any]] = []
    for t in sorted({int(v) for v in np.quantile(pooled, np.linspace(0.02, 0.98, 25))}):
        events.append(functools.partial(_compare, np.greater_equal, t))
        events.append(functools.partial(_compare, np.less_equal, t))
        events.append(functools.partial(_compare, np.equal, t))
    return events


def _worst_excess(a: Samples, b: Samples, epsilon: float) -> float:
    """max over events and both directions of |ln(p/q)| - ε - Z·SE (> 0: a violation)."""
    worst = -math.inf
    n = len(a)
    for event in _events(a, b):
        p, q = float(np.mean(event(a))), float(np.mean(event(b)))
        if min(p, q) < MIN_MASS:
            continue
        error = math.sqrt((1 - p) / (n * p) + (1 - q) / (n * q))
        worst = max(worst, abs(math.log(p / q)) - epsilon - Z * error)
    return worst


def _excess(pair: tuple[Samples, Samples], withholding: bool) -> dict[str, float]:
    """Per released value of the cell, the worst excess over the ε it spends."""
    d, d_prime = pair
    assert d.shape[1] == len(VALUES)
    epsilon_r = release_epsilon(_query())
    return {
        name: _worst_excess(
            d[:, k], d_prime[:, k], epsilon_r * (2 if withholding and k >= 2 else 1)
        )
        for k, name in enumerate(VALUES)
    }


@pytest.fixture(scope="module")
def at_threshold() -> tuple[Samples, Samples]:
    """The extra enterprise is the cell's THRESHOLD-th: it flips the withhold decision."""
    d, d_prime = _neighbours(THRESHOLD - 1)
    return _samples(d), _samples(d_prime)


@pytest.fixture(scope="module")
def well_above() -> tuple[Samples, Samples]:
    """A cell far above the threshold: every value reads its own release only."""
    d, d_prime = _neighbours(THRESHOLD + 40)
    return _samples(d), _samples(d_prime)


@pytest.fixture(scope="module")
def level_at_threshold() -> tuple[Samples, Samples]:
    """A cell far above the threshold whose grade A level holds THRESHOLD - 1 enterprises
    in D: the extra one (grade A) flips that level's own withhold decision."""
    d, d_prime = _neighbours(THRESHOLD + 40, grade_a=THRESHOLD - 1)
    return _samples(d), _samples(d_prime)


def test_a_cell_at_the_threshold_is_within_epsilon(at_threshold: tuple[Samples, Samples]) -> None:
    d, d_prime = at_threshold
    withheld, withheld_prime = d[:, 1].mean(), d_prime[:, 1].mean()
    assert 0.2 < withheld < 0.8 and withheld - withheld_prime > 0.1  # the decision flips
    excess = _excess(at_threshold, withholding=True)
    assert all(v <= 0 for v in excess.values()), excess


def test_a_cell_above_the_threshold_is_within_epsilon(well_above: tuple[Samples, Samples]) -> None:
    assert not well_above[0][:, 1].any() and not well_above[1][:, 1].any()
    excess = _excess(well_above, withholding=False)
    assert all(v <= 0 for v in excess.values()), excess


def test_a_distribution_level_at_the_threshold_is_within_epsilon(
    level_at_threshold: tuple[Samples, Samples],
) -> None:
    """A level is held to the threshold on its own noisy count: a level of one or a few
    enterprises in a released cell is withheld (0, flag 1), never released as 1 ± b,
    and the decision stays within ε_r of the distribution's release."""
    d, d_prime = level_at_threshold
    assert not d[:, 1].any() and not d_prime[:, 1].any()  # the cell itself is released
    flag = VALUES.index("grade A withheld")
    withheld, withheld_prime = d[:, flag].mean(), d_prime[:, flag].mean()
    assert 0.2 < withheld < 0.8 and withheld - withheld_prime > 0.1  # the decision flips
    value = VALUES.index("grade A")
    # A withheld level shows 0; a released one at least the threshold.
    for samples in (d, d_prime):
        assert ((samples[:, flag] == 1) == (samples[:, value] == 0)).all()
        assert (samples[samples[:, flag] == 0, value] >= THRESHOLD).all()
    excess = _excess(level_at_threshold, withholding=False)
    assert all(v <= 0 for v in excess.values()), excess


def test_every_level_below_the_threshold_is_withheld_even_without_grouping() -> None:
    """group_by = [] with distribution:region: every region's count is thresholded."""
    query = CohortQuery.from_document(
        _query().document() | {"measures": ["count", "distribution:region"], "epsilon": "4"}
    )
    rows = [_record(i, 0, "A") for i in range(200)]  # all in region 31
    rows.append((make_uscc("9", "1", "440101", "MA999999").code, rows[0][1]))  # one in 44
    builder = CubeBuilder(CATALOGUE, TAX)
    for uscc, record in rows:
        builder.add(uscc, record)
    cube = builder.finish()
    regions = CATALOGUE.dimension("region").levels
    for _ in range(200):
        values = release([cube], query, CATALOGUE, min_cell=THRESHOLD)
        assert len(values) == 2 + 2 * len(regions) and values[1] == 0
        levels = dict(zip(regions, zip(values[2::2], values[3::2], strict=True), strict=True))
        # Guangdong's single enterprise (noisy count far below 10) and the empty regions
        # are withheld; Shanghai's 200 are released.
        assert all(levels[r] == (0, 1) for r in regions if r != "31"), levels
        assert levels["31"][1] == 0 and levels["31"][0] > 150


def test_the_check_catches_noise_halved(monkeypatch: pytest.MonkeyPatch) -> None:
    """The same check fails for a release whose noise scale is half what ε needs: for the
    count and the withhold decision at the threshold, for the count, the sum and the
    distribution above it, and for a level's own withhold decision at the threshold."""
    honest = noise_scales(_query(), CATALOGUE)

    def halved(q: CohortQuery, c: Catalogue) -> dict[str, float]:
        return {name: b / 2 for name, b in honest.items()}

    monkeypatch.setattr("creditshare.statistics._release.noise_scales", halved)
    d, d_prime = _neighbours(THRESHOLD - 1)
    excess = _excess((_samples(d), _samples(d_prime)), withholding=True)
    assert excess["count"] > 0 and excess["withheld"] > 0, excess
    d, d_prime = _neighbours(THRESHOLD + 40)
    excess = _excess((_samples(d), _samples(d_prime)), withholding=False)
    assert excess["count"] > 0 and excess["sum"] > 0 and excess["grade A"] > 0, excess
    d, d_prime = _neighbours(THRESHOLD + 40, grade_a=THRESHOLD - 1)
    excess = _excess((_samples(d), _samples(d_prime)), withholding=False)
    assert excess["grade A withheld"] > 0, excess


def test_opendp_certifies_each_release() -> None:
    """The scale handed to OpenDP is one its own privacy map certifies for Δ at ε_r."""
    query = _query()
    epsilon = release_epsilon(query)
    assert epsilon == pytest.approx(EPSILON / 3)
    for name, scale in noise_scales(query, CATALOGUE).items():
        delta = 36 if name.startswith("sum:") else 1
        assert _noise.laplace(scale).map(delta) <= epsilon
        assert scale == pytest.approx(delta / epsilon)
