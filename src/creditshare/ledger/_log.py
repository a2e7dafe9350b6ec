"""The log itself: append records, sign heads, hand out receipts and proofs.

``Ledger`` is the one place where hashing, signing and storage meet. It takes its
storage, its signing key and its clock as arguments (as Trillian's sequencer
does), so tests run it over memory with a fixed clock and production over SQL.
A ``Receipt`` is what a query carries to the data nodes: the record, the head
that commits to it and the inclusion proof, checkable offline with the log's
public key alone.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from creditshare.errors import (
    ConfigurationError,
    InvalidInputError,
    InvalidProofError,
    LedgerError,
    LedgerIntegrityError,
)
from creditshare.ledger._audit import check_latest_head
from creditshare.ledger._errors import EmptyLogError, integrity_error
from creditshare.ledger._fields import b64, get_b64, get_int, get_list, get_mapping
from creditshare.ledger._merkle import (
    EMPTY_ROOT,
    HASH_SIZE,
    Frontier,
    SubtreeMemo,
    consistency_proof,
    inclusion_proof,
)
from creditshare.ledger._merkle import leaf_hash as compute_leaf_hash
from creditshare.ledger._merkle import root as merkle_root
from creditshare.ledger._merkle import verify_inclusion as check_inclusion
from creditshare.ledger._storage import LedgerStorage, StoredLeaf
from creditshare.ledger._tree_head import LogSigner, SignedTreeHead

__all__ = ["Ledger", "Receipt"]

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
log = logging.getLogger("creditshare.ledger")


@dataclass(frozen=True)
class Receipt:
    """Proof that ``data`` is leaf ``index`` of the log committed to by ``head``."""

    index: int
    data: bytes
    leaf_hash: bytes
    head: SignedTreeHead
    inclusion_proof: tuple[bytes, ...]

    def verify(self, log_key: Ed25519PublicKey) -> None:
        """Raise ``InvalidProofError`` / ``InvalidSignatureError`` unless the receipt holds:
        the hash is the data's, the log key signed the head, and the proof leads to its root.
        """
        if compute_leaf_hash(self.data) != self.leaf_hash:
            raise InvalidProofError(f"receipt for leaf {self.index}: data does not match its hash")
        self.head.verify(log_key)
        check_inclusion(
            self.leaf_hash, self.index, self.head.size, self.inclusion_proof, self.head.root
        )

    def to_dict(self) -> dict[str, object]:
        return {
            "index": self.index,
            "data": b64(self.data),
            "leaf_hash": b64(self.leaf_hash),
            "head": self.head.to_dict(),
            "inclusion_proof": [b64(h) for h in self.inclusion_proof],
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, object]) -> Receipt:
        """Parse the JSON form; ``InvalidInputError`` names the bad field. Call ``verify``."""
        what = "receipt"
        index = get_int(data, "index", what)
        if index < 0:
            raise InvalidInputError(f"receipt.index must not be negative, got {index}")
        return cls(
            index=index,
            data=get_b64(data, "data", what),
            leaf_hash=get_b64(data, "leaf_hash", what, HASH_SIZE),
            head=SignedTreeHead.from_dict(get_mapping(data, "head", what)),
            inclusion_proof=tuple(get_list(data, "inclusion_proof", what, HASH_SIZE)),
        )


class Ledger:
    """An append-only, verifiable log of records, each tagged with its subject.

    An empty log has no signed head: ``latest_head`` and ``receipt`` raise
    ``EmptyLogError`` (a ``LedgerError``) rather than return ``None``, so callers
    that need a head cannot forget the case, and the edge can answer "not found".

    It signs only over storage that extends the last head it signed or verified:
    ``check_storage`` (once, at start: the stored entries reproduce the latest head)
    and a check inside every append. When one fails it refuses every append with
    ``LedgerIntegrityError`` until the process restarts; reads still answer.

    Timestamps come from ``clock``, which must return timezone-aware datetimes.
    Storage serialises appends, but the clock is read inside the append, so a
    clock that steps back (or two coordinators with skewed clocks) produces a head
    older than its predecessor; ``verify_log`` reports that.
    """

    def __init__(
        self, storage: LedgerStorage, signer: LogSigner, clock: Callable[[], datetime]
    ) -> None:
        self._storage = storage
        self._signer = signer
        self._clock = clock
        # The tree of the last head this process signed or verified: its right edge
        # (so signing the next head is O(new leaves), not O(n)), its root and its last
        # leaf hash. ``None`` until ``check_storage`` has passed. Every new head is
        # built by extending this frontier, so it cannot fork from that head; the
        # hashes storage hands over are checked to agree with it first.
        self._lock = threading.Lock()
        self._check_lock = threading.Lock()
        self._frontier: Frontier | None = None
        self._trusted_root = EMPTY_ROOT
        self._trusted_last = b""
        # Why signing is refused, once a check failed; kept until the process restarts.
        self._failure: str | None = None
        # Leaf hashes seen so far and perfect-subtree hashes over them, for proofs in
        # O(log² n) hashes and no storage round trip (see ``_hashes``).
        self._memo: SubtreeMemo = {}
        self._known: list[bytes] = []

    @property
    def storage(self) -> LedgerStorage:
        return self._storage

    @property
    def public_key(self) -> Ed25519PublicKey:
        return self._signer.public_key

    def _now_ms(self) -> int:
        now = self._clock()
        if now.tzinfo is None or now.utcoffset() is None:
            raise ConfigurationError("the ledger clock must return timezone-aware datetimes")
        return (now - _EPOCH) // timedelta(milliseconds=1)

    @property
    def failure(self) -> str | None:
        """Why this ledger refuses to sign (``None`` while it signs)."""
        return self._failure

    def _fail(self, exc: LedgerIntegrityError) -> str:
        """Refuse to sign from now until restart; the first reason found is the one kept."""
        with self._lock:
            first = self._failure is None
            if first:
                self._failure = str(exc)
            reason = self._failure
        if first:
            log.error("ledger integrity check failed; refusing to sign: %s", reason)
        assert reason is not None
        return reason

    def check_storage(self) -> str | None:
        """The start-up check: ``None`` when storage reproduces its latest signed head,
        else the reason, after which every append raises ``LedgerIntegrityError``.

        O(n): every stored leaf is read and hashed once (``check_latest_head``), so
        call it once, off the event loop, when the service starts; ``append`` runs it
        itself if nobody did. Its leaf hashes also seed the proof cache.
        """
        with self._check_lock:
            if self._failure is not None or self._frontier is not None:
                return self._failure
            try:
                checked = check_latest_head(self._storage, self.public_key)
                size = len(checked.hashes)
                # What storage will hand ``build_head`` must be what was just checked.
                if self._storage.leaf_hashes(size) != checked.hashes:
                    raise integrity_error("the stored leaf hashes changed during the check")
            except LedgerIntegrityError as exc:
                return self._fail(exc)
            with self._lock:
                self._frontier = checked.frontier
                self._trusted_root = checked.frontier.root()
                self._trusted_last = checked.hashes[-1] if size else b""
            self._adopt(checked.hashes, size)
            log.info("ledger checked: %d entries reproduce the latest signed head", size)
            return None

    def check_witnesses(self, heads: Mapping[str, SignedTreeHead]) -> str | None:
        """Fail unless storage reproduces every head of this log a witness holds.

        Witnesses (data nodes) keep the largest head of this log they accepted. A log
        whose last entries were deleted together with their heads still reproduces its
        (now smaller) latest head, so ``check_storage`` cannot see it; a witness that
        holds a larger head can. A witness is believed only with a head this log's key
        signed: an unsigned claim (or a forged one) is logged and ignored, so one node
        cannot stop the log by saying so. Costs O(n) per witness head smaller than the
        log (its root is rebuilt from the stored hashes). Returns the failure, if any.
        """
        if self._failure is not None:
            return self._failure
        stored = self._storage.size()
        for witness, head in sorted(heads.items(), key=lambda item: -item[1].size):
            try:
                head.verify(self._signer.public_key)
            except LedgerError as exc:
                log.warning("ignoring %s: its trusted head does not verify (%s)", witness, exc)
                continue
            if head.size > stored:
                return self._fail(
                    integrity_error(
                        f"{witness} holds a signed head of size {head.size} but the database "
                        f"holds {stored} entries: signed entries were deleted"
                    )
                )
            if head.size and merkle_root(self._storage.leaf_hashes(head.size)) != head.root:
                return self._fail(
                    integrity_error(
                        f"{witness} holds a signed head of size {head.size} that the stored "
                        "entries do not reproduce: the log was rewritten"
                    )
                )
        return None

    def check_can_sign(self) -> None:
        """Raise ``LedgerIntegrityError`` if a check failed: O(1), for callers that must
        refuse before they spend or write anything an append would follow."""
        reason = self._failure
        if reason is not None:
            raise LedgerIntegrityError(reason)

    def check_health(self) -> None:
        """For readiness probes: ``check_can_sign``, then one read that the database still
        holds the head this process last signed or verified (a database replaced
        underneath fails here, and signing stops, before any append meets it)."""
        self.check_can_sign()
        with self._lock:
            frontier, trusted_root = self._frontier, self._trusted_root
        if frontier is None or frontier.size == 0:
            return
        stored = self._storage.head(frontier.size)
        if stored is None or stored.root != trusted_root:
            what = "has no signed head" if stored is None else "holds another signed head"
            reason = self._fail(
                integrity_error(
                    f"the database {what} of size {frontier.size}, the last one this "
                    "coordinator signed or verified: it was changed or replaced underneath"
                )
            )
            raise LedgerIntegrityError(reason)

    def _extend(self, hashes: Sequence[bytes]) -> tuple[Frontier, list[bytes]]:
        """The tree over ``hashes`` grown from the trusted one, and its last leaf's proof.

        Refuses unless ``hashes`` extend the trusted tree: at least as many leaves, the
        same hash at its last index (storage hands over a list whose prefix it never
        rewrites; ``SqlLedgerStorage`` raises if the database no longer agrees with
        it). Leaves another replica appended since are added in O(new).
        """
        old = len(hashes) - 1
        with self._lock:
            if self._failure is not None:
                raise LedgerIntegrityError(self._failure)
            base, last = self._frontier, self._trusted_last
        if base is None:
            raise LedgerError("the ledger signs nothing before its storage is checked")
        trusted = base.size
        if old < trusted:
            self._fail(
                integrity_error(
                    f"the database holds {old} entries, fewer than the {trusted} under the "
                    "last head this coordinator signed or verified"
                )
            )
        elif trusted and hashes[trusted - 1] != last:
            self._fail(
                integrity_error(
                    f"entry {trusted - 1}'s hash is not the one under the last head this "
                    f"coordinator signed or verified (size {trusted})"
                )
            )
        self.check_can_sign()
        frontier = base.copy()
        for i in range(trusted, old):
            frontier.append(hashes[i])
        if old > trusted:
            # Another replica appended these: they must reproduce the head it signed
            # for them (one read), or this head would sign over rows nobody signed.
            self._check_replica_head(old, frontier.root())
        return frontier, frontier.append(hashes[old])

    def _check_replica_head(self, size: int, root: bytes) -> None:
        stored = self._storage.head(size)
        problem = None
        if stored is None:
            problem = "has no signed head"
        elif stored.root != root:
            problem = "holds a head the stored entries do not reproduce"
        else:
            try:
                stored.verify(self._signer.public_key)
            except LedgerError:
                problem = "holds a head that does not verify under this coordinator's key"
        if problem is not None:
            self._fail(
                integrity_error(f"the database {problem} at size {size}, after another replica")
            )
            self.check_can_sign()

    def _advance(self, frontier: Frontier, last: bytes) -> None:
        """Trust a committed head; never move back (a concurrent append may be ahead)."""
        with self._lock:
            if self._frontier is None or frontier.size > self._frontier.size:
                self._frontier = frontier
                self._trusted_root = frontier.root()
                self._trusted_last = last

    def append(self, data: bytes, subject: str) -> Receipt:
        """Append one record and return its receipt against the head signed for it.

        ``LedgerIntegrityError`` (nothing stored) when storage does not extend the
        last head this process signed or verified; appends then keep refusing.
        """
        self.check_can_sign()
        if self._frontier is None:
            reason = self.check_storage()
            if reason is not None:
                raise LedgerIntegrityError(reason)
        built: list[tuple[Frontier, list[bytes], bytes]] = []
        seen: list[tuple[Sequence[bytes], int]] = []

        def build_head(size: int, hashes: Sequence[bytes]) -> SignedTreeHead:
            timestamp_ms = self._now_ms()
            frontier, proof = self._extend(hashes)
            built.append((frontier, proof, hashes[size - 1]))
            seen.append((hashes, size))
            return self._signer.sign_head(size, frontier.root(), timestamp_ms)

        try:
            index, head = self._storage.append(data, subject, build_head)
        except LedgerIntegrityError as exc:
            self._fail(exc)
            raise
        frontier, proof, last = built[-1]  # committed now: these hashes are final
        self._advance(frontier, last)
        self._adopt(*seen[-1])
        return Receipt(index, data, compute_leaf_hash(data), head, tuple(proof))

    def size(self) -> int:
        return self._storage.size()

    def latest_head(self) -> SignedTreeHead:
        head = self._storage.latest_head()
        if head is None:
            raise EmptyLogError("the ledger is empty: no tree head has been signed yet")
        return head

    def _adopt(self, hashes: Sequence[bytes], size: int) -> None:
        """Learn the first ``size`` committed leaf hashes; forget the memo if they are not
        an extension of what this process knew (the database was replaced underneath)."""
        with self._lock:
            known = self._known
            if size > len(hashes):
                return  # the storage's list changed since: learn it on the next read
            common = min(size, len(known))
            if common and hashes[common - 1] != known[common - 1]:
                self._memo = {}
                self._known = list(hashes[:size])
            elif size > len(known):
                known.extend(hashes[len(known) : size])

    def _hashes(self, size: int) -> tuple[list[bytes], SubtreeMemo]:
        """At least ``size`` leaf hashes (callers use the first ``size``) and their memo.

        Leaves never change once written, so hashes this process has seen (its own
        appends, earlier reads) are served from memory, without a copy; only sizes
        beyond them go to storage, which notices a database that was replaced
        underneath (``LedgerIntegrityError``: signing stops too). A running coordinator
        trusts rows it has read not to change; ``creditshare ledger verify`` audits them.
        """
        if not isinstance(size, int) or isinstance(size, bool) or size < 0:
            raise InvalidInputError(f"tree size {size!r} must be a non-negative integer")
        with self._lock:
            if size <= len(self._known):
                return self._known, self._memo
        try:
            hashes = self._storage.leaf_hashes(size)
        except InvalidInputError:
            raise InvalidInputError(
                f"tree size {size} is outside 0..{self._storage.size()}"
            ) from None
        except LedgerIntegrityError as exc:
            self._fail(exc)
            raise
        self._adopt(hashes, size)
        with self._lock:
            if size <= len(self._known):
                return self._known, self._memo
        return list(hashes), {}  # raced with a reset: answer from what storage gave

    def inclusion_proof(self, index: int, size: int) -> list[bytes]:
        """PATH for leaf ``index`` in the tree of the first ``size`` leaves."""
        hashes, memo = self._hashes(size)
        if not 0 <= index < size:
            raise InvalidInputError(f"leaf index {index} is outside a tree of size {size}")
        return inclusion_proof(index, hashes, memo, size)

    def consistency_proof(self, old_size: int, new_size: int) -> list[bytes]:
        """PROOF that the tree of ``new_size`` extends that of ``old_size`` (0 -> empty)."""
        hashes, memo = self._hashes(new_size)
        if not 0 <= old_size <= new_size:
            raise InvalidInputError(f"old size {old_size} is outside 0..{new_size}")
        if old_size == 0:
            return []
        return consistency_proof(old_size, hashes, memo, new_size)

    def receipt(self, index: int, head: SignedTreeHead | None = None) -> Receipt:
        """Re-prove stored leaf ``index`` against ``head`` (default: the latest head).

        ``head`` must be one this log stored (compared field by field), so a receipt
        is never issued against a head the log did not sign.
        """
        if head is None:
            head = self.latest_head()
        elif self._storage.head(head.size) != head:
            raise LedgerError(f"the tree head of size {head.size} is not one this log signed")
        return self._prove(index, head)

    def receipt_at(self, index: int, size: int) -> Receipt:
        """Re-prove stored leaf ``index`` against this log's signed head of ``size``."""
        head = self._storage.head(size)
        if head is None:
            raise LedgerError(f"this log has no signed head of size {size}")
        return self._prove(index, head)

    def _prove(self, index: int, head: SignedTreeHead) -> Receipt:
        if not 0 <= index < head.size:
            raise InvalidInputError(f"leaf {index} is not in the tree of size {head.size}")
        leaf = self._storage.leaf(index)
        hashes, memo = self._hashes(head.size)
        proof = inclusion_proof(index, hashes, memo, head.size)
        return Receipt(index, leaf.data, leaf.leaf_hash, head, tuple(proof))

    def entries_for(self, subject: str) -> list[StoredLeaf]:
        """Every record about ``subject``, so it can list and then verify them."""
        return self._storage.leaves_for_subject(subject)
