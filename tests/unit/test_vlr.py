"""Vertical logistic regression under real 2048-bit Paillier, in one process.

The encrypted protocol must reproduce, up to fixed-point rounding, the same
mini-batch SGD run in plaintext; and each party must see only what the
protocol allows it to see.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pytest

from creditshare.crypto import Ciphertext, FastEncryptor, FixedPointEncoding, PrivateKey
from creditshare.errors import InvalidInputError
from creditshare.federated import (
    BureauParty,
    HostParty,
    TrainingConfig,
    auc,
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


def _parties(
    key: PrivateKey, data: tuple[list[str], np.ndarray, np.ndarray, np.ndarray]
) -> tuple[BureauParty, HostParty]:
    ids, y, xh, xb = data
    bureau = BureauParty(
        {i: int(v) for i, v in zip(ids, y, strict=True)},
        key,
        CONFIG,
        rows=dict(zip(ids, xb, strict=True)),
        feature_names=["b0", "b1"],
    )
    host = HostParty(
        "node", dict(zip(ids, xh, strict=True)), ["h0", "h1", "h2"], key.public_key, CONFIG
    )
    return bureau, host


def _plaintext_reference(
    data: tuple[list[str], np.ndarray, np.ndarray, np.ndarray], fit: Sequence[str]
) -> tuple[np.ndarray, np.ndarray, float]:
    """The same SGD, batch order and Taylor residual, with no encryption at all."""
    ids, y, xh, xb = data
    pos = {i: k for k, i in enumerate(ids)}
    clip = CONFIG.feature_clip
    wh, wb, b = np.zeros(HOST_FEATURES), np.zeros(BUREAU_FEATURES), 0.0
    rng = np.random.default_rng(CONFIG.seed)
    order_ids = np.array(list(fit))
    for epoch in range(CONFIG.max_epochs):
        order = order_ids[rng.permutation(len(order_ids))]
        for s in range(0, len(order), CONFIG.batch_size):
            rows = [pos[i] for i in order[s : s + CONFIG.batch_size]]
            h, g = np.clip(xh[rows], -clip, clip), np.clip(xb[rows], -clip, clip)
            d = 0.5 + 0.25 * (h @ wh + g @ wb + b) - y[rows]
            rate = CONFIG.rate(epoch)
            wh = wh - rate * (h.T @ d / len(rows))
            wb = wb - rate * (g.T @ d / len(rows))
            b -= rate * d.mean()
    return wh, wb, b


def test_encrypted_training_matches_plaintext_sgd(
    key: PrivateKey, data: tuple[list[str], np.ndarray, np.ndarray, np.ndarray]
) -> None:
    ids = data[0]
    bureau, host = _parties(key, data)
    fit, valid = ids[:120], ids[120:]
    result = train(bureau, [host], fit, valid, CONFIG)
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


def test_what_each_party_sees(
    key: PrivateKey, data: tuple[list[str], np.ndarray, np.ndarray, np.ndarray]
) -> None:
    ids = data[0]
    bureau, host = _parties(key, data)
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
    true_gradient = (before - host.weights) / 0.5  # what the node learnt, unmasked
    scale = 4 * 40 * (1 << CONFIG.score_bits) * (1 << CONFIG.feature_bits)
    for value, g in zip(masked, true_gradient, strict=True):
        assert abs(value / scale - g) > 1e6  # the mask dwarfs the gradient
    assert all(isinstance(s, Ciphertext) for s in spy.sent)


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
    with pytest.raises(InvalidInputError, match="batch_size"):
        TrainingConfig(batch_size=0)
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
    for kwargs, message in (
        ({"mask_bits": 40}, "mask_bits"),
        ({"batch_size": 8}, "batch_size"),
        ({"score_bits": 8}, "score_bits"),
    ):
        with pytest.raises(InvalidInputError, match=message):
            TrainingConfig(**kwargs)


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
