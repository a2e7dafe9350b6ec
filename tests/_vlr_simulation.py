"""The vertical logistic-regression protocol in plaintext (numpy, no encryption).

What ``creditshare.federated.train`` computes, minus the encryption and the fixed
point: each party's features standardised over all its records and winsorised at
±``feature_clip`` (only those its schema marks clipped), the same mini-batch
order (``default_rng(seed)``, one permutation per epoch), the first-order Taylor
residual d = ¼·z + ½ − y, learning-rate decay, L2, early stopping on the validation
log-loss (the last epoch's weights are kept, as the protocol keeps them). Used to
check where the default ``TrainingConfig`` stands against centralised logistic
regression without paying for Paillier.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
from numpy.typing import NDArray

from creditshare.federated import Preprocessing, TrainingConfig, split_batches
from creditshare.federated._metrics import log_loss

__all__ = ["Simulated", "preprocess", "simulate"]

Matrix = NDArray[np.float64]


def preprocess(x: Matrix, clipped: Sequence[bool], clip: float) -> Matrix:
    """What a node trains on: the protocol's own ``Preprocessing`` fitted over every
    record the party holds (every column centred and scaled, the ``clipped`` ones then
    clipped at ±clip; clip 0: none), applied to them."""
    names = [f"f{j}" for j in range(x.shape[1])]
    return Preprocessing.fit(names, x, clipped, clip).apply(x)


@dataclass
class Simulated:
    weights: list[Matrix]
    intercept: float = 0.0
    validation_losses: list[float] = field(default_factory=list)

    def scores(self, parties: Sequence[Matrix], rows: NDArray[np.int64]) -> Matrix:
        total = np.full(len(rows), self.intercept)
        for x, w in zip(parties, self.weights, strict=True):
            total = total + x[rows] @ w
        return total


def simulate(
    parties: Sequence[Matrix],
    y: Matrix,
    fit: NDArray[np.int64],
    valid: NDArray[np.int64],
    config: TrainingConfig,
) -> Simulated:
    """Train on rows ``fit`` of the (already preprocessed) ``parties``; stop on ``valid``."""
    model = Simulated([np.zeros(x.shape[1]) for x in parties])
    rng = np.random.default_rng(config.seed)
    best, stale = math.inf, 0
    for epoch in range(config.max_epochs):
        order = fit[rng.permutation(len(fit))]
        rate = config.rate(epoch)
        for batch in split_batches(list(order), config.batch_size):
            rows = np.array(batch)
            d = 0.25 * model.scores(parties, rows) + 0.5 - y[rows]
            for k, x in enumerate(parties):
                w = model.weights[k]
                model.weights[k] = w - rate * (x[rows].T @ d / len(rows) + config.l2 * w)
            model.intercept -= rate * float(d.mean())
        loss = log_loss(y[valid], model.scores(parties, valid))
        model.validation_losses.append(loss)
        if loss < best - config.min_improvement:
            best, stale = loss, 0
        else:
            stale += 1
            if stale >= config.early_stopping_rounds:
                break
    return model
