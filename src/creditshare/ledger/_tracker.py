"""The data node's memory of the log: the latest tree head it has accepted.

This is what makes the log's promise enforceable. A node accepts a new head only
if it is signed by the log key and provably extends the head it already holds,
so an operator who rewrote the log (a "fork") is caught by the first node that
sees the rewritten head. A proof that starts from a size the node does not hold
is a race rather than an attack: it raises ``StaleTreeHeadError`` so the caller can
fetch a fresh proof and retry.

Concurrent queries make races the rule, not the exception: query A is recorded
under head 10, query B under head 11, and B reaches the node first. So a head
*older* than the trusted one is accepted too (without becoming trusted) when it
comes with a consistency proof from its size to a size the node trusted at some
point: the tracker remembers the roots of the heads it accepted (bounded), and an
older head that is a prefix of one of them is a prefix of the trusted head as well.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Sequence

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from creditshare.errors import InconsistentTreeHeadError, InvalidProofError
from creditshare.ledger._errors import StaleTreeHeadError
from creditshare.ledger._merkle import EMPTY_ROOT, verify_consistency
from creditshare.ledger._tree_head import SignedTreeHead

__all__ = ["TrustedHeadTracker"]

#: Roots of accepted heads kept for checking older receipts (~50 bytes each).
REMEMBERED_HEADS = 4096


class TrustedHeadTracker:
    """Holds the latest accepted head; thread-safe.

    Persistence is the node's business: ``load`` is called once, at construction,
    for the head accepted in an earlier run (``None`` if there is none), and
    ``save`` is called with each newly accepted head *before* it becomes trusted in
    memory, so a failing save leaves the tracker where it was.
    """

    def __init__(
        self,
        load: Callable[[], SignedTreeHead | None] | None = None,
        save: Callable[[SignedTreeHead], None] | None = None,
    ) -> None:
        self._lock = threading.Lock()
        self._save = save
        self._head = load() if load is not None else None
        #: size → root of heads this tracker accepted, oldest first.
        self._roots: OrderedDict[int, bytes] = OrderedDict()
        if self._head is not None:
            self._remember(self._head)

    def _remember(self, head: SignedTreeHead) -> None:
        self._roots[head.size] = head.root  # sizes only grow: the newest is last
        while len(self._roots) > REMEMBERED_HEADS:
            self._roots.popitem(last=False)

    @property
    def head(self) -> SignedTreeHead | None:
        with self._lock:
            return self._head

    @property
    def trusted_size(self) -> int:
        with self._lock:
            return 0 if self._head is None else self._head.size

    def accept(
        self,
        head: SignedTreeHead,
        consistency_proof: Sequence[bytes],
        proof_from_size: int,
        log_key: Ed25519PublicKey,
    ) -> SignedTreeHead:
        """Accept ``head`` if it extends the trusted head; return the head now trusted.

        - ``InvalidSignatureError``: ``log_key`` did not sign ``head``.
        - ``StaleTreeHeadError``: a newer head whose proof starts from a size other
          than the trusted one, or an older head whose proof does not end at a size
          this tracker remembers (``trusted_size`` on the error says which size to
          prove from, or to).
        - ``InconsistentTreeHeadError``: same size with a different root, or the
          consistency proof fails: the log forked.

        A head of the trusted size with the trusted root is accepted as a no-op; from
        an empty trusted state any validly signed head is accepted (proof ignored). An
        older head is accepted without becoming trusted when ``proof_from_size`` is a
        larger size this tracker accepted before and ``consistency_proof`` proves the
        older head a prefix of it (see the module docstring).
        """
        head.verify(log_key)
        with self._lock:
            current = self._head
            trusted_size = 0 if current is None else current.size
            trusted_root = EMPTY_ROOT if current is None else current.root
            if head.size < trusted_size:
                assert current is not None  # a non-zero trusted size has a head
                self._check_older(head, consistency_proof, proof_from_size, trusted_size)
                return current
            if head.size == trusted_size:
                if head.root != trusted_root:
                    raise InconsistentTreeHeadError(
                        f"tree head of size {head.size} has a different root than the trusted one"
                    )
                if current is not None:
                    return current
            elif proof_from_size != trusted_size:
                raise StaleTreeHeadError(
                    f"consistency proof starts at size {proof_from_size}, "
                    f"but the trusted size is {trusted_size}",
                    trusted_size,
                )
            elif current is not None:
                try:
                    verify_consistency(
                        trusted_size, head.size, trusted_root, head.root, consistency_proof
                    )
                except InvalidProofError as exc:
                    raise InconsistentTreeHeadError(
                        f"tree head of size {head.size} does not extend the trusted head "
                        f"of size {trusted_size}: {exc}"
                    ) from exc
            if self._save is not None:
                self._save(head)
            self._head = head
            self._remember(head)
            return head

    def _check_older(
        self,
        head: SignedTreeHead,
        proof: Sequence[bytes],
        proof_to_size: int,
        trusted_size: int,
    ) -> None:
        """``head`` (older than trusted) is a prefix of a head we accepted; lock held."""
        known = self._roots.get(head.size)
        if known is not None:
            if known != head.root:
                raise InconsistentTreeHeadError(
                    f"tree head of size {head.size} has a different root than the one "
                    "accepted earlier at that size"
                )
            return
        later = self._roots.get(proof_to_size)
        if later is None or proof_to_size <= head.size:
            raise StaleTreeHeadError(
                f"tree head of size {head.size} is older than the trusted size {trusted_size} "
                f"and its proof does not reach an accepted head",
                trusted_size,
            )
        try:
            verify_consistency(head.size, proof_to_size, head.root, later, proof)
        except InvalidProofError as exc:
            raise InconsistentTreeHeadError(
                f"tree head of size {head.size} is not a prefix of the accepted head of size "
                f"{proof_to_size}: {exc}"
            ) from exc
