"""WOE-binned categories: the schema declaration, the weight-of-evidence table, and the
masked level-sum round between a bureau and a node (real 2048-bit Paillier).

The round must teach the bureau nothing, whatever it sends as "labels": what it
decrypts is uniformly masked, never a sum. The node learns per-group counts only over
groups of at least ``min_rows`` fit rows.
"""

from __future__ import annotations

import math
import re
import textwrap
from collections.abc import Sequence

import numpy as np
import pytest

from creditshare.crypto import Ciphertext, FastEncryptor, PrivateKey
from creditshare.departments import SchemaError, parse_schema, reference_markdown
from creditshare.errors import InvalidInputError, OutOfOrderError
from creditshare.federated import (
    LevelGroups,
    LevelSumsFit,
    ModelShard,
    Preprocessing,
    WoeFeature,
    WoeTable,
    share_level_sums,
    weight_of_evidence,
)

SCHEMA = textwrap.dedent(
    """
    id = "registry"
    display_name = "Registry"

    [[columns]]
    name = "industry"
    type = "category"
    levels = ["farming", "mining", "trade", "services"]

    [[columns]]
    name = "staff"
    type = "integer"
    min = 0

    [[features]]
    name = "industry_woe"
    column = "industry"
    encoding = "woe"
    {extra}
    """
)


def _schema(extra: str = "", column: str = "industry") -> str:
    return SCHEMA.format(extra=extra).replace('column = "industry"', f'column = "{column}"')


@pytest.fixture(scope="module")
def key() -> PrivateKey:
    return PrivateKey.generate(2048)


# -- the schema ------------------------------------------------------------------------


def test_a_category_column_may_be_woe_binned() -> None:
    department = parse_schema(_schema(), "registry.toml")
    (feature,) = department.features
    assert feature.name == "industry_woe"
    assert feature.woe_min_rows == 50  # the default
    assert feature.levels == ("farming", "mining", "trade", "services")
    assert feature.clipped  # the WOE is then centred, scaled and clipped
    assert department.feature_values({"industry": "trade", "staff": 3}) == {"industry_woe": 2.0}
    custom = parse_schema(_schema("min_rows = 200"), "registry.toml")
    assert custom.features[0].woe_min_rows == 200
    assert "weight of evidence per job" in reference_markdown([department])


@pytest.mark.parametrize(
    ("extra", "column", "where", "reason"),
    [
        ("", "staff", 'features[0] (name "industry_woe").encoding', "staff is a integer"),
        ("min_rows = 9", "industry", 'features[0] (name "industry_woe").min_rows', "10..1000000"),
        ("min_rows = 2000000", "industry", ".min_rows", "not 2000000"),
        ("min_rows = true", "industry", ".min_rows", "whole number"),
        ("values = { farming = 1 }", "industry", ".values", '"map"'),
    ],
)
def test_woe_is_refused_off_categories_and_with_bad_min_rows(
    extra: str, column: str, where: str, reason: str
) -> None:
    with pytest.raises(SchemaError) as caught:
        parse_schema(_schema(extra, column), "registry.toml")
    message = str(caught.value)
    assert message.startswith("registry.toml: ")
    assert where in message and reason in message


def test_min_rows_without_woe_is_refused() -> None:
    text = _schema("min_rows = 60").replace('encoding = "woe"', 'encoding = "one_hot"')
    with pytest.raises(SchemaError, match=r"min_rows.*woe"):
        parse_schema(text, "registry.toml")


# -- the table -------------------------------------------------------------------------


def test_weight_of_evidence_is_the_smoothed_log_odds_ratio() -> None:
    assert weight_of_evidence(30, 100, 100, 1000) == pytest.approx(
        math.log(30.5 / 100.5) - math.log(70.5 / 900.5)
    )
    assert abs(weight_of_evidence(10, 100, 100, 1000)) < 0.05  # the overall rate: ~no evidence
    assert math.isfinite(weight_of_evidence(0, 50, 100, 1000))


def test_rare_levels_are_pooled_and_a_small_pool_is_never_summed() -> None:
    feature = WoeFeature("industry_woe", ("a", "b", "c", "d"), min_rows=20)
    # a: 50 rows, b: 30, c: 12, d: 9 → c and d pooled (21 rows ≥ 20)
    indices = [0] * 50 + [1] * 30 + [2] * 12 + [3] * 9
    groups = LevelGroups.of(feature, indices)
    assert groups.sizes == (50, 30, 21)
    assert groups.group_of_level == (0, 1, 2, 2)
    table = groups.table([10, 3, 8])
    expected = [weight_of_evidence(p, n, 21, 101) for p, n in ((10, 50), (3, 30), (8, 21))]
    assert table.values == pytest.approx([expected[0], expected[1], expected[2], expected[2]])
    assert table.pooled == (False, False, True, True)
    assert table.other == pytest.approx(expected[2])  # a level added later scores as pooled
    # Without d the pool holds 12 rows: not summed at all, and its levels score 0.
    small = LevelGroups.of(feature, [0] * 50 + [1] * 30 + [2] * 12)
    assert small.sizes == (50, 30) and small.pool is None
    assert small.group_of_level == (0, 1, -1, -1)
    table = small.table([10, 3])
    assert table.values[2:] == (0.0, 0.0) and table.other == 0.0
    with pytest.raises(InvalidInputError, match="not 0 or 1"):
        small.table([51, 3])


def test_the_table_travels_in_the_shard_and_scores_unseen_levels_as_pooled() -> None:
    table = WoeTable(("a", "b", "c"), (0.5, -0.25, 1.0), (False, False, True), 1.0)
    rows = np.array([[0.0, 1.0], [1.0, 2.0], [2.0, 3.0], [0.0, 4.0]])
    pre = Preprocessing.fit(["ind", "x"], rows, [True, True], 2.0, {"ind": table})
    woe = np.array([0.5, -0.25, 1.0, 0.5])
    assert pre.features[0].centre == pytest.approx(woe.mean())
    document = pre.to_document()
    assert document["version"] == 2
    again = Preprocessing.from_document(document)
    assert again == pre
    shard = ModelShard({"ind": 0.7, "x": -0.2}, 0.0, again)
    f0, f1 = pre.features
    for index, value in ((1.0, -0.25), (2.0, 1.0), (7.0, 1.0), (1.5, 1.0)):
        expected = 0.7 * max(-2.0, min(2.0, (value - f0.centre) / f0.scale)) - 0.2 * (
            (3.0 - f1.centre) / f1.scale
        )
        assert shard.partial_score({"ind": index, "x": 3.0}) == pytest.approx(expected, abs=1e-12)
    assert Preprocessing.fit(["x"], rows[:, 1:], [True], 2.0).to_document()["version"] == 1


# -- the masked round ------------------------------------------------------------------


class _InProcessNode:
    """A node's LevelSumsFit as the bureau reaches it (ids → row positions)."""

    def __init__(self, fit: LevelSumsFit, ids: Sequence[str]) -> None:
        self.fit = fit
        self._position = {i: k for k, i in enumerate(ids)}
        self.name = "node-a"
        self.masked: list[Ciphertext] = []
        self.calls: list[int] = []  # rows per LevelSums call

    def level_sums(
        self, ids: Sequence[str], labels: Sequence[Ciphertext], total: int, final: bool
    ) -> list[Ciphertext]:
        self.calls.append(len(ids))
        self.masked = self.fit.level_sums([self._position[i] for i in ids], labels, total, final)
        return self.masked

    def apply_level_sums(self, masked_plain: Sequence[int], proofs: Sequence[int]) -> None:
        self.fit.apply_level_sums(masked_plain, proofs)


def _node(key: PrivateKey, rows: int = 400) -> tuple[_InProcessNode, list[str], np.ndarray]:
    rng = np.random.default_rng(7)
    levels = rng.choice(5, size=rows, p=[0.4, 0.3, 0.2, 0.07, 0.03]).astype(float)
    other = rng.normal(size=rows)
    features = [
        WoeFeature("ind", ("a", "b", "c", "d", "e"), 30),
        WoeFeature("ind2", ("a", "b", "c", "d", "e"), 100),
    ]
    matrix = np.column_stack([levels, other, levels])
    fit = LevelSumsFit(
        features, [0, 2], matrix.tolist(), key.public_key, FastEncryptor(key.public_key)
    )
    ids = [f"id{k}" for k in range(rows)]
    return _InProcessNode(fit, ids), ids, levels


def test_the_node_gets_the_woe_of_the_fit_rows_and_nothing_else_is_summed(
    key: PrivateKey,
) -> None:
    node, ids, levels = _node(key)
    rng = np.random.default_rng(8)
    labels = {i: int(rng.random() < 0.1 + 0.1 * levels[k]) for k, i in enumerate(ids)}
    fit_ids = ids[:300]  # validation and test rows are never sent
    share_level_sums(node, fit_ids, labels, key, FastEncryptor(key.public_key))
    tables = node.fit.tables
    assert tables is not None
    fit_levels = levels[:300].astype(int)
    y = np.array([labels[i] for i in fit_ids])
    for name, min_rows in (("ind", 30), ("ind2", 100)):
        feature = WoeFeature(name, ("a", "b", "c", "d", "e"), min_rows)
        groups = LevelGroups.of(feature, fit_levels.tolist())
        positives = [
            int(sum(y[fit_levels == lv].sum() for lv in range(5) if groups.group_of_level[lv] == g))
            for g in range(len(groups.sizes))
        ]
        assert tables[name] == groups.table(positives)
        assert all(size >= min_rows for size in groups.sizes)
    assert tables["ind2"].pooled != tables["ind"].pooled  # a larger min_rows pools more


def test_a_bureau_sending_crafted_labels_decrypts_only_masked_values(key: PrivateKey) -> None:
    """y_i = 2^i would make the sum of a group spell out which rows hold that level:
    what the bureau decrypts is uniform in Z_n instead, and the node refuses the sums."""
    public = key.public_key
    encryptor = FastEncryptor(public)
    decrypted: list[list[int]] = []
    sums: list[int] = []
    for _ in range(2):
        node, _, levels = _node(key, rows=120)
        positions = list(range(120))
        crafted = [encryptor.encrypt_encoded(1 << k) for k in positions]
        masked = node.fit.level_sums(positions, crafted, 120)
        opened = [key.decrypt_with_proof(c.value) for c in masked]
        decrypted.append([m for m, _ in opened])
        # What the crafted labels would reveal unmasked: Σ 2^i per level of "ind".
        sums = [sum(1 << k for k in positions if levels[k] == lv) for lv in range(5)]
        for m in decrypted[-1]:
            assert m not in sums
            assert all(m % (1 << 120) != s for s in sums)  # not even in its low bits
        with pytest.raises(InvalidInputError, match="not 0 or 1"):
            node.fit.apply_level_sums(decrypted[-1], [r for _, r in opened])
    assert decrypted[0] != decrypted[1]  # the same request decrypts to fresh masks
    assert max(m.bit_length() for run in decrypted for m in run) > 2000  # masks span Z_n


def test_a_value_that_is_not_the_decryption_is_refused(key: PrivateKey) -> None:
    node, _, _ = _node(key, rows=120)
    encryptor = FastEncryptor(key.public_key)
    labels = [encryptor.encrypt_encoded(k % 2) for k in range(120)]
    masked = node.fit.level_sums(list(range(120)), labels, 120)
    opened = [key.decrypt_with_proof(c.value) for c in masked]
    forged = [(opened[0][0] + 1) % key.public_key.n, *[m for m, _ in opened[1:]]]
    with pytest.raises(InvalidInputError, match="not the decryption"):
        node.fit.apply_level_sums(forged, [r for _, r in opened])
    assert node.fit.tables is None
    node.fit.apply_level_sums([m for m, _ in opened], [r for _, r in opened])
    assert node.fit.tables is not None


def test_the_round_runs_once_and_in_order(key: PrivateKey) -> None:
    node, _, _ = _node(key, rows=120)
    with pytest.raises(OutOfOrderError, match="ask for the level sums"):
        node.fit.apply_level_sums([], [])
    encryptor = FastEncryptor(key.public_key)
    labels = [encryptor.encrypt_encoded(k % 2) for k in range(120)]
    node.fit.level_sums(list(range(120)), labels, 120)
    with pytest.raises(OutOfOrderError, match="once per job"):
        node.fit.level_sums(list(range(120)), labels, 120)
    with pytest.raises(InvalidInputError, match="distinct"):
        _node(key, rows=120)[0].fit.level_sums([0, 0], labels[:2], 2)


def test_too_few_fit_rows_for_any_group_still_completes_with_zero_woe(key: PrivateKey) -> None:
    node, ids, _ = _node(key, rows=120)
    labels = {i: k % 2 for k, i in enumerate(ids)}
    share_level_sums(node, ids[:25], labels, key, FastEncryptor(key.public_key))
    assert len(node.masked) == 1  # nothing summed: one masked zero
    tables = node.fit.tables
    assert tables is not None
    assert all(v == 0.0 for t in tables.values() for v in (*t.values, t.other))


def test_the_fit_rows_come_in_chunks_and_give_the_tables_of_one_call(key: PrivateKey) -> None:
    node, ids, levels = _node(key)
    rng = np.random.default_rng(8)
    labels = {i: int(rng.random() < 0.1 + 0.1 * levels[k]) for k, i in enumerate(ids)}
    share_level_sums(node, ids[:300], labels, key, FastEncryptor(key.public_key), chunk=64)
    assert node.calls == [64, 64, 64, 64, 44]
    whole, _, _ = _node(key)
    share_level_sums(whole, ids[:300], labels, key, FastEncryptor(key.public_key))
    assert whole.calls == [300]
    assert node.fit.tables == whole.fit.tables
    assert node.fit.tables is not None


def test_chunk_accounting_refuses_rows_twice_missing_rows_and_a_changed_total(
    key: PrivateKey,
) -> None:
    node, _, _ = _node(key, rows=120)
    encryptor = FastEncryptor(key.public_key)
    labels = [encryptor.encrypt_encoded(k % 2) for k in range(120)]
    assert node.fit.level_sums(list(range(50)), labels[:50], 120, final=False) == []
    with pytest.raises(InvalidInputError, match="row position 49 was sent already"):
        node.fit.level_sums([49, 50], labels[49:51], 120, final=False)
    with pytest.raises(InvalidInputError, match="first call announced 120"):
        node.fit.level_sums([50], labels[50:51], 100, final=False)
    with pytest.raises(InvalidInputError, match="only 100 of the 120 fit rows were sent"):
        node.fit.level_sums(list(range(50, 100)), labels[50:100], 120, final=True)
    other = _node(key, rows=120)[0].fit
    other.level_sums(list(range(60)), labels[:60], 100, final=False)
    with pytest.raises(InvalidInputError, match="120 fit rows sent, more than the 100 announced"):
        other.level_sums(list(range(60, 120)), labels[60:], 100, final=False)
    with pytest.raises(InvalidInputError, match=r"total must be within 1\.\.120"):
        _node(key, rows=120)[0].fit.level_sums([0], labels[:1], 121, final=False)
    # A refused call summed nothing: the rows it carried may still be sent, once each.
    assert node.fit.received == 50
    assert node.fit.level_sums(list(range(50, 100)), labels[50:100], 120, final=False) == []
    masked = node.fit.level_sums(list(range(100, 120)), labels[100:], 120, final=True)
    assert masked and node.fit.received == 120
    with pytest.raises(OutOfOrderError, match="once per job"):
        node.fit.level_sums([], [], 120, final=True)
    opened = [key.decrypt_with_proof(c.value) for c in masked]
    node.fit.apply_level_sums([m for m, _ in opened], [r for _, r in opened])
    assert node.fit.tables is not None


def test_a_refused_sum_does_not_say_how_large_a_group_is(key: PrivateKey) -> None:
    """The refusal goes back to the coordinator and the bureau verbatim: no group size,
    no count, in it."""
    feature = WoeFeature("ind", ("a", "b", "c"), 10)
    groups = LevelGroups.of(feature, [0] * 37 + [1] * 23)
    with pytest.raises(InvalidInputError) as refused:
        groups.table([40, 5])
    message = str(refused.value)
    assert "not 0 or 1" in message
    assert not re.search(r"\d{2}", message)  # neither 37 rows nor the 40 summed
