"""Split finding and leaf weights: by hand, and equal to XGBoost's on small data."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pytest
import xgboost

from creditshare.trees import TreeConfig, best_split, leaf_weight, rank_splits, train_trees_plain


def _hist(g: list[float], h: list[float]) -> tuple[np.ndarray, np.ndarray]:
    return np.asarray(g, dtype=float), np.asarray(h, dtype=float)


def test_gain_is_xgboosts_loss_change_halved_minus_gamma() -> None:
    config = TreeConfig(l2=1.0, gamma=0.1, min_child_weight=0.0)
    g, h = [-2.0, 1.0, 3.0], [1.0, 2.0, 1.0]
    ranked = rank_splits([[_hist(g, h)]], 2.0, 4.0, config)
    change = {0: 4 / 2 + 16 / 4 - 4 / 5, 1: 1 / 4 + 9 / 2 - 4 / 5}
    assert [c.bin for c in ranked] == [0, 1]
    for c in ranked:
        assert c.gain == pytest.approx(0.5 * change[c.bin] - 0.1)
    assert ranked[0].left_g == -2.0 and ranked[0].left_h == 1.0


def test_min_child_weight_and_gamma_remove_candidates() -> None:
    g, h = [-2.0, 1.0, 3.0], [1.0, 2.0, 1.0]
    heavy = TreeConfig(min_child_weight=1.5)
    assert rank_splits([[_hist(g, h)]], 2.0, 4.0, heavy) == []  # a child has H = 1
    wider = [[_hist(g, [1.0, 2.0, 2.0])]]
    assert [c.bin for c in rank_splits(wider, 2.0, 5.0, heavy)] == [1]
    # gamma compares with XGBoost's undoubled loss change (5.2 and 3.95 here)
    assert [c.bin for c in rank_splits([[_hist(g, h)]], 2.0, 4.0, TreeConfig(gamma=4.0))] == [0]
    assert best_split([[_hist(g, h)]], 2.0, 4.0, TreeConfig(gamma=6.0)) is None


def test_a_split_that_gains_nothing_is_no_candidate() -> None:
    g, h = [1.0, 1.0], [1.0, 1.0]
    assert rank_splits([[_hist(g, h)]], 2.0, 2.0, TreeConfig(l2=0.0)) == []


def test_ties_go_to_the_first_party_then_feature_then_bin() -> None:
    same = _hist([-1.0, 0.0, 1.0], [1.0, 1.0, 1.0])
    ranked = rank_splits([[same, same], [same]], 0.0, 3.0, TreeConfig(min_child_weight=0))
    assert [(c.party, c.feature, c.bin) for c in ranked] == [
        (0, 0, 0),
        (0, 0, 1),
        (0, 1, 0),
        (0, 1, 1),
        (1, 0, 0),
        (1, 0, 1),
    ]


def test_best_split_spans_parties() -> None:
    weak = _hist([-1.0, 1.0], [2.0, 2.0])
    strong = _hist([-2.0, 2.0], [2.0, 2.0])
    best = best_split([[weak], [weak, strong]], 0.0, 4.0, TreeConfig())
    assert best is not None and (best.party, best.feature, best.bin) == (1, 1, 0)


def test_leaf_weight_is_shrunk_newton_step_and_zero_under_min_child_weight() -> None:
    config = TreeConfig(learning_rate=0.5, l2=2.0, min_child_weight=1.0)
    assert leaf_weight(3.0, 4.0, config) == pytest.approx(-0.5 * 3.0 / 6.0)
    assert leaf_weight(3.0, 0.5, config) == 0.0


# ------------------------------------------------------------------ vs XGBoost


def small_data(seed: int, n: int = 300) -> tuple[np.ndarray, np.ndarray]:
    """Features with at most 32 distinct float32-exact values, so cuts coincide."""
    rng = np.random.default_rng(seed)
    x = np.column_stack(
        [
            rng.integers(0, 20, n),
            rng.integers(0, 8, n) * 0.5,
            rng.integers(-5, 5, n),
            rng.integers(0, 30, n),
            rng.integers(0, 2, n),
        ]
    ).astype(np.float64)
    z = 0.2 * x[:, 0] - 0.8 * x[:, 1] + 0.3 * x[:, 2] + x[:, 4] + rng.normal(0, 1.5, n) - 1
    return x, (z > 0).astype(np.float64)


def xgboost_model(x: np.ndarray, y: np.ndarray, config: TreeConfig) -> xgboost.XGBClassifier:
    model = xgboost.XGBClassifier(
        tree_method="hist",
        max_bin=config.max_bins,
        base_score=float(y.mean()),
        n_estimators=config.trees,
        max_depth=config.max_depth,
        learning_rate=config.learning_rate,
        reg_lambda=config.l2,
        reg_alpha=0.0,
        min_child_weight=config.min_child_weight,
        gamma=config.gamma,
        n_jobs=1,
    )
    model.fit(x, y)
    return model


def _xgb_tree(node: dict[str, Any], position: int, out: dict[int, Any]) -> None:
    """Heap position -> (feature index, threshold) or leaf value, from a JSON dump."""
    if "leaf" in node:
        out[position] = node["leaf"]
        return
    out[position] = (int(node["split"][1:]), node["split_condition"])
    children = {c["nodeid"]: c for c in node["children"]}
    _xgb_tree(children[node["yes"]], 2 * position + 1, out)
    _xgb_tree(children[node["no"]], 2 * position + 2, out)


@pytest.mark.parametrize(
    "changes",
    [
        {},
        {"max_depth": 2, "l2": 5.0},
        {"min_child_weight": 8.0, "learning_rate": 0.1},
        {"gamma": 2.0, "max_depth": 4},
        {"max_bins": 8},
    ],
)
def test_trees_equal_xgboosts_splits_thresholds_and_leaves(changes: dict[str, Any]) -> None:
    config = TreeConfig(trees=3, validation_fraction=0).replace(**changes)
    x, y = small_data(len(changes))
    for j in range(x.shape[1]):  # keep every feature within max_bins distinct values
        x[:, j] = np.minimum(x[:, j], np.unique(x[:, j])[: config.max_bins][-1])
    ours = train_trees_plain([x], y, range(len(y)), {}, config, validation=None)
    shard = ours.shards["party0"]
    dumps = xgboost_model(x, y, config).get_booster().get_dump(dump_format="json")
    assert len(dumps) == len(ours.model.trees) == config.trees
    for t, (dump, tree) in enumerate(zip(dumps, ours.model.trees, strict=True)):
        theirs: dict[int, Any] = {}
        _xgb_tree(json.loads(dump), 0, theirs)
        rules = {r.position: r for r in shard.rules if r.tree == t}
        splits = {p: v for p, v in theirs.items() if isinstance(v, tuple)}
        assert set(splits) == set(tree.internal), f"tree {t} shape"
        for p, (feature, threshold) in splits.items():
            assert rules[p].feature == f"x{feature}", f"tree {t} position {p}"
            assert rules[p].threshold == pytest.approx(threshold, abs=1e-6)
        for p, weight in tree.weights.items():
            assert weight == pytest.approx(theirs[p], abs=1e-6), f"tree {t} leaf {p}"
