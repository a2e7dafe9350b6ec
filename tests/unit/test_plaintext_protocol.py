"""Where the default TrainingConfig stands: the protocol in plaintext vs scikit-learn.

The issue's target is a federated AUC within 0.005 of centralised logistic
regression on any public credit data set split this way. Encryption changes the
numbers only by fixed-point rounding (checked elsewhere), so the plaintext
simulation of the protocol (``tests/_vlr_simulation.py``: per-party
preprocessing, Taylor loss, mini-batch SGD, early stopping, all with the DEFAULT
config) is compared with ``LogisticRegression`` on the same rows and features.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from numpy.typing import NDArray
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import train_test_split
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from creditshare.departments import parse_schema
from creditshare.federated import TrainingConfig
from creditshare.federated._metrics import auc

from .._synthetic_credit import DEPARTMENTS, SCHEMAS, generate
from .._vlr_simulation import preprocess, simulate

DATA = Path(__file__).resolve().parents[2] / "data" / "default_credit"
#: The issue's target.
GAP = 0.005

Matrix = NDArray[np.float64]


def _compare(
    parties: list[Matrix],
    clipped: list[list[bool]],
    y: Matrix,
    config: TrainingConfig | None = None,
) -> tuple[float, float]:
    """(federated plaintext AUC, sklearn AUC) on a 70/30 stratified split (seed 42)."""
    config = config or TrainingConfig()
    rows = np.arange(len(y))
    train, test = train_test_split(rows, test_size=0.3, stratify=y, random_state=42)
    shuffled = np.random.default_rng(config.seed).permutation(train)
    n_valid = int(len(shuffled) * config.validation_fraction)
    prepared = [
        preprocess(x, flags, config.feature_clip) for x, flags in zip(parties, clipped, strict=True)
    ]
    model = simulate(prepared, y, shuffled[n_valid:], shuffled[:n_valid], config)
    federated = auc(y[test], model.scores(prepared, test))
    joined = np.hstack(parties)
    central = make_pipeline(StandardScaler(), LogisticRegression(max_iter=2000))
    central.fit(joined[train], y[train])
    return federated, auc(y[test], central.decision_function(joined[test]))


def test_default_credit_within_target_of_sklearn() -> None:
    """Measured 0.7134 vs 0.7135 (sklearn on the joined, standardised features)."""
    guest = np.loadtxt(DATA / "default_credit_hetero_guest.csv", delimiter=",", skiprows=1)
    host = np.loadtxt(DATA / "default_credit_hetero_host.csv", delimiter=",", skiprows=1)
    assert np.array_equal(guest[:, 0], host[:, 0])
    parties = [guest[:, 2:], host[:, 1:]]
    federated, central = _compare(parties, [[True] * x.shape[1] for x in parties], guest[:, 1])
    assert central > 0.70  # the data set's known level: the comparison is not vacuous
    assert federated >= central - GAP, (federated, central)


def _synthetic() -> tuple[list[Matrix], list[list[bool]], Matrix]:
    """The synthetic set's aligned rows encoded by its schemas, as the nodes encode them."""
    data = generate(6000, seed=3)
    departments = [parse_schema(SCHEMAS[d], f"{d}.toml") for d in DEPARTMENTS]
    held = [{r["uscc"]: r for r in data.rows[d]} for d in DEPARTMENTS]
    aligned = sorted(set(data.labels).intersection(*held))
    assert len(aligned) < len(data.labels)  # finance misses some: alignment matters
    parties, flags = [], []
    for department, records in zip(departments, held, strict=True):
        matrix = []
        for uscc in aligned:
            raw = records[uscc]
            record = {f.name: f.parse(raw[f.name]) for f in department.fields}
            matrix.append(list(department.feature_values(record).values()))
        parties.append(np.array(matrix, dtype=float))
        flags.append([f.clipped for f in department.features])
    y = np.array([data.labels[u] for u in aligned], dtype=float)
    assert 0.1 < y.mean() < 0.6
    # One-hot dummies are never clipped: there are some, and clipped numeric ones too.
    assert any(not f for f in flags[0]) and any(flags[0])
    return parties, flags, y


def test_synthetic_categorical_set_within_target_of_sklearn_with_defaults() -> None:
    """Measured 0.7546 vs 0.7559. With the earlier defaults (clip ±2, 0/1 features left
    unscaled) it was 0.7489: 0.007 short, from the clipped tails of revenue and late
    payments and from one-hot dummies that learnt too slowly."""
    parties, flags, y = _synthetic()
    federated, central = _compare(parties, flags, y)
    assert central > 0.70
    assert federated >= central - GAP, (federated, central)


def test_synthetic_categorical_set_reaches_sklearn_when_trained_to_convergence() -> None:
    """Unclipped and trained longer, the same Taylor-loss SGD on the same encoding is
    within the target too: what is left of the gap is the defaults, not the protocol."""
    parties, flags, y = _synthetic()
    config = TrainingConfig(max_epochs=40, feature_clip=0.0)
    federated, central = _compare(parties, flags, y, config)
    assert central > 0.70
    assert federated >= central - GAP, (federated, central)


def test_the_simulation_is_the_logistic_optimum_on_clean_data() -> None:
    """Sanity of the simulation itself: on data from a logistic model with features of
    very different scales, unclipped and trained long enough, it matches sklearn."""
    rng = np.random.default_rng(1)
    x = rng.normal(size=(6000, 4)) * [1, 5, 0.1, 30]
    y = (rng.random(6000) < 1 / (1 + np.exp(-(x @ [1.0, -0.2, 5.0, 0.03])))).astype(float)
    config = TrainingConfig(max_epochs=30, feature_clip=0.0)
    federated, central = _compare([x[:, :2], x[:, 2:]], [[True, True], [True, True]], y, config)
    assert central > 0.75
    assert federated == pytest.approx(central, abs=0.002)
    clipped = preprocess(x, [True] * 4, 2.0)
    assert np.abs(clipped).max() == pytest.approx(2.0)
