"""Auditing a stored log: does what the database holds still match what was signed?

``verify_log`` is the operator's full check (``creditshare ledger verify``): it
recomputes every leaf hash from the stored record, rebuilds the root for every
stored head and every stored interior node in one streamed pass, and checks every
signature. ``check_latest_head`` is the coordinator's start-up check: the latest
head only, from the stored interior nodes plus the newest leaves rehashed, O(log n)
whatever the log's size, stopping at the first problem (it decides whether the log
may be signed on, not what to repair). ``verify_subject`` is the enterprise's
narrower check: only its own records, proved against the latest head. Those two
collect every problem instead of stopping at the first, because an auditor wants
the whole list, each naming the leaf index or head size concerned.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from creditshare.errors import (
    CreditShareError,
    InvalidInputError,
    InvalidSignatureError,
    LedgerError,
)
from creditshare.ledger._errors import integrity_error
from creditshare.ledger._merkle import Frontier, leaf_hash, verify_inclusion
from creditshare.ledger._records import parse_record
from creditshare.ledger._storage import LedgerStorage, is_node_of
from creditshare.ledger._subtrees import frontier_ids, inclusion_ranges, read_proof
from creditshare.ledger._tree_head import SignedTreeHead

__all__ = [
    "START_TAIL",
    "CheckedLog",
    "ConsentUses",
    "LogReport",
    "check_latest_head",
    "verify_log",
    "verify_subject",
]

_BATCH = 1000
_MAX_NODE_PROBLEMS = 10
_MAX_PROBLEMS = 1000
_SHOWN_USES = 10
_MAX_ROUNDS = 5
#: How many of the newest leaves the start-up check rehashes from their data.
START_TAIL = 1024


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
    see that no consent was used more often than it allows, whoever did the counting.

    Memory is per consent, not per entry: a count and the first few entries beyond the
    limit (every index is kept only until a record names the limit, which the first
    record of a consent normally does)."""

    def __init__(self) -> None:
        #: consent id -> [the signed limit, uses so far, indices kept (see above)]
        self._seen: dict[str, tuple[int | None, int, list[int]]] = {}

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
        known, uses, indices = self._seen.get(record.consent_id, (None, 0, []))
        if known is None and limit is not None:
            known = limit
            indices = indices[limit : limit + _SHOWN_USES]  # the ones beyond it
        uses += 1
        if known is None or (uses > known and len(indices) < _SHOWN_USES):
            indices.append(index)
        self._seen[record.consent_id] = (known, uses, indices)

    def problems(self) -> list[str]:
        out = []
        for consent_id, (limit, uses, indices) in sorted(self._seen.items()):
            if limit is not None and uses > limit:
                over = ", ".join(str(i) for i in indices[:_SHOWN_USES])
                out.append(
                    f"consent {consent_id}: used {uses} times, its limit is {limit} "
                    f"(entries beyond it: {over})"
                )
        return out


class _Problems(list[str]):
    """The audit's findings, at most ``_MAX_PROBLEMS`` per-entry lines kept: a log whose
    every row was rewritten must still be audited in bounded memory (one line per leaf
    of 10^7 is gigabytes), so the lines beyond are counted; ``finish`` says how many.
    Whole-log findings (``summary``) are always kept."""

    def __init__(self) -> None:
        super().__init__()
        self.more = 0

    def append(self, problem: str) -> None:
        if len(self) < _MAX_PROBLEMS:
            super().append(problem)
        else:
            self.more += 1

    def summary(self, problem: str) -> None:
        super().append(problem)

    def finish(self) -> tuple[str, ...]:
        if self.more:
            self.summary(f"{self.more} more problems not shown (the first {_MAX_PROBLEMS} are)")
        return tuple(self)


def _check_signature(head: SignedTreeHead, log_key: Ed25519PublicKey, problems: list[str]) -> None:
    try:
        head.verify(log_key)
    except LedgerError as exc:
        problems.append(f"head {head.size}: {exc}")


def _iter_heads(storage: LedgerStorage, problems: list[str], upto: int) -> Iterator[SignedTreeHead]:
    """Every stored head of size up to ``upto``, ascending, a page at a time (a log may
    hold millions); heads beyond it were signed after the audit took its snapshot."""
    after = -1
    while True:
        try:
            page = storage.heads(after, _BATCH)
        except CreditShareError as exc:  # a malformed row (e.g. a root of the wrong length)
            problems.append(f"stored heads cannot be read: {exc}")
            return
        for head in page:
            if head.size > upto:
                return
            yield head
        if len(page) < _BATCH:
            return
        after = page[-1].size


def _snapshot(storage: LedgerStorage) -> tuple[int, int]:
    """``(leaves, signed)``: how many leaves and heads this audit covers, on a log that
    running coordinators may append to while it reads.

    Leaves and their head are committed together, so reading size, latest head, size
    in that order gives ``first <= signed <= last`` on an honest log however many
    appends land in between; the audit then covers exactly the ``signed`` leaves and
    the heads up to it (newer ones are the next audit's). Anything else is tampering
    the audit must report: a head beyond the stored leaves, or leaves under no head.
    """
    first = storage.size()
    latest = storage.latest_head()
    last = storage.size()
    signed = 0 if latest is None else latest.size
    return (signed if first <= signed <= last else last), signed


class _NodeCheck:
    """Compares the interior nodes the audit rebuilds with the stored ones, in batches."""

    def __init__(self, storage: LedgerStorage, problems: _Problems) -> None:
        self._storage, self._problems = storage, problems
        self.built: list[tuple[int, int, bytes]] = []
        self.mismatched = 0

    def flush(self) -> None:
        if not self.built:
            return
        stored = self._storage.nodes([(level, index) for level, index, _ in self.built])
        for level, index, value in self.built:
            if stored.get((level, index)) != value:
                self.mismatched += 1
                if self.mismatched <= _MAX_NODE_PROBLEMS:
                    what = "is missing" if (level, index) not in stored else "does not match"
                    first, last = index << level, ((index + 1) << level) - 1
                    self._problems.append(
                        f"interior node at level {level}, index {index} (leaves {first}..{last}) "
                        f"{what} the stored leaves"
                    )
        self.built = []

    def finish(self) -> None:
        self.flush()
        if self.mismatched > _MAX_NODE_PROBLEMS:
            self._problems.summary(
                f"{self.mismatched} interior nodes do not match the stored leaves in all"
            )


def _check_stray_nodes(storage: LedgerStorage, problems: _Problems) -> None:
    """Interior nodes stored for leaves that are not: inserted rows. Read the nodes
    first and the size after, so a node a live coordinator committed meanwhile (with
    its leaves) is under the size read and never reported."""
    stray = storage.stray_nodes(storage.size(), _MAX_NODE_PROBLEMS)
    size = storage.size()
    for level, index in stray:
        if not is_node_of((level, index), size):
            problems.append(
                f"interior node at level {level}, index {index} is stored but the log has "
                f"no complete subtree there ({size} entries): it was inserted"
            )


def verify_log(
    storage: LedgerStorage,
    log_key: Ed25519PublicKey,
    progress: Callable[[int, int], None] | None = None,
) -> LogReport:
    """Check every stored leaf, interior node and head against each other and ``log_key``.

    Streams: leaves and heads are read a page at a time, so memory stays bounded
    whatever the log's size. ``progress(checked, total)`` is called after each page.
    Coordinators may keep appending meanwhile: the audit covers the log up to the
    latest head it saw at the start (``_snapshot``), so their new rows are not problems.
    """
    problems = _Problems()
    size, signed = _snapshot(storage)
    heads_checked = 0
    covered = 0
    previous: SignedTreeHead | None = None
    for head in _iter_heads(storage, problems, signed):  # first pass: times and signatures
        heads_checked += 1
        covered = head.size
        if previous is not None and head.timestamp_ms < previous.timestamp_ms:
            problems.append(
                f"head {head.size}: timestamp {head.timestamp_ms} is earlier than "
                f"head {previous.size}'s {previous.timestamp_ms}"
            )
        previous = head
    for head in _iter_heads(storage, [], signed):
        _check_signature(head, log_key, problems)
        if head.size > size:
            problems.append(f"head {head.size}: covers more leaves than the log holds ({size})")

    pending = _iter_heads(storage, [], signed)  # second pass: roots, as the leaves are read
    waiting = next(pending, None)
    frontier = Frontier()
    nodes = _NodeCheck(storage, problems)
    uses = ConsentUses()
    broken_at: int | None = None  # first missing leaf: roots past it cannot be rebuilt

    def check_roots_up_to(current: int) -> None:
        nonlocal waiting
        while waiting is not None and waiting.size <= current:
            if broken_at is not None and waiting.size > broken_at:
                problems.append(
                    f"head {waiting.size}: root not checked, leaf {broken_at} is missing"
                )
            elif frontier.root() != waiting.root:
                problems.append(f"head {waiting.size}: root does not match the stored leaves")
            waiting = next(pending, None)

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
                frontier.append(recomputed, nodes.built)
                check_roots_up_to(frontier.size)
        nodes.flush()
        if progress is not None:
            progress(min(size, start + _BATCH), size)
    if broken_at is None and frontier.size < size:  # rows vanished at the very end
        broken_at = frontier.size
    check_roots_up_to(size)
    nodes.finish()
    _check_stray_nodes(storage, problems)
    for problem in uses.problems():
        problems.summary(problem)

    if covered < size:
        problems.summary(f"leaves {covered}..{size - 1} are not covered by any signed head")
    return LogReport(leaves_checked=size, heads_checked=heads_checked, problems=problems.finish())


def verify_subject(storage: LedgerStorage, log_key: Ed25519PublicKey, subject: str) -> LogReport:
    """Check ``subject``'s records: each one's hash, and its inclusion in the latest head.

    The proofs come from the stored interior nodes, exactly as a receipt's would; they
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
    provable = storage.size() >= head.size
    for leaf in leaves:
        recomputed = leaf_hash(leaf.data)
        if recomputed != leaf.leaf_hash:
            problems.append(f"leaf {leaf.index}: stored hash does not match the stored data")
        if leaf.index >= head.size or not provable:
            problems.append(f"leaf {leaf.index}: not provable in the head of size {head.size}")
            continue
        try:
            proof = read_proof(storage.nodes, inclusion_ranges(leaf.index, head.size))
            verify_inclusion(recomputed, leaf.index, head.size, proof, head.root)
        except LedgerError as exc:
            problems.append(f"leaf {leaf.index}: not included in head {head.size}: {exc}")
    return LogReport(len(leaves), 1, tuple(problems))


@dataclass(frozen=True)
class CheckedLog:
    """A stored log that reproduces its latest signed head (``None`` when empty): the
    frontier of exactly ``head.size`` leaves to sign on from, and its last leaf hash."""

    head: SignedTreeHead | None
    frontier: Frontier
    last: bytes
    rehashed: int


def _stored_frontier(storage: LedgerStorage, size: int) -> Frontier:
    """The right edge of the first ``size`` leaves from stored interior nodes: O(log n)."""
    ids = frontier_ids(size)
    stored = storage.nodes(ids)
    missing = [node for node in ids if node not in stored]
    if missing:
        level, index = missing[0]
        raise integrity_error(
            f"the interior node at level {level}, index {index} is missing (a ledger from "
            "before migration c0011 must be upgraded with `creditshare db upgrade coordinator`)"
        )
    return Frontier.from_nodes(size, [stored[node] for node in ids])


def _read_tail(
    storage: LedgerStorage, frontier: Frontier, end: int, built: list[tuple[int, int, bytes]]
) -> bytes:
    """Extend ``frontier`` with stored leaves up to ``end``, each one's hash recomputed
    from its data and compared with the stored hash; the interior nodes they complete
    go to ``built``. Returns the last leaf's hash."""
    last = b""
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
            frontier.append(leaf.leaf_hash, built)
            last = leaf.leaf_hash
    if frontier.size < end:
        raise integrity_error(
            f"entry {frontier.size} is missing (the latest signed head covers {end})"
        )
    return last


def _check_nodes(storage: LedgerStorage, built: list[tuple[int, int, bytes]]) -> None:
    """The stored interior nodes over the rehashed tail are the ones its leaves make."""
    for start in range(0, len(built), _BATCH):
        page = built[start : start + _BATCH]
        stored = storage.nodes([(level, index) for level, index, _ in page])
        for level, index, value in page:
            if stored.get((level, index)) != value:
                raise integrity_error(
                    f"the interior node at level {level}, index {index} does not match "
                    "the stored entries under it"
                )


def check_latest_head(
    storage: LedgerStorage, log_key: Ed25519PublicKey, tail: int = START_TAIL
) -> CheckedLog:
    """Raise ``LedgerIntegrityError`` unless storage reproduces the latest signed head:
    signed by ``log_key``, no leaf beyond it and it beyond no leaf, and its root rebuilt
    from the stored interior nodes of the first ``size - tail`` leaves plus the last
    ``tail`` leaves rehashed from their data (each interior node they complete compared
    with the stored one).

    Cost: O(log n + tail) reads and hashes, O(log n) memory, whatever the log's size:
    a coordinator starts as fast on 10^7 entries as on 10^3. What it does not rehash
    (leaves older than the tail, interior nodes off the right edge) is what
    ``creditshare ledger verify`` (``verify_log``) checks, in one streamed pass; a
    tampered old leaf is also caught by every proof for it (receipts are verified
    against the signed root by data nodes and enterprises), and cannot be signed over:
    new heads are built from this frontier, not from old rows. A log no larger than
    ``tail`` is checked in full, as before interior nodes were stored.
    Other replicas may append meanwhile: the check then goes on to the newer head over
    the new leaves only (O(new)), for a few rounds; a log that never pauses is taken at
    the last head checked, whose successors every append checks anyway.
    Reads go size-before-head, so a healthy log (each leaf committed with its head)
    never looks like one with a leaf beyond its head.
    """
    head = storage.latest_head()
    frontier: Frontier | None = None
    last, rehashed = b"", 0
    for attempt in itertools.count():
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
        if frontier is None:
            frontier = _stored_frontier(storage, max(0, target - tail))
        built: list[tuple[int, int, bytes]] = []
        rehashed += target - frontier.size
        last = _read_tail(storage, frontier, target, built) or last
        if head is not None and frontier.root() != head.root:
            raise integrity_error(
                f"the {target} stored entries do not reproduce the root of the latest "
                f"signed head (size {target}): an entry was replaced together with its "
                "stored hash, or an interior node, or the head was"
            )
        _check_nodes(storage, built)
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
            break
        if attempt >= _MAX_ROUNDS:
            # Replicas keep appending: what was checked is a signed head this storage
            # reproduces; their newer rows are checked, against their heads, by the
            # first append (``Ledger._extend``), as any other replica's are.
            break
        head = latest  # another replica appended meanwhile: go on over its leaves only
    assert frontier is not None
    if frontier.size and not last:  # a tail of 0: the last leaf's hash, unchecked
        last = storage.leaf_hashes(frontier.size - 1, frontier.size)[0]
    return CheckedLog(head, frontier, last, rehashed)
