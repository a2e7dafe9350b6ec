"""Ed25519 signing keys for enterprises (consent grants) and the ledger (tree heads).

Thin, explicit wrappers: a verify key is built from exactly 32 raw bytes (or
their base64), so a malformed key is refused at the door rather than at first use.
"""

from __future__ import annotations

import base64
import binascii
import hashlib

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from creditshare.errors import InvalidInputError, InvalidKeyError, InvalidSignatureError

__all__ = ["SIGNATURE_BYTES", "SigningKey", "VerifyKey", "decode_signature"]

#: An Ed25519 signature's length.
SIGNATURE_BYTES = 64


def decode_signature(text: object, what: str) -> bytes:
    """The raw signature in ``text`` (standard base64 of 64 bytes), or InvalidInputError
    naming ``what`` was signed: every signed document's wire form decodes it this way."""
    try:
        raw = base64.b64decode(str(text).encode("ascii"), validate=True)
    except (binascii.Error, UnicodeEncodeError):
        raise InvalidInputError(f"{what} signature is not valid base64") from None
    if len(raw) != SIGNATURE_BYTES:
        raise InvalidInputError(f"{what} signature must be {SIGNATURE_BYTES} bytes (Ed25519)")
    return raw


class VerifyKey:
    __slots__ = ("_key", "raw")

    def __init__(self, raw: bytes) -> None:
        if not isinstance(raw, bytes) or len(raw) != 32:
            raise InvalidKeyError("an Ed25519 public key is exactly 32 bytes")
        self.raw = raw
        self._key = Ed25519PublicKey.from_public_bytes(raw)

    @classmethod
    def from_text(cls, text: str) -> VerifyKey:
        try:
            return cls(base64.b64decode(text.encode("ascii"), validate=True))
        except (binascii.Error, UnicodeEncodeError) as exc:
            raise InvalidKeyError("Ed25519 public key is not valid base64") from exc

    @classmethod
    def from_cryptography(cls, key: Ed25519PublicKey) -> VerifyKey:
        return cls(key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw))

    def to_text(self) -> str:
        return base64.b64encode(self.raw).decode("ascii")

    @property
    def key_id(self) -> str:
        return hashlib.sha256(self.raw).hexdigest()[:16]

    @property
    def cryptography_key(self) -> Ed25519PublicKey:
        return self._key

    def verify(self, signature: bytes, message: bytes) -> None:
        try:
            self._key.verify(signature, message)
        except InvalidSignature:
            raise InvalidSignatureError("signature does not verify") from None

    def __eq__(self, other: object) -> bool:
        return isinstance(other, VerifyKey) and other.raw == self.raw

    def __hash__(self) -> int:
        return hash(self.raw)


class SigningKey:
    __slots__ = ("_key",)

    def __init__(self, key: Ed25519PrivateKey) -> None:
        self._key = key

    @classmethod
    def generate(cls) -> SigningKey:
        return cls(Ed25519PrivateKey.generate())

    @property
    def verify_key(self) -> VerifyKey:
        return VerifyKey.from_cryptography(self._key.public_key())

    @property
    def cryptography_key(self) -> Ed25519PrivateKey:
        return self._key

    def sign(self, message: bytes) -> bytes:
        return self._key.sign(message)

    def to_pem(self) -> bytes:
        return self._key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )

    @classmethod
    def from_pem(cls, data: bytes) -> SigningKey:
        try:
            key = serialization.load_pem_private_key(data, password=None)
        except (ValueError, TypeError) as exc:
            raise InvalidKeyError("not a PEM-encoded private key") from exc
        if not isinstance(key, Ed25519PrivateKey):
            raise InvalidKeyError("expected an Ed25519 private key")
        return cls(key)

    def __repr__(self) -> str:
        return f"SigningKey(key_id={self.verify_key.key_id})"
