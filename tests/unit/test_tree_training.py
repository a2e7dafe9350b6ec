"""Tree training: the plaintext protocol equals XGBoost; hosts refuse what they must."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import pytest

from creditshare.crypto import Ciphertext, FastEncryptor, PrivateKey
from creditshare.errors import InvalidInputError
from creditshare.trees import (
    FeatureBins,
    PlainTreeHost,
    TreeConfig,
    TreeHost,
    TreeModel,
    TreeReport,
    TreeShard,
    TreeTrainingResult,
    _bureau,
    train_trees,
    train_trees_plain,
)
from creditshare.trees._driver import grow_trees
from creditshare.trees._hostcore import HostCore
from creditshare.trees._plain import _PlainChannel

from .test_tree_split import small_data, xgboost_model


def routed_margins(
    model: TreeModel, shards: dict[str, TreeShard], columns: list[dict[str, float]]
) -> np.ndarray:
    """Margins the way a bank's query gets them: every node's leaf bits combined."""
    return np.array(
        [model.margin_from_bits([s.leaf_bits(row) for s in shards.values()]) for row in columns]
    )


def test_plaintext_protocol_margins_equal_xgboosts_over_rounds() -> None:
    x, y = small_data(7, n=400)
    train, test = np.arange(300), np.arange(300, 400)
    config = TreeConfig(trees=6, max_depth=3, validation_fraction=0)
    ours = train_trees_plain([x], y, train, {"test": test}, config, validation=None)
    reference = xgboost_model(x[train], y[train], config)
    assert ours.model.base_score == pytest.approx(math.log(y[train].mean() / (1 - y[train].mean())))
    expected = reference.predict(x[test], output_margin=True)
    assert np.abs(ours.margins["test"] - expected).max() < 1e-5
    rows = [{f"x{j}": float(v) for j, v in enumerate(r)} for r in x[train]]
    got = routed_margins(ours.model, ours.shards, rows)
    assert np.abs(got - reference.predict(x[train], output_margin=True)).max() < 1e-5
    assert [r.tree for r in ours.reports] == list(range(6))
    losses = [r.train_loss for r in ours.reports]
    assert losses == sorted(losses, reverse=True)


def test_features_split_across_parties_give_the_one_party_model() -> None:
    x, y = small_data(8)
    config = TreeConfig(trees=3, validation_fraction=0)
    fit, others = np.arange(250), {"test": np.arange(250, 300)}
    whole = train_trees_plain([x], y, fit, others, config, validation=None)
    names = [["x0", "x3"], ["x1", "x2", "x4"]]
    parts = train_trees_plain(
        [x[:, [0, 3]], x[:, [1, 2, 4]]],
        y,
        fit,
        others,
        config,
        validation=None,
        names=["bank", "tax"],
        feature_names=names,
    )
    assert np.allclose(parts.margins["test"], whole.margins["test"], atol=1e-12)
    assert whole.model.leaf_weights() == pytest.approx(parts.model.leaf_weights(), abs=1e-12)
    assert set(parts.model.nodes) == {"bank", "tax"}
    for name, shard in parts.shards.items():
        assert set(shard.features) <= set(names[["bank", "tax"].index(name)])
    rows = [{f"x{j}": float(v) for j, v in enumerate(r)} for r in x[250:]]
    assert np.allclose(routed_margins(parts.model, parts.shards, rows), parts.margins["test"])


def test_early_stopping_keeps_the_best_round_and_its_margins() -> None:
    rng = np.random.default_rng(5)
    x = rng.integers(0, 30, size=(300, 4)).astype(float)
    y = (rng.random(300) < 0.4).astype(float)  # pure noise: validation loss rises soon
    config = TreeConfig(trees=40, max_depth=4, learning_rate=0.5, early_stopping_rounds=3)
    fit, valid, test = np.arange(200), np.arange(200, 250), np.arange(250, 300)
    seen: list[TreeReport] = []
    result = train_trees_plain(
        [x], y, fit, {"validation": valid, "test": test}, config, on_tree=seen.append
    )
    losses = [r.validation_loss for r in result.reports]
    best = int(np.argmin(losses))
    assert len(result.reports) == best + 4 < 40
    assert seen == result.reports
    assert len(result.model.trees) == best + 1
    rows = [{f"x{j}": float(v) for j, v in enumerate(r)} for r in x]
    kept = routed_margins(result.model, result.shards, rows)
    assert np.allclose(result.margins["validation"], kept[valid])
    assert np.allclose(result.margins["test"], kept[test])
    assert all(0 <= r.validation_auc <= 1 for r in result.reports)
    assert all(len(s.shapes) == best + 1 for s in result.shards.values())


def test_without_validation_every_tree_is_kept_and_metrics_are_nan() -> None:
    x, y = small_data(2, n=120)
    config = TreeConfig(trees=2, early_stopping_rounds=1)
    result = train_trees_plain([x], y, range(120), {}, config)
    assert len(result.model.trees) == 2
    assert all(math.isnan(r.validation_loss) for r in result.reports)


def smallest_leaf(x: np.ndarray, y: np.ndarray, config: TreeConfig) -> int:
    """Fewest fit rows any leaf of the trained model holds (read from leaf bits)."""
    result = train_trees_plain([x], y, range(len(y)), {}, config, validation=None)
    shard = result.shards["party0"]
    bits = np.array([shard.leaf_bits({f"x{j}": float(v) for j, v in enumerate(r)}) for r in x])
    per_leaf = bits.sum(axis=0)
    return int(per_leaf.min())


def test_the_row_floor_is_never_crossed_and_changes_the_model() -> None:
    x, y = small_data(9, n=200)
    config = TreeConfig(trees=3, max_depth=4, min_child_weight=0.0)
    assert smallest_leaf(x, y, config) < 30  # without a high floor, small leaves appear
    assert smallest_leaf(x, y, config.replace(min_child_rows=30)) >= 30


class ClosedAtSplit(PlainTreeHost):
    """A host whose job is gone by the time the bureau asks it to split."""

    def split(self, *args: Any, **kwargs: Any) -> list[bool]:
        self.close()
        raise InvalidInputError(f"node {self.name}: this job's tree host is closed")


def test_a_refusal_the_floor_cannot_explain_fails_naming_the_node() -> None:
    x, y = small_data(6, n=120)
    host = ClosedAtSplit("tax", x, [f"x{j}" for j in range(5)], x, TreeConfig(trees=1))
    with pytest.raises(InvalidInputError, match=r"node tax refused a split .* closed"):
        grow_trees(_PlainChannel([host]), y, range(120), {}, TreeConfig(trees=1), None)


def test_fit_rows_must_hold_both_labels() -> None:
    x, _ = small_data(1, n=50)
    with pytest.raises(InvalidInputError, match="both labels"):
        train_trees_plain([x], np.zeros(50), range(50), {}, TreeConfig(trees=1))


# ---------------------------------------------------------------- host checks


def core(rows: int = 40, **changes: object) -> HostCore[int]:
    rng = np.random.default_rng(0)
    values = rng.integers(0, 10, size=(rows, 2)).astype(float)
    config = TreeConfig(trees=5).replace(**changes)
    return HostCore("n1", values, ["a", "b"], values, config)


def test_gradient_chunks_are_checked_before_they_count() -> None:
    host = core()
    assert host.accept_chunk(0, [0, 1, 2], [10, 11, 12], 6, False) is None
    with pytest.raises(InvalidInputError, match="arrived twice"):
        host.accept_chunk(0, [2, 3], [1, 2], 6, False)
    with pytest.raises(InvalidInputError, match="total 7 differs"):
        host.accept_chunk(0, [3], [1], 7, False)
    with pytest.raises(InvalidInputError, match="2 rows but 1"):
        host.accept_chunk(0, [3, 4], [1], 6, False)
    with pytest.raises(InvalidInputError, match="5 rows' gradients received, total says 6"):
        host.accept_chunk(0, [3, 4], [13, 14], 6, True)
    with pytest.raises(InvalidInputError, match="row 40 is outside"):
        host.accept_chunk(0, [40], [1], 6, False)
    done = host.accept_chunk(0, [5, 4, 3], [15, 14, 13], 6, True)
    assert done == ([0, 1, 2, 3, 4, 5], [10, 11, 12, 13, 14, 15])
    with pytest.raises(InvalidInputError, match="already complete"):
        host.accept_chunk(0, [6], [1], 6, True)
    with pytest.raises(InvalidInputError, match="outside 0 to 4"):
        host.accept_chunk(5, [6], [1], 6, True)
    # a new tree replaces the old one's gradients; going back is refused
    assert host.accept_chunk(2, list(range(10, 14)), [1, 2, 3, 4], 4, True) is not None
    with pytest.raises(InvalidInputError, match="tree 1 after tree 2"):
        host.accept_chunk(1, [0], [1], 4, True)
    with pytest.raises(InvalidInputError, match="not one of this tree's fit rows"):
        host.check_nodes(2, [(0, [0, 1, 2, 3])])


def test_histogram_requests_are_refused_under_the_floor_or_outside_the_fit_set() -> None:
    host = core(min_child_rows=5)
    host.accept_chunk(0, list(range(20)), list(range(20)), 20, True)
    with pytest.raises(InvalidInputError, match="4 rows is fewer than the node's floor of 5"):
        host.check_nodes(0, [(0, [0, 1, 2, 3])])
    with pytest.raises(InvalidInputError, match="not one of this tree's fit rows"):
        host.check_nodes(0, [(0, [0, 1, 2, 3, 25])])
    with pytest.raises(InvalidInputError, match="listed twice"):
        host.check_nodes(0, [(0, [0, 1, 2, 3, 3])])
    host.check_nodes(0, [(0, range(20))])
    with pytest.raises(InvalidInputError, match="asked twice"):
        host.check_nodes(0, [(1, range(5)), (1, range(5, 10))])
    with pytest.raises(InvalidInputError, match="no complete gradients"):
        host.check_nodes(1, [(0, range(5))])
    with pytest.raises(InvalidInputError, match="position 15 is not a node"):
        host.check_nodes(0, [(15, range(5))])


def test_splits_are_refused_under_the_floor_and_recorded_otherwise() -> None:
    values = np.repeat(np.arange(10.0), 2).reshape(20, 1)
    host = PlainTreeHost("n1", values, ["a"], values, TreeConfig(trees=2, min_child_rows=4))
    host.gradients(0, list(range(16)), np.ones(16), np.ones(16))
    fit = list(range(16))  # values 0..7, two rows each
    host.histograms(0, [(0, fit)])
    with pytest.raises(InvalidInputError, match="floor of 4 fit rows in a child"):
        host.split(0, 0, 0, 0, fit, [16])
    with pytest.raises(InvalidInputError, match="other rows must be distinct rows outside"):
        host.split(0, 0, 0, 3, fit, [3])
    bits = host.split(0, 0, 0, 2, fit, [16, 17, 18])  # values < 3 go left
    assert bits == [True] * 6 + [False] * 10 + [False] * 3
    with pytest.raises(InvalidInputError, match="already split; a retry must repeat"):
        host.split(0, 0, 0, 3, fit, [16, 17, 18])
    assert host.split(0, 0, 0, 2, fit, [16, 17, 18]) == bits  # an identical retry is answered
    shard = host.shard([(frozenset({0}), frozenset({0}))])
    assert shard.rules[0].feature == "a" and shard.rules[0].threshold == 3.0
    assert shard.rules[0].default_left is False  # 6 left, 10 right: default to the larger


def test_shard_checks_the_kept_trees_and_drops_later_ones() -> None:
    values = np.arange(40.0).reshape(40, 1)
    host = PlainTreeHost("n1", values, ["a"], values, TreeConfig(trees=3))
    for tree in (0, 1):
        host.gradients(tree, list(range(40)), np.ones(40), np.ones(40))
        host.histograms(tree, [(0, range(40))])
        host.split(tree, 0, 0, 9, list(range(40)), [])
    with pytest.raises(InvalidInputError, match="tree 0: this node split positions \\[0\\]"):
        host.shard([(frozenset({0}), frozenset())])
    shard = host.shard([(frozenset({0}), frozenset({0}))])
    assert [(r.tree, r.position) for r in shard.rules] == [(0, 0)]
    assert shard.rules[0].default_left is False
    with pytest.raises(InvalidInputError, match="tree 1: this node split positions \\[\\]"):
        host.shard([(frozenset({0}), frozenset({0})), (frozenset({0}), frozenset({0}))])
    host.close()
    with pytest.raises(InvalidInputError, match="closed"):
        host.histograms(1, [(0, range(40))])


def test_host_inputs_are_checked_naming_the_node() -> None:
    values = np.zeros((5, 2))
    with pytest.raises(InvalidInputError, match="node n1: job values must be rows × 3"):
        HostCore("n1", values, ["a", "b", "c"], values, TreeConfig())
    with pytest.raises(InvalidInputError, match="node n1: population"):
        HostCore("n1", values, ["a", "b"], np.zeros((0, 2)), TreeConfig())
    with pytest.raises(InvalidInputError, match="distinct"):
        HostCore("n1", values, ["a", "a"], values, TreeConfig())


# ------------------------------------------------------- the encrypted protocol


@pytest.fixture(scope="module")
def key() -> PrivateKey:
    """One real 2048-bit key for this module's encrypted runs."""
    return PrivateKey.generate(2048)


SPLIT = (["x0", "x1"], ["x2", "x3", "x4"])


class Recording:
    """A TreeHostEndpoint that records what the node receives and what it answers."""

    def __init__(self, host: TreeHost) -> None:
        self.host = host
        self.received: list[tuple[str, tuple[Any, ...]]] = []
        self.answered: list[tuple[str, Any]] = []
        self.refused: list[str] = []

    @property
    def name(self) -> str:
        return self.host.name

    @property
    def bin_counts(self) -> Sequence[int]:
        self.answered.append(("bin_counts", list(self.host.bin_counts)))
        return self.host.bin_counts

    def _call(self, method: str, *args: Any) -> Any:
        self.received.append((method, args))
        try:
            answer = getattr(self.host, method)(*args)
        except InvalidInputError as exc:
            self.refused.append(f"{method}: {exc}")
            raise
        self.answered.append((method, answer))
        return answer

    def gradients(
        self,
        tree: int,
        rows: Sequence[int],
        ciphertexts: Sequence[Ciphertext],
        total: int,
        final: bool,
    ) -> None:
        self._call("gradients", tree, list(rows), list(ciphertexts), total, final)

    def histograms(
        self, tree: int, nodes: Sequence[tuple[int, Sequence[int]]]
    ) -> list[tuple[int, list[Ciphertext]]]:
        answer: list[tuple[int, list[Ciphertext]]] = self._call("histograms", tree, list(nodes))
        return answer

    def split(
        self,
        tree: int,
        position: int,
        feature: int,
        bin: int,
        rows: Sequence[int],
        other_rows: Sequence[int],
    ) -> list[bool]:
        answer: list[bool] = self._call(
            "split", tree, position, feature, bin, list(rows), list(other_rows)
        )
        return answer


def encrypted_run(
    key: PrivateKey, x: np.ndarray, y: np.ndarray, config: TreeConfig, others: dict[str, np.ndarray]
) -> tuple[TreeTrainingResult, list[Recording], dict[str, TreeShard]]:
    hosts = [
        Recording(TreeHost(f"n{k}", x[:, cols], names, x[:, cols], key.public_key, config))
        for k, (cols, names) in enumerate([([0, 1], SPLIT[0]), ([2, 3, 4], SPLIT[1])])
    ]
    fit = np.setdiff1d(np.arange(len(y)), np.concatenate(list(others.values())))
    result = train_trees(key, hosts, y, fit, others, config)
    shards = {}
    for h in hosts:
        owned = result.model.owned_by(h.name)
        shards[h.name] = h.host.shard(
            [(t.internal, o) for t, o in zip(result.model.trees, owned, strict=True)]
        )
        h.host.close()
    return result, hosts, shards


def plain_run(
    x: np.ndarray, y: np.ndarray, config: TreeConfig, others: dict[str, np.ndarray]
) -> TreeTrainingResult:
    fit = np.setdiff1d(np.arange(len(y)), np.concatenate(list(others.values())))
    return train_trees_plain(
        [x[:, [0, 1]], x[:, [2, 3, 4]]],
        y,
        fit,
        others,
        config,
        names=["n0", "n1"],
        feature_names=[list(SPLIT[0]), list(SPLIT[1])],
    )


def assert_same_model(
    a: TreeTrainingResult, b: TreeTrainingResult, shards: dict[str, TreeShard]
) -> None:
    assert [t.owners for t in a.model.trees] == [t.owners for t in b.model.trees]
    assert a.model.leaf_weights() == pytest.approx(b.model.leaf_weights(), abs=1e-6)
    assert a.model.base_score == b.model.base_score
    for name, shard in shards.items():
        assert shard.rules == b.shards[name].rules, name
    for name in b.margins:
        assert np.abs(a.margins[name] - b.margins[name]).max() < 1e-6


def test_encrypted_protocol_grows_the_plaintext_protocols_model(
    key: PrivateKey, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(_bureau, "CHUNK_ROWS", 64)  # several TreeGradients chunks per tree
    x, y = small_data(4, n=200)
    config = TreeConfig(trees=3, max_depth=3)
    others = {"validation": np.arange(140, 170), "test": np.arange(170, 200)}
    encrypted, hosts, shards = encrypted_run(key, x, y, config, others)
    assert_same_model(encrypted, plain_run(x, y, config, others), shards)
    assert len(encrypted.model.nodes) == 2  # both nodes own splits
    for host in hosts:
        chunks = [args for method, args in host.received if method == "gradients"]
        assert len(chunks) == 3 * 3  # 140 fit rows in chunks of 64, 64, 12, per tree
        assert all(len(c[1]) <= 64 and c[3] == 140 for c in chunks)
        assert [c[4] for c in chunks[:3]] == [False, False, True]


def test_what_each_party_receives_holds_no_label_or_gradient(key: PrivateKey) -> None:
    x, y = small_data(5, n=160)
    config = TreeConfig(trees=2, max_depth=2)
    others = {"test": np.arange(130, 160)}
    _, hosts, _ = encrypted_run(key, x, y, config, others)
    n = key.public_key.n
    sent: list[list[int]] = []
    for host in hosts:
        values: list[int] = []
        for method, args in host.received:
            for arg in args:
                for item in _flatten(arg):
                    # only integers (tree, positions, rows, bins, totals), flags and ciphertexts
                    assert isinstance(item, bool | int | Ciphertext), (method, type(item))
                    if isinstance(item, Ciphertext):
                        assert item.public_key == key.public_key
                        assert item.value % n != 1  # randomised: not a bare 1 + n·m
                        values.append(item.value)
            if method == "split":
                assert all(isinstance(r, int) for r in args[4] + args[5])
        sent.append(values)
        # what the bureau gets back: bin counts, compressed ciphertexts, left bits
        for method, answer in host.answered:
            for item in _flatten([] if method == "gradients" else answer):
                assert isinstance(item, bool | int | Ciphertext), (method, type(item))
    assert sent[0] == sent[1]  # one encryption per tree, the same ciphertexts to every node
    assert len(set(sent[0])) == len(sent[0])  # fresh ciphertexts for every row and tree


def _flatten(value: Any) -> list[Any]:
    if isinstance(value, list | tuple):
        return [item for v in value for item in _flatten(v)]
    return [value]


def test_a_refused_split_makes_the_bureau_try_the_next_best(key: PrivateKey) -> None:
    x, y = small_data(9, n=200)
    config = TreeConfig(trees=2, max_depth=3, min_child_rows=30, min_child_weight=0.0)
    others = {"test": np.arange(180, 200)}
    encrypted, hosts, shards = encrypted_run(key, x, y, config, others)
    refusals = [r for h in hosts for r in h.refused]
    assert refusals and all("floor of 30" in r for r in refusals)
    assert all(r.startswith("split") for r in refusals)  # never a histogram under the floor
    assert_same_model(encrypted, plain_run(x, y, config, others), shards)


def test_a_tree_host_refuses_bad_gradients_and_small_histograms(key: PrivateKey) -> None:
    x, _ = small_data(3, n=40)
    config = TreeConfig(trees=2)
    host = TreeHost("n1", x[:, :2], ["a", "b"], x[:, :2], key.public_key, config)
    assert sorted(host.bin_counts) == sorted(
        FeatureBins.fit(n, x[:, j], 32).count for j, n in enumerate(["a", "b"])
    )
    enc = FastEncryptor(key.public_key)
    good = [enc.encrypt_encoded(k) for k in range(8)]
    with pytest.raises(InvalidInputError, match="gradient 1 of the chunk is not a ciphertext"):
        host.gradients(0, [0, 1], [good[0], 5], 8, False)  # type: ignore[list-item]
    host.gradients(0, list(range(8)), good, 8, True)
    with pytest.raises(InvalidInputError, match="3 rows is fewer than the node's floor of 4"):
        host.histograms(0, [(0, [0, 1, 2])])
    with pytest.raises(InvalidInputError, match="not one of this tree's fit rows"):
        host.histograms(0, [(0, [0, 1, 2, 30])])
    [(position, ciphertexts)] = host.histograms(0, [(0, list(range(8)))])
    assert position == 0 and all(isinstance(c, Ciphertext) for c in ciphertexts)
    host.close()
