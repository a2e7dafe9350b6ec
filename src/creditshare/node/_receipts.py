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

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from cryptography.utils import Buffer

from creditshare._recent import RecentlyPassed
from creditshare.consent import ConsentGrant
from creditshare.crypto import PublicKey, VerifyKey
from creditshare.errors import InvalidInputError, PermissionDeniedError
from creditshare.identity import Chain
from creditshare.ledger import QueryRecord, TrustedHeadTracker, parse_record
from creditshare.monitoring import cycle_digest, node_digest
from creditshare.proto import node_pb2, receipt_from_pb
from creditshare.signed import SignedSubscription
from creditshare.statistics import CohortQuery

if TYPE_CHECKING:
    from creditshare.node._authority import RequestAuthority

__all__ = ["ReceiptChecker", "ReceiptRefusedError"]

#: Tolerated clock skew between coordinator and node.
_SKEW = timedelta(seconds=60)
#: A training job aligns and opens within this long of being recorded.
TRAINING_RECEIPT_MAX_AGE = timedelta(hours=1)


class ReceiptRefusedError(PermissionDeniedError):
    """No receipt, or one that does not prove this very query was logged."""


#: Signatures remembered as verified: the heads of the last few queries.
_REMEMBERED = 64


class _RememberingKey(Ed25519PublicKey):
    """The log key, remembering the (signature, message) pairs it found valid.

    Each answer checks the same tree head twice (the receipt's signature, then the
    tracker's before it trusts the head), and the Score and TreeScore of one query, and a
    cosigning round, check it again. A pair verified once is valid for good under the
    same key, so a repeat is a lookup keyed by exactly the bytes that were verified; a
    failed verification is never remembered.
    """

    def __init__(self, key: Ed25519PublicKey) -> None:
        self._key = key
        self._raw = key.public_bytes_raw()
        self._valid: RecentlyPassed[tuple[bytes, bytes]] = RecentlyPassed(_REMEMBERED)

    def verify(self, signature: Buffer, data: Buffer) -> None:
        # raises InvalidSignature: nothing remembered
        self._valid.check(
            (bytes(signature), bytes(data)), lambda: self._key.verify(signature, data)
        )

    def public_bytes(self, encoding: Encoding, format: PublicFormat) -> bytes:
        if (encoding, format) == (Encoding.Raw, PublicFormat.Raw):
            return self._raw
        return self._key.public_bytes(encoding, format)

    def public_bytes_raw(self) -> bytes:
        return self._raw

    def __eq__(self, other: object) -> bool:
        return self._key == (other._key if isinstance(other, _RememberingKey) else other)

    def __hash__(self) -> int:
        return hash(self._raw)

    def __copy__(self) -> _RememberingKey:
        return self

    def __deepcopy__(self, memo: dict[int, object]) -> _RememberingKey:
        return self


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
        self._verifying = _RememberingKey(log_key.cryptography_key)
        self._tracker = tracker
        self._chain = chain
        self._clock = clock
        self._max_age = max_age

    def _verified(self, pb: node_pb2.QueryReceipt) -> tuple[int, QueryRecord]:
        """Signature, inclusion and consistency, then the record those bytes hold."""
        proven = receipt_from_pb(pb)  # sizes bounded before anything is hashed
        receipt = proven.receipt
        receipt.verify(self._verifying)
        self._tracker.accept(
            receipt.head,
            list(proven.consistency_proof),
            proven.consistency_from,
            self._verifying,
        )
        try:
            record = parse_record(pb.leaf_data)
        except InvalidInputError as exc:
            raise ReceiptRefusedError(f"receipt record unreadable: {exc}") from exc
        return receipt.index, record

    def check(
        self,
        request: node_pb2.ScoreRequest | node_pb2.TreeScoreRequest,
        uscc: str,
        key: PublicKey,
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
        config_sha256: str | None = None,
    ) -> tuple[int, QueryRecord, list[VerifyKey]]:
        """A training job is answered only under its own recorded, bureau-signed entry;
        ``config_sha256`` (the digest of the settings a node was sent to train with) must
        be the one the bureau signed. With the entry: the bureau's certified keys."""
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
        bureau = self._authority.check_training(record, credentials.requester, config_sha256)
        return index, record, [c.verify_key for c in bureau]

    def check_statistics(
        self,
        pb: node_pb2.QueryReceipt | None,
        request_id: str,
        key: PublicKey,
        credentials: node_pb2.Credentials,
    ) -> tuple[int, QueryRecord, CohortQuery]:
        """A cohort statistics query is answered only under its own fresh ledger entry
        (kind ``statistics``, this chain among its chains, for this very key), whose
        signed query a certified regulator signed (``RequestAuthority.check_cohort``):
        (leaf index, record, the signed query)."""
        if pb is None:
            raise ReceiptRefusedError("a ledger receipt for the statistics query is required")
        self._authority.update_revocations(credentials.revocation_lists)
        index, record = self._verified(pb)
        mismatches = [
            name
            for name, ok in (
                ("kind", record.kind == "statistics"),
                ("query id", record.query_id == request_id),
                ("public key", record.key_fingerprint == key.fingerprint()),
                ("chain", self._chain.value in record.chains),
            )
            if not ok
        ]
        if mismatches:
            raise ReceiptRefusedError(
                f"receipt does not match the statistics query: {', '.join(mismatches)}"
            )
        self._fresh(record, self._max_age)
        query = self._authority.check_cohort(record, credentials.requester)
        return index, record, query

    def check_subscription(
        self,
        pb: node_pb2.QueryReceipt | None,
        signed: SignedSubscription,
        credentials: node_pb2.Credentials,
    ) -> tuple[int, QueryRecord, ConsentGrant]:
        """A subscription is registered only under its own recorded entry, which carries
        exactly the bank's signed subscription and the enterprise's consent.

        No age bound: a node that was down registers the subscription cycles later, and
        what keeps an old one from being used is its consent (validity, revocation),
        checked now; only a record dated in the future is refused.
        """
        if pb is None:
            raise ReceiptRefusedError("a ledger receipt for the subscription is required")
        self._authority.update_revocations(credentials.revocation_lists)
        index, record = self._verified(pb)
        mismatches = [
            name
            for name, ok in (
                ("kind", record.kind == "subscription"),
                ("subscription id", record.query_id == signed.subscription_id),
                ("signed subscription", record.request == signed.to_json()),
                ("alert key", record.key_fingerprint == signed.alert_key.fingerprint()),
                ("chain", self._chain.value in record.chains),
            )
            if not ok
        ]
        if mismatches:
            raise ReceiptRefusedError(
                f"receipt does not match the subscription: {', '.join(mismatches)}"
            )
        _not_future(record.time, self._clock())
        grant = self._authority.check_subscription(
            record, signed, credentials.requester, credentials.enterprise
        )
        return index, record, grant

    def check_cycle(
        self,
        pb: node_pb2.QueryReceipt | None,
        number: int,
        node_id: str,
        subscriptions: dict[str, str],
        node_digests: dict[str, str],
    ) -> tuple[int, QueryRecord]:
        """A monitoring cycle is answered only under its own fresh ledger entry, whose
        digest commits to every node's subscription set, this node's being exactly the
        ``subscriptions`` (id → digest) it is asked to serve. (Revocation lists are
        taken by the caller, before.)"""
        if pb is None:
            raise ReceiptRefusedError("a ledger receipt for the monitoring cycle is required")
        index, record = self._verified(pb)
        cycle = record.cycle if isinstance(record.cycle, dict) else {}
        nodes = cycle.get("nodes")
        nodes = nodes if isinstance(nodes, list) else []
        mismatches = [
            name
            for name, ok in (
                ("kind", record.kind == "monitoring_cycle"),
                ("cycle number", cycle.get("number") == number),
                ("node", node_id in nodes),
                ("nodes", sorted(node_digests) == sorted(n for n in nodes if isinstance(n, str))),
                ("node digest", node_digests.get(node_id) == node_digest(subscriptions)),
                ("cycle digest", cycle.get("digest") == cycle_digest(node_digests)),
            )
            if not ok
        ]
        if mismatches:
            raise ReceiptRefusedError(
                f"receipt does not match the monitoring cycle: {', '.join(mismatches)}"
            )
        self._fresh(record, self._max_age)
        return index, record

    def _fresh(self, record: QueryRecord, max_age: timedelta) -> None:
        now = self._clock()
        _not_future(record.time, now)
        if now - record.time > max_age:
            raise ReceiptRefusedError(
                f"receipt is too old: its record is dated {_seconds(now - record.time)} s "
                f"before this node's clock, at most {_seconds(max_age)} s allowed "
                "(receipt_max_age_seconds)"
            )

    def _match(
        self,
        record: QueryRecord,
        request: node_pb2.ScoreRequest | node_pb2.TreeScoreRequest,
        uscc: str,
        key: PublicKey,
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


def _not_future(recorded: datetime, now: datetime) -> None:
    """Refuse a record dated ahead of this node's clock by more than the skew allowed,
    saying by how much (a coordinator's clock ahead of the node's shows here)."""
    if recorded > now + _SKEW:
        raise ReceiptRefusedError(
            f"receipt is dated in the future: its record is {_seconds(recorded - now)} s "
            f"ahead of this node's clock, at most {_seconds(_SKEW)} s allowed"
        )


def _seconds(span: timedelta) -> str:
    return f"{round(span.total_seconds(), 1):g}"
