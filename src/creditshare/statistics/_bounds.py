"""Error bounds for sums of discrete Laplace noise: exact where affordable, else
Chernoff; never too narrow either way.

A released figure is the true total plus the noise of the k nodes that released it,
k independent discrete Laplace(b) variables (P(z) ∝ exp(-|z|/b)). With α = e^{-1/b}
their moment generating function is M(t) = (1-α)² / ((1-αe^t)(1-αe^{-t})) for |t| < 1/b,
and P(|X| ≥ a) ≤ 2·min_t e^{-ta}·M(t)^k (Chernoff, both tails), about twice as wide as
needed. So the bound is computed exactly when the noise's range fits a grid of
``MAX_GRID`` points: the distribution of the sum is the inverse DFT of the
characteristic function (1-α)²/(1 - 2α·cos ω + α²) to the k-th power on a grid wider
than the Chernoff range at 10^-12; what wraps around the grid (at most 10^-12) and the
transform's rounding are added to the tail, so the exact bound is an upper bound too.
"""

from __future__ import annotations

import functools
import math

import numpy as np

__all__ = ["MAX_GRID", "noise_bound", "tail_bound"]

#: Largest grid (points) the exact bound is computed on; beyond it, Chernoff.
MAX_GRID = 2**21
#: Tail mass left outside the exact grid, and a margin for the transform's rounding.
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
    far = _chernoff_bound(k, b, _FAR)  # P(|X| ≥ far) ≤ 10^-12
    size = 1 << int(2 * far + 2).bit_length()
    if size > MAX_GRID:
        return None
    alpha = math.exp(-1 / b)
    omega = 2 * math.pi * np.arange(size) / size
    characteristic = (1 - alpha) ** 2 / (1 - 2 * alpha * np.cos(omega) + alpha**2)
    pmf = np.fft.ifft(characteristic**k).real  # P(X ≡ x mod size), x = 0 … size-1
    # Mass within |x| ≤ B, for B = 0, 1, …, size/2 - 1 (both signs, zero once).
    half = size // 2
    both = pmf[:half].copy()
    both[1:] += pmf[size - 1 : size - half : -1]  # P(X = -x) sits at size - x
    inside = np.cumsum(both)
    # The grid folds at most _FAR of the tails onto these points: subtract it (and the
    # rounding margin) so the tail is never underestimated.
    tail = 1.0 - (inside - _FAR) + _ROUNDING
    good = np.nonzero(tail <= target)[0]
    if len(good) == 0:
        return None
    return float(good[0])
