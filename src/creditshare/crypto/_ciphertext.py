"""Validated Paillier ciphertexts and the homomorphic operations we use.

Every ciphertext that crosses a trust boundary is rebuilt through
``Ciphertext.from_bytes`` / ``Ciphertext.from_text``, which check
0 < c < n² and gcd(c, n) = 1. A value failing those checks is either garbage or
an attempt to make the key holder decrypt something revealing, so it is refused
before any arithmetic touches it.
"""

from __future__ import annotations

import base64
import binascii

import gmpy2

from creditshare.crypto._keys import PublicKey
from creditshare.errors import InvalidCiphertextError

__all__ = ["Ciphertext"]


class Ciphertext:
    """A Paillier ciphertext bound to the public key it was made under."""

    __slots__ = ("public_key", "value")

    def __init__(self, public_key: PublicKey, value: int) -> None:
        """Trusted constructor for values we computed ourselves; use ``validated`` otherwise."""
        self.public_key = public_key
        self.value = value

    @classmethod
    def validated(cls, public_key: PublicKey, value: int) -> Ciphertext:
        if not 0 < value < public_key.n_squared:
            raise InvalidCiphertextError("ciphertext out of range: expected 0 < c < n²")
        if gmpy2.gcd(value, public_key.n) != 1:
            raise InvalidCiphertextError("ciphertext is not a unit modulo n²: gcd(c, n) ≠ 1")
        return cls(public_key, value)

    def to_bytes(self) -> bytes:
        return self.value.to_bytes(self.public_key.ciphertext_length, "big")

    @classmethod
    def from_bytes(cls, public_key: PublicKey, data: bytes) -> Ciphertext:
        if len(data) != public_key.ciphertext_length:
            raise InvalidCiphertextError(
                f"ciphertext is {len(data)} bytes; expected {public_key.ciphertext_length} "
                f"for a {public_key.bits}-bit key"
            )
        return cls.validated(public_key, int.from_bytes(data, "big"))

    def to_text(self) -> str:
        return base64.b64encode(self.to_bytes()).decode("ascii")

    @classmethod
    def from_text(cls, public_key: PublicKey, text: str) -> Ciphertext:
        try:
            raw = base64.b64decode(text.encode("ascii"), validate=True)
        except (binascii.Error, UnicodeEncodeError) as exc:
            raise InvalidCiphertextError("ciphertext is not valid base64") from exc
        return cls.from_bytes(public_key, raw)

    def _check_same_key(self, other: Ciphertext) -> None:
        if other.public_key != self.public_key:
            raise InvalidCiphertextError("cannot combine ciphertexts under different keys")

    def __add__(self, other: Ciphertext) -> Ciphertext:
        """Enc(a) · Enc(b) = Enc(a + b)."""
        self._check_same_key(other)
        nsq = self.public_key.n_squared
        return Ciphertext(self.public_key, int(gmpy2.mul(self.value, other.value) % nsq))

    def add_encoded(self, plaintext: int) -> Ciphertext:
        """Enc(a) · (1 + n·m) = Enc(a + m) for an encoded m; stays randomised by Enc(a)."""
        n, nsq = self.public_key.n, self.public_key.n_squared
        return Ciphertext(
            self.public_key, int(gmpy2.mul(self.value, (1 + n * plaintext) % nsq) % nsq)
        )

    def multiply(self, factor: int) -> Ciphertext:
        """Enc(a)^k = Enc(k·a); negative k goes through the modular inverse."""
        nsq = self.public_key.n_squared
        if factor < 0:
            base = gmpy2.invert(self.value, nsq)
            factor = -factor
        else:
            base = self.value
        return Ciphertext(self.public_key, int(gmpy2.powmod(base, factor, nsq)))

    def __eq__(self, other: object) -> bool:
        return (
            isinstance(other, Ciphertext)
            and other.public_key == self.public_key
            and other.value == self.value
        )

    def __hash__(self) -> int:
        return hash(self.value)

    def __repr__(self) -> str:
        key = self.public_key
        return f"Ciphertext(key={key.fingerprint()}, bytes={key.ciphertext_length})"
