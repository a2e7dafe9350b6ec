"""Error bounds for sums of discrete Laplace noise: Chernoff, so never too narrow.

A released figure is the true total plus the noise of the k nodes that released it,
k independent discrete Laplace(b) variables (P(z) ∝ exp(-|z|/b)). With α = e^{-1/b}
their moment generating function is M(t) = (1-α)² / ((1-αe^t)(1-αe^{-t})) for |t| < 1/b,
and P(|X| ≥ a) ≤ 2·min_t e^{-ta}·M(t)^k (Chernoff, both tails). The bound is the least
whole a for which that is at most 1 - confidence: an upper bound on the tail, so the
interval is at least as wide as the exact one.
"""

from __future__ import annotations

import functools
import math

__all__ = ["noise_bound", "tail_bound"]


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
    """The least whole a with P(|noise of k nodes| ≥ a) ≤ 1 - confidence (by Chernoff)."""
    if k <= 0:
        return 0.0
    if not 0 < confidence < 1:
        raise ValueError("confidence must be strictly between 0 and 1")
    target = 1 - confidence
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
