"""Per-feature histogram bins: the cuts a node fits over all its records.

The cuts follow XGBoost's ``hist`` method so that, on data with few distinct values,
a federated tree is exactly the tree XGBoost grows: when a feature has at most
``max_bins`` distinct values v₀ < … < v_{k−1}, every distinct value gets its own bin
and the cut closing bin b is the next distinct value v_{b+1} (the last bin is closed
just above v_{k−1}, as XGBoost does). With more distinct values the cuts are quantiles
of the population (each bin holds about the same number of records).

Bin b holds values in [cut[b−1], cut[b]); a split "after bin b" sends a value left
when it is below ``cut[b]`` (XGBoost's ``x < split_condition``), so routing a raw
value by the threshold and routing its bin index agree for every value, including
values outside the range the cuts were fitted on.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike, NDArray

from creditshare.errors import InvalidInputError

__all__ = ["MAX_BIN_INDEX", "FeatureBins"]

#: Bin indices travel as uint16.
MAX_BIN_INDEX = 2**16 - 1


def _closing_cut(value: float) -> float:
    """XGBoost's cut above the largest value: v + (|v| + 1e-5)."""
    return float(value + (abs(value) + 1e-5))


@dataclass(frozen=True)
class FeatureBins:
    """One feature's cuts: bin b is [cuts[b−1], cuts[b]); the last bin is open above."""

    name: str
    #: Increasing; ``len(cuts)`` is the number of bins.
    cuts: tuple[float, ...]

    @classmethod
    def fit(cls, name: str, values: ArrayLike, max_bins: int) -> FeatureBins:
        """Cuts over ``values`` (a node's whole population of this feature), at most
        ``max_bins`` bins; InvalidInputError naming the feature for empty or
        non-finite values."""
        if not 2 <= max_bins <= MAX_BIN_INDEX:
            raise InvalidInputError(f"max_bins must be 2 to {MAX_BIN_INDEX}, got {max_bins}")
        data = np.asarray(values, dtype=np.float64).ravel()
        if data.size == 0:
            raise InvalidInputError(f"feature {name!r}: no values to fit bins on")
        if not np.all(np.isfinite(data)):
            raise InvalidInputError(f"feature {name!r}: values must be finite to fit bins")
        distinct, counts = np.unique(data, return_counts=True)
        if distinct.size <= max_bins:
            # One bin per distinct value: the cut closing a bin is the next value.
            cuts = [float(v) for v in distinct[1:]]
        else:
            cuts = _quantile_cuts(distinct, counts, max_bins)
        cuts.append(_closing_cut(float(distinct[-1])))
        return cls(name, tuple(cuts))

    @property
    def count(self) -> int:
        """Number of bins (1 for a constant feature: never split)."""
        return len(self.cuts)

    def bin_of(self, values: ArrayLike) -> NDArray[np.uint16]:
        """The bin of each value: how many cuts are at or below it, the last bin open
        above (values beyond the fitted range fall in the first or the last bin)."""
        data = np.asarray(values, dtype=np.float64)
        if not np.all(np.isfinite(data)):
            raise InvalidInputError(f"feature {self.name!r}: values must be finite to bin")
        index = np.searchsorted(np.asarray(self.cuts), data, side="right")
        return np.minimum(index, self.count - 1).astype(np.uint16)

    def threshold(self, bin: int) -> float:
        """The threshold of a split after ``bin``: values below it go left."""
        if isinstance(bin, bool) or not isinstance(bin, int | np.integer):
            raise InvalidInputError(f"feature {self.name!r}: bin must be an integer")
        if not 0 <= bin < self.count - 1:
            raise InvalidInputError(
                f"feature {self.name!r}: cannot split after bin {bin}; it has {self.count} "
                f"bins, so a split follows bin 0 to {self.count - 2}"
            )
        return self.cuts[int(bin)]


def _quantile_cuts(
    distinct: NDArray[np.float64], counts: NDArray[np.int64], max_bins: int
) -> list[float]:
    """Up to ``max_bins − 1`` cuts at equal-count quantiles: cut i is the first distinct
    value at or above rank i·N/max_bins, so each bin holds about N/max_bins values and
    a cut is always a value of the population (as XGBoost's sketch picks)."""
    below = np.concatenate(([0], np.cumsum(counts)[:-1]))  # values strictly below each
    total = int(counts.sum())
    cuts: list[float] = []
    for i in range(1, max_bins):
        target = i * total / max_bins
        k = int(np.searchsorted(below, target, side="left"))
        if k <= 0 or k >= distinct.size:
            continue
        cut = float(distinct[k])
        if not cuts or cut > cuts[-1]:
            cuts.append(cut)
    return cuts
