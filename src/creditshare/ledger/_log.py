"""The log itself: append records, sign heads, hand out receipts and proofs.

``Ledger`` is the one place where hashing, signing and storage meet. It takes its
storage, its signing key and its clock as arguments (as Trillian's sequencer
does), so tests run it over memory with a fixed clock and production over SQL.
A ``Receipt`` is what a query carries to the data nodes: the record, the head
that commits to it and the inclusion proof, checkable offline with the log's
public key alone.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from creditshare._recent import RecentlyPassed
from creditshare.errors import (
    ConfigurationError,
    InvalidInputError,
    InvalidProofError,
    LedgerError,
    LedgerIntegrityError,
)
from creditshare.ledger._audit import START_TAIL, check_latest_head
from creditshare.ledger._errors import EmptyLogError, integrity_error
from creditshare.ledger._fields import b64, get_b64, get_int, get_list, get_mapping
from creditshare.ledger._merkle import EMPTY_ROOT, HASH_SIZE, Frontier
from creditshare.ledger._merkle import leaf_hash as compute_leaf_hash
from creditshare.ledger._merkle import verify_inclusion as check_inclusion
from creditshare.ledger._storage import (
    LedgerStorage,
    NewNode,
    ReadHashes,
    StoredLeaf,
    check_append_input,
)
from creditshare.ledger._subtrees import (
    NodeId,
    consistency_ranges,
    frontier_ids,
    inclusion_ranges,
    proof_from_nodes,
    read_proof,
    read_root,
)
from creditshare.ledger._tree_head import LogSigner, SignedTreeHead

__all__ = ["Ledger", "Receipt"]

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_VERIFIED_HEADS = 64
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


class _Pending:
    """One caller's append waiting in the group-commit queue."""

    __slots__ = ("data", "error", "event", "lead", "receipt", "subject")

    def __init__(self, data: bytes, subject: str) -> None:
        self.data, self.subject = data, subject
        self.event = threading.Event()  # set once: its batch is done, or it leads the next
        self.lead = False
        self.receipt: Receipt | None = None
        self.error: BaseException | None = None

    def outcome(self) -> Receipt:
        if self.error is not None:
            raise self.error
        assert self.receipt is not None
        return self.receipt


class Ledger:
    """An append-only, verifiable log of records, each tagged with its subject.

    An empty log has no signed head: ``latest_head`` and ``receipt`` raise
    ``EmptyLogError`` (a ``LedgerError``) rather than return ``None``, so callers
    that need a head cannot forget the case, and the edge can answer "not found".

    It signs only over storage that extends the last head it signed or verified:
    ``check_storage`` (once, at start: the stored interior nodes and newest entries
    reproduce the latest head) and a check inside every append. When one fails it
    refuses every append with ``LedgerIntegrityError`` until the process restarts;
    reads still answer.

    Memory does not grow with the log: the process keeps the right edge of its last
    trusted tree (O(log n) hashes); proofs read O(log n) stored subtree hashes.

    Group commit: concurrent ``append`` calls are queued; one caller (the leader)
    writes up to ``max_batch`` of them in one storage transaction under one signed
    head, and each caller gets its own receipt against that head. A caller blocks
    until its batch commits, so ``asyncio.to_thread(ledger.append, ...)`` works as is;
    ``append_async`` does the same on the ledger's own threads, so that a busy event
    loop can have more appends waiting to share a batch than its default pool allows.

    Timestamps come from ``clock``, which must return timezone-aware datetimes.
    Storage serialises appends, but the clock is read inside the append, so a
    clock that steps back (or two coordinators with skewed clocks) produces a head
    older than its predecessor; ``verify_log`` reports that.
    """

    def __init__(
        self,
        storage: LedgerStorage,
        signer: LogSigner,
        clock: Callable[[], datetime],
        max_batch: int = 512,
        start_tail: int = START_TAIL,
    ) -> None:
        if max_batch < 1:
            raise ConfigurationError(f"max_batch must be at least 1, got {max_batch}")
        self._storage = storage
        self._signer = signer
        self._clock = clock
        self._max_batch = max_batch
        self._start_tail = start_tail  # newest entries the start-up check rehashes
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
        # The group-commit queue; its head is the leader's while ``_leading``.
        self._queue_lock = threading.Lock()
        self._queue: list[_Pending] = []
        self._leading = False
        self._executor: ThreadPoolExecutor | None = None  # append_async's, made on first use
        # Stored heads whose signature ``_check_signed`` checked (oldest first, bounded).
        self._verified: RecentlyPassed[SignedTreeHead] = RecentlyPassed(_VERIFIED_HEADS)

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

        O(log n + START_TAIL) reads and O(log n) memory (``check_latest_head``: the
        stored interior nodes plus the newest leaves rehashed must give the signed
        root); the full rehash of every leaf is ``creditshare ledger verify``'s.
        ``append`` runs it itself if nobody did.
        """
        with self._check_lock:
            if self._failure is not None or self._frontier is not None:
                return self._failure
            try:
                checked = check_latest_head(self._storage, self.public_key, self._start_tail)
            except LedgerIntegrityError as exc:
                return self._fail(exc)
            with self._lock:
                self._frontier = checked.frontier
                self._trusted_root = checked.frontier.root()
                self._trusted_last = checked.last
            log.info(
                "ledger checked: %d entries reproduce the latest signed head (the newest %d "
                "rehashed; `creditshare ledger verify` rehashes all)",
                checked.frontier.size,
                checked.rehashed,
            )
            return None

    def check_witnesses(self, heads: Mapping[str, SignedTreeHead]) -> str | None:
        """Fail unless storage reproduces every head of this log a witness holds.

        Witnesses (data nodes) keep the largest head of this log they accepted. A log
        whose last entries were deleted together with their heads still reproduces its
        (now smaller) latest head, so ``check_storage`` cannot see it; a witness that
        holds a larger head can. A witness is believed only with a head this log's key
        signed: an unsigned claim (or a forged one) is logged and ignored, so one node
        cannot stop the log by saying so. Costs O(log n) per witness head (its root is
        rebuilt from the stored interior nodes). Returns the failure, if any.
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
            try:
                rebuilt = read_root(self._storage.nodes, head.size) if head.size else head.root
            except LedgerIntegrityError as exc:
                return self._fail(exc)
            if rebuilt != head.root:
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
        self._check_same_database()

    def _check_same_database(self) -> None:
        """One read: the database still holds the last head this process trusted."""
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

    def _extend(self, old: int, read: ReadHashes) -> Frontier:
        """The trusted tree grown to the ``old`` leaves storage holds before this append.

        Refuses unless storage extends the trusted tree: at least as many leaves, the
        same hash at its last index (one read: a database replaced underneath fails
        here). Leaves another replica appended since are read and added in O(new),
        and must reproduce the head it signed for them.
        """
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
        self.check_can_sign()
        hashes = read(trusted - 1, old) if trusted else read(0, old)
        if trusted and hashes[0] != last:
            self._fail(
                integrity_error(
                    f"entry {trusted - 1}'s hash is not the one under the last head this "
                    f"coordinator signed or verified (size {trusted}): the ledger was "
                    "changed or replaced underneath the running coordinator"
                )
            )
        self.check_can_sign()
        frontier = base.copy()
        for h in hashes[1:] if trusted else hashes:
            frontier.append(h)
        if old > trusted:
            # Another replica appended these: they must reproduce the head it signed
            # for them (one read), or this head would sign over rows nobody signed.
            self._check_replica_head(old, frontier.root())
        return frontier

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
        """Append one record and return its receipt against the head signed for it
        (the head of the batch it was committed in).

        ``LedgerIntegrityError`` (nothing stored) when storage does not extend the
        last head this process signed or verified; appends then keep refusing.
        """
        check_append_input(data, subject)
        self.check_can_sign()
        if self._frontier is None:
            reason = self.check_storage()
            if reason is not None:
                raise LedgerIntegrityError(reason)
        item = _Pending(data, subject)
        with self._queue_lock:
            self._queue.append(item)
            if not self._leading:
                self._leading = item.lead = True
        if not item.lead:
            item.event.wait()
            if not item.lead:
                return item.outcome()
        with self._queue_lock:
            batch = self._queue[: self._max_batch]
            del self._queue[: self._max_batch]
        try:
            self._commit(batch)
        finally:
            with self._queue_lock:
                if self._queue:
                    successor = self._queue[0]
                    successor.lead = True
                    successor.event.set()
                else:
                    self._leading = False
            for waiting in batch:
                if waiting is not item:
                    waiting.event.set()
        return item.outcome()

    async def append_async(self, data: bytes, subject: str) -> Receipt:
        """``append`` for the event loop, on this ledger's own threads (up to ``max_batch``).

        ``asyncio.to_thread`` shares the loop's default pool (a handful of threads on a
        small machine) with every other blocking call, which caps how many appends can
        wait to be batched together; these threads only ever wait on the group commit.
        """
        with self._queue_lock:
            if self._executor is None:
                self._executor = ThreadPoolExecutor(
                    max_workers=self._max_batch, thread_name_prefix="ledger-append"
                )
            executor = self._executor
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(executor, self.append, data, subject)

    def _commit(self, batch: Sequence[_Pending]) -> None:
        """Store ``batch`` in one transaction under one new head; give each its receipt."""
        hashes = [compute_leaf_hash(p.data) for p in batch]
        built: list[tuple[Frontier, Frontier, list[NewNode]]] = []

        def build(old: int, read: ReadHashes) -> tuple[SignedTreeHead, list[NewNode]]:
            timestamp_ms = self._now_ms()
            before = self._extend(old, read)
            frontier, nodes = before.copy(), list[NewNode]()
            for h in hashes:
                frontier.append(h, nodes)
            built.append((before, frontier, nodes))
            return self._signer.sign_head(frontier.size, frontier.root(), timestamp_ms), nodes

        try:
            first, head = self._storage.append([(p.data, p.subject) for p in batch], build)
            before, frontier, nodes = built[-1]  # committed now: these hashes are final
            self._advance(frontier, hashes[-1])
            known: dict[NodeId, bytes] = dict(zip(frontier_ids(first), before.nodes(), strict=True))
            known.update(((0, first + i), h) for i, h in enumerate(hashes))
            known.update(((level, index), value) for level, index, value in nodes)
            for i, pending in enumerate(batch):
                proof = proof_from_nodes(inclusion_ranges(first + i, head.size), known)
                pending.receipt = Receipt(first + i, pending.data, hashes[i], head, tuple(proof))
        except BaseException as exc:
            if isinstance(exc, LedgerIntegrityError):
                self._fail(exc)
            for pending in batch:
                pending.error = exc

    def size(self) -> int:
        return self._storage.size()

    def latest_head(self) -> SignedTreeHead:
        head = self._storage.latest_head()
        if head is None:
            raise EmptyLogError("the ledger is empty: no tree head has been signed yet")
        return head

    def _check_size(self, size: int) -> None:
        if not isinstance(size, int) or isinstance(size, bool) or size < 0:
            raise InvalidInputError(f"tree size {size!r} must be a non-negative integer")
        with self._lock:
            trusted = 0 if self._frontier is None else self._frontier.size
        if size <= trusted:
            return  # a tree this process signed or verified: storage holds it
        stored = self._storage.size()
        if size > stored:
            raise InvalidInputError(f"tree size {size} is outside 0..{stored}")

    def _read_proof(self, ranges: Sequence[tuple[int, int]]) -> list[bytes]:
        """O(log n) stored subtree hashes, from the database this process trusts (a
        replaced one is refused, not served from)."""
        self._check_same_database()
        return read_proof(self._storage.nodes, ranges)

    def inclusion_proof(self, index: int, size: int) -> list[bytes]:
        """PATH for leaf ``index`` in the tree of the first ``size`` leaves."""
        self._check_size(size)
        if not 0 <= index < size:
            raise InvalidInputError(f"leaf index {index} is outside a tree of size {size}")
        return self._read_proof(inclusion_ranges(index, size))

    def consistency_proof(self, old_size: int, new_size: int) -> list[bytes]:
        """PROOF that the tree of ``new_size`` extends that of ``old_size`` (0 -> empty)."""
        self._check_size(new_size)
        if not 0 <= old_size <= new_size:
            raise InvalidInputError(f"old size {old_size} is outside 0..{new_size}")
        if old_size == 0:
            return []
        return self._read_proof(consistency_ranges(old_size, new_size))

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

    def _check_signed(self, head: SignedTreeHead) -> None:
        """A stored head must verify under this log's key before a receipt carries it: a
        head row rewritten in the database (its root, with interior nodes to match) would
        otherwise be served in receipts that fail at every node. The heads verified last
        are remembered, so a page of receipts under one head costs one verification."""
        self._verified.check(head, lambda: self._verify_stored(head))

    def _verify_stored(self, head: SignedTreeHead) -> None:
        try:
            head.verify(self._signer.public_key)
        except LedgerError as exc:
            raise integrity_error(
                f"the stored head of size {head.size} does not verify under this log's key "
                f"({exc}): it was changed in the database"
            ) from None

    def _prove(self, index: int, head: SignedTreeHead) -> Receipt:
        """A receipt whose proof is checked against the head before it is handed out: a
        stored interior node that was tampered with is refused here, not served."""
        if not 0 <= index < head.size:
            raise InvalidInputError(f"leaf {index} is not in the tree of size {head.size}")
        self._check_signed(head)
        leaf = self._storage.leaf(index)
        proof = self._read_proof(inclusion_ranges(index, head.size))
        try:
            check_inclusion(leaf.leaf_hash, index, head.size, proof, head.root)
        except InvalidProofError as exc:
            raise integrity_error(
                f"the stored interior nodes do not prove entry {index} in the head of size "
                f"{head.size} ({exc})"
            ) from None
        return Receipt(index, leaf.data, leaf.leaf_hash, head, tuple(proof))

    def entries_for(self, subject: str) -> list[StoredLeaf]:
        """Every record about ``subject``, so it can list and then verify them."""
        return self._storage.leaves_for_subject(subject)
