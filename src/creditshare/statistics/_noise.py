"""The ε split and the OpenDP discrete Laplace mechanism every node adds to its partials.

ε is split evenly over the query's snapshots S and, per snapshot, over its releases R
(the count, each summed column, each distribution): ε_r = ε/(S·R). One enterprise's
record at one node sits in exactly one finest cell of a snapshot, so it moves the vector
of a release's cells by at most Δ in L1 (1 for counts and distributions, the clipping
bound in whole units for sums); the discrete Laplace scale is b = Δ/ε_r, and OpenDP's
own privacy map confirms ``map(Δ) ≤ ε_r`` before a single value is released. Sequential
composition over the S·R releases gives ε per node; every later step (suppression,
clamping, packing) only looks at released values.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from typing import Any

import opendp.prelude as dp

from creditshare.errors import ConfigurationError
from creditshare.statistics._catalogue import Catalogue
from creditshare.statistics._query import CohortQuery

__all__ = ["laplace", "noise_scales", "release_epsilon", "sensitivities"]

dp.enable_features("contrib")


def release_epsilon(query: CohortQuery) -> float:
    """ε_r: the ε of one release of one snapshot."""
    return query.epsilon / (query.snapshots * query.releases)


def sensitivities(query: CohortQuery, catalogue: Catalogue) -> dict[str, int]:
    """Δ (L1, whole units) per release: ``count``, ``sum:<column>``, ``distribution:<d>``."""
    out = {"count": 1}
    for column in query.summed_columns:
        out[f"sum:{column}"] = catalogue.sum_column(column).sensitivity
    for name in query.distributions:
        out[f"distribution:{name}"] = 1
    return out


def noise_scales(query: CohortQuery, catalogue: Catalogue) -> dict[str, float]:
    """The discrete Laplace scale b per release (keys as ``sensitivities``): noise with
    P(z) ∝ exp(-|z|/b), the scale OpenDP was asked for (checked: map(Δ) ≤ ε_r)."""
    epsilon = release_epsilon(query)
    return {name: _scale(delta, epsilon) for name, delta in sensitivities(query, catalogue).items()}


@functools.lru_cache(maxsize=256)
def _scale(delta: int, epsilon: float) -> float:
    scale = delta / epsilon
    for _ in range(64):  # OpenDP rounds its map up; a few ulps more noise satisfy it
        if laplace(scale).map(delta) <= epsilon:
            return scale
        scale = math.nextafter(scale, math.inf)
    raise ConfigurationError(f"OpenDP cannot certify ε {epsilon} for sensitivity {delta}")


@functools.lru_cache(maxsize=256)
def laplace(scale: float) -> Any:
    """OpenDP's discrete Laplace measurement over integer vectors (L1 distance)."""
    return dp.m.make_laplace(
        dp.vector_domain(dp.atom_domain(T="i64")), dp.l1_distance(T="i64"), scale=scale
    )


def noisy(values: Sequence[int], scale: float) -> list[int]:
    """``values`` with independent discrete Laplace(scale) noise, from OpenDP."""
    if not values:
        return []
    return [int(v) for v in laplace(scale)([int(v) for v in values])]
