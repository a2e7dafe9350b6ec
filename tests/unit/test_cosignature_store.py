"""The coordinator's store of cosignatures, on SQLite and PostgreSQL: bounded to the
newest heads, a witness's newer word replaces its older one, and heads never mix."""

from __future__ import annotations

from datetime import UTC, datetime

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from creditshare.coordinator._cosignatures import KEPT_HEADS, CosignatureStore
from creditshare.coordinator._db import make_engine
from creditshare.ledger import (
    Cosignature,
    LogSigner,
    SignedTreeHead,
    checkpoint_body,
    cosign,
    leaf_hash,
    log_origin,
)

LOG = LogSigner.generate()
ORIGIN = log_origin(LOG.public_key)
WITNESSES = {name: Ed25519PrivateKey.generate() for name in ("yrd-tax", "yrd-court")}
NOW = datetime(2026, 11, 30, tzinfo=UTC)


def _head(size: int, root: bytes = b"genuine") -> SignedTreeHead:
    return LOG.sign_head(size, leaf_hash(root + str(size).encode()), 1_700_000_000_000)


def _cosign(name: str, head: SignedTreeHead, timestamp: int = 1_700_000_000) -> Cosignature:
    return cosign(WITNESSES[name], name, checkpoint_body(head, ORIGIN), timestamp)


def test_store_keeps_the_newest_heads_only_and_one_word_per_witness(database_url: str) -> None:
    store = CosignatureStore(make_engine(database_url))
    assert store.newest() == []
    for size in range(1, KEPT_HEADS + 5):
        head = _head(size)
        store.add(head, [_cosign("yrd-tax", head), _cosign("yrd-court", head)], NOW)
    stored = store.newest()
    sizes = [size for size, _, _ in stored]
    assert sizes == list(range(KEPT_HEADS + 4, 4, -1))  # newest first, KEPT_HEADS of them
    top = _head(KEPT_HEADS + 4)
    size, root, cosignatures = stored[0]
    assert root == top.root
    assert sorted(c.witness for c in cosignatures) == ["yrd-court", "yrd-tax"]
    # The same witness again on the same head: its newer cosignature replaces the old one.
    fresher = _cosign("yrd-tax", top, 1_700_000_100)
    store.add(top, [fresher], NOW)
    _, _, cosignatures = store.newest()[0]
    assert fresher in cosignatures and len(cosignatures) == 2
