"""The ledger's storage contract, and the in-memory backend that tests and demos use.

Storage is an interface, as in Trillian: the log logic (hashing, signing, proofs)
lives in ``Ledger`` and is written once; each backend only has to keep rows
safely and serialise appends. Every backend passes the same contract test suite
(``tests/unit/test_ledger_storage.py``).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Collection, Iterable, Sequence
from dataclasses import dataclass
from typing import Protocol

from creditshare.errors import InvalidInputError, LedgerError, NotFoundError
from creditshare.ledger._errors import integrity_error
from creditshare.ledger._merkle import leaf_hash
from creditshare.ledger._subtrees import NodeId
from creditshare.ledger._tree_head import SignedTreeHead

__all__ = [
    "MAX_LEVEL",
    "BuildBatch",
    "LedgerStorage",
    "MemoryLedgerStorage",
    "NewNode",
    "ReadHashes",
    "StoredLeaf",
    "check_append_input",
    "check_new_head",
    "check_range",
    "checked_hashes",
    "is_node_of",
]

ReadHashes = Callable[[int, int], list[bytes]]
"""Inside an append: the stored leaf hashes of ``[start, end)``, read under the append lock."""

NewNode = tuple[int, int, bytes]
"""(level, index, hash) of a perfect subtree an append completed (level >= 1)."""

BuildBatch = Callable[[int, ReadHashes], tuple[SignedTreeHead, Sequence[NewNode]]]
"""Called inside an append with the size before it and a reader of stored leaf hashes;
returns the head to store (over every leaf, the new ones included) and the interior
nodes the new leaves complete, to store with them."""


@dataclass(frozen=True)
class StoredLeaf:
    """One log entry as stored. ``leaf_hash`` is the stored column, not recomputed:
    an auditor compares it with ``leaf_hash(data)`` to detect tampering."""

    index: int
    data: bytes
    leaf_hash: bytes
    subject: str


class LedgerStorage(Protocol):
    """Where the log's leaves, interior nodes and signed heads live.

    Contract for every implementation:

    - ``append`` MUST be atomic: the leaves, the interior nodes they complete and the
      head built for them are stored together or not at all; an exception from
      ``build`` stores nothing.
    - ``append`` MUST serialise with every other append to the same data, including
      appends from other processes sharing the database, so indices have no gaps,
      no duplicates, and each head covers exactly the leaves before it.
    - Implementations MUST NOT keep state that grows with the log or could go stale
      across calls (another process may append at any time).
    - Rows are never updated or deleted: the log is append-only.
    - Reads return what the database holds; they never recompute or repair it, so
      an auditor reading through this interface sees tampering.
    """

    def append(
        self, entries: Sequence[tuple[bytes, str]], build: BuildBatch
    ) -> tuple[int, SignedTreeHead]:
        """Give ``entries`` (data, subject) the next indices, store each with its leaf
        hash, call ``build(old_size, read_hashes)`` (the callee MAY read stored heads
        from the same thread: implementations MUST NOT deadlock on that), store the head
        and interior nodes it returns, and return ``(first index, head)``. All or nothing."""
        ...

    def size(self) -> int:
        """Index of the last stored leaf plus one (0 for an empty log)."""
        ...

    def leaf(self, index: int) -> StoredLeaf:
        """The leaf at ``index``; ``NotFoundError`` if there is none."""
        ...

    def leaves(self, start: int, end: int) -> list[StoredLeaf]:
        """Stored leaves with ``start <= index < end``, ascending; absent rows are absent."""
        ...

    def leaf_hashes(self, start: int, end: int) -> list[bytes]:
        """Stored leaf hashes of ``[start, end)``; ``LedgerIntegrityError`` names a
        missing row. For audits and appends (O(end - start)), never for proofs."""
        ...

    def nodes(self, ids: Collection[NodeId]) -> dict[NodeId, bytes]:
        """Stored perfect-subtree hashes by ``(level, index)`` (level 0: leaf hashes);
        ids storage does not hold are left out. One round trip: proofs need O(log n)."""
        ...

    def stray_nodes(self, size: int, limit: int) -> list[NodeId]:
        """Up to ``limit`` stored interior nodes that no tree of ``size`` leaves has (a
        level outside 1..62, or a subtree reaching past leaf ``size - 1``), for audits:
        no proof reads them, but a row inserted for a subtree not yet complete would
        make the append that completes it fail."""
        ...

    def latest_head(self) -> SignedTreeHead | None:
        """The stored head with the largest size, or ``None`` if none is stored."""
        ...

    def head(self, size: int) -> SignedTreeHead | None:
        """The stored head for exactly ``size`` leaves, if there is one."""
        ...

    def heads(self, after: int = -1, limit: int | None = None) -> list[SignedTreeHead]:
        """Stored heads of size above ``after``, ascending by size, at most ``limit``
        (every one by default): audits page through them."""
        ...

    def leaves_for_subject(self, subject: str) -> list[StoredLeaf]:
        """Every leaf recorded about ``subject``, ascending by index."""
        ...


def checked_hashes(start: int, rows: Iterable[tuple[int, bytes]], end: int) -> list[bytes]:
    """Leaf hashes of ``[start, end)`` from ``(index, hash)`` rows in index order,
    refusing a gap: a hash list with a hole in it would sign a different tree."""
    out: list[bytes] = []
    for index, value in rows:
        if index != start + len(out):
            break
        out.append(value)
    if len(out) != end - start:
        missing = start + len(out)
        raise integrity_error(
            f"entry {missing} is missing (ledger_leaf has no row for index {missing})"
        )
    return out


MAX_LEVEL = 62
"""The highest interior level a log can have (2^62 leaves); shifts stay in 64 bits."""


def is_node_of(node: NodeId, size: int) -> bool:
    """Whether the tree of ``size`` leaves has the interior node ``(level, index)``."""
    level, index = node
    return 1 <= level <= MAX_LEVEL and 0 <= index < size >> level


def check_new_head(head: object, size: int) -> SignedTreeHead:
    """What an append checks about the head ``build`` returned before storing it."""
    if not isinstance(head, SignedTreeHead):
        raise LedgerError(f"build returned {type(head).__name__}, not a SignedTreeHead")
    if head.size != size:
        raise LedgerError(f"build returned a head of size {head.size} for size {size}")
    return head


def check_append_input(data: object, subject: object) -> None:
    if not isinstance(data, bytes):
        raise InvalidInputError(f"ledger data must be bytes, got {type(data).__name__}")
    if not isinstance(subject, str) or not subject:
        raise InvalidInputError("ledger subject must be a non-empty string")


def check_range(start: int, end: int) -> None:
    if start < 0 or end < start:
        raise InvalidInputError(f"leaf range {start}..{end} is not a valid range")


class MemoryLedgerStorage:
    """A ``LedgerStorage`` in process memory, for tests and the one-machine demo.

    One lock serialises everything, which is all "across processes" can mean for
    memory that only one process can see.
    """

    def __init__(self) -> None:
        # Re-entrant: ``build`` may read a head (another replica's) mid-append.
        self._lock = threading.RLock()
        self._leaves: list[StoredLeaf] = []
        self._hashes: list[bytes] = []
        self._nodes: dict[NodeId, bytes] = {}
        self._heads: dict[int, SignedTreeHead] = {}

    def append(
        self, entries: Sequence[tuple[bytes, str]], build: BuildBatch
    ) -> tuple[int, SignedTreeHead]:
        for data, subject in entries:
            check_append_input(data, subject)
        if not entries:
            raise InvalidInputError("an append needs at least one entry")
        with self._lock:
            first = len(self._leaves)
            head, nodes = build(first, self._read)
            head = check_new_head(head, first + len(entries))
            for offset, (data, subject) in enumerate(entries):
                h = leaf_hash(data)
                self._hashes.append(h)
                self._leaves.append(StoredLeaf(first + offset, data, h, subject))
            for level, index, value in nodes:
                self._nodes[(level, index)] = value
            self._heads[head.size] = head
            return first, head

    def _read(self, start: int, end: int) -> list[bytes]:
        check_range(start, end)
        with self._lock:
            return checked_hashes(start, enumerate(self._hashes[start:end], start), end)

    def size(self) -> int:
        with self._lock:
            return len(self._leaves)

    def leaf(self, index: int) -> StoredLeaf:
        with self._lock:
            if not 0 <= index < len(self._leaves):
                raise NotFoundError(f"the ledger has no leaf {index}")
            return self._leaves[index]

    def leaves(self, start: int, end: int) -> list[StoredLeaf]:
        check_range(start, end)
        with self._lock:
            return self._leaves[start:end]

    def leaf_hashes(self, start: int, end: int) -> list[bytes]:
        return self._read(start, end)

    def nodes(self, ids: Collection[NodeId]) -> dict[NodeId, bytes]:
        out: dict[NodeId, bytes] = {}
        with self._lock:
            for level, index in ids:
                if level == 0:
                    if 0 <= index < len(self._hashes):
                        out[(0, index)] = self._hashes[index]
                elif (level, index) in self._nodes:
                    out[(level, index)] = self._nodes[(level, index)]
        return out

    def stray_nodes(self, size: int, limit: int) -> list[NodeId]:
        with self._lock:
            stray = [node for node in self._nodes if not is_node_of(node, size)]
        return sorted(stray)[:limit]

    def latest_head(self) -> SignedTreeHead | None:
        with self._lock:
            return self._heads[max(self._heads)] if self._heads else None

    def head(self, size: int) -> SignedTreeHead | None:
        with self._lock:
            return self._heads.get(size)

    def heads(self, after: int = -1, limit: int | None = None) -> list[SignedTreeHead]:
        with self._lock:
            sizes = sorted(size for size in self._heads if size > after)
            return [self._heads[size] for size in sizes[:limit]]

    def leaves_for_subject(self, subject: str) -> list[StoredLeaf]:
        with self._lock:
            return [leaf for leaf in self._leaves if leaf.subject == subject]
