"""The empirical privacy check: neighbouring data sets give output distributions within ε.

Two cubes that differ in one enterprise (add/remove-one, the unit of privacy), whose
record sits where it matters most: its summed value at the clipping bound (the largest
Δ), its level in a distribution, and, in one pair, its cell's count at the suppression
threshold (so the withhold decision flips). ``release`` runs many times on each; for
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
VALUES = ("count", "withheld", "sum", "grade A", "grade B", "grade M", "grade C", "grade D")


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


def _neighbours(size: int) -> tuple[Cube, Cube]:
    """D: ``size`` enterprises; D': D and one more, at the sum's clipping bound."""
    base = [_record(i, i % 5, "ABMCD"[i % 5]) for i in range(size)]
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


def test_the_check_catches_noise_halved(monkeypatch: pytest.MonkeyPatch) -> None:
    """The same check fails for a release whose noise scale is half what ε needs: for the
    count and the withhold decision at the threshold, for the count, the sum and the
    distribution above it."""
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


def test_opendp_certifies_each_release() -> None:
    """The scale handed to OpenDP is one its own privacy map certifies for Δ at ε_r."""
    query = _query()
    epsilon = release_epsilon(query)
    assert epsilon == pytest.approx(EPSILON / 3)
    for name, scale in noise_scales(query, CATALOGUE).items():
        delta = 36 if name.startswith("sum:") else 1
        assert _noise.laplace(scale).map(delta) <= epsilon
        assert scale == pytest.approx(delta / epsilon)
