"""Vertical (hetero) logistic regression under Paillier, bureau as key holder.

Parties: the bureau holds labels (and optionally features) and the Paillier
private key; each data node ("host") holds features for the aligned ids and its
own weight shard. Per mini-batch B (Hardy et al. 2017; FATE's hetero LR):

1. each host sends [[u_h]] = Enc(X_h·w_h) for B, under the bureau's key;
2. the bureau forms the encrypted residual with the first-order Taylor
   expansion of the logistic loss, σ(z) ≈ ½ + z/4, scaled by 4 to stay integral:
   [[D]] = Π_h [[u_h]] · Enc(u_b + b + 2 − 4y), re-randomised so a host cannot
   link it to the [[u_h]] it produced (and so learn y by division);
3. each host computes [[g_h]] = Σ_i [[D_i]]·x_i (ciphertext inner products),
   adds a random mask R_h under encryption and sends [[g_h + R_h]];
4. the bureau decrypts only masked values and returns them; the host removes
   R_h and updates its shard: w_h ← w_h − lr·(g_h/(4|B|) + λ·w_h).

What each party sees: hosts see only ciphertexts under the bureau's key and
their own unmasked gradient; the bureau sees masked host gradients, its own
gradient, and (for evaluation) Σ_h u_h per scored id; the relay sees
ciphertexts. Each party preprocesses its features locally (``Preprocessing``:
standardised and winsorised at ``feature_clip``, which also keeps the Taylor
expansion accurate); the preprocessing is part of the party's shard, so scoring
applies exactly what training did.

Packing (``TrainingConfig.packing``, on by default): a host packs its masked
per-feature gradients into as few plaintexts as the key holds (Horner's rule on
the ciphertexts, each slot masked separately), and the bureau packs its own
gradient sums the same way, so each side decrypts once per batch instead of once
per feature. Evaluation scores always travel packed, ~31 rows per ciphertext, at
``EVAL_SCORE_BITS`` of fraction. Residuals stay one
ciphertext per row: a host multiplies each by its own feature values, which slots
cannot do.
"""

from __future__ import annotations

import math
import secrets
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np
from numpy.typing import NDArray

from creditshare.crypto import (
    Ciphertext,
    Encryptor,
    FastEncryptor,
    FixedPointEncoding,
    PrivateKey,
    PublicKey,
    SlotLayout,
)
from creditshare.crypto import dot as cipher_dot
from creditshare.errors import DecryptionOverflowError, InvalidInputError
from creditshare.federated._config import TrainingConfig
from creditshare.federated._metrics import auc, log_loss
from creditshare.federated._preprocessing import Preprocessing

__all__ = [
    "EVAL_SCORE_BITS",
    "EVAL_SLOT_BITS",
    "MIN_BATCH_ROWS",
    "BureauParty",
    "EpochReport",
    "HostEndpoint",
    "HostParty",
    "TrainingConfig",
    "TrainingResult",
    "evaluation_scores",
    "split_batches",
    "train",
]

Matrix = NDArray[np.float64]

#: Nodes refuse gradient requests over fewer rows: with one row (or a row repeated),
#: the gradient D_i·x_i would tell a node the sign of D_i, and so the label.
MIN_BATCH_ROWS = 32

#: Slot width of packed evaluation scores: a linear score in 2^score_bits fixed point
#: with room for the sum over hosts; 31 rows per 2048-bit ciphertext.
EVAL_SLOT_BITS = 64
#: Magnitude bits allowed for a residual D = (z + 2 − 4y)·2^score_bits beyond the
#: fixed-point bits: |z| < 2^64 is far past any score a model produces.
_RESIDUAL_BITS = 64
#: Fixed-point bits of evaluation scores (packed Forward): at least as precise as a
#: bank's query path (scale 10**9 < 2^30), so the published test metrics are computed
#: from the scores banks get, not from coarser ones. 2^63 / 2^30 leaves room for
#: scores far beyond any model's, summed over many nodes.
EVAL_SCORE_BITS = 30


def _matrix(rows: Mapping[str, Sequence[float]], ids: Sequence[str]) -> Matrix:
    """The (already preprocessed) rows of ``ids``, in order."""
    try:
        data: Matrix = np.array([rows[i] for i in ids], dtype=float)
    except KeyError as exc:
        raise InvalidInputError(f"id {exc.args[0]!r} is not among the aligned rows") from None
    if not np.all(np.isfinite(data)):
        raise InvalidInputError("features must be finite numbers")
    return data


def _preprocessed(
    rows: Mapping[str, Sequence[float]],
    names: Sequence[str],
    preprocessing: Preprocessing | None,
) -> Mapping[str, Sequence[float]]:
    if preprocessing is None:
        return rows
    if preprocessing.names != tuple(names):
        raise InvalidInputError("the preprocessing must name the party's features, in order")
    return preprocessing.apply_rows(rows)


class HostEndpoint(Protocol):
    """What the protocol needs from a data node; in-process or over gRPC."""

    @property
    def name(self) -> str: ...

    def forward(self, ids: Sequence[str]) -> list[Ciphertext]: ...

    def masked_gradient(
        self, ids: Sequence[str], residuals: Sequence[Ciphertext]
    ) -> list[Ciphertext]: ...

    def forward_packed(
        self, ids: Sequence[str], slot_bits: int, additions: int
    ) -> list[Ciphertext]: ...

    def apply_gradient(
        self, masked_plain: Sequence[int], proofs: Sequence[int], batch_size: int, rate: float
    ) -> None: ...


class HostParty:
    """A data node's side: features and weight shard never leave it."""

    def __init__(
        self,
        name: str,
        rows: Mapping[str, Sequence[float]],
        feature_names: Sequence[str],
        bureau_key: PublicKey,
        config: TrainingConfig,
        encryptor: Encryptor | None = None,
        preprocessing: Preprocessing | None = None,
    ) -> None:
        self.name = name
        self.feature_names = tuple(feature_names)
        #: What the rows went through (None: they came preprocessed); kept with the shard.
        self.preprocessing = preprocessing
        self._rows = _preprocessed(rows, self.feature_names, preprocessing)
        self._config = config
        self._key = bureau_key
        if encryptor is not None and encryptor.public_key != bureau_key:
            raise InvalidInputError("the encryptor is for another public key")
        self._encryptor = encryptor or FastEncryptor(bureau_key)
        self._score = FixedPointEncoding(1 << config.score_bits)
        self._eval = FixedPointEncoding(1 << EVAL_SCORE_BITS)
        self.weights = np.zeros(len(self.feature_names))
        #: Per outstanding masked ciphertext: the slot width (0: one value) and its masks.
        self._pending: list[tuple[int, list[int]]] | None = None
        self._masked: list[Ciphertext] = []
        self._batch_rows = 0

    def forward(self, ids: Sequence[str]) -> list[Ciphertext]:
        u = _matrix(self._rows, ids) @ self.weights
        return [self._encryptor.encrypt(float(v), self._score) for v in u]

    def forward_packed(
        self, ids: Sequence[str], slot_bits: int, additions: int
    ) -> list[Ciphertext]:
        """[[u]] for consecutive rows in the slots of one ciphertext (evaluation only).

        ``additions`` is how many packed vectors the bureau will add slot by slot (one
        per host): values are checked against that headroom before anything is sent.
        """
        layout = SlotLayout.for_key(self._key, slot_bits, additions)
        u = _matrix(self._rows, ids) @ self.weights
        integers = [self._eval.to_integer(float(v)) for v in u]
        packed = [
            FixedPointEncoding.encode_integer(
                layout.pack(integers[s : s + layout.slots]), self._key
            )
            for s in range(0, len(integers), layout.slots)
        ]
        return [self._encryptor.encrypt_encoded(m) for m in packed]

    def masked_gradient(
        self, ids: Sequence[str], residuals: Sequence[Ciphertext]
    ) -> list[Ciphertext]:
        if len(residuals) != len(ids):
            raise InvalidInputError(f"{len(residuals)} residuals for {len(ids)} ids")
        minimum = max(MIN_BATCH_ROWS, 4 * len(self.feature_names))
        if len(set(ids)) != len(ids) or len(ids) < minimum:
            raise InvalidInputError(
                f"a gradient needs at least {minimum} distinct rows (got {len(set(ids))})"
            )
        for c in residuals:
            Ciphertext.validated(self._key, c.value)
        x = _matrix(self._rows, ids)
        xi = np.rint(x * (1 << self._config.feature_bits)).astype(np.int64)
        # |Σ D·x| ≤ |B| · max|D| · max|x|; D = z + 2 − 4y is bounded by the score range.
        bound_bits = _gradient_bits(len(ids), self._config)
        value_bits = bound_bits + self._config.mask_bits
        gradients = [
            cipher_dot(list(residuals), [int(v) for v in xi[:, j]])
            for j in range(len(self.feature_names))
        ]
        # A masked slot holds g + r with |g| < 2^bound_bits and r < 2^value_bits; the
        # slot keeps a sign bit and the packing guard bit above that.
        slot_bits = value_bits + 3 if self._config.packing else 0
        out, pending = [], []
        for chunk in _chunks(gradients, self._key, slot_bits):
            masks = [secrets.randbits(value_bits) for _ in chunk]
            if slot_bits:
                total = _horner(chunk, slot_bits)
                mask = SlotLayout(slot_bits, len(chunk)).pack(masks)
            else:
                total, mask = chunk[0], masks[0]
            out.append(total + self._encryptor.encrypt_encoded(mask))
            pending.append((slot_bits, masks))
        self._pending = pending
        self._masked = out
        self._batch_rows = len(ids)
        return out

    def apply_gradient(
        self, masked_plain: Sequence[int], proofs: Sequence[int], batch_size: int, rate: float
    ) -> None:
        """Unmask and step, once each value is proven to be our ciphertext's decryption.

        Without the proof a bureau could answer any value and so set this node's
        weights at will (and then read features back through its scores).
        """
        pending = self._pending
        if pending is None or not len(masked_plain) == len(proofs) == len(pending):
            raise InvalidInputError("gradient does not match an outstanding masked request")
        if batch_size != self._batch_rows:
            raise InvalidInputError(
                f"batch size {batch_size} is not the {self._batch_rows} rows asked"
            )
        if not 0 < rate <= self._config.learning_rate:
            raise InvalidInputError(f"rate must be within (0, {self._config.learning_rate}]")
        n = self._key.n
        for k, (value, r, c) in enumerate(zip(masked_plain, proofs, self._masked, strict=True)):
            if not self._key.verify_decryption(c.value, value % n, r):
                raise InvalidInputError(f"value {k} is not the decryption of the masked gradient")
        scale = 4.0 * batch_size * (1 << self._config.score_bits) * (1 << self._config.feature_bits)
        unmasked: list[int] = []
        for k, (value, (slot_bits, masks)) in enumerate(zip(masked_plain, pending, strict=True)):
            if not slot_bits:
                unmasked.append(value - masks[0])
                continue
            try:
                digits = SlotLayout(slot_bits, len(masks)).unpack(value)
            except DecryptionOverflowError:
                raise InvalidInputError(f"value {k} does not unpack into its slots") from None
            unmasked.extend(d - m for d, m in zip(digits, masks, strict=True))
        grad = np.array([g / scale for g in unmasked])
        self._pending = None
        self.weights -= rate * (grad + self._config.l2 * self.weights)

    @property
    def public_key(self) -> PublicKey:
        return self._key

    def shard(self) -> dict[str, float]:
        return {n: float(w) for n, w in zip(self.feature_names, self.weights, strict=True)}


class BureauParty:
    """The label holder and key holder; it decrypts only masked or aggregated values."""

    def __init__(
        self,
        labels: Mapping[str, int],
        key: PrivateKey,
        config: TrainingConfig,
        rows: Mapping[str, Sequence[float]] | None = None,
        feature_names: Sequence[str] = (),
        encryptor: Encryptor | None = None,
        preprocessing: Preprocessing | None = None,
    ) -> None:
        """``rows`` are the bureau's own features (in-process only), transformed by
        ``preprocessing`` (the same class nodes fit; None: they came preprocessed)."""
        bad = [i for i, y in labels.items() if y not in (0, 1)]
        if bad:
            raise InvalidInputError(f"labels must be 0 or 1; id {bad[0]!r} is not")
        self._labels = labels
        self._key = key
        self._config = config
        self.feature_names = tuple(feature_names)
        self.preprocessing = preprocessing
        self._rows = _preprocessed(rows or {}, self.feature_names, preprocessing)
        if encryptor is not None and encryptor.public_key != key.public_key:
            raise InvalidInputError("the encryptor is for another public key")
        self._encryptor = encryptor or FastEncryptor(key.public_key)
        self._score = FixedPointEncoding(1 << config.score_bits)
        self._eval = FixedPointEncoding(1 << EVAL_SCORE_BITS)
        self.weights = np.zeros(len(self.feature_names))
        self.intercept = 0.0

    @property
    def public_key(self) -> PublicKey:
        return self._key.public_key

    def labels(self, ids: Sequence[str]) -> NDArray[np.float64]:
        try:
            return np.array([self._labels[i] for i in ids], dtype=float)
        except KeyError as exc:
            raise InvalidInputError(f"id {exc.args[0]!r} has no label") from None

    def _own_scores(self, ids: Sequence[str]) -> tuple[Matrix, NDArray[np.float64]]:
        if not self.feature_names:
            return np.zeros((len(ids), 0)), np.full(len(ids), self.intercept)
        x = _matrix(self._rows, ids)
        return x, x @ self.weights + self.intercept

    def step(
        self,
        ids: Sequence[str],
        forwards: Sequence[Sequence[Ciphertext]],
        hosts: Sequence[HostEndpoint],
        rate: float,
    ) -> None:
        """One mini-batch: residuals out, masked gradients in, all shards updated."""
        y = self.labels(ids)
        x, own = self._own_scores(ids)
        shift = own + 2.0 - 4.0 * y
        residuals = []
        for i, s in enumerate(shift):
            total = Ciphertext(self.public_key, 1).add_encoded(
                self._score.encode(float(s), self.public_key)
            )
            for forward in forwards:
                total = total + forward[i]
            residuals.append(self._encryptor.rerandomize(total))
        for host in hosts:
            masked = host.masked_gradient(ids, residuals)
            opened = [self._key.decrypt_with_proof(c.value) for c in masked]
            values = [FixedPointEncoding.decode_integer(m, self.public_key) for m, _ in opened]
            host.apply_gradient(values, [r for _, r in opened], len(ids), rate)
        scale = 4.0 * len(ids) * (1 << self._config.score_bits)
        xi = np.rint(x * (1 << self._config.feature_bits)).astype(np.int64)
        sums = [_sum(residuals, self.public_key)] + [
            cipher_dot(residuals, [int(v) for v in xi[:, j]])
            for j in range(len(self.feature_names))
        ]
        # Σ D and Σ D·x_j fit the hosts' gradient bound; a sign bit and the guard on top.
        slot_bits = _gradient_bits(len(ids), self._config) + 3 if self._config.packing else 0
        totals = self._decrypt_integers(sums, slot_bits)
        if self.feature_names:
            grads = np.array(totals[1:]) / (scale * (1 << self._config.feature_bits))
            self.weights -= rate * (grads + self._config.l2 * self.weights)
        self.intercept -= rate * totals[0] / scale

    def _decrypt_integer(self, c: Ciphertext) -> int:
        return FixedPointEncoding.decode_integer(self._key.raw_decrypt(c.value), self.public_key)

    def _decrypt_integers(self, ciphertexts: Sequence[Ciphertext], slot_bits: int) -> list[int]:
        """Signed plaintexts, packed ``slot_bits`` wide into as few decryptions as fit."""
        if not slot_bits:
            return [self._decrypt_integer(c) for c in ciphertexts]
        out: list[int] = []
        for chunk in _chunks(ciphertexts, self.public_key, slot_bits):
            packed = self._decrypt_integer(_horner(chunk, slot_bits))
            out.extend(SlotLayout(slot_bits, len(chunk)).unpack(packed))
        return out

    def scores(
        self, ids: Sequence[str], predictions: Sequence[Sequence[Ciphertext]]
    ) -> NDArray[np.float64]:
        """Linear scores: hosts' encrypted parts are summed before decryption."""
        _, own = self._own_scores(ids)
        out = np.empty(len(ids))
        for i in range(len(ids)):
            total = _sum([p[i] for p in predictions], self.public_key)
            out[i] = own[i] + self._score.decrypt(total, self._key)
        return out

    def scores_packed(
        self,
        ids: Sequence[str],
        predictions: Sequence[Sequence[Ciphertext]],
        slot_bits: int,
        additions: int,
    ) -> NDArray[np.float64]:
        """As ``scores``, from ``forward_packed`` answers: one decryption per ~31 rows."""
        layout = SlotLayout.for_key(self.public_key, slot_bits, additions)
        chunks = -(-len(ids) // layout.slots)
        if any(len(p) != chunks for p in predictions):
            raise InvalidInputError(f"expected {chunks} packed ciphertexts from every host")
        _, own = self._own_scores(ids)
        values: list[int] = []
        for k in range(chunks):
            count = min(layout.slots, len(ids) - k * layout.slots)
            total = _sum([p[k] for p in predictions], self.public_key)
            values.extend(layout.unpack(self._decrypt_integer(total), count))
        return own + np.array(values, dtype=float) / self._eval.scale


def _gradient_bits(rows: int, config: TrainingConfig) -> int:
    """|Σ_i D_i·x_i| < 2^this over ``rows`` rows (D and x in fixed point)."""
    return rows.bit_length() + _RESIDUAL_BITS + config.score_bits + config.feature_bits


def _chunks(
    items: Sequence[Ciphertext], key: PublicKey, slot_bits: int
) -> list[Sequence[Ciphertext]]:
    """Consecutive groups that fit one plaintext at ``slot_bits`` (0: one per group)."""
    per = SlotLayout.for_key(key, slot_bits).slots if slot_bits else 1
    return [items[s : s + per] for s in range(0, len(items), per)]


def _horner(chunk: Sequence[Ciphertext], slot_bits: int) -> Ciphertext:
    """[[Σ_k v_k·2^(k·slot_bits)]] from [[v_k]]: v_0 in the lowest slot."""
    total = chunk[-1]
    for c in reversed(chunk[:-1]):
        total = total.multiply(1 << slot_bits) + c
    return total


def evaluation_scores(
    bureau: BureauParty,
    hosts: Sequence[HostEndpoint],
    ids: Sequence[str],
    config: TrainingConfig,
) -> NDArray[np.float64]:
    """Linear scores for ``ids``: the hosts' parts summed under encryption, then decrypted.

    Always packed, whatever ``config.packing`` says of gradients: packed scores carry
    ``EVAL_SCORE_BITS`` of fraction, so validation and the published test metrics are
    computed at least as precisely as a bank's query path scores the same rows.
    """
    additions = max(1, len(hosts))
    packed = [h.forward_packed(ids, EVAL_SLOT_BITS, additions) for h in hosts]
    return bureau.scores_packed(ids, packed, EVAL_SLOT_BITS, additions)


def _sum(ciphertexts: Sequence[Ciphertext], key: PublicKey) -> Ciphertext:
    total = Ciphertext(key, 1)
    for c in ciphertexts:
        total = total + c
    return total


@dataclass(frozen=True, slots=True)
class EpochReport:
    epoch: int
    batches: int
    validation_loss: float
    validation_auc: float
    seconds: float


@dataclass(slots=True)
class TrainingResult:
    epochs: list[EpochReport] = field(default_factory=list)
    stopped_early: bool = False
    host_shards: dict[str, dict[str, float]] = field(default_factory=dict)
    bureau_weights: dict[str, float] = field(default_factory=dict)
    intercept: float = 0.0


def split_batches(ids: list[str], batch_size: int) -> list[list[str]]:
    """Mini-batches in order; a short tail joins the batch before it (see MIN_BATCH_ROWS)."""
    batches = [ids[s : s + batch_size] for s in range(0, len(ids), batch_size)]
    if len(batches) > 1 and len(batches[-1]) < max(MIN_BATCH_ROWS, batch_size // 2):
        batches[-2].extend(batches.pop())
    return batches


def train(
    bureau: BureauParty,
    hosts: Sequence[HostEndpoint],
    train_ids: Sequence[str],
    valid_ids: Sequence[str],
    config: TrainingConfig,
    on_epoch: Callable[[EpochReport], None] | None = None,
    on_batch: Callable[[int, int], None] | None = None,
    clock: Callable[[], float] | None = None,
) -> TrainingResult:
    """Mini-batch training with early stopping on validation loss."""
    now = clock or time.perf_counter
    rng = np.random.default_rng(config.seed)
    ids = np.array(list(train_ids))
    result = TrainingResult()
    best = math.inf
    stale = 0
    for epoch in range(config.max_epochs):
        started = now()
        order = ids[rng.permutation(len(ids))]
        batches = split_batches(list(order), config.batch_size)
        for b, batch in enumerate(batches):
            forwards = [host.forward(batch) for host in hosts]
            bureau.step(batch, forwards, hosts, config.rate(epoch))
            if on_batch:
                on_batch(epoch, b)
        scores = evaluation_scores(bureau, hosts, valid_ids, config)
        labels = bureau.labels(valid_ids)
        both_classes = 0 < labels.sum() < len(labels)
        # A tiny validation split can hold one class only: then AUC is undefined (NaN).
        report = EpochReport(
            epoch,
            len(batches),
            log_loss(labels, scores),
            auc(labels, scores) if both_classes else math.nan,
            now() - started,
        )
        result.epochs.append(report)
        if on_epoch:
            on_epoch(report)
        if report.validation_loss < best - config.min_improvement:
            best, stale = report.validation_loss, 0
        else:
            stale += 1
            if stale >= config.early_stopping_rounds:
                result.stopped_early = True
                break
    result.intercept = bureau.intercept
    result.bureau_weights = dict(zip(bureau.feature_names, map(float, bureau.weights), strict=True))
    for host in hosts:
        if isinstance(host, HostParty):
            result.host_shards[host.name] = host.shard()
    return result
