"""Auditing a stored log: does what the database holds still match what was signed?

``verify_log`` is the operator's full check (``creditshare ledger verify``): it
recomputes every leaf hash from the stored record, rebuilds the root for every
stored head in one pass, and checks every signature. ``check_latest_head`` is the
coordinator's start-up check: the same pass against the latest head only, stopping
at the first problem (it decides whether the log may be signed on, not what to
repair). ``verify_subject`` is the enterprise's narrower check: only its own
records, proved against the latest head. Those two collect every problem instead
of stopping at the first, because an auditor wants the whole list, each naming
the leaf index or head size concerned.
"""

from __future__ import annotations

import itertools
from collections import deque
from dataclasses import dataclass

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from creditshare.errors import (
    CreditShareError,
    InvalidInputError,
    InvalidSignatureError,
    LedgerError,
)
from creditshare.ledger._errors import integrity_error
from creditshare.ledger._merkle import Frontier, inclusion_proof, leaf_hash, verify_inclusion
from creditshare.ledger._records import parse_record
from creditshare.ledger._storage import LedgerStorage
from creditshare.ledger._tree_head import SignedTreeHead

__all__ = [
    "CheckedLog",
    "ConsentUses",
    "LogReport",
    "check_latest_head",
    "verify_log",
    "verify_subject",
]

_BATCH = 1000


@dataclass(frozen=True)
class LogReport:
    """What an audit looked at and every problem it found (empty when all is well)."""

    leaves_checked: int
    heads_checked: int
    problems: tuple[str, ...]

    @property
    def ok(self) -> bool:
        return not self.problems


class ConsentUses:
    """Each use of a consent is a ledger entry: count them, and compare with the use limit
    the enterprise signed (carried in each query's record), so an operator or a node can
    see that no consent was used more often than it allows, whoever did the counting."""

    def __init__(self) -> None:
        #: consent id -> (the signed limit, indices of the queries that used it)
        self._seen: dict[str, tuple[int | None, list[int]]] = {}

    def count(self, index: int, data: bytes) -> None:
        try:
            record = parse_record(data)
        except InvalidInputError:
            return  # not a record this audit can read; hashes and roots are checked apart
        if record.kind != "query" or not record.consent_id:
            return
        limit: int | None = None
        if record.consent is not None:
            document = record.consent.get("document")
            value = document.get("max_uses") if isinstance(document, dict) else None
            limit = value if isinstance(value, int) and not isinstance(value, bool) else None
        known, indices = self._seen.setdefault(record.consent_id, (limit, []))
        if known is None and limit is not None:
            self._seen[record.consent_id] = (limit, indices)
        indices.append(index)

    def problems(self) -> list[str]:
        out = []
        for consent_id, (limit, indices) in sorted(self._seen.items()):
            if limit is not None and len(indices) > limit:
                over = ", ".join(str(i) for i in indices[limit:][:10])
                out.append(
                    f"consent {consent_id}: used {len(indices)} times, its limit is {limit} "
                    f"(entries beyond it: {over})"
                )
        return out


def _check_signature(head: SignedTreeHead, log_key: Ed25519PublicKey, problems: list[str]) -> None:
    try:
        head.verify(log_key)
    except LedgerError as exc:
        problems.append(f"head {head.size}: {exc}")


def verify_log(storage: LedgerStorage, log_key: Ed25519PublicKey) -> LogReport:
    """Check every stored leaf and head against each other and against ``log_key``."""
    problems: list[str] = []
    try:
        heads = storage.heads()
    except CreditShareError as exc:  # a malformed row (e.g. a root of the wrong length)
        problems.append(f"stored heads cannot be read: {exc}")
        heads = []
    size = storage.size()
    for previous, head in itertools.pairwise(heads):
        if head.timestamp_ms < previous.timestamp_ms:
            problems.append(
                f"head {head.size}: timestamp {head.timestamp_ms} is earlier than "
                f"head {previous.size}'s {previous.timestamp_ms}"
            )
    for head in heads:
        _check_signature(head, log_key, problems)
        if head.size > size:
            problems.append(f"head {head.size}: covers more leaves than the log holds ({size})")

    pending = deque(head for head in heads if head.size <= size)  # ascending by size
    frontier = Frontier()
    uses = ConsentUses()
    broken_at: int | None = None  # first missing leaf: roots past it cannot be rebuilt

    def check_roots_up_to(current: int) -> None:
        while pending and pending[0].size <= current:
            head = pending.popleft()
            if broken_at is not None and head.size > broken_at:
                problems.append(f"head {head.size}: root not checked, leaf {broken_at} is missing")
            elif frontier.root() != head.root:
                problems.append(f"head {head.size}: root does not match the stored leaves")

    check_roots_up_to(0)
    for start in range(0, size, _BATCH):
        for leaf in storage.leaves(start, min(size, start + _BATCH)):
            if broken_at is None and leaf.index != frontier.size:
                broken_at = frontier.size
                problems.append(f"leaves {frontier.size}..{leaf.index - 1} are missing")
            recomputed = leaf_hash(leaf.data)
            if recomputed != leaf.leaf_hash:
                problems.append(f"leaf {leaf.index}: stored hash does not match the stored data")
            uses.count(leaf.index, leaf.data)
            if broken_at is None:
                frontier.append(recomputed)
                check_roots_up_to(frontier.size)
    if broken_at is None and frontier.size < size:  # rows vanished at the very end
        broken_at = frontier.size
    check_roots_up_to(size)
    problems.extend(uses.problems())

    covered = heads[-1].size if heads else 0
    if covered < size:
        problems.append(f"leaves {covered}..{size - 1} are not covered by any signed head")
    return LogReport(leaves_checked=size, heads_checked=len(heads), problems=tuple(problems))


def verify_subject(storage: LedgerStorage, log_key: Ed25519PublicKey, subject: str) -> LogReport:
    """Check ``subject``'s records: each one's hash, and its inclusion in the latest head.

    The proofs come from the stored leaf hashes, exactly as a receipt's would; they
    are then checked with the RFC 9162 verifier against the signed root, so a record
    whose row was altered, or a head that no longer matches the log, is reported.
    """
    problems: list[str] = []
    leaves = storage.leaves_for_subject(subject)
    head = storage.latest_head()
    if head is None:
        if leaves:
            problems.append(f"{len(leaves)} records but no signed head")
        return LogReport(len(leaves), 0, tuple(problems))
    _check_signature(head, log_key, problems)
    try:
        hashes = storage.leaf_hashes(min(head.size, storage.size()))
    except LedgerError as exc:  # e.g. a row missing from the middle of the log
        problems.append(f"leaf hashes cannot be read: {exc}")
        hashes = []
    for leaf in leaves:
        recomputed = leaf_hash(leaf.data)
        if recomputed != leaf.leaf_hash:
            problems.append(f"leaf {leaf.index}: stored hash does not match the stored data")
        if leaf.index >= len(hashes) or len(hashes) < head.size:
            problems.append(f"leaf {leaf.index}: not provable in the head of size {head.size}")
            continue
        try:
            proof = inclusion_proof(leaf.index, hashes)
            verify_inclusion(recomputed, leaf.index, head.size, proof, head.root)
        except LedgerError as exc:
            problems.append(f"leaf {leaf.index}: not included in head {head.size}: {exc}")
    return LogReport(len(leaves), 1, tuple(problems))


@dataclass(frozen=True)
class CheckedLog:
    """A stored log that reproduces its latest signed head (``None`` when empty):
    the frontier and leaf hashes of exactly ``head.size`` leaves, to sign on from."""

    head: SignedTreeHead | None
    frontier: Frontier
    hashes: list[bytes]


def _read_leaves(storage: LedgerStorage, frontier: Frontier, hashes: list[bytes], end: int) -> None:
    """Extend ``frontier`` and ``hashes`` with stored leaves up to ``end``, each one's
    hash recomputed from its data and compared with the stored hash."""
    for start in range(frontier.size, end, _BATCH):
        for leaf in storage.leaves(start, min(end, start + _BATCH)):
            if leaf.index != frontier.size:
                raise integrity_error(
                    f"entry {frontier.size} is missing (the latest signed head covers {end})"
                )
            if leaf_hash(leaf.data) != leaf.leaf_hash:
                raise integrity_error(
                    f"entry {leaf.index}'s stored data does not match its stored hash"
                )
            frontier.append(leaf.leaf_hash)
            hashes.append(leaf.leaf_hash)
    if frontier.size < end:
        raise integrity_error(
            f"entry {frontier.size} is missing (the latest signed head covers {end})"
        )


def check_latest_head(storage: LedgerStorage, log_key: Ed25519PublicKey) -> CheckedLog:
    """Raise ``LedgerIntegrityError`` unless the stored leaves reproduce the latest signed
    head: signed by ``log_key``, its root rebuilt from hashes recomputed from the
    stored data, no leaf beyond it and it beyond no leaf.

    Cost: O(n) in the log's size, every leaf read (in batches of ``_BATCH``) and hashed
    once; this runs once per process start, off the event loop. (Issue 16 makes
    proofs O(log n); a start-up check that trusts a stored subtree cache could follow.)
    Other replicas may append meanwhile: the check then goes on to the newer head
    over the new leaves only. Reads go size-before-head, so a healthy log (each leaf
    committed with its head) never looks like one with a leaf beyond its head.
    """
    frontier, hashes = Frontier(), list[bytes]()
    head = storage.latest_head()
    while True:
        target = 0 if head is None else head.size
        size = storage.size()
        if target > size:
            raise integrity_error(
                f"the latest signed head covers {target} entries but the database holds {size}"
            )
        if head is not None:
            try:
                head.verify(log_key)
            except InvalidSignatureError as exc:
                raise integrity_error(
                    f"the latest signed head (size {target}) does not verify under this "
                    f"coordinator's log key ({exc})"
                ) from None
        _read_leaves(storage, frontier, hashes, target)
        if head is not None and frontier.root() != head.root:
            raise integrity_error(
                f"the {target} stored entries do not reproduce the root of the latest "
                f"signed head (size {target}): an entry was replaced together with its "
                "stored hash, or the head was"
            )
        size = storage.size()
        latest = storage.latest_head()
        latest_size = 0 if latest is None else latest.size
        if latest_size < target or (latest_size == target and latest != head):
            raise integrity_error(
                f"the latest signed head changed from size {target} to {latest_size} "
                "while it was being checked"
            )
        if latest_size == target:
            if size > target:
                raise integrity_error(
                    f"the database holds {size} entries but the latest signed head covers "
                    f"{target}: entries {target}..{size - 1} are under no signed head"
                )
            return CheckedLog(head, frontier, hashes)
        head = latest  # another replica appended meanwhile: check its leaves too
