"""A node's check that a query was recorded before it answers.

Order matters: the tree head's signature first (is this the ledger we trust?),
then inclusion of the leaf (was this query recorded?), then consistency with
the head we accepted before (is this still the same append-only log?), and
last the record itself must describe exactly the request in hand.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from creditshare.crypto import PublicKey, VerifyKey
from creditshare.errors import InvalidInputError, PermissionDeniedError
from creditshare.identity import Chain
from creditshare.ledger import (
    HASH_SIZE,
    MAX_RECORD_BYTES,
    SIGNATURE_SIZE,
    QueryRecord,
    Receipt,
    SignedTreeHead,
    TrustedHeadTracker,
    leaf_hash,
    parse_record,
)
from creditshare.proto import node_pb2

if TYPE_CHECKING:
    from creditshare.node._authority import RequestAuthority

__all__ = ["ReceiptChecker", "ReceiptRefusedError", "check_receipt_shape"]

#: Tolerated clock skew between coordinator and node.
_SKEW = timedelta(seconds=60)
#: A training job aligns and opens within this long of being recorded.
TRAINING_RECEIPT_MAX_AGE = timedelta(hours=1)


class ReceiptRefusedError(PermissionDeniedError):
    """No receipt, or one that does not prove this very query was logged."""


#: A Merkle path is at most one hash per tree level: 64 levels cover 2^64 leaves.
MAX_PROOF_HASHES = 64


def check_receipt_shape(pb: node_pb2.QueryReceipt) -> None:
    """Refuse a receipt whose parts are not the sizes a real one has, before any of it is
    hashed, parsed or verified: a receipt bounds the work a request can cause."""
    th = pb.tree_head
    if not 0 < len(pb.leaf_data) <= MAX_RECORD_BYTES:
        raise InvalidInputError(f"receipt leaf_data must be 1 to {MAX_RECORD_BYTES} bytes")
    for name, proof in (
        ("inclusion_proof", pb.inclusion_proof),
        ("consistency_proof", pb.consistency_proof),
    ):
        if len(proof) > 2 * MAX_PROOF_HASHES or any(len(h) != HASH_SIZE for h in proof):
            raise InvalidInputError(
                f"receipt {name} must be at most {2 * MAX_PROOF_HASHES} hashes of {HASH_SIZE} bytes"
            )
    if len(th.root) != HASH_SIZE or len(th.signature) != SIGNATURE_SIZE or len(th.key_id) > 64:
        raise InvalidInputError(
            f"receipt tree_head must have a {HASH_SIZE}-byte root and a "
            f"{SIGNATURE_SIZE}-byte signature"
        )
    if not pb.leaf_index < th.size < 1 << 63 or pb.consistency_from >= 1 << 63:
        raise InvalidInputError("receipt leaf_index must lie inside its tree head's size")


class ReceiptChecker:
    def __init__(
        self,
        log_key: VerifyKey,
        tracker: TrustedHeadTracker,
        chain: Chain,
        clock: Callable[[], datetime],
        max_age: timedelta,
        authority: RequestAuthority,
    ) -> None:
        self._authority = authority
        self._log_key = log_key
        self._tracker = tracker
        self._chain = chain
        self._clock = clock
        self._max_age = max_age

    def _verified(self, pb: node_pb2.QueryReceipt) -> tuple[int, QueryRecord]:
        """Signature, inclusion and consistency, then the record those bytes hold."""
        check_receipt_shape(pb)
        th = pb.tree_head
        head = SignedTreeHead(th.size, th.root, th.timestamp_ms, th.signature, th.key_id)
        receipt = Receipt(
            index=pb.leaf_index,
            data=pb.leaf_data,
            leaf_hash=leaf_hash(pb.leaf_data),
            head=head,
            inclusion_proof=tuple(pb.inclusion_proof),
        )
        receipt.verify(self._log_key.cryptography_key)
        self._tracker.accept(
            head, list(pb.consistency_proof), pb.consistency_from, self._log_key.cryptography_key
        )
        try:
            record = parse_record(pb.leaf_data)
        except InvalidInputError as exc:
            raise ReceiptRefusedError(f"receipt record unreadable: {exc}") from exc
        return receipt.index, record

    def check(
        self, request: node_pb2.ScoreRequest, uscc: str, key: PublicKey
    ) -> tuple[int, QueryRecord]:
        """Return (leaf index, record) or raise; stale heads raise StaleTreeHeadError."""
        if not request.HasField("receipt"):
            raise ReceiptRefusedError("a ledger receipt is required")
        self._authority.update_revocations(request.credentials.revocation_lists)
        index, record = self._verified(request.receipt)
        self._match(record, request, uscc, key)
        self._fresh(record, self._max_age)
        self._authority.check_query(
            record, request.credentials.requester, request.credentials.enterprise
        )
        return index, record

    def check_training(
        self,
        pb: node_pb2.QueryReceipt | None,
        job_id: str,
        key: PublicKey,
        credentials: node_pb2.Credentials,
    ) -> tuple[int, QueryRecord]:
        """A training job is answered only under its own recorded, bureau-signed entry."""
        if pb is None:
            raise ReceiptRefusedError("a ledger receipt for the training job is required")
        self._authority.update_revocations(credentials.revocation_lists)
        index, record = self._verified(pb)
        mismatches = [
            name
            for name, ok in (
                ("kind", record.kind == "training"),
                ("job id", record.query_id == job_id),
                ("public key", record.key_fingerprint == key.fingerprint()),
                ("chain", self._chain.value in record.chains),
            )
            if not ok
        ]
        if mismatches:
            raise ReceiptRefusedError(f"receipt does not match the job: {', '.join(mismatches)}")
        self._fresh(record, TRAINING_RECEIPT_MAX_AGE)
        self._authority.check_training(record, credentials.requester)
        return index, record

    def _fresh(self, record: QueryRecord, max_age: timedelta) -> None:
        now = self._clock()
        if record.time > now + _SKEW:
            raise ReceiptRefusedError("receipt is dated in the future")
        if now - record.time > max_age:
            raise ReceiptRefusedError("receipt is too old")

    def _match(
        self, record: QueryRecord, request: node_pb2.ScoreRequest, uscc: str, key: PublicKey
    ) -> None:
        mismatches = [
            name
            for name, ok in (
                ("kind", record.kind == "query"),
                ("uscc", record.uscc == uscc),
                ("model_id", record.model_id == request.model_id),
                ("query id", record.query_id == request.request_id),
                ("public key", record.key_fingerprint == key.fingerprint()),
                ("chain", self._chain.value in record.chains),
            )
            if not ok
        ]
        if mismatches:
            raise ReceiptRefusedError(
                f"receipt does not match the request: {', '.join(mismatches)}"
            )
