"""``HistogramBuilder``: encrypted (feature, bin) sums equal plaintext numpy histograms.

Real 2048-bit encryption of packed (g, h) rows; the bins are decrypted through
``GradientPacking`` (compress + open), as the bureau does. The same histograms are built
in-process, with a worker process, and with the largest-bin complement switched off:
the products are the same residues mod n² whichever way they are computed.
"""

from __future__ import annotations

import gmpy2
import numpy as np
import pytest
from numpy.typing import NDArray

from creditshare.crypto import FastEncryptor, PrivateKey
from creditshare.errors import InvalidInputError
from creditshare.trees import TreeConfig, _histograms
from creditshare.trees._histograms import HistogramBuilder
from creditshare.trees._packing import GradientPacking

ROWS = 240
Data = tuple[NDArray[np.uint16], NDArray[np.int64], NDArray[np.int64], list[int]]
COUNTS = [8, 5, 16, 3]


@pytest.fixture(scope="module")
def key() -> PrivateKey:
    return PrivateKey.generate()


@pytest.fixture(scope="module")
def data(
    key: PrivateKey,
) -> tuple[NDArray[np.uint16], NDArray[np.int64], NDArray[np.int64], list[int]]:
    """Bins (one feature 90 % in one bin, one with an empty bin), the exact fixed-point
    g and h per row, and each row's ciphertext."""
    rng = np.random.default_rng(11)
    bins = np.stack(
        [
            rng.integers(0, COUNTS[0], ROWS),
            np.where(rng.random(ROWS) < 0.9, 3, rng.integers(0, COUNTS[1], ROWS)),
            rng.integers(0, COUNTS[2] - 1, ROWS),  # the last bin stays empty
            rng.integers(0, COUNTS[3], ROWS),
        ],
        axis=1,
    ).astype(np.uint16)
    packing = GradientPacking.for_job(TreeConfig(), ROWS, key.public_key)
    g = rng.uniform(-1, 1, ROWS)
    h = rng.uniform(0, 0.25, ROWS)
    fast = FastEncryptor(key.public_key)
    cipher = [fast.encrypt_encoded(m).value for m in packing.encode(g, h)]
    gi = np.rint(g * packing.scale).astype(np.int64)
    hi = np.rint(h * packing.scale).astype(np.int64)
    return bins, gi, hi, cipher


def _plain(
    bins: NDArray[np.uint16], gi: NDArray[np.int64], hi: NDArray[np.int64], rows: list[int]
) -> tuple[list[int], list[int]]:
    g, h = [], []
    for f, count in enumerate(COUNTS):
        for b in range(count):
            members = [r for r in rows if bins[r, f] == b]
            g.append(int(gi[members].sum()))
            h.append(int(hi[members].sum()))
    return g, h


def _open(key: PrivateKey, sums: list[int]) -> tuple[list[int], list[int]]:
    packing = GradientPacking.for_job(TreeConfig(), ROWS, key.public_key)
    gs, hs = packing.open(packing.compress(sums, key.public_key), len(sums), key)
    return [round(v * packing.scale) for v in gs], [round(v * packing.scale) for v in hs]


def test_encrypted_histograms_equal_plaintext_ones(key: PrivateKey, data: Data) -> None:
    bins, gi, hi, cipher = data
    builder = HistogramBuilder(key.public_key, bins, COUNTS)
    builder.set_gradients(list(range(ROWS)), cipher)
    rng = np.random.default_rng(5)
    subsets = [
        list(range(ROWS)),
        sorted(rng.choice(ROWS, 37, replace=False).tolist()),
        rng.permutation(ROWS)[:120].tolist(),  # any order
        [17],
    ]
    for rows in subsets:
        sums = builder.histogram(rows)
        assert len(sums) == sum(COUNTS)
        assert _open(key, sums) == _plain(bins, gi, hi, rows)
    builder.close()


def test_workers_and_the_complement_give_the_same_products(
    key: PrivateKey, data: Data, monkeypatch: pytest.MonkeyPatch
) -> None:
    bins, gi, hi, cipher = data
    rows = [*range(0, ROWS, 2), 1, 3, 5]
    plain = HistogramBuilder(key.public_key, bins, COUNTS)
    plain.set_gradients(list(range(ROWS)), cipher)
    with_complement = plain.histogram(rows)
    with monkeypatch.context() as patch:
        patch.setattr(_histograms, "_INVERSE_COST", 10**9)  # never worth it
        direct = plain.histogram(rows)
    assert with_complement == direct
    # Features binned jointly in pairs (marginals from the cells) or one at a time.
    columns = bins[rows]
    values = [gmpy2.mpz(cipher[r]) for r in rows]
    nsq = gmpy2.mpz(key.public_key.n_squared)
    plan = _histograms._plan(columns, COUNTS, pairs=True)
    assert any(len(unit.features) == 2 for unit in plan)
    by_pairs = _histograms._feature_sums(nsq, columns, COUNTS, values, pairs=True)
    alone = _histograms._feature_sums(nsq, columns, COUNTS, values, pairs=False)
    assert [int(v) for v in by_pairs] == [int(v) for v in alone] == direct
    pooled = HistogramBuilder(key.public_key, bins, COUNTS, workers=1)
    try:
        assert pooled.workers == 1
        pooled.set_gradients(list(range(ROWS)), cipher)
        assert pooled.histogram(rows) == direct
        assert _open(key, direct) == _plain(bins, gi, hi, rows)
        # A new tree's gradients replace the old ones everywhere (here: the rows' order).
        shuffled = list(reversed(cipher))
        pooled.set_gradients(list(range(ROWS)), shuffled)
        plain.set_gradients(list(range(ROWS)), shuffled)
        assert pooled.histogram(rows) == plain.histogram(rows)
    finally:
        pooled.close()
        plain.close()
    assert pooled.workers == 0
    assert pooled.histogram(rows) == plain.histogram(rows)  # in-process after close


def test_gradients_for_part_of_the_rows(key: PrivateKey, data: Data) -> None:
    bins, gi, hi, cipher = data
    builder = HistogramBuilder(key.public_key, bins, COUNTS)
    fit = list(range(0, ROWS, 3))
    builder.set_gradients(fit, [cipher[r] for r in fit])
    assert _open(key, builder.histogram(fit[:50])) == _plain(bins, gi, hi, fit[:50])
    with pytest.raises(InvalidInputError, match="row 1 has no gradient"):
        builder.histogram([0, 1, 3])


def test_bad_input_is_refused(key: PrivateKey, data: Data) -> None:
    bins, _, _, cipher = data
    pub = key.public_key
    with pytest.raises(InvalidInputError, match="uint16"):
        HistogramBuilder(pub, bins.astype(np.int32), COUNTS)
    with pytest.raises(InvalidInputError, match="lengths must match"):
        HistogramBuilder(pub, bins, COUNTS[:3])
    with pytest.raises(InvalidInputError, match="feature 1 has a bin index 4"):
        HistogramBuilder(pub, bins, [8, 4, 16, 3])
    builder = HistogramBuilder(pub, bins, COUNTS)
    with pytest.raises(InvalidInputError, match="lengths must match"):
        builder.set_gradients([0, 1], cipher[:1])
    with pytest.raises(InvalidInputError, match="repeat a row"):
        builder.set_gradients([0, 0], cipher[:2])
    with pytest.raises(InvalidInputError, match=f"row {ROWS} is outside"):
        builder.set_gradients([ROWS], cipher[:1])
    with pytest.raises(InvalidInputError, match=r"ciphertext 1 \(row 4\) is out of range"):
        builder.set_gradients([3, 4], [cipher[0], pub.n_squared])
    builder.set_gradients(list(range(ROWS)), cipher)
    with pytest.raises(InvalidInputError, match="row -1 is outside"):
        builder.histogram([-1, 2])
    with pytest.raises(InvalidInputError, match="repeat a row"):
        builder.histogram([2, 2])
    with pytest.raises(InvalidInputError, match="integers"):
        builder.histogram([0.5])  # type: ignore[list-item]
    assert builder.histogram([]) == [1] * sum(COUNTS)


def test_a_dead_worker_share_is_computed_in_process(key: PrivateKey, data: Data) -> None:
    bins, gi, hi, cipher = data
    rows = list(range(ROWS))
    builder = HistogramBuilder(key.public_key, bins, COUNTS, workers=1)
    try:
        builder.set_gradients(rows, cipher)
        expected = builder.histogram(rows)
        builder._processes[0].kill()
        builder._processes[0].join(timeout=60)
        assert builder.histogram(rows) == expected
        assert builder.workers == 0
        assert _open(key, expected) == _plain(bins, gi, hi, rows)
    finally:
        builder.close()
