"""Vertical logistic regression under real 2048-bit Paillier, in one process.

The encrypted protocol must reproduce, up to fixed-point rounding, the same
mini-batch SGD run in plaintext; and each party must see only what the
protocol allows it to see.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pytest

from creditshare.crypto import Ciphertext, FastEncryptor, FixedPointEncoding, PrivateKey, SlotLayout
from creditshare.errors import InvalidInputError
from creditshare.federated import (
    BureauParty,
    HostParty,
    Preprocessing,
    TrainingConfig,
    auc,
    evaluation_scores,
    ks,
    train,
)

N, HOST_FEATURES, BUREAU_FEATURES = 160, 3, 2


@pytest.fixture(scope="module")
def key() -> PrivateKey:
    return PrivateKey.generate(2048)


@pytest.fixture(scope="module")
def data() -> tuple[list[str], np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(7)
    xh = rng.normal(size=(N, HOST_FEATURES))
    xb = rng.normal(size=(N, BUREAU_FEATURES))
    z = xh @ np.array([1.5, -1.0, 0.5]) + xb @ np.array([0.8, -0.4]) - 0.3
    y = (rng.random(N) < 1 / (1 + np.exp(-z))).astype(float)
    ids = [f"e{i:04d}" for i in range(N)]
    return ids, y, xh, xb


CONFIG = TrainingConfig(
    batch_size=40, max_epochs=3, learning_rate=0.5, early_stopping_rounds=5, feature_clip=2.0
)


def _preprocessing(
    data: tuple[list[str], np.ndarray, np.ndarray, np.ndarray],
) -> tuple[Preprocessing, Preprocessing]:
    """Each party's fit over its own rows (host, bureau), as a node fits at OpenJob."""
    _, _, xh, xb = data
    clip = CONFIG.feature_clip
    return (
        Preprocessing.fit(["h0", "h1", "h2"], xh, [True] * 3, clip),
        Preprocessing.fit(["b0", "b1"], xb, [True] * 2, clip),
    )


def _parties(
    key: PrivateKey,
    data: tuple[list[str], np.ndarray, np.ndarray, np.ndarray],
    config: TrainingConfig = CONFIG,
) -> tuple[BureauParty, HostParty]:
    ids, y, xh, xb = data
    host_pre, bureau_pre = _preprocessing(data)
    bureau = BureauParty(
        {i: int(v) for i, v in zip(ids, y, strict=True)},
        key,
        config,
        rows=dict(zip(ids, xb, strict=True)),
        feature_names=["b0", "b1"],
        preprocessing=bureau_pre,
    )
    host = HostParty(
        "node",
        dict(zip(ids, xh, strict=True)),
        ["h0", "h1", "h2"],
        key.public_key,
        config,
        preprocessing=host_pre,
    )
    return bureau, host


def _plaintext_reference(
    data: tuple[list[str], np.ndarray, np.ndarray, np.ndarray], fit: Sequence[str]
) -> tuple[np.ndarray, np.ndarray, float]:
    """The same SGD, batch order and Taylor residual, with no encryption at all."""
    ids, y, xh, xb = data
    pos = {i: k for k, i in enumerate(ids)}
    host_pre, bureau_pre = _preprocessing(data)
    ph, pb = host_pre.apply(xh), bureau_pre.apply(xb)
    wh, wb, b = np.zeros(HOST_FEATURES), np.zeros(BUREAU_FEATURES), 0.0
    rng = np.random.default_rng(CONFIG.seed)
    order_ids = np.array(list(fit))
    for epoch in range(CONFIG.max_epochs):
        order = order_ids[rng.permutation(len(order_ids))]
        for s in range(0, len(order), CONFIG.batch_size):
            rows = [pos[i] for i in order[s : s + CONFIG.batch_size]]
            h, g = ph[rows], pb[rows]
            d = 0.5 + 0.25 * (h @ wh + g @ wb + b) - y[rows]
            rate = CONFIG.rate(epoch)
            wh = wh - rate * (h.T @ d / len(rows))
            wb = wb - rate * (g.T @ d / len(rows))
            b -= rate * d.mean()
    return wh, wb, b


@pytest.mark.parametrize("packing", [True, False], ids=["packed", "unpacked"])
def test_encrypted_training_matches_plaintext_sgd(
    key: PrivateKey, data: tuple[list[str], np.ndarray, np.ndarray, np.ndarray], packing: bool
) -> None:
    ids = data[0]
    config = CONFIG.replace(packing=packing)
    bureau, host = _parties(key, data, config)
    fit, valid = ids[:120], ids[120:]
    result = train(bureau, [host], fit, valid, config)
    wh, wb, b = _plaintext_reference(data, fit)
    assert len(result.epochs) == CONFIG.max_epochs
    np.testing.assert_allclose(host.weights, wh, atol=2e-3)
    np.testing.assert_allclose(bureau.weights, wb, atol=2e-3)
    assert abs(bureau.intercept - b) < 2e-3
    # The model learnt the signal: the planted weights' signs come back.
    assert np.sign(host.weights).tolist() == [1.0, -1.0, 1.0]
    scores = bureau.scores(valid, [host.forward(valid)])
    labels = bureau.labels(valid)
    assert auc(labels, scores) > 0.7 and 0 < ks(labels, scores) <= 1
    assert result.host_shards["node"] == host.shard()


class RecordingHost:
    """Wraps a host and keeps everything that crosses the boundary, both ways."""

    def __init__(self, inner: HostParty) -> None:
        self.inner = inner
        self.received: list[object] = []
        self.sent: list[object] = []

    @property
    def name(self) -> str:
        return self.inner.name

    def forward(self, ids: Sequence[str]) -> list[Ciphertext]:
        out = self.inner.forward(ids)
        self.sent.extend(out)
        return out

    def masked_gradient(
        self, ids: Sequence[str], residuals: Sequence[Ciphertext]
    ) -> list[Ciphertext]:
        self.received.extend(residuals)
        out = self.inner.masked_gradient(ids, residuals)
        self.sent.extend(out)
        return out

    def apply_gradient(
        self, masked_plain: Sequence[int], proofs: Sequence[int], batch_size: int, rate: float
    ) -> None:
        self.received.append(("masked", list(masked_plain)))
        self.inner.apply_gradient(masked_plain, proofs, batch_size, rate)

    def forward_packed(
        self, ids: Sequence[str], slot_bits: int, additions: int
    ) -> list[Ciphertext]:
        out = self.inner.forward_packed(ids, slot_bits, additions)
        self.sent.extend(out)
        return out


@pytest.mark.parametrize("packing", [True, False], ids=["packed", "unpacked"])
def test_what_each_party_sees(
    key: PrivateKey, data: tuple[list[str], np.ndarray, np.ndarray, np.ndarray], packing: bool
) -> None:
    ids = data[0]
    config = CONFIG.replace(packing=packing)
    bureau, host = _parties(key, data, config)
    spy = RecordingHost(host)
    batch = ids[:40]
    forwards = [spy.forward(batch)]
    before = host.weights.copy()
    bureau.step(batch, forwards, [spy], 0.5)
    # The node received only ciphertexts (residuals) and masked integers, never labels.
    residuals = [r for r in spy.received if isinstance(r, Ciphertext)]
    assert len(residuals) == 40
    for r in residuals:
        Ciphertext.validated(key.public_key, r.value)
        assert (r.value - 1) % key.public_key.n != 0  # randomised, not 1 + n·m
    # Residuals are re-randomised: none equals a forward the node produced.
    assert not {r.value for r in residuals} & {f.value for f in forwards[0]}
    # Everything the node sent is ciphertext; what the bureau decrypted was masked:
    (masked,) = [r[1] for r in spy.received if isinstance(r, tuple)]
    if packing:
        # One value for all three features: slots of |B|+residual+score+feature+mask bits,
        # plus a sign and a guard bit, each slot masked on its own.
        assert len(masked) == 1
        slot_bits = (40).bit_length() + 64 + config.score_bits + config.feature_bits + 80 + 3
        masked = SlotLayout(slot_bits, 3).unpack(masked[0])
    true_gradient = (before - host.weights) / 0.5  # what the node learnt, unmasked
    scale = 4 * 40 * (1 << CONFIG.score_bits) * (1 << CONFIG.feature_bits)
    for value, g in zip(masked, true_gradient, strict=True):
        assert abs(value / scale - g) > 1e6  # the mask dwarfs the gradient
    assert all(isinstance(s, Ciphertext) for s in spy.sent)


class CountingKey:
    """A private key that counts decryptions (it delegates the real work)."""

    def __init__(self, key: PrivateKey) -> None:
        self.key = key
        self.decryptions = 0

    @property
    def public_key(self) -> object:
        return self.key.public_key

    def raw_decrypt(self, value: int) -> int:
        self.decryptions += 1
        return self.key.raw_decrypt(value)

    def decrypt_with_proof(self, value: int) -> tuple[int, int]:
        self.decryptions += 1
        return self.key.decrypt_with_proof(value)


@pytest.mark.parametrize(("packing", "per_step"), [(True, 2), (False, 3 + 3)])
def test_packing_decrypts_once_per_party_per_batch(
    key: PrivateKey,
    data: tuple[list[str], np.ndarray, np.ndarray, np.ndarray],
    packing: bool,
    per_step: int,
) -> None:
    """Packed: the host's 3 masked gradients in one value, the bureau's Σ D and 2 gradients
    in another. Unpacked: 3 + (1 + 2) decryptions for the same step, same result."""
    ids, y, xh, xb = data
    counting = CountingKey(key)
    config = CONFIG.replace(packing=packing)
    host_pre, bureau_pre = _preprocessing(data)
    bureau = BureauParty(
        {i: int(v) for i, v in zip(ids, y, strict=True)},
        counting,  # type: ignore[arg-type]
        config,
        rows=dict(zip(ids, xb, strict=True)),
        feature_names=["b0", "b1"],
        preprocessing=bureau_pre,
    )
    host = HostParty(
        "node",
        dict(zip(ids, xh, strict=True)),
        ["h0", "h1", "h2"],
        key.public_key,
        config,
        preprocessing=host_pre,
    )
    host.weights[:] = [0.3, -0.2, 0.1]
    batch = ids[:40]
    bureau.step(batch, [host.forward(batch)], [host], 0.5)
    assert counting.decryptions == per_step
    # Same step, other mode: the weights agree to fixed-point rounding.
    other_bureau, other_host = _parties(key, data, CONFIG.replace(packing=not packing))
    other_host.weights[:] = [0.3, -0.2, 0.1]
    other_bureau.step(batch, [other_host.forward(batch)], [other_host], 0.5)
    np.testing.assert_allclose(host.weights, other_host.weights, atol=1e-6)
    np.testing.assert_allclose(bureau.weights, other_bureau.weights, atol=1e-6)
    assert abs(bureau.intercept - other_bureau.intercept) < 1e-6


def test_packed_evaluation_scores_equal_unpacked(
    key: PrivateKey, data: tuple[list[str], np.ndarray, np.ndarray, np.ndarray]
) -> None:
    """31 rows per ciphertext at 2048 bits; negative scores and a short last chunk."""
    ids = data[0]
    bureau, host = _parties(key, data)
    host.weights[:] = [1.5, -2.0, 0.75]
    bureau.weights[:] = [0.5, -0.25]
    bureau.intercept = -0.3
    rows = ids[:70]  # 31 + 31 + 8
    packed = host.forward_packed(rows, 64, 1)
    assert len(packed) == 3
    for c in packed:
        Ciphertext.validated(key.public_key, c.value)
    unpacked = bureau.scores(rows, [host.forward(rows)])
    np.testing.assert_allclose(bureau.scores_packed(rows, [packed], 64, 1), unpacked, atol=1e-5)
    assert np.any(unpacked < 0) and np.any(unpacked > 0)
    np.testing.assert_allclose(evaluation_scores(bureau, [host], rows, CONFIG), unpacked, atol=1e-5)
    # Evaluation is as precise as a bank's query path (scale 10**9), packing on or off.
    host_pre, bureau_pre = _preprocessing(data)
    pos = {i: k for k, i in enumerate(ids)}
    at = [pos[i] for i in rows]
    exact = (
        host_pre.apply(data[2])[at] @ host.weights
        + bureau_pre.apply(data[3])[at] @ bureau.weights
        + bureau.intercept
    )
    for config in (CONFIG, CONFIG.replace(packing=False)):
        np.testing.assert_allclose(
            evaluation_scores(bureau, [host], rows, config), exact, rtol=0, atol=1e-8
        )
    with pytest.raises(InvalidInputError, match="packed ciphertexts"):
        bureau.scores_packed(rows, [packed[:2]], 64, 1)


def test_bad_inputs_are_refused(
    key: PrivateKey, data: tuple[list[str], np.ndarray, np.ndarray, np.ndarray]
) -> None:
    ids = data[0]
    bureau, host = _parties(key, data)
    with pytest.raises(InvalidInputError, match="not among the aligned rows"):
        host.forward(["nobody"])
    with pytest.raises(InvalidInputError, match="residuals for"):
        host.masked_gradient(ids[:3], host.forward(ids[:2]))
    with pytest.raises(InvalidInputError, match="no label"):
        bureau.labels(["nobody"])
    with pytest.raises(InvalidInputError, match="labels must be 0 or 1"):
        BureauParty({"a": 2}, key, CONFIG)
    with pytest.raises(InvalidInputError, match="finite"):
        HostParty("n", {"a": [float("nan")]}, ["x"], key.public_key, CONFIG).forward(["a"])
    with pytest.raises(ValueError, match="batch_size"):
        TrainingConfig(batch_size=0)
    with pytest.raises(InvalidInputError, match="training setting batch_size"):
        TrainingConfig.from_document({"batch_size": 0})
    with pytest.raises(InvalidInputError, match="outstanding"):
        host.apply_gradient([1, 2, 3], [1, 1, 1], 10, 0.1)


def test_small_or_repeated_batches_are_refused_by_the_node(
    key: PrivateKey, data: tuple[list[str], np.ndarray, np.ndarray, np.ndarray]
) -> None:
    """One row's gradient D_i·x_i would give the node the sign of D_i, i.e. the label."""
    ids = data[0]
    _, host = _parties(key, data)
    few = ids[:5]
    with pytest.raises(InvalidInputError, match="at least 32 distinct rows"):
        host.masked_gradient(few, host.forward(few))
    repeated = [ids[0]] * 40
    with pytest.raises(InvalidInputError, match="distinct rows"):
        host.masked_gradient(repeated, host.forward(repeated))


def test_short_tail_batches_join_the_previous_one() -> None:
    from creditshare.federated import split_batches

    ids = [str(i) for i in range(100)]
    assert [len(b) for b in split_batches(ids, 40)] == [40, 60]
    assert [len(b) for b in split_batches(ids, 32)] == [32, 32, 36]
    assert [len(b) for b in split_batches(ids, 50)] == [50, 50]
    assert sorted(i for batch in split_batches(ids, 33) for i in batch) == sorted(ids)


def test_weak_settings_are_refused() -> None:
    cases: list[tuple[dict[str, Any], str]] = [
        ({"mask_bits": 40}, "mask_bits"),
        ({"mask_bits": 400}, "mask_bits"),  # a packed slot must still fit the key
        ({"batch_size": 8}, "batch_size"),
        ({"score_bits": 8}, "score_bits"),
    ]
    for kwargs, message in cases:
        with pytest.raises(InvalidInputError, match=message):
            TrainingConfig.from_document(kwargs)


def test_node_takes_only_proven_decryptions_of_its_own_gradient(
    key: PrivateKey, data: tuple[list[str], np.ndarray, np.ndarray, np.ndarray]
) -> None:
    """A bureau answering values of its choosing could set a node's weights at will."""
    ids = data[0][:40]
    _, host = _parties(key, data)
    residuals = [FastEncryptor(key.public_key).zero() for _ in ids]
    masked = host.masked_gradient(ids, residuals)
    opened = [key.decrypt_with_proof(c.value) for c in masked]
    values = [FixedPointEncoding.decode_integer(m, key.public_key) for m, _ in opened]
    proofs = [r for _, r in opened]
    forged = [v + 10**12 for v in values]
    with pytest.raises(InvalidInputError, match="not the decryption"):
        host.apply_gradient(forged, proofs, 40, 0.1)
    with pytest.raises(InvalidInputError, match="batch size"):
        host.apply_gradient(values, proofs, 400, 0.1)
    with pytest.raises(InvalidInputError, match="rate must be within"):
        host.apply_gradient(values, proofs, 40, 50.0)
    host.apply_gradient(values, proofs, 40, 0.1)  # the honest answer is taken
    assert np.allclose(host.weights, 0.0)  # zero residuals: zero gradient
