"""``GradientPacking``: (g, h) per row in one plaintext, many bin sums per ciphertext.

Bin sums are made under real 2048-bit encryption. A bin of k identical rows is
Enc(v)^k (the homomorphic sum of k copies), so sums over ``max_rows`` rows at the
extremes (g = ±1, h = ¼) cost one exponentiation instead of thousands of encryptions.
"""

from __future__ import annotations

import random

import numpy as np
import pytest

from creditshare.crypto import Ciphertext, FastEncryptor, PrivateKey, PublicKey
from creditshare.errors import DecryptionOverflowError, InvalidInputError
from creditshare.trees import TreeConfig, pack_bits, unpack_bits
from creditshare.trees._packing import GradientPacking


@pytest.fixture(scope="module")
def key() -> PrivateKey:
    return PrivateKey.generate()


@pytest.fixture(scope="module")
def fast(key: PrivateKey) -> FastEncryptor:
    return FastEncryptor(key.public_key)


def _bin(fast: FastEncryptor, plaintext: int, rows: int) -> int:
    """Enc of the sum of ``rows`` copies of one row's plaintext."""
    return fast.encrypt_encoded(plaintext).multiply(rows).value


def _exact(packing: GradientPacking, g: float, h: float, rows: int) -> tuple[float, float]:
    scale = packing.scale
    return rows * round(g * scale) / scale, rows * round(h * scale) / scale


def test_layout_for_the_issue_sizes(key: PrivateKey) -> None:
    packing = GradientPacking.for_job(TreeConfig(), 21_000, key.public_key)
    assert (packing.gradient_bits, packing.max_rows, packing.key_bits) == (32, 21_000, 2048)
    assert packing.modulus == key.public_key.n
    # hessian field: 21,000 · 2^30 < 2^45; slot: sign + guard on top of both fields.
    assert packing.hessian_bits == 45
    assert packing.per_ciphertext * packing.slot_bits <= 2048 - 3
    assert packing.per_ciphertext >= 20
    assert packing.ciphertexts_for(416) == -(-416 // packing.per_ciphertext)


@pytest.mark.parametrize("max_rows", [1, 1024, 21_000])
def test_extremes_over_max_rows_round_trip(
    key: PrivateKey, fast: FastEncryptor, max_rows: int
) -> None:
    """g = ±1 and h = ¼ summed over max_rows rows sit exactly at the fields' bounds."""
    pub = key.public_key
    packing = GradientPacking.for_job(TreeConfig(), max_rows, pub)
    cases = [
        (1.0, 0.25, max_rows),
        (-1.0, 0.25, max_rows),
        (-1.0, 0.0, max_rows),
        (1.0, 0.0, max_rows),
        (-1.0, 0.25, 1),
        (1.0, 0.25, 1),
        (-(2.0**-32), 2.0**-32, 1),  # the smallest non-zero values
        (0.0, 0.0, max_rows),
        (0.5, 0.125, max(1, max_rows // 2)),
    ]
    sums = []
    for g, h in [(g, h) for g, h, _ in cases]:
        (plaintext,) = packing.encode(np.array([g]), np.array([h]))
        assert 0 <= plaintext < pub.n
        sums.append(plaintext)
    cipher = [_bin(fast, m, rows) for m, (_, _, rows) in zip(sums, cases, strict=True)]
    cipher.append(1)  # an empty bin: Enc(0) with randomness 1
    cipher.append(fast.zero().value)
    compressed = packing.compress(cipher, pub)
    assert len(compressed) == packing.ciphertexts_for(len(cipher))
    gs, hs = packing.open(compressed, len(cipher), key)
    expected = [_exact(packing, g, h, rows) for g, h, rows in cases] + [(0.0, 0.0)] * 2
    assert list(zip(gs.tolist(), hs.tolist(), strict=True)) == expected


def test_one_more_row_than_the_layout_holds_is_detected(
    key: PrivateKey, fast: FastEncryptor
) -> None:
    pub = key.public_key
    packing = GradientPacking.for_job(TreeConfig(), 1024, pub)
    (plaintext,) = packing.encode(np.array([1.0]), np.array([0.25]))
    too_many = packing.compress([_bin(fast, plaintext, 1025)], pub)
    with pytest.raises(DecryptionOverflowError, match="compressed ciphertext 0"):
        packing.open(too_many, 1, key)


def test_random_bins_across_ciphertext_boundaries(key: PrivateKey, fast: FastEncryptor) -> None:
    pub = key.public_key
    rng = np.random.default_rng(7)
    rows = 600
    packing = GradientPacking.for_job(TreeConfig(gradient_bits=40), rows, pub)
    per = packing.per_ciphertext
    g = rng.uniform(-1, 1, rows)
    h = rng.uniform(0, 0.25, rows)
    g[:3] = [-1.0, 1.0, 0.0]
    h[:3] = [0.25, 0.0, 0.25]
    row_cipher = [fast.encrypt_encoded(m).value for m in packing.encode(g, h)]
    nsq = pub.n_squared
    scale = packing.scale
    gi = np.rint(g * scale).astype(np.int64)
    hi = np.rint(h * scale).astype(np.int64)
    for count in (1, per - 1, per, per + 1, 2 * per + 3):
        bins = rng.integers(0, count, rows)
        sums = [1] * count
        for r, b in enumerate(bins.tolist()):
            sums[b] = sums[b] * row_cipher[r] % nsq
        compressed = packing.compress(sums, pub)
        assert len(compressed) == -(-count // per)
        gs, hs = packing.open(compressed, count, key)
        want_g = [int(gi[bins == b].sum()) / scale for b in range(count)]
        want_h = [int(hi[bins == b].sum()) / scale for b in range(count)]
        assert gs.tolist() == want_g and hs.tolist() == want_h
    assert packing.compress([], pub) == []
    assert [a.tolist() for a in packing.open([], 0, key)] == [[], []]


def test_compression_is_rerandomised(key: PrivateKey, fast: FastEncryptor) -> None:
    pub = key.public_key
    packing = GradientPacking.for_job(TreeConfig(), 100, pub)
    sums = [fast.encrypt_encoded(m).value for m in packing.encode(np.zeros(3), np.zeros(3))]
    first = packing.compress(sums, pub)
    second = packing.compress(sums, pub, fast)
    assert first[0].value != second[0].value
    assert packing.open(first, 3, key)[0].tolist() == packing.open(second, 3, key)[0].tolist()


def test_a_ciphertext_that_does_not_unpack_is_a_clear_error(
    key: PrivateKey, fast: FastEncryptor
) -> None:
    pub = key.public_key
    packing = GradientPacking.for_job(TreeConfig(), 21_000, pub)
    garbage = random.Random(3).randrange(pub.n // 4, pub.n // 3)
    with pytest.raises(DecryptionOverflowError, match="compressed ciphertext 1"):
        packing.open([fast.zero(), fast.encrypt_encoded(garbage)], packing.per_ciphertext + 1, key)
    # A negative total past the last slot: a carry that no bin sum produces.
    with pytest.raises(DecryptionOverflowError, match="compressed ciphertext 0"):
        packing.open([fast.encrypt_encoded(pub.n - garbage)], 3, key)
    with pytest.raises(InvalidInputError, match="expected 2"):
        packing.open([fast.zero()], packing.per_ciphertext + 1, key)
    other = PrivateKey.generate()
    with pytest.raises(InvalidInputError, match="another key"):
        packing.open([Ciphertext(other.public_key, 1)], 1, key)


def test_bad_gradients_are_refused_naming_the_row(key: PrivateKey) -> None:
    packing = GradientPacking.for_job(TreeConfig(), 10, key.public_key)
    ok = np.zeros(4)
    for g, h, message in [
        (np.array([0.0, np.nan, 0, 0]), ok, "g of row 1"),
        (np.array([0.0, 0, 1.5, 0]), ok, "g of row 2"),
        (ok, np.array([0.0, 0, 0, -0.1]), "h of row 3"),
        (ok, np.array([0.3, 0, 0, 0]), "h of row 0"),
        (ok, np.array([np.inf, 0, 0, 0]), "h of row 0"),
        (ok, np.zeros(3), "shapes"),
        (np.zeros(11), np.zeros(11), "at most 10"),
    ]:
        with pytest.raises(InvalidInputError, match=message):
            packing.encode(g, h)
    bare = GradientPacking(32, 10, 2048)
    with pytest.raises(InvalidInputError, match="needs the key"):
        bare.encode(ok, ok)
    assert bare.encode(ok, ok, key.public_key) == [0, 0, 0, 0]


def test_layouts_are_validated(key: PrivateKey) -> None:
    with pytest.raises(InvalidInputError, match="max_rows"):
        GradientPacking(32, 0, 2048)
    with pytest.raises(InvalidInputError, match="gradient_bits"):
        GradientPacking(1, 10, 2048)
    with pytest.raises(InvalidInputError, match="does not fit"):
        GradientPacking(62, 2**31, 128)
    with pytest.raises(InvalidInputError, match="modulus"):
        GradientPacking(32, 10, 3072, key.public_key.n)
    packing = GradientPacking(32, 10, 3072)
    with pytest.raises(InvalidInputError, match="3072-bit"):
        packing.compress([1], key.public_key)
    stranger: PublicKey = PrivateKey.generate().public_key
    with pytest.raises(InvalidInputError, match="different key"):
        GradientPacking(32, 10, 2048).compress([1], key.public_key, FastEncryptor(stranger))
    with pytest.raises(InvalidInputError, match="bin sum 0"):
        GradientPacking(32, 10, 2048).compress([0], key.public_key)


def test_split_bitmap_is_lsb_first_and_round_trips() -> None:
    bits = [True, False, False, True, False, False, False, False, True, True]
    assert pack_bits(bits) == bytes([0b00001001, 0b00000011])  # the wire format
    for n in (0, 1, 7, 8, 9, 17):
        sample = [(k * 5 + n) % 3 == 0 for k in range(n)]
        assert unpack_bits(pack_bits(sample), n) == sample
    with pytest.raises(ValueError, match="2 bytes cannot hold exactly 17 bits"):
        unpack_bits(bytes(2), 17)
