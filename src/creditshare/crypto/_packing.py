"""Several signed fixed-point values in one Paillier plaintext (slot packing).

A 2048-bit plaintext holds ~2,040 bits; a credit-profile value needs a few dozen.
Packing k values into one plaintext cuts encryptions, ciphertext bytes and, above
all, the requester's decryptions by k (BatchCrypt-style for training).

Layout: value i sits in slot i, bits [i·w, (i+1)·w) of a signed integer
T = Σ v_i·2^(i·w). Slots are balanced digits (each v_i may be negative), so
adding packed plaintexts adds slot by slot, with no carry as long as every slot's
running sum stays within its range. Each slot keeps a guard bit: a correct slot
satisfies |v| < 2^(w−2), so a sum that spilled into the next slot shows up as a
digit outside that range and unpacking raises instead of returning wrong numbers.
Values are checked at packing time against the headroom for the number of packed
vectors the caller says will be added (``additions``).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from creditshare.crypto._ciphertext import Ciphertext
from creditshare.crypto._encoding import FixedPointEncoding
from creditshare.crypto._keys import PrivateKey, PublicKey
from creditshare.errors import DecryptionOverflowError, EncodingOverflowError, InvalidInputError

__all__ = ["PackedEncoding", "SlotLayout"]


@dataclass(frozen=True, slots=True)
class SlotLayout:
    """``slots`` slots of ``slot_bits`` bits, for sums of up to ``additions`` vectors."""

    slot_bits: int
    slots: int
    additions: int = 1

    def __post_init__(self) -> None:
        if not 8 <= self.slot_bits <= 512:
            raise InvalidInputError("slot_bits must be within 8..512")
        if self.slots < 1:
            raise InvalidInputError("a layout needs at least one slot")
        if self.additions < 1:
            raise InvalidInputError("additions must be at least 1")
        if self.additions.bit_length() >= self.slot_bits - 2:
            raise InvalidInputError("no headroom left: additions too large for the slot width")

    @property
    def guard_limit(self) -> int:
        """A decrypted slot must stay strictly below this magnitude."""
        return 1 << (self.slot_bits - 2)

    @property
    def value_limit(self) -> int:
        """Largest magnitude one packed value may have, so ``additions`` of them fit."""
        return (self.guard_limit - 1) // self.additions

    @property
    def total_bits(self) -> int:
        return self.slot_bits * self.slots

    def fits(self, key: PublicKey) -> bool:
        return self.total_bits < key.max_plaintext.bit_length()

    @classmethod
    def for_key(cls, key: PublicKey, slot_bits: int, additions: int = 1) -> SlotLayout:
        """As many slots of ``slot_bits`` as the key's plaintext holds."""
        slots = (key.max_plaintext.bit_length() - 1) // slot_bits
        return cls(slot_bits, slots, additions)

    def pack(self, values: Sequence[int]) -> int:
        if len(values) > self.slots:
            raise InvalidInputError(f"{len(values)} values for {self.slots} slots")
        total = 0
        for index in range(len(values) - 1, -1, -1):
            value = values[index]
            if abs(value) > self.value_limit:
                raise EncodingOverflowError(
                    f"slot {index}: |{value}| exceeds {self.value_limit} "
                    f"({self.slot_bits}-bit slots summed {self.additions} times)"
                )
            total = (total << self.slot_bits) + value
        return total

    def unpack(self, total: int, count: int | None = None) -> list[int]:
        """Balanced digits of ``total``; raises if any slot overflowed its guard."""
        count = self.slots if count is None else count
        base = 1 << self.slot_bits
        half = base >> 1
        out: list[int] = []
        for index in range(count):
            digit = total % base
            if digit >= half:
                digit -= base
            if abs(digit) >= self.guard_limit:
                raise DecryptionOverflowError(f"slot {index} overflowed its range")
            out.append(digit)
            total = (total - digit) >> self.slot_bits
        if total != 0:
            raise DecryptionOverflowError("packed value carries beyond the last slot")
        return out


@dataclass(frozen=True, slots=True)
class PackedEncoding:
    """Fixed-point values (one scale) packed into slots, then encrypted once."""

    layout: SlotLayout
    encoding: FixedPointEncoding

    def encode(self, values: Sequence[float], key: PublicKey) -> int:
        if not self.layout.fits(key):
            raise InvalidInputError("the slot layout does not fit this key's plaintext")
        integers = [self.encoding.to_integer(v) for v in values]
        return FixedPointEncoding.encode_integer(self.layout.pack(integers), key)

    def decode(self, encoded: int, key: PublicKey, count: int | None = None) -> list[float]:
        total = FixedPointEncoding.decode_integer(encoded, key)
        return [v / self.encoding.scale for v in self.layout.unpack(total, count)]

    def encrypt(self, values: Sequence[float], key: PublicKey) -> Ciphertext:
        return Ciphertext(key, key.raw_encrypt(self.encode(values, key)))

    def decrypt(
        self, ciphertext: Ciphertext, key: PrivateKey, count: int | None = None
    ) -> list[float]:
        return self.decode(key.raw_decrypt(ciphertext.value), key.public_key, count)
