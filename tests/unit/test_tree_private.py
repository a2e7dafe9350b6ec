"""The private tree-scoring chain (trees._private) under a real 2048-bit key: what the
bank decrypts is exactly the plaintext model's margin at the query's scale, and what
each node hands on cannot be linked to what it received."""

from __future__ import annotations

import random
from typing import Any

import pytest

from creditshare.crypto import Ciphertext, FastEncryptor, FixedPointEncoding, PrivateKey
from creditshare.errors import InvalidInputError
from creditshare.trees import PublicTree, SplitRule, TreeModel, TreeShard
from creditshare.trees._private import alone, first, refine, shifted_weights, weigh
from creditshare.trees._synthetic import random_tree_model

SCALE = 10**9
FEATURES = {
    "a": {"x": (0.0, 10.0), "y": (-5.0, 5.0)},
    "b": {"z": (0.0, 1.0)},
    "c": {"w": (100.0, 200.0), "v": (0.0, 3.0)},
}


@pytest.fixture(scope="module")
def encryptor(bank_key: PrivateKey) -> FastEncryptor:
    return FastEncryptor(bank_key.public_key)


def _values(node: str, rng: random.Random) -> dict[str, float]:
    return {name: rng.uniform(lo - 1, hi + 1) for name, (lo, hi) in FEATURES[node].items()}


def _chain(
    model: TreeModel,
    shards: dict[str, TreeShard],
    records: dict[str, dict[str, float] | None],
    encryptor: FastEncryptor,
) -> Ciphertext:
    """What the coordinator does: first, middles, last (or alone), then + constant."""
    weights, constant = shifted_weights(model, SCALE)
    nodes = list(model.nodes)
    bits = {n: shards[n].leaf_bits(records[n]) for n in nodes}
    if len(nodes) == 1:
        score = alone(bits[nodes[0]], weights, encryptor)
    else:
        indicators = first(bits[nodes[0]], encryptor)
        for node in nodes[1:-1]:
            indicators = refine(indicators, bits[node], encryptor)
        score = weigh(indicators, bits[nodes[-1]], weights, encryptor)
    key = encryptor.public_key
    return score.add_encoded(FixedPointEncoding.encode_integer(constant, key))


def _expected(model: TreeModel, bits: list[list[int]]) -> int:
    """The margin at SCALE, each term rounded once (the fixed point of margin_from_bits)."""
    encoding = FixedPointEncoding(SCALE)
    leaves = model.leaf_weights()
    chosen = [w for k, w in enumerate(leaves) if all(b[k] for b in bits)]
    assert len(chosen) == len(model.trees)
    return encoding.to_integer(model.base_score) + sum(encoding.to_integer(w) for w in chosen)


@pytest.mark.parametrize("owners", [["a"], ["a", "b"], ["a", "b", "c"]])
def test_the_chain_decrypts_to_the_plaintext_margin(
    owners: list[str], bank_key: PrivateKey, encryptor: FastEncryptor
) -> None:
    model, shards = random_tree_model(
        {n: FEATURES[n] for n in owners}, trees=6, depth=3, seed=len(owners)
    )
    assert list(model.nodes) == owners
    rng = random.Random(7)
    key = bank_key.public_key
    for case in range(4):
        # Case 0: no node holds a record; later cases drop the record at some nodes.
        records: dict[str, dict[str, float] | None] = {
            n: None if case == 0 or (case == 3 and k % 2 == 0) else _values(n, rng)
            for k, n in enumerate(owners)
        }
        total = _chain(model, shards, records, encryptor)
        decrypted = FixedPointEncoding.decode_integer(bank_key.raw_decrypt(total.value), key)
        bits = [shards[n].leaf_bits(records[n]) for n in owners]
        assert decrypted == _expected(model, bits)
        assert decrypted / SCALE == pytest.approx(model.margin_from_bits(bits), abs=1e-6)


def test_a_node_without_a_record_routes_by_default_directions(
    bank_key: PrivateKey, encryptor: FastEncryptor
) -> None:
    # Tree: root at node a (default left), left child at node b (default right).
    model = TreeModel(
        0.5,
        (PublicTree({0: "a", 1: "b"}, {3: 1.0, 4: -2.0, 2: 3.0}),),
    )
    shapes = model.shapes()
    shard_a = TreeShard(shapes, (SplitRule(0, 0, "x", 5.0, True),))
    shard_b = TreeShard(shapes, (SplitRule(0, 1, "z", 0.5, False),))
    # No record at either: left at a, right at b -> leaf 4 (weight -2.0).
    score = _chain(model, {"a": shard_a, "b": shard_b}, {"a": None, "b": None}, encryptor)
    key = bank_key.public_key
    assert FixedPointEncoding(SCALE).decrypt(score, bank_key) == pytest.approx(0.5 - 2.0)
    # A record at a that goes right -> leaf 2, whatever b says.
    score = _chain(model, {"a": shard_a, "b": shard_b}, {"a": {"x": 9.0}, "b": None}, encryptor)
    assert FixedPointEncoding.decode_integer(bank_key.raw_decrypt(score.value), key) == int(
        3.5 * SCALE
    )


def test_shifted_weights_are_non_negative_and_exact() -> None:
    model, _ = random_tree_model(FEATURES, trees=20, depth=3, seed=3)
    weights, constant = shifted_weights(model, SCALE)
    assert len(weights) == model.leaf_count
    assert min(weights) == 0 and all(w >= 0 for w in weights)
    # Per tree, the smallest shifted weight is 0 (the smallest exponents possible).
    start = 0
    for tree in model.trees:
        assert min(weights[start : start + len(tree.leaves)]) == 0
        start += len(tree.leaves)
    encoding = FixedPointEncoding(SCALE)
    leaves = model.leaf_weights()
    # Picking leaf 0 of every tree: shifted sum + constant == the margin at the scale.
    firsts, start = [], 0
    for tree in model.trees:
        firsts.append(start)
        start += len(tree.leaves)
    direct = encoding.to_integer(model.base_score) + sum(
        encoding.to_integer(leaves[k]) for k in firsts
    )
    assert sum(weights[k] for k in firsts) + constant == direct


def test_every_output_is_fresh_and_unlinkable(encryptor: FastEncryptor) -> None:
    bits_in = [1, 0, 1, 1, 0, 1, 0, 0]
    incoming = first(bits_in, encryptor)
    assert len({c.value for c in incoming}) == len(incoming)  # even equal bits differ
    mine = [1, 1, 0, 1, 0, 0, 1, 0]
    out = refine(incoming, mine, encryptor)
    values_in = {c.value for c in incoming}
    assert all(c.value not in values_in for c in out)
    assert len({c.value for c in out}) == len(out)
    weights = list(range(1, 9))
    score = weigh(out, [1] * 8, weights, encryptor)
    assert score.value not in values_in | {c.value for c in out}
    # The same inputs weighed twice give different ciphertexts (re-randomised dot).
    assert weigh(out, [1] * 8, weights, encryptor).value != score.value


def test_malformed_steps_are_refused(bank_key: PrivateKey, encryptor: FastEncryptor) -> None:
    incoming = first([1, 0, 1], encryptor)
    with pytest.raises(InvalidInputError, match="2 bits for 3 indicators"):
        refine(incoming, [1, 0], encryptor)
    with pytest.raises(InvalidInputError, match="0 or 1"):
        refine(incoming, [1, 2, 0], encryptor)
    with pytest.raises(InvalidInputError, match="2 weights for 3 leaves"):
        weigh(incoming, [1, 1, 1], [1, 2], encryptor)
    with pytest.raises(InvalidInputError, match="integer within"):
        weigh(incoming, [1, 1, 1], [1, -2, 3], encryptor)
    with pytest.raises(InvalidInputError, match="needs the earlier"):
        refine([], [], encryptor)
    other = FastEncryptor(PrivateKey.generate(2048).public_key)
    with pytest.raises(InvalidInputError, match="another key"):
        refine(first([1, 0, 1], other), [1, 0, 1], encryptor)


class CountingEncryptor:
    """An encryptor that counts each kind of modular work it is asked for."""

    def __init__(self, inner: FastEncryptor) -> None:
        self.inner = inner
        self.calls: dict[str, int] = {}

    @property
    def public_key(self) -> Any:
        return self.inner.public_key

    def __getattr__(self, name: str) -> Any:
        method = getattr(self.inner, name)

        def counted(*args: Any) -> Any:
            self.calls[name] = self.calls.get(name, 0) + 1
            return method(*args)

        return counted


def test_a_middle_and_last_nodes_work_does_not_depend_on_their_bits(
    bank_key: PrivateKey, encryptor: FastEncryptor, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No timing: the same calls to the encryptor, and the same exponents over real
    ciphertexts (never a base of 1), whatever the bits."""
    import creditshare.trees._private as private

    incoming = [encryptor.encrypt_encoded(1) for _ in range(8)]
    weights = [0, 3, 5, 7, 11, 13, 17, 19]
    seen: list[tuple[list[int], int]] = []  # per dot: exponents, bases equal to 1
    from creditshare.crypto import dot as real_dot

    def recording_dot(bases: list[Ciphertext], exponents: list[int]) -> Ciphertext:
        seen.append((list(exponents), sum(c.value == 1 for c in bases)))
        return real_dot(bases, exponents)

    monkeypatch.setattr(private, "dot", recording_dot)
    work = []
    for bits in ([1] * 8, [0] * 8, [1, 0, 0, 1, 0, 1, 1, 0], [0] * 7 + [1]):
        counting = CountingEncryptor(encryptor)
        refined = refine(incoming, bits, counting)
        score = weigh(incoming, bits, weights, counting)
        work.append(counting.calls)
        expected = sum(w for w, b in zip(weights, bits, strict=True) if b)
        assert bank_key.raw_decrypt(score.value) == expected
        assert [bank_key.raw_decrypt(c.value) for c in refined] == bits
    assert all(calls == work[0] for calls in work)
    assert all(exponents == weights and ones == 0 for exponents, ones in seen)
    assert len(seen) == 4
