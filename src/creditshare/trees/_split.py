"""XGBoost's split finding and leaf weights over several parties' bin histograms.

The gain of splitting a tree node into L and R is XGBoost's ``loss_chg``:

    GL²/(HL+λ) + GR²/(HR+λ) − G²/(H+λ)

(twice the textbook ½[…] gain; XGBoost compares this undoubled figure with γ, so we
do too). A split is a candidate when both children hold a hessian sum of at least
``min_child_weight`` and its ``loss_chg`` exceeds XGBoost's 1e-6 and is at least γ
(``min_split_loss``); ``gain`` reports the textbook ½·loss_chg − γ. Candidates are
ranked by gain, ties broken by party, then feature, then bin (lowest first, the order
XGBoost's forward enumeration keeps), so every run picks the same split.

The bureau tries candidates in rank order: a node refuses a split leaving fewer than
``min_child_rows`` fit rows in a child (its privacy floor, which the bureau cannot
check beforehand in general: it does not see a bin's row count, except at the first
tree's root, where every row's h is the same so H per bin is the count times it, and
in later trees only as far as h's spread allows), and the bureau moves on.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from creditshare.trees._config import TreeConfig

__all__ = ["Histogram", "SplitCandidate", "best_split", "leaf_weight", "rank_splits"]

#: XGBoost's kRtEps: a split must reduce the loss by more than this.
_MIN_LOSS_CHANGE = 1e-6

#: One feature's per-bin gradient and hessian sums (G[bin], H[bin]).
Histogram = tuple[NDArray[np.float64], NDArray[np.float64]]


@dataclass(frozen=True, order=True)
class SplitCandidate:
    """A possible split of one tree node; sorts best first."""

    #: −loss_chg first, so ascending order is best first; then the tie-breakers.
    key: tuple[float, int, int, int]
    party: int
    feature: int
    #: Split after this bin: bins 0..bin go left.
    bin: int
    #: Textbook gain ½·loss_chg − γ.
    gain: float
    left_g: float
    left_h: float


def _node_score(
    g: NDArray[np.float64] | float, h: NDArray[np.float64] | float, l2: float
) -> NDArray[np.float64]:
    return np.asarray(np.square(g) / (np.asarray(h) + l2), dtype=np.float64)


def rank_splits(
    parties: Sequence[Sequence[Histogram]], total_g: float, total_h: float, config: TreeConfig
) -> list[SplitCandidate]:
    """Every valid split of a node whose rows sum to (``total_g``, ``total_h``), best
    first; ``parties[p][f]`` is party p's histogram of feature f (in its own order)."""
    parent = float(_node_score(total_g, total_h, config.l2))
    out: list[SplitCandidate] = []
    for p, features in enumerate(parties):
        for f, (g, h) in enumerate(features):
            if len(g) < 2:
                continue  # one bin: nothing to split
            left_g = np.cumsum(np.asarray(g, dtype=np.float64))[:-1]
            left_h = np.cumsum(np.asarray(h, dtype=np.float64))[:-1]
            right_g, right_h = total_g - left_g, total_h - left_h
            change = (
                _node_score(left_g, left_h, config.l2)
                + _node_score(right_g, right_h, config.l2)
                - parent
            )
            ok = (
                (left_h >= config.min_child_weight)
                & (right_h >= config.min_child_weight)
                & (change > _MIN_LOSS_CHANGE)
                & (change >= config.gamma)
            )
            for b in np.flatnonzero(ok):
                loss = float(change[b])
                out.append(
                    SplitCandidate(
                        (-loss, p, f, int(b)),
                        p,
                        f,
                        int(b),
                        0.5 * loss - config.gamma,
                        float(left_g[b]),
                        float(left_h[b]),
                    )
                )
    out.sort()
    return out


def best_split(
    parties: Sequence[Sequence[Histogram]], total_g: float, total_h: float, config: TreeConfig
) -> SplitCandidate | None:
    """The best valid split, or None: the node becomes a leaf."""
    ranked = rank_splits(parties, total_g, total_h, config)
    return ranked[0] if ranked else None


def leaf_weight(total_g: float, total_h: float, config: TreeConfig) -> float:
    """−η·G/(H + λ); 0 when H is below ``min_child_weight`` (XGBoost's CalcWeight)."""
    if total_h < config.min_child_weight or total_h <= 0:
        return 0.0
    return -config.learning_rate * total_g / (total_h + config.l2)
