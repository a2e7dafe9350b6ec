"""Error bounds for sums of discrete Laplace noise: exact where affordable, else
Chernoff; never too narrow either way.

A released figure is the true total plus the noise of the k nodes that released it,
k independent discrete Laplace(b) variables (P(z) ∝ exp(-|z|/b)). With α = e^{-1/b}
their moment generating function is M(t) = (1-α)² / ((1-αe^t)(1-αe^{-t})) for |t| < 1/b,
and P(|X| ≥ a) ≤ 2·min_t e^{-ta}·M(t)^k (Chernoff, both tails), about twice as wide as
needed. So the bound is computed exactly when the noise's range fits ``MAX_GRID``
points: one node's noise has a closed-form tail, and k nodes' noise is a difference
of two negative binomials (``_exact_bound``), whose probabilities are summed with the
mass off the grid and a rounding margin added to the tail, so the exact bound is an
upper bound too.
"""

from __future__ import annotations

import functools
import math

import numpy as np

__all__ = ["MAX_GRID", "noise_bound", "tail_bound"]

#: Largest grid (points) the exact bound is computed on (about a quarter of a second and
#: 80 MB at most, once per node count, scale and confidence); beyond it, Chernoff.
MAX_GRID = 2**21
#: Tail mass left outside the exact grid, and a margin for rounding.
_FAR = 1e-12
_ROUNDING = 1e-9


def _log_mgf(u: float, b: float) -> float:
    """ln M(t) at t = u/b (0 < u < 1), computed without cancellation for large b."""
    inv = 1.0 / b
    t = u * inv
    log_one_minus_alpha = math.log(-math.expm1(-inv))
    return (
        2 * log_one_minus_alpha - math.log(-math.expm1(t - inv)) - math.log(-math.expm1(-t - inv))
    )


def tail_bound(a: float, k: int, b: float) -> float:
    """An upper bound on P(|Σ_k Z_i| ≥ a) (at most 1)."""
    if k <= 0:
        return 0.0 if a > 0 else 1.0
    if a <= 0:
        return 1.0
    # -t·a + k·ln M(t) is convex in t: golden-section search over u = t·b in (0, 1).
    low, high = 1e-12, 1 - 1e-12
    ratio = (math.sqrt(5) - 1) / 2

    def exponent(u: float) -> float:
        return -u / b * a + k * _log_mgf(u, b)

    x1 = high - ratio * (high - low)
    x2 = low + ratio * (high - low)
    f1, f2 = exponent(x1), exponent(x2)
    for _ in range(80):
        if f1 < f2:
            high, x2, f2 = x2, x1, f1
            x1 = high - ratio * (high - low)
            f1 = exponent(x1)
        else:
            low, x1, f1 = x1, x2, f2
            x2 = low + ratio * (high - low)
            f2 = exponent(x2)
    best = min(f1, f2)
    return min(1.0, 2 * math.exp(best)) if best < 700 else 1.0


@functools.lru_cache(maxsize=4096)
def noise_bound(k: int, b: float, confidence: float) -> float:
    """The least whole B with P(|noise of k nodes| > B) ≤ 1 - confidence (exactly when
    the grid allows, else by Chernoff: then B may be up to about twice the exact one)."""
    if k <= 0:
        return 0.0
    if not 0 < confidence < 1:
        raise ValueError("confidence must be strictly between 0 and 1")
    if k == 1:
        # One node: P(|Z| ≥ a) = 2α^a / (1 + α) exactly, α = e^{-1/b}.
        alpha = math.exp(-1 / b)
        needed = -b * math.log((1 - confidence) * (1 + alpha) / 2)
        return float(max(0, math.ceil(needed * (1 + 1e-12)) - 1))
    exact = _exact_bound(k, b, 1 - confidence)
    return exact if exact is not None else _chernoff_bound(k, b, 1 - confidence)


def _chernoff_bound(k: int, b: float, target: float) -> float:
    high = max(1.0, b)
    while tail_bound(high, k, b) > target:
        high *= 2
    low = 0.0
    while high - low > 0.5:
        middle = (low + high) / 2
        if tail_bound(middle, k, b) > target:
            low = middle
        else:
            high = middle
    return float(math.ceil(high))


def _exact_bound(k: int, b: float, target: float) -> float | None:
    """The least whole B with P(|X| > B) ≤ target, from X's exact distribution (None when
    its support does not fit ``MAX_GRID`` points).

    A discrete Laplace(b) variable is the difference of two geometric ones, so X, the sum
    of k of them, is N1 - N2 for independent negative binomials NB(k, 1-α): P(X > B) =
    Σ_m P(N2 = m)·P(N1 > B + m). The probabilities are computed on 0 … size-1 by their
    recurrence (in logarithms); the mass beyond (at most 10^-12, checked) and a margin for
    rounding are added to the tail, so B is never too small.
    """
    inverse = 1.0 / b
    log_q = math.log(-math.expm1(-inverse))  # ln(1 - α)
    mean = k * math.exp(-inverse - log_q)
    spread = math.sqrt(k * math.exp(-inverse)) / math.exp(log_q)
    size = int(mean + 12 * spread + 45 * b + 64)
    if size > MAX_GRID:
        return None
    m = np.arange(size - 1, dtype=np.float64)
    steps = -inverse + np.log((m + k) / (m + 1))  # ln P(N = m+1) - ln P(N = m)
    pmf = np.exp(k * log_q + np.concatenate(([0.0], np.cumsum(steps))))
    if 1.0 - float(pmf.sum()) > _FAR:
        return None
    above = np.concatenate((np.cumsum(pmf[::-1])[::-1][1:], [0.0]))  # P(N > j), j < size
    margin = 2 * _FAR + _ROUNDING

    def tail(bound: int) -> float:  # P(|X| > bound), rounded up
        width = size - bound
        if width <= 0:
            return margin
        return 2 * float(np.dot(pmf[:width], above[bound : bound + width])) + margin

    if tail(size) > target:
        return None
    low, high = 0, size
    while low < high:
        middle = (low + high) // 2
        if tail(middle) <= target:
            high = middle
        else:
            low = middle + 1
    return float(low)
