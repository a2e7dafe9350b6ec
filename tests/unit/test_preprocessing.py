"""Preprocessing is part of the model: fitted once, stored, applied again identically."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from creditshare.errors import InvalidInputError
from creditshare.federated import ModelShard, Preprocessing

NAMES = ["amount", "ratio", "kind=a"]


@pytest.fixture
def matrix() -> np.ndarray:
    rng = np.random.default_rng(3)
    amount = rng.lognormal(10, 2, size=500)  # heavy tail: clipping bites
    ratio = rng.normal(0.3, 0.1, size=500)
    dummy = (rng.random(500) < 0.4).astype(float)
    return np.column_stack([amount, ratio, dummy])


def test_features_are_centred_and_scaled_and_only_clipped_ones_clipped(
    matrix: np.ndarray,
) -> None:
    pre = Preprocessing.fit(NAMES, matrix, [True, True, False], 2.0)
    out = pre.apply(matrix)
    assert out[:, :2].max() <= 2.0 and out[:, :2].min() >= -2.0
    assert np.any(np.abs(out[:, 0]) == 2.0)  # the tail was clipped
    expected = (matrix[:, 1] - matrix[:, 1].mean()) / matrix[:, 1].std()
    np.testing.assert_allclose(out[:, 1], np.clip(expected, -2, 2))
    # A one-hot dummy is centred and scaled too (so one learning rate suits it), never
    # clipped: a rare level's standardised 1 lies far beyond any clip, and must stay there.
    dummy = matrix[:, 2]
    np.testing.assert_allclose(out[:, 2], (dummy - dummy.mean()) / dummy.std())
    assert pre.features[2].clip is None and pre.features[2].scale == pytest.approx(dummy.std())
    rare = np.column_stack([matrix[:, :2], (np.arange(500) < 5).astype(float)])
    assert Preprocessing.fit(NAMES, rare, [True, True, False], 2.0).apply(rare)[:, 2].max() > 9


@pytest.mark.parametrize("clip", [0.0, None])
def test_clip_zero_or_none_standardises_without_clipping(
    matrix: np.ndarray, clip: float | None
) -> None:
    pre = Preprocessing.fit(NAMES, matrix, [True, True, False], clip)
    assert all(f.clip is None for f in pre.features)
    assert pre.apply(matrix)[:, 0].max() > 2.0


def test_a_constant_feature_is_not_divided_by_zero() -> None:
    pre = Preprocessing.fit(["c"], np.full((10, 1), 5.0), [True], 2.0)
    assert pre.features[0].scale == 1.0
    assert np.array_equal(pre.apply(np.full((3, 1), 5.0)), np.zeros((3, 1)))


def test_the_document_round_trips_exactly_through_json(matrix: np.ndarray) -> None:
    pre = Preprocessing.fit(NAMES, matrix, [True, True, False], 2.0)
    back = Preprocessing.from_document(json.loads(json.dumps(pre.to_document())))
    assert back == pre
    assert np.array_equal(back.apply(matrix), pre.apply(matrix))


@pytest.mark.parametrize(
    "document",
    [
        {},
        {"version": 3, "features": []},
        {"version": 1, "features": [{"name": "x"}]},
        {"version": 1, "features": [{"name": "x", "centre": 0, "scale": 0, "clip": None}]},
        {"version": 1, "features": [{"name": "x", "centre": 0, "scale": 1, "clip": -1}]},
        {"version": 1, "features": [{"name": "x", "centre": math.nan, "scale": 1, "clip": None}]},
    ],
)
def test_a_malformed_document_is_refused(document: dict[str, object]) -> None:
    with pytest.raises(InvalidInputError):
        Preprocessing.from_document(document)


def test_a_shard_scores_what_training_computed(matrix: np.ndarray) -> None:
    """The bank path (one record's raw values through the shard) equals what training
    computed, written out independently here: standardise over the party's records, clip
    the clipped features at ±2, never the dummy, then the weights."""
    pre = Preprocessing.fit(NAMES, matrix, [True, True, False], 2.0)
    weights = np.array([0.7, -1.3, 0.4])
    shard = ModelShard(dict(zip(NAMES, weights.tolist(), strict=True)), 0.0, pre)
    standard = (matrix - matrix.mean(axis=0)) / matrix.std(axis=0)
    standard[:, :2] = np.clip(standard[:, :2], -2.0, 2.0)
    trained = standard @ weights
    for k in range(len(matrix)):
        values = dict(zip(NAMES, matrix[k].tolist(), strict=True))
        assert abs(shard.partial_score(values) - trained[k]) < 1e-12


def test_a_shard_without_preprocessing_is_the_identity() -> None:
    """Shards kept before preprocessing was stored: weights on raw values, plus offset."""
    shard = ModelShard({"a": 2.0, "b": -1.0}, 0.5)
    assert shard.partial_score({"a": 100.0, "b": 3.0, "other": 9.0}) == 197.5
    with pytest.raises(InvalidInputError, match="'b' has no value"):
        shard.partial_score({"a": 1.0})
    with pytest.raises(InvalidInputError, match="exactly its features"):
        ModelShard({"a": 1.0}, 0.0, Preprocessing.identity(["b"]))
