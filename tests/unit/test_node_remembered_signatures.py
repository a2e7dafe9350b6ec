"""A node checks each tree head's signature once per (signature, message), never less.

The receipt check and the trusted-head tracker both verify a query's head; the node's
log key remembers pairs it found valid so the second is a lookup. What it remembers is
keyed by exactly the bytes verified: any other signature or message is verified afresh,
and a failure is never remembered.
"""

from __future__ import annotations

import pytest
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from creditshare.errors import InvalidSignatureError
from creditshare.ledger import LogSigner
from creditshare.ledger._tree_head import key_id_for
from creditshare.node._receipts import _REMEMBERED, _RememberingKey


class CountingKey:
    """Wraps a real key and counts the verifications that reach it."""

    def __init__(self) -> None:
        self.private = Ed25519PrivateKey.generate()
        self.key = self.private.public_key()
        self.calls = 0

    def verify(self, signature: bytes, data: bytes) -> None:
        self.calls += 1
        self.key.verify(signature, data)

    def public_bytes_raw(self) -> bytes:
        return self.key.public_bytes_raw()


def test_a_valid_pair_is_verified_once_and_nothing_else_is_let_through() -> None:
    counting = CountingKey()
    key = _RememberingKey(counting)  # type: ignore[arg-type]
    message = b"tree head 7"
    signature = counting.private.sign(message)
    key.verify(signature, message)
    key.verify(signature, message)
    assert counting.calls == 1
    forged = bytes([signature[0] ^ 1]) + signature[1:]
    for bad_signature, bad_message in ((forged, message), (signature, b"tree head 8")):
        for _ in range(2):  # refused each time: a failure is not remembered
            with pytest.raises(InvalidSignature):
                key.verify(bad_signature, bad_message)
    assert counting.calls == 5


def test_memory_is_bounded_and_forgotten_pairs_are_verified_again() -> None:
    counting = CountingKey()
    key = _RememberingKey(counting)  # type: ignore[arg-type]
    messages = [b"head %d" % i for i in range(_REMEMBERED + 1)]
    pairs = [(counting.private.sign(m), m) for m in messages]
    for signature, message in pairs:
        key.verify(signature, message)
    assert len(key._valid) == _REMEMBERED
    key.verify(*pairs[0])  # the oldest was forgotten: checked again, with the real key
    assert counting.calls == _REMEMBERED + 2


def test_tree_heads_verify_under_it_as_under_the_log_key() -> None:
    signer = LogSigner.generate()
    key = _RememberingKey(signer.public_key)
    assert key_id_for(key) == key_id_for(signer.public_key)
    head = signer.sign_head(3, b"\x01" * 32, 1_700_000_000_000)
    head.verify(key)
    head.verify(key)
    other = LogSigner.generate().sign_head(3, b"\x01" * 32, 1_700_000_000_000)
    with pytest.raises(InvalidSignatureError):
        other.verify(key)
