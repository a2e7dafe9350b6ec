"""Small sampling helpers on top of an explicit ``random.Random``.

Every draw goes through the generator's own ``Random`` instance, never the module
-level one, because byte-identical output for a given seed is a hard requirement.
"""

from __future__ import annotations

import math
import random

__all__ = ["bernoulli", "clamp", "poisson", "sigmoid"]

_MAX_POISSON_MEAN = 30.0


def sigmoid(x: float) -> float:
    """Logistic function; the link between the latent health factor and every rate."""
    return 1.0 / (1.0 + math.exp(-x))


def clamp(value: float, low: float, high: float) -> float:
    """Keep a sampled value inside the range the file format promises."""
    return max(low, min(high, value))


def bernoulli(rng: random.Random, p: float) -> bool:
    """One biased coin flip."""
    return rng.random() < p


def poisson(rng: random.Random, mean: float) -> int:
    """Knuth's Poisson sampler; counts of arrears, penalties and late payments.

    The mean is capped so the loop stays short: the callers clamp the result to a
    format range far below anything the cap would cut off in practice.
    """
    limit = math.exp(-clamp(mean, 0.0, _MAX_POISSON_MEAN))
    count = 0
    product = rng.random()
    while product > limit:
        count += 1
        product *= rng.random()
    return count
