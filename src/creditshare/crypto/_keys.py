"""Paillier key types with explicit constructors and serialisers.

Built on ``phe`` (which uses gmpy2 when present) but never exposes phe's classes:
callers get ``PublicKey`` and ``PrivateKey``, whose only ways in are checked
constructors, so a key below ``MIN_KEY_BITS`` cannot enter the system through
any door (config, HTTP, gRPC, file).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import math
from typing import Any

import gmpy2
from phe import paillier

from creditshare.errors import InvalidKeyError, KeyTooSmallError

__all__ = ["MIN_KEY_BITS", "PrivateKey", "PublicKey"]

#: Smallest modulus accepted anywhere; NIST SP 800-57 puts 2048-bit factoring at 112 bits.
MIN_KEY_BITS = 2048
#: Largest modulus accepted from the outside: encryption cost grows with the cube of
#: the size, so an 8192-bit key would let one caller buy ~64x the work of a 2048-bit one.
MAX_KEY_BITS = 4096

#: Product of the primes below 2000. A real Paillier modulus has two huge prime
#: factors, so it shares none with this; a modulus that does is not a key, and would
#: make honest nodes' ciphertexts fail validation (gcd(c, n) > 1) for no fault of theirs.
_SMALL_PRIMES_PRODUCT = (
    math.prod(p for p in range(3, 2000, 2) if all(p % d for d in range(3, math.isqrt(p) + 1, 2)))
    * 2
)

_PRIVATE_KIND = "creditshare/paillier-private-key/v1"


class PublicKey:
    """A Paillier public key (g = n + 1), checked for size on construction."""

    __slots__ = ("_phe", "n", "n_squared")

    def __init__(self, n: int) -> None:
        if not isinstance(n, int) or isinstance(n, bool) or n <= 0:
            raise InvalidKeyError("Paillier modulus must be a positive integer")
        bits = n.bit_length()
        if bits < MIN_KEY_BITS:
            raise KeyTooSmallError(bits, MIN_KEY_BITS)
        if bits > MAX_KEY_BITS:
            raise InvalidKeyError(f"Paillier key is {bits} bits; at most {MAX_KEY_BITS} accepted")
        if math.gcd(n, _SMALL_PRIMES_PRODUCT) != 1:
            raise InvalidKeyError("Paillier modulus has a small prime factor: not a valid key")
        self.n = n
        self.n_squared = n * n
        self._phe = paillier.PaillierPublicKey(n)

    @property
    def bits(self) -> int:
        return self.n.bit_length()

    @property
    def ciphertext_length(self) -> int:
        """Bytes in a serialised ciphertext: fixed, so lengths leak nothing."""
        return (self.n_squared.bit_length() + 7) // 8

    @property
    def max_plaintext(self) -> int:
        """Largest magnitude the fixed-point encoding may use (a third of n, as in phe)."""
        return self.n // 3 - 1

    def to_bytes(self) -> bytes:
        return self.n.to_bytes((self.n.bit_length() + 7) // 8, "big")

    @classmethod
    def from_bytes(cls, data: bytes) -> PublicKey:
        if not data:
            raise InvalidKeyError("public key is empty")
        return cls(int.from_bytes(data, "big"))

    def to_text(self) -> str:
        """Standard base64 of the big-endian modulus: the JSON form."""
        return base64.b64encode(self.to_bytes()).decode("ascii")

    @classmethod
    def from_text(cls, text: str) -> PublicKey:
        try:
            raw = base64.b64decode(text.encode("ascii"), validate=True)
        except (binascii.Error, UnicodeEncodeError) as exc:
            raise InvalidKeyError("public key is not valid base64") from exc
        return cls.from_bytes(raw)

    def fingerprint(self) -> str:
        """Short stable identifier for logs and receipts (never the key itself)."""
        return hashlib.sha256(self.to_bytes()).hexdigest()[:16]

    def verify_decryption(self, ciphertext: int, plaintext: int, r: int) -> bool:
        """True when c = (1 + n·m)·r^n mod n², i.e. m really is the plaintext of c."""
        n, nsq = self.n, self.n_squared
        if not (0 <= plaintext < n and 0 < r < n):
            return False
        return (1 + n * plaintext) * int(gmpy2.powmod(r, n, nsq)) % nsq == ciphertext % nsq

    def raw_encrypt(self, plaintext: int) -> int:
        """Encrypt an already-encoded integer in [0, n) with a fresh obfuscator."""
        if not 0 <= plaintext < self.n:
            raise ValueError("encoded plaintext must lie in [0, n)")
        return int(self._phe.raw_encrypt(plaintext))

    def __eq__(self, other: object) -> bool:
        return isinstance(other, PublicKey) and other.n == self.n

    def __hash__(self) -> int:
        return hash(self.n)

    def __repr__(self) -> str:
        return f"PublicKey(bits={self.bits}, fingerprint={self.fingerprint()})"


class PrivateKey:
    """A Paillier private key; it stays with the requester that generated it."""

    __slots__ = ("_phe", "public_key")

    def __init__(self, public_key: PublicKey, p: int, q: int) -> None:
        if p * q != public_key.n or p <= 1 or q <= 1 or p == q:
            raise InvalidKeyError("private key factors do not match the public modulus")
        self.public_key = public_key
        self._phe = paillier.PaillierPrivateKey(public_key._phe, p, q)

    @classmethod
    def generate(cls, bits: int = MIN_KEY_BITS) -> PrivateKey:
        if bits < MIN_KEY_BITS:
            raise KeyTooSmallError(bits, MIN_KEY_BITS)
        pub, priv = paillier.generate_paillier_keypair(n_length=bits)
        return cls(PublicKey(int(pub.n)), int(priv.p), int(priv.q))

    def raw_decrypt(self, ciphertext: int) -> int:
        """Decrypt to the encoded integer in [0, n) (CRT inside phe)."""
        return int(self._phe.raw_decrypt(ciphertext))

    def decrypt_with_proof(self, ciphertext: int) -> tuple[int, int]:
        """(m, r) with c = (1 + n·m)·r^n mod n²: anyone can check that m is c's plaintext.

        Only the key holder can find r (an n-th root modulo n needs φ(n)), so a party
        that hands back a decryption cannot substitute a value of its choosing.
        """
        n = self.public_key.n
        m = self.raw_decrypt(ciphertext)
        residue = ciphertext * (1 - n * m) % self.public_key.n_squared  # = r^n mod n²
        phi = (int(self._phe.p) - 1) * (int(self._phe.q) - 1)
        r = int(gmpy2.powmod(residue % n, gmpy2.invert(n, phi), n))
        return m, r

    def to_json_bytes(self) -> bytes:
        doc = {
            "kind": _PRIVATE_KIND,
            "n": format(self.public_key.n, "x"),
            "p": format(int(self._phe.p), "x"),
            "q": format(int(self._phe.q), "x"),
        }
        return json.dumps(doc, indent=2).encode("utf-8")

    @classmethod
    def from_json_bytes(cls, data: bytes) -> PrivateKey:
        # Error messages name the field only: the text of a parse error would quote
        # the (secret) digits of p or q.
        try:
            doc: Any = json.loads(data)
        except (ValueError, UnicodeDecodeError):
            raise InvalidKeyError("private key file is not JSON") from None
        if not isinstance(doc, dict) or doc.get("kind") != _PRIVATE_KIND:
            raise InvalidKeyError(f"not a {_PRIVATE_KIND} document")
        values: dict[str, int] = {}
        for name in ("n", "p", "q"):
            text = doc.get(name)
            try:
                values[name] = int(text, 16) if isinstance(text, str) else -1
            except ValueError:
                values[name] = -1
            if values[name] <= 0:
                raise InvalidKeyError(f"private key field {name!r} is missing or not hex") from None
        return cls(PublicKey(values["n"]), values["p"], values["q"])

    def __repr__(self) -> str:
        # Deliberately no factors: a private key must never end up in a log line.
        return f"PrivateKey(public={self.public_key!r})"
