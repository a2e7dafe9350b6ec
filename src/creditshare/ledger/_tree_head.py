"""Signed tree heads: the log operator's Ed25519 commitment to (size, root, time).

A head is what makes the log accountable: once a node or an enterprise holds a
signed head, the operator cannot later present a log whose first ``size`` entries
differ without the signature (or a failed consistency proof) giving it away. The
signed message is a fixed binary layout with a domain-separation prefix, so a
signature over a head can never be mistaken for a signature over anything else
the same key might sign.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Self

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    NoEncryption,
    PrivateFormat,
    PublicFormat,
)

from creditshare.errors import InvalidInputError, InvalidSignatureError
from creditshare.ledger._fields import b64, get_b64, get_int, get_str
from creditshare.ledger._merkle import HASH_SIZE

__all__ = ["SIGNATURE_SIZE", "LogSigner", "SignedTreeHead", "key_id_for"]

SIGNATURE_SIZE = 64
_KEY_ID_LENGTH = 16
_MAX_U64 = (1 << 64) - 1
_DOMAIN = b"creditshare/sth/v1\n"
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def key_id_for(public_key: Ed25519PublicKey) -> str:
    """First 16 hex characters of SHA-256 of the raw public key: names the signing key."""
    raw = public_key.public_bytes(Encoding.Raw, PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:_KEY_ID_LENGTH]


def _check_u64(name: str, value: object) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value <= _MAX_U64:
        raise InvalidInputError(f"tree head {name} must be an integer in 0..2^64-1, got {value!r}")


@dataclass(frozen=True)
class SignedTreeHead:
    """A tree size and root, signed with a timestamp by the log key ``key_id``.

    Construction checks shapes (sizes, lengths, key id form) but not the signature:
    call ``verify`` with the log's public key before trusting a head.
    """

    size: int
    root: bytes
    timestamp_ms: int
    signature: bytes
    key_id: str

    def __post_init__(self) -> None:
        _check_u64("size", self.size)
        _check_u64("timestamp_ms", self.timestamp_ms)
        if not isinstance(self.root, bytes) or len(self.root) != HASH_SIZE:
            raise InvalidInputError(f"tree head root must be {HASH_SIZE} bytes")
        if not isinstance(self.signature, bytes) or len(self.signature) != SIGNATURE_SIZE:
            raise InvalidInputError(f"tree head signature must be {SIGNATURE_SIZE} bytes")
        if (
            not isinstance(self.key_id, str)
            or len(self.key_id) != _KEY_ID_LENGTH
            or any(c not in "0123456789abcdef" for c in self.key_id)
        ):
            raise InvalidInputError(f"tree head key_id must be {_KEY_ID_LENGTH} lowercase hex")

    @property
    def timestamp(self) -> datetime:
        return _EPOCH + timedelta(milliseconds=self.timestamp_ms)

    def signed_bytes(self) -> bytes:
        """The exact message the signature covers."""
        return _message(self.size, self.root, self.timestamp_ms)

    def verify(self, public_key: Ed25519PublicKey) -> None:
        """Raise ``InvalidSignatureError`` unless ``public_key`` signed this head."""
        expected = key_id_for(public_key)
        if self.key_id != expected:
            raise InvalidSignatureError(
                f"tree head of size {self.size} names key {self.key_id}, not the log key {expected}"
            )
        try:
            public_key.verify(self.signature, self.signed_bytes())
        except InvalidSignature as exc:
            raise InvalidSignatureError(
                f"tree head of size {self.size} has a bad signature"
            ) from exc

    def to_dict(self) -> dict[str, int | str]:
        return {
            "size": self.size,
            "root": b64(self.root),
            "timestamp_ms": self.timestamp_ms,
            "signature": b64(self.signature),
            "key_id": self.key_id,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, object]) -> SignedTreeHead:
        """Parse the JSON form; raises ``InvalidInputError`` naming the bad field."""
        what = "tree head"
        return cls(
            size=get_int(data, "size", what),
            root=get_b64(data, "root", what, HASH_SIZE),
            timestamp_ms=get_int(data, "timestamp_ms", what),
            signature=get_b64(data, "signature", what, SIGNATURE_SIZE),
            key_id=get_str(data, "key_id", what),
        )


def _message(size: int, root: bytes, timestamp_ms: int) -> bytes:
    return _DOMAIN + size.to_bytes(8, "big") + timestamp_ms.to_bytes(8, "big") + root


class LogSigner:
    """The log operator's Ed25519 key, used only to sign tree heads."""

    def __init__(self, private_key: Ed25519PrivateKey) -> None:
        self._private_key = private_key
        self._public_key = private_key.public_key()
        self._key_id = key_id_for(self._public_key)

    @classmethod
    def generate(cls) -> Self:
        return cls(Ed25519PrivateKey.generate())

    @classmethod
    def from_private_bytes(cls, data: bytes) -> Self:
        """From the 32-byte raw Ed25519 private key (as ``private_bytes`` returns)."""
        if not isinstance(data, bytes) or len(data) != 32:
            raise InvalidInputError("an Ed25519 private key is exactly 32 raw bytes")
        return cls(Ed25519PrivateKey.from_private_bytes(data))

    def private_bytes(self) -> bytes:
        return self._private_key.private_bytes(Encoding.Raw, PrivateFormat.Raw, NoEncryption())

    @property
    def public_key(self) -> Ed25519PublicKey:
        return self._public_key

    @property
    def key_id(self) -> str:
        return self._key_id

    def sign_head(self, size: int, root: bytes, timestamp_ms: int) -> SignedTreeHead:
        _check_u64("size", size)
        _check_u64("timestamp_ms", timestamp_ms)
        if not isinstance(root, bytes) or len(root) != HASH_SIZE:
            raise InvalidInputError(f"tree head root must be {HASH_SIZE} bytes")
        signature = self._private_key.sign(_message(size, root, timestamp_ms))
        return SignedTreeHead(size, root, timestamp_ms, signature, self._key_id)

    def __repr__(self) -> str:
        return f"LogSigner(key_id={self._key_id!r})"
