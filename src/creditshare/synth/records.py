"""The latent model behind the synthetic data: one hidden health factor per enterprise.

Each enterprise gets a standard-normal ``health`` (higher is better) and ``size``.
Every department value is a noisy function of them, and the bureau's default label
is a logistic draw from ``health`` alone. Features are therefore predictive only
*through* the hidden factor, which is what makes a model trained on the shared
data beat one trained on any single department - the point of the demo.

Row builders return the columns of ``DEPARTMENT_COLUMNS`` (without ``uscc``) as
already-formatted strings, so the writer does no formatting and the byte output
depends on nothing but the random stream.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass

from creditshare.synth.sampling import bernoulli, clamp, poisson, sigmoid

__all__ = [
    "DEFAULT_INTERCEPT",
    "DEFAULT_SLOPE",
    "Profile",
    "court_row",
    "market_row",
    "social_row",
    "tax_row",
    "utility_row",
]

# Calibrated for a default rate of about 11 % when health ~ N(0, 1).
DEFAULT_INTERCEPT = -2.75
DEFAULT_SLOPE = 1.6

_GRADE_A = 0.9
_GRADE_B = -0.9
_GRADE_C = -1.7
_NEW_ENTERPRISE_YEARS = 1.0
_BRANCH_SIZE_PENALTY = 1.2


@dataclass(frozen=True)
class Profile:
    """Hidden traits of one enterprise; never written out except via ``default``."""

    entity_type: str  # USCC positions 1-2: "91" company, "92" individual, "93" co-op
    health: float
    size: float
    years: float

    def default_probability(self) -> float:
        """Probability that the bureau records a default for this enterprise."""
        return sigmoid(DEFAULT_INTERCEPT - DEFAULT_SLOPE * self.health)


def _money(value: float) -> str:
    return f"{value:.2f}"


def _one_decimal(value: float) -> str:
    # Adding 0.0 turns a rounded -0.0 into 0.0, so no "-0.0" appears in files.
    return f"{round(value, 1) + 0.0:.1f}"


def _flag(value: bool) -> str:
    return "1" if value else "0"


def _months(rng: random.Random, mean: float) -> int:
    return int(clamp(poisson(rng, mean), 0, 36))


def _round_significant(value: float, digits: int) -> float:
    """Registered capital is declared in round figures (e.g. 3,000,000 or 500,000)."""
    if value <= 0:
        return 0.0
    scale = 10.0 ** (math.floor(math.log10(value)) - digits + 1)
    return round(value / scale) * scale


def tax_row(rng: random.Random, p: Profile, years: float, branch: bool) -> tuple[str, ...]:
    """Tax bureau: payments scale with size, grade and arrears track health."""
    size = p.size - (_BRANCH_SIZE_PENALTY if branch else 0.0)
    shift = {"92": -2.0, "93": -1.5}.get(p.entity_type, 0.0)
    log_tax = 12.0 + shift + 1.5 * size + 0.35 * p.health + rng.gauss(0.0, 0.5)
    paid = clamp(math.exp(log_tax), 1e3, 1e8)
    if years < _NEW_ENTERPRISE_YEARS and bernoulli(rng, 0.3):
        paid = 0.0
    if years < _NEW_ENTERPRISE_YEARS:
        grade = "M"
    else:
        score = p.health + rng.gauss(0.0, 0.6)
        if score > _GRADE_A:
            grade = "A"
        elif score > _GRADE_B:
            grade = "B"
        elif score > _GRADE_C:
            grade = "C"
        else:
            grade = "D"
    arrears = _months(rng, math.exp(-1.6 - 1.5 * p.health))
    return (_money(paid), grade, str(arrears))


def market_row(rng: random.Random, p: Profile, years: float, branch: bool) -> tuple[str, ...]:
    """Market regulator: branches declare no capital of their own."""
    if branch:
        capital = 0.0
    else:
        base = 10.8 if p.entity_type == "92" else 13.8
        capital = _round_significant(math.exp(base + 1.1 * p.size + rng.gauss(0.0, 0.7)), 2)
    penalties = int(clamp(poisson(rng, math.exp(-1.9 - 0.9 * p.health + 0.2 * p.size)), 0, 99))
    abnormal = bernoulli(rng, sigmoid(-3.6 - 1.4 * p.health))
    return (_money(capital), _one_decimal(years), str(penalties), _flag(abnormal))


def social_row(rng: random.Random, p: Profile, branch: bool) -> tuple[str, ...]:
    """Social insurance: headcount is mostly that of small and micro firms."""
    if p.entity_type == "92":
        headcount = min(10, poisson(rng, 1.5))
    elif p.entity_type == "93":
        headcount = min(60, poisson(rng, 6.0))
    else:
        noise = rng.gauss(0.0, 0.35)
        headcount = min(5000, round(math.exp(1.9 + 0.9 * p.size + 0.15 * p.health + noise)))
    if branch:
        headcount = round(headcount * rng.uniform(0.1, 0.5))
    arrears = _months(rng, math.exp(-2.0 - 1.4 * p.health))
    return (str(headcount), str(arrears))


def court_row(rng: random.Random, p: Profile) -> tuple[str, ...]:
    """Courts: only enterprises with a history get a row, so at least one judgment."""
    judgments = 1 + int(clamp(poisson(rng, math.exp(-0.6 - 0.8 * p.health)), 0, 98))
    dishonest = bernoulli(rng, sigmoid(-2.3 - 1.8 * p.health))
    return (str(judgments), _flag(dishonest))


def utility_row(rng: random.Random, p: Profile) -> tuple[str, ...]:
    """Power utility: shrinking consumption and late bills signal trouble."""
    trend = rng.gauss(3.0 + 10.0 * p.health, 12.0)
    if bernoulli(rng, 0.03):
        trend += rng.expovariate(1.0 / 80.0)  # a new production line
    if p.health < -1.8 and bernoulli(rng, 0.3):
        trend -= rng.uniform(30.0, 80.0)  # winding down
    late = int(clamp(poisson(rng, math.exp(-1.4 - 1.2 * p.health)), 0, 12))
    return (_one_decimal(clamp(trend, -100.0, 500.0)), str(late))
