"""Fixed-point encoding with one scale per request.

phe's own encoding picks a floating exponent per value, so ciphertexts from two
nodes may not add without re-scaling (which needs the private key or a costly
exponentiation). We fix one integer scale per request instead: every node
encodes ``round(value * scale)``, and any sum of ciphertexts decodes with the
same scale.

Signed values live in Z_n as in phe: [0, max] is positive, [n - max, n) is
negative, and the gap between is never produced by a valid encoding, so a sum
that lands there has overflowed and decoding raises instead of wrapping.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from fractions import Fraction

from creditshare.crypto._ciphertext import Ciphertext
from creditshare.crypto._keys import PrivateKey, PublicKey
from creditshare.errors import DecryptionOverflowError, EncodingOverflowError, InvalidInputError

__all__ = ["MAX_SCALE", "FixedPointEncoding"]

#: Ten decimal digits of fraction are far beyond what a score needs; larger scales
#: only eat into the headroom that sums of many nodes need.
MAX_SCALE = 10**12


@dataclass(frozen=True, slots=True)
class FixedPointEncoding:
    """Integer scale shared by every party to one request."""

    scale: int

    def __post_init__(self) -> None:
        if isinstance(self.scale, bool) or not isinstance(self.scale, int):
            raise InvalidInputError("scale must be an integer")
        if not 1 <= self.scale <= MAX_SCALE:
            raise InvalidInputError(f"scale must be between 1 and {MAX_SCALE}, got {self.scale}")

    @property
    def resolution(self) -> float:
        """Largest rounding error of one encoded value."""
        return 0.5 / self.scale

    def to_integer(self, value: float) -> int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value * self.scale  # exact, whatever its size
        if not math.isfinite(value):
            raise EncodingOverflowError(f"cannot encode non-finite value {value!r}")
        scaled = value * self.scale
        if math.isfinite(scaled):
            return round(scaled)
        # Past float range the product is still exact in rationals; the range
        # check in encode_integer then decides whether it fits the key.
        return round(Fraction(value) * self.scale)

    def encode(self, value: float, key: PublicKey) -> int:
        """Map a real value to its representative in Z_n."""
        return self.encode_integer(self.to_integer(value), key)

    @staticmethod
    def encode_integer(integer: int, key: PublicKey) -> int:
        if abs(integer) > key.max_plaintext:
            raise EncodingOverflowError("value too large for the key's fixed-point range")
        return integer % key.n

    @staticmethod
    def decode_integer(encoded: int, key: PublicKey) -> int:
        if encoded <= key.max_plaintext:
            return encoded
        if encoded >= key.n - key.max_plaintext:
            return encoded - key.n
        raise DecryptionOverflowError("decrypted value lies outside the encodable range: overflow")

    def decode(self, encoded: int, key: PublicKey) -> float:
        return self.decode_integer(encoded, key) / self.scale

    def encrypt(self, value: float, key: PublicKey) -> Ciphertext:
        return Ciphertext(key, key.raw_encrypt(self.encode(value, key)))

    def decrypt(self, ciphertext: Ciphertext, key: PrivateKey) -> float:
        if ciphertext.public_key != key.public_key:
            raise InvalidInputError("ciphertext was made under a different public key")
        return self.decode(key.raw_decrypt(ciphertext.value), key.public_key)
