"""The node as a witness of the log: it cosigns the tree heads it accepted.

A node already refuses a head that does not extend the one it trusts; cosigning
makes that check visible to everyone else. A client that requires cosignatures
from a quorum of nodes knows the coordinator cannot show it a log the nodes did
not see (a split view) unless that many nodes collude.

The head goes through the very ``TrustedHeadTracker.accept`` the query path uses,
so a cosignature means exactly what answering a query means. Only the head the node
now trusts is cosigned: an older head is refused as stale (with the trusted size,
as for a query), a forked one as a fork; neither is ever cosigned.
"""

from __future__ import annotations

import logging
import stat
from collections.abc import Callable
from datetime import datetime
from pathlib import Path

from creditshare.crypto import SigningKey, VerifyKey
from creditshare.errors import (
    ConfigurationError,
    InconsistentTreeHeadError,
    InvalidInputError,
    InvalidKeyError,
    NotFoundError,
)
from creditshare.ledger import (
    HASH_SIZE,
    MAX_PROOF_HASHES,
    SignedTreeHead,
    StaleTreeHeadError,
    TrustedHeadTracker,
    WitnessKey,
    checkpoint_body,
    cosign,
    log_origin,
)
from creditshare.proto import head_from_pb, node_pb2

__all__ = ["NodeWitness", "generate_witness_key", "load_witness_key"]

log = logging.getLogger("creditshare.node")


def generate_witness_key(path: Path) -> SigningKey:
    """Make a witness key at ``path`` (mode 0600, made where it is used); refuses to
    overwrite one, since a witness's key is its identity to every client."""
    key = SigningKey.generate()
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        with path.open("xb") as handle:
            path.chmod(stat.S_IRUSR | stat.S_IWUSR)
            handle.write(key.to_pem())
    except FileExistsError:
        raise ConfigurationError(f"{path} exists; a witness key is never overwritten") from None
    return key


def load_witness_key(path: Path) -> SigningKey:
    try:
        return SigningKey.from_pem(path.read_bytes())
    except FileNotFoundError:
        raise ConfigurationError(f"witness key not found: {path}") from None
    except InvalidKeyError as exc:
        raise ConfigurationError(f"witness key {path}: {exc}") from exc


def _head_of(request: node_pb2.AddCheckpointRequest) -> SignedTreeHead:
    """The request's head, its parts bounded before anything is hashed or verified."""
    if not request.HasField("tree_head"):
        raise InvalidInputError("tree_head is required")
    proof = request.consistency_proof
    if len(proof) > MAX_PROOF_HASHES or any(len(h) != HASH_SIZE for h in proof):
        raise InvalidInputError(
            f"consistency_proof must be at most {MAX_PROOF_HASHES} hashes of {HASH_SIZE} bytes"
        )
    head = head_from_pb(request.tree_head, "tree_head")
    if request.old_size > head.size:
        raise InvalidInputError(
            f"old_size {request.old_size} is larger than the tree head's size {head.size}"
        )
    return head


class NodeWitness:
    """Cosigns heads for one node; ``key`` None: the node is no witness (NOT_FOUND)."""

    def __init__(
        self,
        node_id: str,
        key: SigningKey | None,
        log_key: VerifyKey,
        tracker: TrustedHeadTracker,
        clock: Callable[[], datetime],
    ) -> None:
        self._name = node_id
        self._key = key
        self._log_key = log_key
        self._origin = log_origin(log_key.cryptography_key)
        self._tracker = tracker
        self._clock = clock
        self.public = None if key is None else WitnessKey(node_id, key.verify_key.raw)

    @property
    def vkey(self) -> str:
        return "" if self.public is None else self.public.vkey()

    def add_checkpoint(
        self, request: node_pb2.AddCheckpointRequest
    ) -> node_pb2.AddCheckpointResponse:
        """Accept the head as a query's would be, then cosign it; blocking."""
        if self._key is None or self.public is None:
            raise NotFoundError(
                f"node {self._name} has no witness key (witness_key_file): it cosigns no head"
            )
        head = _head_of(request)
        trusted = self._tracker.trusted_size
        if head.size < trusted:
            raise StaleTreeHeadError(
                f"tree head of size {head.size} is older than the trusted size {trusted}: "
                "a witness cosigns only the newest head it accepted",
                trusted,
            )
        try:
            now = self._tracker.accept(
                head,
                list(request.consistency_proof),
                request.old_size,
                self._log_key.cryptography_key,
            )
        except InconsistentTreeHeadError as exc:
            log.warning("refused to cosign a forked tree head of size %d: %s", head.size, exc)
            raise
        if now.size != head.size or now.root != head.root:  # a newer head won a race
            raise StaleTreeHeadError(
                f"tree head of size {head.size} is older than the trusted size {now.size}",
                now.size,
            )
        timestamp = max(1, int(self._clock().timestamp()))
        body = checkpoint_body(head, self._origin)
        cosignature = cosign(self._key.cryptography_key, self._name, body, timestamp)
        log.info("cosigned tree head of size %d", head.size)
        return node_pb2.AddCheckpointResponse(
            witness=cosignature.witness,
            key_id=cosignature.key_id,
            timestamp=cosignature.timestamp,
            signature=cosignature.signature,
            tree_size=head.size,
            root=head.root,
        )
