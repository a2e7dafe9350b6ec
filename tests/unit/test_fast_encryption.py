"""DJN short-exponent encryption (``FastEncryptor``), ``powmod_many`` and ``dot``.

Everything is checked through the real private key of a real 2048-bit Paillier key:
fast ciphertexts must be indistinguishable in use from stock ones (same encoding,
same validation, freely mixed in sums). Timings live in ``bench/crypto.py``, not here.
"""

from __future__ import annotations

import copy
import pickle
import secrets

import gmpy2
import pytest

from creditshare.crypto import (
    Ciphertext,
    FastEncryptor,
    FixedPointEncoding,
    PrivateKey,
    PublicKey,
    dot,
    powmod_many,
)
from creditshare.errors import (
    EncodingOverflowError,
    InvalidCiphertextError,
    InvalidInputError,
)

ENCODING = FixedPointEncoding(10**6)

# --------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def key() -> PrivateKey:
    return PrivateKey.generate()


@pytest.fixture(scope="module")
def pub(key: PrivateKey) -> PublicKey:
    return key.public_key


@pytest.fixture(scope="module")
def fast(pub: PublicKey) -> FastEncryptor:
    return FastEncryptor(pub)


@pytest.fixture(scope="module")
def stranger() -> PublicKey:
    """Another 2048-bit modulus (no private key needed): for key-mismatch checks."""
    while True:
        candidate = secrets.randbits(2048) | (1 << 2047) | 1
        try:
            return PublicKey(candidate)
        except InvalidInputError:
            continue


def _decrypt_raw(key: PrivateKey, ciphertext: Ciphertext) -> int:
    return key.raw_decrypt(ciphertext.value)


def _jacobi(pub: PublicKey, value: int) -> int:
    return int(gmpy2.jacobi(value % pub.n, pub.n))


# --------------------------------------------------------------------------- round trips

VALUES = [0.0, 1.0, -1.0, 0.5, -0.5, 3.141592, -2.718281, 1e-6, -1e-6, 123456.789, -98765.4321]


def test_round_trip_floats(fast: FastEncryptor, key: PrivateKey) -> None:
    for value in VALUES:
        ciphertext = fast.encrypt(value, ENCODING)
        assert ENCODING.decrypt(ciphertext, key) == pytest.approx(value, abs=ENCODING.resolution)


def test_round_trip_integers_exact(fast: FastEncryptor, key: PrivateKey) -> None:
    huge = 10**300  # exact through the integer path of the encoding
    for value in [0, 7, -7, huge, -huge]:
        ciphertext = fast.encrypt(value, ENCODING)
        decoded = ENCODING.decode_integer(_decrypt_raw(key, ciphertext), key.public_key)
        assert decoded == value * ENCODING.scale


def test_round_trip_random_encoded(fast: FastEncryptor, key: PrivateKey, pub: PublicKey) -> None:
    for m in [0, 1, 2, pub.n - 1, pub.n - 2, *(secrets.randbelow(pub.n) for _ in range(8))]:
        assert _decrypt_raw(key, fast.encrypt_encoded(m)) == m


def test_boundaries_of_the_encodable_range(
    fast: FastEncryptor, key: PrivateKey, pub: PublicKey
) -> None:
    for integer in [pub.max_plaintext, -pub.max_plaintext, 0, 1, -1]:
        encoded = FixedPointEncoding.encode_integer(integer, pub)
        decrypted = _decrypt_raw(key, fast.encrypt_encoded(encoded))
        assert decrypted == encoded
        assert FixedPointEncoding.decode_integer(decrypted, pub) == integer


def test_encrypt_encoded_refuses_out_of_range(fast: FastEncryptor, pub: PublicKey) -> None:
    for bad in [-1, pub.n, pub.n + 5]:
        with pytest.raises(InvalidInputError):
            fast.encrypt_encoded(bad)
    with pytest.raises(ValueError):  # same family as PublicKey.raw_encrypt's error
        fast.encrypt_encoded(-1)
    with pytest.raises(InvalidInputError):
        fast.encrypt_encoded(True)


def test_encrypt_overflow_is_refused(fast: FastEncryptor, pub: PublicKey) -> None:
    too_big = pub.max_plaintext // ENCODING.scale + 1  # ints encode exactly, whatever the size
    with pytest.raises(EncodingOverflowError):
        fast.encrypt(too_big, ENCODING)
    with pytest.raises(EncodingOverflowError):
        fast.encrypt(-too_big, ENCODING)
    with pytest.raises(EncodingOverflowError):
        fast.encrypt_many([1.0, float("inf")], ENCODING)


def test_encrypt_many(fast: FastEncryptor, key: PrivateKey) -> None:
    ciphertexts = fast.encrypt_many(VALUES, ENCODING)
    assert len(ciphertexts) == len(VALUES)
    for value, ciphertext in zip(VALUES, ciphertexts, strict=True):
        assert ENCODING.decrypt(ciphertext, key) == pytest.approx(value, abs=ENCODING.resolution)
    assert fast.encrypt_many([], ENCODING) == []


def test_fast_and_stock_ciphertexts_mix(
    fast: FastEncryptor, key: PrivateKey, pub: PublicKey
) -> None:
    values = [1.25, -3.5, 0.0, 1000.125, -999.0, 42.0]
    total: Ciphertext | None = None
    for i, value in enumerate(values):
        if i % 2:
            ciphertext = Ciphertext(pub, pub.raw_encrypt(ENCODING.encode(value, pub)))
        else:
            ciphertext = fast.encrypt(value, ENCODING)
        total = ciphertext if total is None else total + ciphertext
    assert total is not None
    assert ENCODING.decrypt(total, key) == pytest.approx(sum(values), abs=1e-9)
    # Scalar multiplication and add_encoded work on fast ciphertexts too.
    scaled = fast.encrypt(2.5, ENCODING).multiply(-4)
    assert ENCODING.decrypt(scaled, key) == pytest.approx(-10.0)
    shifted = fast.encrypt(2.5, ENCODING).add_encoded(ENCODING.encode(-1.0, pub))
    assert ENCODING.decrypt(shifted, key) == pytest.approx(1.5)


# --------------------------------------------------------------------------- randomness


def test_every_ciphertext_validates_and_serialises(fast: FastEncryptor, pub: PublicKey) -> None:
    ciphertexts = [
        *fast.encrypt_many(VALUES, ENCODING),
        fast.zero(),
        fast.rerandomize(fast.zero()),
        Ciphertext(pub, fast.obfuscator()),
    ]
    for ciphertext in ciphertexts:
        assert Ciphertext.validated(pub, ciphertext.value) == ciphertext
        assert Ciphertext.from_bytes(pub, ciphertext.to_bytes()) == ciphertext


def test_same_value_encrypts_differently(fast: FastEncryptor) -> None:
    values = {fast.encrypt(1.0, ENCODING).value for _ in range(16)}
    assert len(values) == 16
    assert fast.obfuscator() != fast.obfuscator()
    assert fast.zero() != fast.zero()


def test_rerandomize_keeps_plaintext_changes_value(
    fast: FastEncryptor, key: PrivateKey, pub: PublicKey
) -> None:
    for original in [
        fast.encrypt(-7.5, ENCODING),
        Ciphertext(pub, pub.raw_encrypt(ENCODING.encode(3.25, pub))),
    ]:
        fresh = fast.rerandomize(original)
        assert fresh.value != original.value
        assert fresh.public_key == pub
        assert ENCODING.decrypt(fresh, key) == ENCODING.decrypt(original, key)


def test_rerandomize_refuses_other_key(fast: FastEncryptor, stranger: PublicKey) -> None:
    with pytest.raises(InvalidCiphertextError):
        fast.rerandomize(Ciphertext(stranger, 12345))


def test_obfuscators_encrypt_zero(fast: FastEncryptor, key: PrivateKey, pub: PublicKey) -> None:
    """An obfuscator is an n-th residue, i.e. in the kernel of decryption."""
    for _ in range(4):
        assert _decrypt_raw(key, Ciphertext(pub, fast.obfuscator())) == 0
        assert _decrypt_raw(key, fast.zero()) == 0
    # ...and h_s itself, the base of the table.
    assert _decrypt_raw(key, Ciphertext(pub, int(fast._hs))) == 0


def test_obfuscator_jacobi_symbol_is_not_fixed(fast: FastEncryptor, pub: PublicKey) -> None:
    """Without the y_s^b factor a Blum modulus would pin every obfuscator to +1.

    Each draw has Jacobi symbol ±1 with probability 1/2, so 64 draws all agreeing
    happens with probability 2^-63.
    """
    symbols = {_jacobi(pub, fast.obfuscator()) for _ in range(64)}
    assert symbols == {-1, 1}
    stock = Ciphertext(pub, pub.raw_encrypt(5))
    rerandomized = {_jacobi(pub, fast.rerandomize(stock).value) for _ in range(64)}
    assert rerandomized == {-1, 1}


def test_encryptors_for_one_key_use_independent_bases(fast: FastEncryptor, pub: PublicKey) -> None:
    other = FastEncryptor(pub)
    assert other._hs != fast._hs
    assert other._ys != fast._ys


# --------------------------------------------------------------------------- the table


def _check_table(encryptor: FastEncryptor, pub: PublicKey) -> None:
    bits = encryptor.exponent_bits
    edges = [0, 1, 2, (1 << bits) - 1, 1 << (bits - 1)]
    exponents = edges + [secrets.randbits(bits) for _ in range(6)]
    for alpha in exponents:
        expected = gmpy2.powmod(encryptor._hs, alpha, pub.n_squared)
        assert encryptor._fixed_base_pow(alpha) == expected


def test_table_matches_powmod(fast: FastEncryptor, pub: PublicKey) -> None:
    assert fast.exponent_bits == 1024  # ⌈2048 / 2⌉
    assert fast.window == 8
    _check_table(fast, pub)


@pytest.mark.parametrize(("exponent_bits", "window"), [(1024, 7), (1030, 8), (1025, 5)])
def test_table_with_a_short_last_row(pub: PublicKey, exponent_bits: int, window: int) -> None:
    encryptor = FastEncryptor(pub, exponent_bits=exponent_bits, window=window)
    assert len(encryptor._table) == -(-exponent_bits // window)
    _check_table(encryptor, pub)


def test_table_refuses_out_of_range_exponent(fast: FastEncryptor) -> None:
    with pytest.raises(InvalidInputError):
        fast._fixed_base_pow(1 << fast.exponent_bits)
    with pytest.raises(InvalidInputError):
        fast._fixed_base_pow(-1)


def test_table_memory_is_reported(fast: FastEncryptor) -> None:
    entries = sum(len(row) for row in fast._table)
    assert entries == 128 * 255
    assert fast.table_bytes >= entries * 512  # each entry is a 4096-bit number


# --------------------------------------------------------------------------- construction


def test_short_exponents_and_bad_windows_are_refused(pub: PublicKey) -> None:
    with pytest.raises(InvalidInputError, match="DJN"):
        FastEncryptor(pub, exponent_bits=1023)
    for window in [0, 13, -1]:
        with pytest.raises(InvalidInputError):
            FastEncryptor(pub, window=window)


def test_encryptor_cannot_be_serialised_or_copied(fast: FastEncryptor) -> None:
    with pytest.raises(TypeError):
        pickle.dumps(fast)
    with pytest.raises(TypeError):
        copy.copy(fast)
    with pytest.raises(TypeError):
        copy.deepcopy(fast)


def test_repr_shows_no_state(fast: FastEncryptor, pub: PublicKey) -> None:
    text = repr(fast)
    assert pub.fingerprint() in text
    assert str(int(fast._hs))[:30] not in text


# --------------------------------------------------------------------------- powmod_many / dot


def test_powmod_many_matches_pow(pub: PublicKey) -> None:
    modulus = pub.n_squared
    bases = [secrets.randbelow(modulus - 2) + 2 for _ in range(12)]
    bases = [b for b in bases if gmpy2.gcd(b, modulus) == 1]
    exponents = [secrets.randbelow(1 << 21) - (1 << 20) for _ in bases]
    exponents[0] = 0
    expected = 1
    for base, exponent in zip(bases, exponents, strict=True):
        expected = expected * pow(base, exponent, modulus) % modulus
    assert powmod_many(bases, exponents, modulus) == expected
    assert powmod_many([], [], modulus) == 1
    assert powmod_many([5], [-1], 7) == 3  # 5 · 3 = 15 ≡ 1 (mod 7)


@pytest.mark.parametrize(
    ("count", "bits"), [(256, 14), (300, 1), (64, 40), (40, 300), (3, 2048), (1000, 8)]
)
def test_powmod_many_bucket_method_matches_pow(pub: PublicKey, count: int, bits: int) -> None:
    """Pippenger's buckets (many bases, short exponents) and the powmod path agree with pow."""
    modulus = pub.n_squared
    bases = [secrets.randbelow(modulus - 2) + 2 for _ in range(count)]
    exponents = [secrets.randbits(bits) * (1 if secrets.randbits(1) else -1) for _ in bases]
    exponents[0] = (1 << bits) - 1  # the widest digit in every window
    exponents[-1] = 0
    bases[1] = bases[2]  # a base that repeats
    expected = 1
    for base, exponent in zip(bases, exponents, strict=True):
        expected = expected * pow(base, exponent, modulus) % modulus
    assert powmod_many(bases, exponents, modulus) == expected


def test_powmod_many_refuses_bad_input() -> None:
    with pytest.raises(InvalidInputError):
        powmod_many([2, 3], [1], 7)
    with pytest.raises(InvalidInputError):
        powmod_many([2], [1], 1)
    with pytest.raises(InvalidInputError, match="invertible"):
        powmod_many([6], [-1], 9)


def test_dot_is_the_plaintext_inner_product(
    fast: FastEncryptor, key: PrivateKey, pub: PublicKey
) -> None:
    values = [1.5, -2.25, 0.0, 10.0, -0.125, 7.0, 3.0]
    weights = [3, -5, 11, 0, -(2**19), 2**19 - 1, -1]
    ciphertexts = fast.encrypt_many(values, ENCODING)
    ciphertexts[1] = Ciphertext(pub, pub.raw_encrypt(ENCODING.encode(values[1], pub)))
    result = dot(ciphertexts, weights)
    expected = sum(round(v * ENCODING.scale) * w for v, w in zip(values, weights, strict=True))
    assert FixedPointEncoding.decode_integer(_decrypt_raw(key, result), pub) == expected
    # Rerandomising the result keeps it and hides which inputs produced it.
    fresh = fast.rerandomize(result)
    assert fresh.value != result.value
    assert _decrypt_raw(key, fresh) == _decrypt_raw(key, result)


def test_dot_all_negative_weights(fast: FastEncryptor, key: PrivateKey, pub: PublicKey) -> None:
    integers = [5, -9, 13]
    ciphertexts = [
        fast.encrypt_encoded(FixedPointEncoding.encode_integer(i, pub)) for i in integers
    ]
    result = dot(ciphertexts, [-1, -2, -3])
    assert FixedPointEncoding.decode_integer(_decrypt_raw(key, result), pub) == -5 + 18 - 39


def test_dot_refuses_bad_input(fast: FastEncryptor, stranger: PublicKey) -> None:
    mine = fast.zero()
    with pytest.raises(InvalidInputError):
        dot([], [])
    with pytest.raises(InvalidInputError):
        dot([mine, mine], [1])
    with pytest.raises(InvalidCiphertextError):
        dot([mine, Ciphertext(stranger, 12345)], [1, 1])
