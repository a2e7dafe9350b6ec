"""The memory of checks that passed (``creditshare._recent``), as the node uses it for consent
signatures: keyed by exactly the bytes checked, failures never remembered, bounded."""

from __future__ import annotations

import pytest

from creditshare._recent import RecentlyPassed
from creditshare.crypto import SigningKey, VerifyKey
from creditshare.errors import InvalidSignatureError


class _CountingKey(VerifyKey):
    __slots__ = ("checks",)

    def __init__(self, raw: bytes) -> None:
        super().__init__(raw)
        self.checks = 0

    def verify(self, signature: bytes, message: bytes) -> None:
        self.checks += 1
        super().verify(signature, message)


def _key(signer: SigningKey) -> _CountingKey:
    return _CountingKey(signer.verify_key.raw)


class _VerifiedSignatures:
    """What the node's RequestAuthority does with its consent-signature memory."""

    def __init__(self, size: int) -> None:
        self._passed: RecentlyPassed[tuple[bytes, bytes, bytes]] = RecentlyPassed(size)

    def verify(self, key: VerifyKey, signature: bytes, message: bytes) -> None:
        self._passed.check((key.raw, signature, message), lambda: key.verify(signature, message))


def test_a_verified_triple_is_checked_once_and_anything_else_is_checked_again() -> None:
    signer, other = SigningKey.generate(), SigningKey.generate()
    key = _key(signer)
    seen = _VerifiedSignatures(8)
    message = b'{"consent_id":"c-1"}'
    signature = signer.sign(message)
    seen.verify(key, signature, message)
    seen.verify(key, signature, message)
    assert key.checks == 1
    # Another message, another signature, another key: each is a fresh check, and fails.
    with pytest.raises(InvalidSignatureError):
        seen.verify(key, signature, message + b" ")
    with pytest.raises(InvalidSignatureError):
        seen.verify(key, other.sign(message), message)
    wrong = _key(other)
    with pytest.raises(InvalidSignatureError):
        seen.verify(wrong, signature, message)
    assert (key.checks, wrong.checks) == (3, 1)


def test_a_failure_is_never_remembered_and_the_memory_is_bounded() -> None:
    signer = SigningKey.generate()
    key = _key(signer)
    seen = _VerifiedSignatures(2)
    forged = bytes(64)
    for _ in range(2):
        with pytest.raises(InvalidSignatureError):
            seen.verify(key, forged, b"m")
    assert key.checks == 2
    messages = [b"a", b"b", b"c"]
    for m in messages:
        seen.verify(key, signer.sign(m), m)
    seen.verify(key, signer.sign(b"a"), b"a")  # evicted by "c": checked again
    assert key.checks == 2 + 3 + 1
