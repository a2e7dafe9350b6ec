"""Slot packing: many signed fixed-point values per Paillier plaintext, with real 2048-bit keys."""

from __future__ import annotations

import random

import pytest

from creditshare.crypto import (
    Ciphertext,
    FastEncryptor,
    FixedPointEncoding,
    PackedEncoding,
    PrivateKey,
    SlotLayout,
)
from creditshare.errors import DecryptionOverflowError, EncodingOverflowError, InvalidInputError


@pytest.fixture(scope="module")
def key() -> PrivateKey:
    return PrivateKey.generate(2048)


def test_known_answer_packing() -> None:
    layout = SlotLayout(slot_bits=8, slots=3)
    # 5 + (−3)·2^8 + 7·2^16, balanced digits
    assert layout.pack([5, -3, 7]) == 5 - 3 * 256 + 7 * 65536
    assert layout.unpack(5 - 3 * 256 + 7 * 65536) == [5, -3, 7]
    assert layout.value_limit == 63  # 8-bit slots: 6 value bits + sign + guard


@pytest.mark.parametrize("slot_bits", [8, 16, 48, 64])
def test_round_trip_at_slot_boundaries(slot_bits: int) -> None:
    layout = SlotLayout(slot_bits=slot_bits, slots=6)
    edge = layout.value_limit
    values = [edge, -edge, 0, edge - 1, -(edge - 1), 1]
    assert layout.unpack(layout.pack(values)) == values
    with pytest.raises(EncodingOverflowError, match="slot 0"):
        layout.pack([edge + 1])
    with pytest.raises(EncodingOverflowError, match="slot 2"):
        layout.pack([0, 0, -(edge + 1)])


def test_sum_that_spills_is_detected_not_wrapped() -> None:
    layout = SlotLayout(slot_bits=16, slots=3, additions=1)
    edge = layout.value_limit
    total = layout.pack([edge, 0, 0]) * 3  # three times what one slot may hold
    with pytest.raises(DecryptionOverflowError, match="slot 0"):
        layout.unpack(total)
    with pytest.raises(DecryptionOverflowError, match="beyond the last slot"):
        layout.unpack(1 << (16 * 3 + 5))


def test_layout_validation(key: PrivateKey) -> None:
    with pytest.raises(InvalidInputError):
        SlotLayout(slot_bits=4, slots=1)
    with pytest.raises(InvalidInputError):
        SlotLayout(slot_bits=16, slots=1, additions=1 << 14)
    with pytest.raises(InvalidInputError, match="values for"):
        SlotLayout(slot_bits=16, slots=2).pack([1, 2, 3])
    full = SlotLayout.for_key(key.public_key, 48)
    assert full.fits(key.public_key) and full.slots == 42
    assert not SlotLayout(48, full.slots + 1).fits(key.public_key)


def test_encrypted_round_trip_with_negatives(key: PrivateKey) -> None:
    packed = PackedEncoding(SlotLayout.for_key(key.public_key, 48), FixedPointEncoding(10**6))
    values = [-1.75, 0.0, 3.141593, -0.000001, 12345.678901]
    c = packed.encrypt(values, key.public_key)
    Ciphertext.validated(key.public_key, c.value)
    assert packed.decrypt(c, key, len(values)) == pytest.approx(values, abs=1e-6)


def test_sums_of_many_nodes_without_carry_over(key: PrivateKey) -> None:
    """Fifteen 'nodes' each pack a vector; the product of their ciphertexts opens to the sums."""
    nodes = 15
    layout = SlotLayout.for_key(key.public_key, 48, additions=nodes)
    packed = PackedEncoding(layout, FixedPointEncoding(10**6))
    rng = random.Random(7)
    limit = layout.value_limit / 10**6
    vectors = [[rng.uniform(-limit, limit) for _ in range(layout.slots)] for _ in range(nodes)]
    # Every node also puts an extreme value in slot 0, all with the same sign.
    for vector in vectors:
        vector[0] = limit * 0.999
    encryptor = FastEncryptor(key.public_key)
    total = Ciphertext(key.public_key, 1)
    for vector in vectors:
        total = total + encryptor.encrypt_encoded(packed.encode(vector, key.public_key))
    Ciphertext.validated(key.public_key, total.value)
    sums = packed.decrypt(total, key)
    expected = [sum(column) for column in zip(*vectors, strict=True)]
    assert sums == pytest.approx(expected, abs=nodes * 1e-6)


def test_one_node_too_many_is_caught(key: PrivateKey) -> None:
    layout = SlotLayout(slot_bits=32, slots=4, additions=2)
    encoding = PackedEncoding(layout, FixedPointEncoding(1))
    edge = float(layout.value_limit)
    total = Ciphertext(key.public_key, 1)
    for _ in range(5):  # five additions where the layout allows two
        total = total + encoding.encrypt([edge, edge, edge, edge], key.public_key)
    with pytest.raises(DecryptionOverflowError):
        encoding.decrypt(total, key)
