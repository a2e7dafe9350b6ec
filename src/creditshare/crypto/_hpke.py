"""Alert keys: RFC 9180 HPKE (base mode) to seal monitoring batches to one bank.

A bank makes an X25519 key pair for alerts and registers the public half in each
subscription it signs; nodes seal every batch to it. The suite is fixed
(DHKEM(X25519, HKDF-SHA256), HKDF-SHA256, AES-128-GCM) so there is nothing to
negotiate and nothing a relay could downgrade. ``info`` binds each sealed batch to
its subscription, node and cycle: a relay that moves a batch elsewhere makes it
unopenable rather than misread.
"""

from __future__ import annotations

import base64
import binascii
import hashlib

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.hpke import AEAD, KDF, KEM, Suite

from creditshare.errors import InvalidInputError, InvalidKeyError

__all__ = ["SEAL_OVERHEAD", "AlertPrivateKey", "AlertPublicKey", "SealedOpenError"]

_SUITE = Suite(KEM.X25519, KDF.HKDF_SHA256, AEAD.AES_128_GCM)
#: Bytes a sealed message adds to its plaintext: the 32-byte encapsulated key and the
#: 16-byte AEAD tag. A sealed batch's size is its padded plaintext's plus this.
SEAL_OVERHEAD = 32 + 16
#: Any fixed scalar: an exchange with it fails exactly for small-order public keys.
_PROBE = X25519PrivateKey.from_private_bytes(bytes(range(1, 33)))


class SealedOpenError(InvalidInputError):
    """A sealed message that this key cannot open under this context (tampered, moved
    to another subscription, node or cycle, or sealed to another key)."""


class AlertPublicKey:
    """A bank's X25519 public key for alerts (32 raw bytes)."""

    __slots__ = ("_key", "raw")

    def __init__(self, raw: bytes) -> None:
        if not isinstance(raw, bytes) or len(raw) != 32:
            raise InvalidKeyError("an alert public key is exactly 32 bytes (X25519)")
        if raw == bytes(32):
            raise InvalidKeyError("the all-zero X25519 key is not a public key")
        key = X25519PublicKey.from_public_bytes(raw)
        try:
            # A small-order point gives an all-zero shared secret whatever the scalar:
            # HPKE then refuses to seal to it (RFC 9180 §7.1.4), so a node asked to seal
            # a batch to such a key would fail its whole cycle answer. Refuse it here.
            _PROBE.exchange(key)
        except ValueError:
            raise InvalidKeyError(
                "the alert public key is a small-order X25519 point (nothing can be sealed to it)"
            ) from None
        self.raw = raw
        self._key = key

    @classmethod
    def from_text(cls, text: str) -> AlertPublicKey:
        try:
            return cls(base64.b64decode(text.encode("ascii"), validate=True))
        except (binascii.Error, UnicodeEncodeError):
            raise InvalidKeyError("alert public key is not valid base64") from None

    def to_text(self) -> str:
        return base64.b64encode(self.raw).decode("ascii")

    def fingerprint(self) -> str:
        """SHA-256 of the raw key, hex, first 32 digits: what a signed subscription names."""
        return hashlib.sha256(b"creditshare/alert-key/v1\n" + self.raw).hexdigest()[:32]

    def seal(self, plaintext: bytes, info: bytes) -> bytes:
        """HPKE single-shot seal: encapsulated key || ciphertext (plaintext + 48 bytes)."""
        return _SUITE.encrypt(plaintext, self._key, info)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, AlertPublicKey) and other.raw == self.raw

    def __hash__(self) -> int:
        return hash(self.raw)


class AlertPrivateKey:
    """The bank's private alert key: it never leaves the bank (kept in its key store)."""

    __slots__ = ("_key",)

    def __init__(self, key: X25519PrivateKey) -> None:
        self._key = key

    @classmethod
    def generate(cls) -> AlertPrivateKey:
        return cls(X25519PrivateKey.generate())

    @classmethod
    def from_bytes(cls, raw: bytes) -> AlertPrivateKey:
        if not isinstance(raw, bytes) or len(raw) != 32:
            raise InvalidKeyError("an alert private key is exactly 32 bytes (X25519)")
        return cls(X25519PrivateKey.from_private_bytes(raw))

    def to_bytes(self) -> bytes:
        return self._key.private_bytes(
            serialization.Encoding.Raw,
            serialization.PrivateFormat.Raw,
            serialization.NoEncryption(),
        )

    def public_key(self) -> AlertPublicKey:
        return AlertPublicKey(
            self._key.public_key().public_bytes(
                serialization.Encoding.Raw, serialization.PublicFormat.Raw
            )
        )

    def open(self, sealed: bytes, info: bytes) -> bytes:
        """The plaintext of ``sealed`` under ``info``; SealedOpenError if it does not open."""
        if len(sealed) < SEAL_OVERHEAD:
            raise SealedOpenError("sealed message is shorter than HPKE's overhead")
        try:
            return _SUITE.decrypt(sealed, self._key, info)
        except (InvalidTag, ValueError):
            raise SealedOpenError(
                "sealed message does not open under this key and context"
            ) from None

    def __repr__(self) -> str:  # never print key material
        return f"AlertPrivateKey(public={self.public_key().fingerprint()})"
