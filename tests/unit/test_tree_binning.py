"""Feature bins: XGBoost's cuts on small data, quantiles on large, and the edges."""

from __future__ import annotations

import numpy as np
import pytest

from creditshare.errors import InvalidInputError
from creditshare.trees import FeatureBins


def test_few_distinct_values_get_one_bin_each_cut_at_the_next_value() -> None:
    bins = FeatureBins.fit("age", [3.0, 1.0, 2.0, 2.0, 5.0, 1.0], max_bins=8)
    assert bins.count == 4
    assert bins.cuts[:3] == (2.0, 3.0, 5.0)
    assert bins.cuts[3] == pytest.approx(5.0 + 5.0 + 1e-5)  # XGBoost's closing cut
    assert bins.bin_of([1.0, 2.0, 3.0, 5.0]).tolist() == [0, 1, 2, 3]
    assert bins.threshold(0) == 2.0 and bins.threshold(2) == 5.0


def test_a_value_goes_left_of_a_split_exactly_when_its_bin_does() -> None:
    rng = np.random.default_rng(3)
    population = rng.normal(size=500)
    bins = FeatureBins.fit("x", population, max_bins=16)
    probe = np.concatenate([population, rng.normal(scale=4, size=200), bins.cuts])
    probe_bins = bins.bin_of(probe)
    for b in range(bins.count - 1):
        assert np.array_equal(probe < bins.threshold(b), probe_bins <= b)


def test_many_distinct_values_give_at_most_max_bins_equal_count_bins() -> None:
    values = np.arange(1000, dtype=float)
    bins = FeatureBins.fit("x", values, max_bins=10)
    assert bins.count == 10
    counts = np.bincount(bins.bin_of(values), minlength=bins.count)
    assert counts.tolist() == [100] * 10
    assert set(bins.cuts[:-1]) <= set(values.tolist())  # cuts are population values


def test_heavy_ties_never_make_empty_or_repeated_cuts() -> None:
    values = np.array([0.0] * 900 + list(range(1, 101)), dtype=float)
    bins = FeatureBins.fit("x", values, max_bins=8)
    assert list(bins.cuts) == sorted(set(bins.cuts))
    assert np.all(np.bincount(bins.bin_of(values), minlength=bins.count) > 0)


def test_a_constant_feature_has_one_bin_and_no_split() -> None:
    bins = FeatureBins.fit("flat", [7.0] * 20, max_bins=32)
    assert bins.count == 1
    assert bins.bin_of([7.0, -100.0, 100.0]).tolist() == [0, 0, 0]
    with pytest.raises(InvalidInputError, match="cannot split after bin 0"):
        bins.threshold(0)


def test_values_outside_the_fitted_range_fall_in_the_end_bins() -> None:
    bins = FeatureBins.fit("x", [1.0, 2.0, 3.0], max_bins=4)
    assert bins.bin_of([-50.0, 50.0]).tolist() == [0, bins.count - 1]


@pytest.mark.parametrize(
    ("values", "message"),
    [([], "no values"), ([1.0, float("nan")], "finite"), ([float("inf")], "finite")],
)
def test_bad_populations_are_refused_naming_the_feature(values: list[float], message: str) -> None:
    with pytest.raises(InvalidInputError, match=f"'income'.*{message}"):
        FeatureBins.fit("income", values, max_bins=8)


def test_binning_refuses_non_finite_values_and_bad_bins() -> None:
    bins = FeatureBins.fit("x", [1.0, 2.0, 3.0], max_bins=4)
    with pytest.raises(InvalidInputError, match="finite"):
        bins.bin_of([float("nan")])
    with pytest.raises(InvalidInputError, match="bin 2"):
        bins.threshold(2)
    with pytest.raises(InvalidInputError, match="max_bins"):
        FeatureBins.fit("x", [1.0], max_bins=1)
