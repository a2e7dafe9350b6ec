"""Evaluation metrics computed by the label holder on decrypted scores."""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

__all__ = ["auc", "ks", "log_loss"]


def auc(labels: NDArray[np.float64], scores: NDArray[np.float64]) -> float:
    """Area under the ROC curve via the rank-sum (Mann–Whitney U), ties averaged."""
    labels = np.asarray(labels, dtype=float)
    scores = np.asarray(scores, dtype=float)
    positives = labels == 1
    n_pos, n_neg = int(positives.sum()), int((~positives).sum())
    if n_pos == 0 or n_neg == 0:
        raise ValueError("AUC needs both classes")
    order = np.argsort(scores, kind="mergesort")
    ranks = np.empty(len(scores))
    sorted_scores = scores[order]
    i = 0
    while i < len(scores):
        j = i
        while j + 1 < len(scores) and sorted_scores[j + 1] == sorted_scores[i]:
            j += 1
        ranks[order[i : j + 1]] = (i + j) / 2 + 1
        i = j + 1
    return float((ranks[positives].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


def ks(labels: NDArray[np.float64], scores: NDArray[np.float64]) -> float:
    """Kolmogorov–Smirnov statistic: the largest gap between the classes' score CDFs."""
    labels = np.asarray(labels, dtype=float)
    order = np.argsort(-np.asarray(scores, dtype=float), kind="mergesort")
    sorted_labels = labels[order]
    tpr = np.cumsum(sorted_labels) / max(sorted_labels.sum(), 1)
    fpr = np.cumsum(1 - sorted_labels) / max((1 - sorted_labels).sum(), 1)
    return float(np.max(np.abs(tpr - fpr)))


def log_loss(labels: NDArray[np.float64], scores: NDArray[np.float64]) -> float:
    """Mean logistic loss of linear scores (log-odds), computed stably."""
    z = np.asarray(scores, dtype=float)
    y = np.asarray(labels, dtype=float)
    return float(np.mean(np.logaddexp(0.0, z) - y * z))
