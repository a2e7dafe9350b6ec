"""The log itself: append records, sign heads, hand out receipts and proofs.

``Ledger`` is the one place where hashing, signing and storage meet. It takes its
storage, its signing key and its clock as arguments (as Trillian's sequencer
does), so tests run it over memory with a fixed clock and production over SQL.
A ``Receipt`` is what a query carries to the data nodes: the record, the head
that commits to it and the inclusion proof, checkable offline with the log's
public key alone.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from creditshare.errors import ConfigurationError, InvalidInputError, InvalidProofError, LedgerError
from creditshare.ledger._errors import EmptyLogError
from creditshare.ledger._fields import b64, get_b64, get_int, get_list, get_mapping
from creditshare.ledger._merkle import (
    HASH_SIZE,
    Frontier,
    SubtreeMemo,
    consistency_proof,
    inclusion_proof,
)
from creditshare.ledger._merkle import leaf_hash as compute_leaf_hash
from creditshare.ledger._merkle import verify_inclusion as check_inclusion
from creditshare.ledger._storage import LedgerStorage, StoredLeaf
from creditshare.ledger._tree_head import LogSigner, SignedTreeHead

__all__ = ["Ledger", "Receipt"]

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


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
        # The right edge of the tree after our last append, and that append's leaf
        # hash: a cache that makes signing O(log n). It is checked against the hashes
        # storage hands over (size and last leaf) and rebuilt when another process
        # appended in between or our last append was rolled back.
        self._lock = threading.Lock()
        self._frontier = Frontier()
        self._frontier_last = b""
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

    def _grow(self, hashes: Sequence[bytes]) -> tuple[bytes, list[bytes]]:
        """Root of ``hashes`` and the inclusion proof of its last leaf."""
        old = len(hashes) - 1
        with self._lock:
            frontier = self._frontier
            if frontier.size != old or (old and hashes[old - 1] != self._frontier_last):
                frontier = Frontier()
                for h in hashes[:old]:
                    frontier.append(h)
            self._frontier = Frontier()  # if anything below fails, rebuild next time
            proof = frontier.append(hashes[old])
            self._frontier, self._frontier_last = frontier, hashes[old]
            return frontier.root(), proof

    def append(self, data: bytes, subject: str) -> Receipt:
        """Append one record and return its receipt against the head signed for it."""
        proofs: list[list[bytes]] = []
        seen: list[tuple[Sequence[bytes], int]] = []

        def build_head(size: int, hashes: Sequence[bytes]) -> SignedTreeHead:
            timestamp_ms = self._now_ms()
            new_root, proof = self._grow(hashes)
            proofs.append(proof)
            seen.append((hashes, size))
            return self._signer.sign_head(size, new_root, timestamp_ms)

        index, head = self._storage.append(data, subject, build_head)
        if seen:  # committed now: the hashes the head was built over are final
            self._adopt(*seen[-1])
        return Receipt(index, data, compute_leaf_hash(data), head, tuple(proofs[-1]))

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
        underneath (then the memo is dropped). A running coordinator trusts its
        database to be append-only; ``creditshare ledger verify`` audits it from scratch.
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
