"""Paillier keys, ciphertext validation and fixed-point encoding, with real 2048-bit keys."""

from __future__ import annotations

import base64
import json
import math
from fractions import Fraction

import pytest
from phe import paillier

from creditshare.crypto import (
    MAX_KEY_BITS,
    MAX_SCALE,
    MIN_KEY_BITS,
    Ciphertext,
    FixedPointEncoding,
    PrivateKey,
    PublicKey,
)
from creditshare.errors import (
    CreditShareError,
    DecryptionOverflowError,
    EncodingOverflowError,
    InvalidCiphertextError,
    InvalidInputError,
    InvalidKeyError,
    KeyTooSmallError,
)

# --------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def key() -> PrivateKey:
    return PrivateKey.generate()


@pytest.fixture(scope="module")
def other_key() -> PrivateKey:
    return PrivateKey.generate()


@pytest.fixture(scope="module")
def small_modulus() -> int:
    """A real 1024-bit Paillier modulus (product of two primes), made by phe directly."""
    pub, _ = paillier.generate_paillier_keypair(n_length=1024)
    n = int(pub.n)
    assert n.bit_length() == 1024
    return n


def _factors(key: PrivateKey) -> tuple[int, int]:
    doc = json.loads(key.to_json_bytes())
    return int(doc["p"], 16), int(doc["q"], 16)


def _int_to_bytes(value: int) -> bytes:
    return value.to_bytes((value.bit_length() + 7) // 8, "big")


# --------------------------------------------------------------------------- key size


def test_generated_key_has_the_minimum_size(key: PrivateKey) -> None:
    assert MIN_KEY_BITS == 2048
    assert key.public_key.bits == 2048
    assert key.public_key.n.bit_length() == 2048
    p, q = _factors(key)
    assert p * q == key.public_key.n
    assert p != q


def test_public_key_constructor_refuses_1024_bit_modulus(small_modulus: int) -> None:
    with pytest.raises(KeyTooSmallError) as caught:
        PublicKey(small_modulus)
    assert caught.value.bits == 1024
    assert caught.value.minimum == MIN_KEY_BITS
    assert "1024" in str(caught.value)
    assert "2048" in str(caught.value)


def test_public_key_from_bytes_refuses_1024_bit_modulus(small_modulus: int) -> None:
    with pytest.raises(KeyTooSmallError):
        PublicKey.from_bytes(_int_to_bytes(small_modulus))


def test_public_key_from_text_refuses_1024_bit_modulus(small_modulus: int) -> None:
    text = base64.b64encode(_int_to_bytes(small_modulus)).decode("ascii")
    with pytest.raises(KeyTooSmallError):
        PublicKey.from_text(text)


@pytest.mark.parametrize("bits", [512, 1024, 2047])
def test_private_key_generate_refuses_small_sizes(bits: int) -> None:
    with pytest.raises(KeyTooSmallError) as caught:
        PrivateKey.generate(bits)
    assert caught.value.bits == bits


def test_private_key_file_with_1024_bit_modulus_is_refused() -> None:
    pub, priv = paillier.generate_paillier_keypair(n_length=1024)
    doc = {
        "kind": "creditshare/paillier-private-key/v1",
        "n": format(int(pub.n), "x"),
        "p": format(int(priv.p), "x"),
        "q": format(int(priv.q), "x"),
    }
    with pytest.raises(KeyTooSmallError):
        PrivateKey.from_json_bytes(json.dumps(doc).encode("utf-8"))


def test_key_too_small_is_an_input_error() -> None:
    assert issubclass(KeyTooSmallError, InvalidInputError)
    assert issubclass(KeyTooSmallError, CreditShareError)


def test_modulus_one_bit_short_is_refused() -> None:
    # 2047 bits, odd: only the size is wrong.
    with pytest.raises(KeyTooSmallError):
        PublicKey((1 << 2046) + 1)


def test_modulus_above_the_maximum_is_refused() -> None:
    with pytest.raises(InvalidKeyError):
        PublicKey((1 << MAX_KEY_BITS) + 1)


# --------------------------------------------------------------------------- invalid moduli


@pytest.mark.parametrize("value", [0, -1, -((1 << 2047) + 1)])
def test_non_positive_modulus_is_refused(value: int) -> None:
    with pytest.raises(InvalidKeyError):
        PublicKey(value)


@pytest.mark.parametrize("factor", [2, 3, 1999])
def test_modulus_with_a_small_factor_is_refused(key: PrivateKey, factor: int) -> None:
    # A 2048-bit number with a small prime factor cannot be a Paillier modulus.
    n = key.public_key.n
    bad = n - (n % factor)
    assert bad.bit_length() == 2048
    with pytest.raises(InvalidKeyError, match="small prime factor"):
        PublicKey(bad)


def test_8192_bit_key_is_refused_as_too_costly() -> None:
    with pytest.raises(InvalidKeyError, match="at most 4096"):
        PublicKey((1 << 8191) + 1)


def test_private_key_parse_error_never_quotes_the_factors(key: PrivateKey) -> None:
    doc = json.loads(key.to_json_bytes())
    secret = doc["p"]
    doc["p"] = secret[:-1] + "z"  # one bad digit
    with pytest.raises(InvalidKeyError) as caught:
        PrivateKey.from_json_bytes(json.dumps(doc).encode())
    assert secret[:32] not in str(caught.value) and secret[:32] not in repr(caught.value)
    assert "'p'" in str(caught.value)


@pytest.mark.parametrize("value", [True, False])
def test_bool_modulus_is_refused(value: bool) -> None:
    with pytest.raises(InvalidKeyError):
        PublicKey(value)


def test_float_modulus_is_refused() -> None:
    with pytest.raises(InvalidKeyError):
        PublicKey(float((1 << 1023) + 1))  # type: ignore[arg-type]


def test_empty_public_key_bytes_are_refused() -> None:
    with pytest.raises(InvalidKeyError):
        PublicKey.from_bytes(b"")


@pytest.mark.parametrize("text", ["not base64!", "QUJD\n", "ÄÖÜ", "QUJ"])
def test_public_key_text_that_is_not_base64_is_refused(text: str) -> None:
    with pytest.raises(InvalidKeyError):
        PublicKey.from_text(text)


def test_empty_public_key_text_is_refused() -> None:
    with pytest.raises(InvalidKeyError):
        PublicKey.from_text("")


# --------------------------------------------------------------------------- round trips


def test_public_key_bytes_round_trip(key: PrivateKey) -> None:
    public = key.public_key
    data = public.to_bytes()
    assert len(data) == 256
    assert int.from_bytes(data, "big") == public.n
    again = PublicKey.from_bytes(data)
    assert again == public
    assert again.n == public.n
    assert hash(again) == hash(public)
    assert again.fingerprint() == public.fingerprint()


def test_public_key_text_round_trip(key: PrivateKey) -> None:
    public = key.public_key
    text = public.to_text()
    assert base64.b64decode(text) == public.to_bytes()
    assert PublicKey.from_text(text) == public


def test_different_keys_are_not_equal(key: PrivateKey, other_key: PrivateKey) -> None:
    assert key.public_key != other_key.public_key
    assert key.public_key.fingerprint() != other_key.public_key.fingerprint()
    assert key.public_key != key.public_key.n  # a bare int is not a key


def test_private_key_json_round_trip(key: PrivateKey) -> None:
    data = key.to_json_bytes()
    again = PrivateKey.from_json_bytes(data)
    assert again.public_key == key.public_key
    assert _factors(again) == _factors(key)
    # The restored key really decrypts what the original's public key encrypted.
    encoding = FixedPointEncoding(1000)
    assert encoding.decrypt(encoding.encrypt(-42.125, key.public_key), again) == -42.125


def _key_doc(key: PrivateKey) -> dict[str, str]:
    doc: dict[str, str] = json.loads(key.to_json_bytes())
    return doc


def test_private_key_file_of_wrong_kind_is_refused(key: PrivateKey) -> None:
    doc = _key_doc(key)
    doc["kind"] = "creditshare/paillier-private-key/v0"
    with pytest.raises(InvalidKeyError, match="not a"):
        PrivateKey.from_json_bytes(json.dumps(doc).encode())


@pytest.mark.parametrize("missing", ["kind", "n", "p", "q"])
def test_private_key_file_missing_a_field_is_refused(key: PrivateKey, missing: str) -> None:
    doc = _key_doc(key)
    del doc[missing]
    with pytest.raises(InvalidKeyError):
        PrivateKey.from_json_bytes(json.dumps(doc).encode())


def test_private_key_file_whose_factors_do_not_multiply_to_n_is_refused(
    key: PrivateKey,
) -> None:
    doc = _key_doc(key)
    doc["p"] = format(int(doc["p"], 16) + 2, "x")
    with pytest.raises(InvalidKeyError, match="factors"):
        PrivateKey.from_json_bytes(json.dumps(doc).encode())


def test_private_key_file_with_factors_of_another_key_is_refused(
    key: PrivateKey, other_key: PrivateKey
) -> None:
    doc = _key_doc(key)
    other = _key_doc(other_key)
    doc["p"], doc["q"] = other["p"], other["q"]
    with pytest.raises(InvalidKeyError):
        PrivateKey.from_json_bytes(json.dumps(doc).encode())


def test_private_key_file_with_trivial_factorisation_is_refused(key: PrivateKey) -> None:
    doc = _key_doc(key)
    doc["p"], doc["q"] = doc["n"], "1"
    with pytest.raises(InvalidKeyError):
        PrivateKey.from_json_bytes(json.dumps(doc).encode())


def test_private_key_file_with_equal_factors_is_refused(key: PrivateKey) -> None:
    big = max(_factors(key))  # big² has at least 2048 bits, so only p == q is wrong
    doc = {
        "kind": "creditshare/paillier-private-key/v1",
        "n": format(big * big, "x"),
        "p": format(big, "x"),
        "q": format(big, "x"),
    }
    with pytest.raises(InvalidKeyError):
        PrivateKey.from_json_bytes(json.dumps(doc).encode())


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"not json",
        b"[1, 2, 3]",
        b'"a string"',
        b'{"kind": "creditshare/paillier-private-key/v1", "n": "xyz", "p": "1", "q": "1"}',
        b'{"kind": "creditshare/paillier-private-key/v1", "n": 15, "p": 3, "q": 5}',
    ],
)
def test_malformed_private_key_file_is_refused(data: bytes) -> None:
    with pytest.raises(InvalidKeyError):
        PrivateKey.from_json_bytes(data)


def test_private_key_repr_hides_the_factors(key: PrivateKey) -> None:
    text = repr(key)
    assert "PrivateKey" in text
    assert key.public_key.fingerprint() in text
    for factor in _factors(key):
        for form in (format(factor, "x"), format(factor, "X"), str(factor)):
            assert form not in text
    assert str(key.public_key.n) not in text


def test_private_key_json_holds_factors_in_hex(key: PrivateKey) -> None:
    doc = _key_doc(key)
    assert doc["kind"] == "creditshare/paillier-private-key/v1"
    assert int(doc["n"], 16) == key.public_key.n


# --------------------------------------------------------------------------- known answer


@pytest.mark.parametrize(("m", "r"), [(0, 2), (1, 65537), (12345, 10**100 + 267), (10**50, 3**500)])
def test_raw_decrypt_matches_paillier_definition(key: PrivateKey, m: int, r: int) -> None:
    n = key.public_key.n
    nsq = n * n
    assert math.gcd(r, n) == 1
    c = (1 + n * m) * pow(r, n, nsq) % nsq
    assert key.raw_decrypt(c) == m


def test_raw_decrypt_of_largest_plaintext(key: PrivateKey) -> None:
    n = key.public_key.n
    nsq = n * n
    m = n - 1
    c = (1 + n * m) * pow(3, n, nsq) % nsq
    assert key.raw_decrypt(c) == m


def test_raw_encrypt_is_randomised_and_decrypts(key: PrivateKey) -> None:
    public = key.public_key
    a = public.raw_encrypt(77)
    b = public.raw_encrypt(77)
    assert a != b
    assert 0 < a < public.n_squared
    assert key.raw_decrypt(a) == key.raw_decrypt(b) == 77


def test_raw_encrypt_refuses_plaintext_outside_zn(key: PrivateKey) -> None:
    public = key.public_key
    for value in (-1, public.n, public.n + 1):
        with pytest.raises(ValueError, match=r"\[0, n\)"):
            public.raw_encrypt(value)


# --------------------------------------------------------------------------- encoding


@pytest.mark.parametrize("scale", [1, 10, 1000, 10**6, MAX_SCALE])
@pytest.mark.parametrize("value", [0.0, -0.0, 1.0, -1.0, 3.25, -12.345, 1234.5678, -0.0004])
def test_encrypt_decrypt_round_trip(key: PrivateKey, scale: int, value: float) -> None:
    encoding = FixedPointEncoding(scale)
    decoded = encoding.decrypt(encoding.encrypt(value, key.public_key), key)
    assert decoded == round(value * scale) / scale
    assert abs(decoded - value) <= encoding.resolution + 1e-15


def test_negative_values_are_encoded_in_the_top_of_zn(key: PrivateKey) -> None:
    public = key.public_key
    encoding = FixedPointEncoding(100)
    assert encoding.encode(-1.5, public) == public.n - 150
    assert encoding.encode(1.5, public) == 150
    assert encoding.encode(0.0, public) == 0
    assert FixedPointEncoding.decode_integer(public.n - 150, public) == -150


def test_resolution_is_half_a_unit() -> None:
    assert FixedPointEncoding(1000).resolution == 0.0005
    assert FixedPointEncoding(1).resolution == 0.5


def test_sum_of_fifteen_nodes_decodes_to_exact_integer_sum(key: PrivateKey) -> None:
    public = key.public_key
    encoding = FixedPointEncoding(10**6)
    values = [
        1.5,
        -2.25,
        0.0,
        3.141592,
        -7.0,
        12.000001,
        -0.000001,
        100.5,
        -99.75,
        0.333333,
        -4.2,
        8.8,
        -1234.567891,
        1000.0,
        -0.5,
    ]
    assert len(values) == 15
    total = encoding.encrypt(values[0], public)
    for value in values[1:]:
        total = total + encoding.encrypt(value, public)
    expected_integer = sum(encoding.to_integer(v) for v in values)
    decrypted = key.raw_decrypt(total.value)
    assert FixedPointEncoding.decode_integer(decrypted, public) == expected_integer
    assert encoding.decrypt(total, key) == expected_integer / 10**6
    assert expected_integer < 0  # the sum really crossed zero


def test_sum_that_ends_at_zero_decrypts_to_zero(key: PrivateKey) -> None:
    public = key.public_key
    encoding = FixedPointEncoding(1000)
    total = encoding.encrypt(2.5, public) + encoding.encrypt(-2.5, public)
    assert key.raw_decrypt(total.value) == 0
    assert encoding.decrypt(total, key) == 0.0


@pytest.mark.parametrize(
    ("value", "factor"),
    [(1.25, 3), (1.25, -3), (-2.5, 4), (-2.5, -4), (7.0, 0), (7.0, 1), (0.001, 1000)],
)
def test_multiply_by_integer(key: PrivateKey, value: float, factor: int) -> None:
    public = key.public_key
    encoding = FixedPointEncoding(1000)
    product = encoding.encrypt(value, public).multiply(factor)
    expected = encoding.to_integer(value) * factor
    assert FixedPointEncoding.decode_integer(key.raw_decrypt(product.value), public) == expected
    assert product.public_key == public


@pytest.mark.parametrize(("a", "b"), [(1.5, 2.25), (1.5, -2.25), (-1.0, -1.0), (0.0, -3.0)])
def test_add_encoded(key: PrivateKey, a: float, b: float) -> None:
    public = key.public_key
    encoding = FixedPointEncoding(100)
    original = encoding.encrypt(a, public)
    result = original.add_encoded(encoding.encode(b, public))
    assert encoding.decrypt(result, key) == a + b
    assert result.value != original.value


@pytest.mark.parametrize("sign", [1, -1])
def test_encoding_limits_are_inclusive(key: PrivateKey, sign: int) -> None:
    public = key.public_key
    limit = public.max_plaintext
    assert limit == public.n // 3 - 1
    encoded = FixedPointEncoding.encode_integer(sign * limit, public)
    assert FixedPointEncoding.decode_integer(encoded, public) == sign * limit
    with pytest.raises(EncodingOverflowError):
        FixedPointEncoding.encode_integer(sign * (limit + 1), public)


@pytest.mark.parametrize("value", [1e300, -1e300, 1.7976931348623157e308])
def test_finite_value_whose_product_with_scale_overflows_float(
    key: PrivateKey, value: float
) -> None:
    public = key.public_key
    encoding = FixedPointEncoding(MAX_SCALE)
    # Past float range the product is still encoded exactly (it fits the key).
    encoded = encoding.encode(value, public)
    exact = round(Fraction(value) * MAX_SCALE)
    assert FixedPointEncoding.decode_integer(encoded, public) == exact


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf])
def test_non_finite_values_are_refused(key: PrivateKey, value: float) -> None:
    encoding = FixedPointEncoding(1000)
    with pytest.raises(EncodingOverflowError):
        encoding.encrypt(value, key.public_key)
    with pytest.raises(EncodingOverflowError):
        encoding.to_integer(value)


@pytest.mark.parametrize("sign", [1, -1])
def test_overflowing_sum_raises_instead_of_wrapping(key: PrivateKey, sign: int) -> None:
    public = key.public_key
    big = sign * (public.max_plaintext * 6 // 10)
    encoded = FixedPointEncoding.encode_integer(big, public)
    a = Ciphertext(public, public.raw_encrypt(encoded))
    b = Ciphertext(public, public.raw_encrypt(encoded))
    total = a + b
    # 1.2 × max lands in the gap (max, n − max) for either sign.
    raw = key.raw_decrypt(total.value)
    assert public.max_plaintext < raw < public.n - public.max_plaintext
    with pytest.raises(DecryptionOverflowError):
        FixedPointEncoding(1).decrypt(total, key)
    with pytest.raises(DecryptionOverflowError):
        FixedPointEncoding(1000).decrypt(total, key)


def test_overflowing_multiply_raises(key: PrivateKey) -> None:
    public = key.public_key
    encoding = FixedPointEncoding(1)
    one = encoding.encrypt(1.0, public)
    product = one.multiply(public.max_plaintext + 1)
    with pytest.raises(DecryptionOverflowError):
        encoding.decrypt(product, key)


@pytest.mark.parametrize("delta", [1, 2, 10**6])
def test_decode_integer_refuses_the_gap(key: PrivateKey, delta: int) -> None:
    public = key.public_key
    with pytest.raises(DecryptionOverflowError):
        FixedPointEncoding.decode_integer(public.max_plaintext + delta, public)
    with pytest.raises(DecryptionOverflowError):
        FixedPointEncoding.decode_integer(public.n - public.max_plaintext - delta, public)
    with pytest.raises(DecryptionOverflowError):
        FixedPointEncoding.decode_integer(public.n // 2, public)


def test_decode_gives_exact_fraction(key: PrivateKey) -> None:
    public = key.public_key
    encoding = FixedPointEncoding(8)
    value = encoding.decode(public.n - 13, public)
    assert Fraction(value) == Fraction(-13, 8)


@pytest.mark.parametrize("scale", [0, -1, -(10**6), MAX_SCALE + 1, 10**20])
def test_scale_out_of_range_is_refused(scale: int) -> None:
    with pytest.raises(InvalidInputError, match="scale"):
        FixedPointEncoding(scale)


@pytest.mark.parametrize("scale", [True, False, 1.0, 1000.0, "1000", None])
def test_scale_of_wrong_type_is_refused(scale: object) -> None:
    with pytest.raises(InvalidInputError, match="integer"):
        FixedPointEncoding(scale)  # type: ignore[arg-type]


@pytest.mark.parametrize("scale", [1, MAX_SCALE])
def test_scale_bounds_are_inclusive(scale: int) -> None:
    assert FixedPointEncoding(scale).scale == scale


# --------------------------------------------------------------------------- ciphertexts


def _encrypted(key: PrivateKey, value: float = 5.5) -> Ciphertext:
    return FixedPointEncoding(1000).encrypt(value, key.public_key)


def test_ciphertext_bytes_round_trip(key: PrivateKey) -> None:
    public = key.public_key
    ciphertext = _encrypted(key)
    data = ciphertext.to_bytes()
    assert len(data) == public.ciphertext_length == 512
    again = Ciphertext.from_bytes(public, data)
    assert again == ciphertext
    assert hash(again) == hash(ciphertext)
    assert FixedPointEncoding(1000).decrypt(again, key) == 5.5


def test_ciphertext_text_round_trip(key: PrivateKey) -> None:
    public = key.public_key
    ciphertext = _encrypted(key, -0.125)
    again = Ciphertext.from_text(public, ciphertext.to_text())
    assert again == ciphertext
    assert FixedPointEncoding(1000).decrypt(again, key) == -0.125


def test_small_ciphertext_is_padded_to_fixed_length(key: PrivateKey) -> None:
    public = key.public_key
    small = Ciphertext.validated(public, 2)
    data = small.to_bytes()
    assert len(data) == public.ciphertext_length
    assert Ciphertext.from_bytes(public, data).value == 2


def test_ciphertext_repr_names_key_not_value(key: PrivateKey) -> None:
    ciphertext = _encrypted(key)
    text = repr(ciphertext)
    assert key.public_key.fingerprint() in text
    assert str(ciphertext.value) not in text


def _bad_values(key: PrivateKey) -> dict[str, int]:
    public = key.public_key
    p, q = _factors(key)
    return {
        "zero": 0,
        "negative": -5,
        "n squared": public.n_squared,
        "n squared + 1": public.n_squared + 1,
        "n": public.n,
        "p": p,
        "multiple of p": p * 12345,
        "multiple of q": q * (q + 2),
    }


@pytest.mark.parametrize(
    "case",
    ["zero", "negative", "n squared", "n squared + 1", "n", "p", "multiple of p", "multiple of q"],
)
def test_validated_refuses_bad_values(key: PrivateKey, case: str) -> None:
    value = _bad_values(key)[case]
    with pytest.raises(InvalidCiphertextError):
        Ciphertext.validated(key.public_key, value)


@pytest.mark.parametrize(
    "case", ["zero", "n squared", "n squared + 1", "n", "p", "multiple of p", "multiple of q"]
)
def test_from_bytes_and_text_refuse_bad_values(key: PrivateKey, case: str) -> None:
    public = key.public_key
    value = _bad_values(key)[case]
    data = value.to_bytes(public.ciphertext_length, "big")
    with pytest.raises(InvalidCiphertextError):
        Ciphertext.from_bytes(public, data)
    with pytest.raises(InvalidCiphertextError):
        Ciphertext.from_text(public, base64.b64encode(data).decode("ascii"))


def test_gcd_check_names_the_problem(key: PrivateKey) -> None:
    p, _ = _factors(key)
    with pytest.raises(InvalidCiphertextError, match="gcd"):
        Ciphertext.validated(key.public_key, p * 3)


def test_validated_accepts_the_extremes_of_the_range(key: PrivateKey) -> None:
    public = key.public_key
    assert Ciphertext.validated(public, 1).value == 1
    assert Ciphertext.validated(public, public.n_squared - 1).value == public.n_squared - 1


@pytest.mark.parametrize("delta", [-1, 1, -256])
def test_wrong_byte_length_is_refused(key: PrivateKey, delta: int) -> None:
    public = key.public_key
    data = _encrypted(key).to_bytes()
    wrong = data[:delta] if delta < 0 else data + b"\x00" * delta
    with pytest.raises(InvalidCiphertextError, match="bytes"):
        Ciphertext.from_bytes(public, wrong)
    with pytest.raises(InvalidCiphertextError, match="bytes"):
        Ciphertext.from_text(public, base64.b64encode(wrong).decode("ascii"))


def test_empty_ciphertext_is_refused(key: PrivateKey) -> None:
    with pytest.raises(InvalidCiphertextError):
        Ciphertext.from_bytes(key.public_key, b"")
    with pytest.raises(InvalidCiphertextError):
        Ciphertext.from_text(key.public_key, "")


@pytest.mark.parametrize("text", ["not base64 at all", "AAAA====", "€€€€", "AAA"])
def test_ciphertext_text_that_is_not_base64_is_refused(key: PrivateKey, text: str) -> None:
    with pytest.raises(InvalidCiphertextError):
        Ciphertext.from_text(key.public_key, text)


def test_ciphertext_text_with_embedded_newline_is_refused(key: PrivateKey) -> None:
    text = _encrypted(key).to_text()
    with pytest.raises(InvalidCiphertextError, match="base64"):
        Ciphertext.from_text(key.public_key, text[:40] + "\n" + text[40:])


def test_adding_ciphertexts_under_different_keys_raises(
    key: PrivateKey, other_key: PrivateKey
) -> None:
    mine = _encrypted(key)
    theirs = _encrypted(other_key)
    with pytest.raises(InvalidCiphertextError, match="different keys"):
        _ = mine + theirs
    with pytest.raises(InvalidCiphertextError):
        _ = theirs + mine


def test_ciphertexts_under_different_keys_are_not_equal(
    key: PrivateKey, other_key: PrivateKey
) -> None:
    mine = _encrypted(key)
    same_value_other_key = Ciphertext(other_key.public_key, mine.value)
    assert mine != same_value_other_key
    assert mine != mine.value


def test_decrypting_with_the_wrong_private_key_raises(
    key: PrivateKey, other_key: PrivateKey
) -> None:
    ciphertext = _encrypted(key)
    with pytest.raises(InvalidInputError, match="different public key"):
        FixedPointEncoding(1000).decrypt(ciphertext, other_key)


def test_ciphertext_from_bytes_under_another_key_size_is_refused(
    key: PrivateKey,
) -> None:
    # A ciphertext made for a 3072-bit key has 768 bytes; a 2048-bit key expects 512.
    with pytest.raises(InvalidCiphertextError, match="512"):
        Ciphertext.from_bytes(key.public_key, b"\x01" * 768)
