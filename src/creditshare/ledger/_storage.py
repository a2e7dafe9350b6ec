"""The ledger's storage contract, and the in-memory backend that tests and demos use.

Storage is an interface, as in Trillian: the log logic (hashing, signing, proofs)
lives in ``Ledger`` and is written once; each backend only has to keep rows
safely and serialise appends. Every backend passes the same contract test suite
(``tests/unit/test_ledger_storage.py``).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

from creditshare.errors import InvalidInputError, LedgerError, NotFoundError
from creditshare.ledger._merkle import leaf_hash
from creditshare.ledger._tree_head import SignedTreeHead

__all__ = [
    "BuildHead",
    "LedgerStorage",
    "MemoryLedgerStorage",
    "StoredLeaf",
    "check_append_input",
    "check_new_head",
    "check_range",
]

BuildHead = Callable[[int, Sequence[bytes]], SignedTreeHead]
"""Called inside an append with the new size and every leaf hash; returns the head to store."""


@dataclass(frozen=True)
class StoredLeaf:
    """One log entry as stored. ``leaf_hash`` is the stored column, not recomputed:
    an auditor compares it with ``leaf_hash(data)`` to detect tampering."""

    index: int
    data: bytes
    leaf_hash: bytes
    subject: str


class LedgerStorage(Protocol):
    """Where the log's leaves and signed heads live.

    Contract for every implementation:

    - ``append`` MUST be atomic: the leaf and the head built for it are stored
      together or not at all; an exception from ``build_head`` stores nothing.
    - ``append`` MUST serialise with every other append to the same data, including
      appends from other processes sharing the database, so indices have no gaps,
      no duplicates, and each head covers exactly the leaves before it.
    - Implementations MUST NOT keep state that could go stale across calls (another
      process may append at any time), except caches that are validated against the
      database before use.
    - Rows are never updated or deleted: the log is append-only.
    - Reads return what the database holds; they never recompute or repair it, so
      an auditor reading through this interface sees tampering.
    """

    def append(
        self, data: bytes, subject: str, build_head: BuildHead
    ) -> tuple[int, SignedTreeHead]:
        """Assign the next index to ``data``, store it with its leaf hash and subject,
        call ``build_head(new_size, leaf_hashes)`` with all leaf hashes including the
        new one (the callee MUST NOT keep or modify the sequence, and MAY read stored
        heads from the same thread: implementations MUST NOT deadlock on that), store the head it
        returns, and return ``(index, head)``. All or nothing."""
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

    def leaf_hashes(self, size: int) -> list[bytes]:
        """Stored leaf hashes of indices ``0..size-1``; ``InvalidInputError`` past the end."""
        ...

    def latest_head(self) -> SignedTreeHead | None:
        """The stored head with the largest size, or ``None`` if none is stored."""
        ...

    def head(self, size: int) -> SignedTreeHead | None:
        """The stored head for exactly ``size`` leaves, if there is one."""
        ...

    def heads(self) -> list[SignedTreeHead]:
        """Every stored head, ascending by size."""
        ...

    def leaves_for_subject(self, subject: str) -> list[StoredLeaf]:
        """Every leaf recorded about ``subject``, ascending by index."""
        ...


def check_new_head(head: object, size: int) -> SignedTreeHead:
    """What an append checks about the head ``build_head`` returned before storing it."""
    if not isinstance(head, SignedTreeHead):
        raise LedgerError(f"build_head returned {type(head).__name__}, not a SignedTreeHead")
    if head.size != size:
        raise LedgerError(f"build_head returned a head of size {head.size} for size {size}")
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
        # Re-entrant: ``build_head`` may read a head (another replica's) mid-append.
        self._lock = threading.RLock()
        self._leaves: list[StoredLeaf] = []
        self._hashes: list[bytes] = []
        self._heads: dict[int, SignedTreeHead] = {}

    def append(
        self, data: bytes, subject: str, build_head: BuildHead
    ) -> tuple[int, SignedTreeHead]:
        check_append_input(data, subject)
        h = leaf_hash(data)
        with self._lock:
            index = len(self._leaves)
            self._hashes.append(h)
            try:
                head = check_new_head(build_head(index + 1, self._hashes), index + 1)
            except BaseException:
                del self._hashes[index:]
                raise
            self._leaves.append(StoredLeaf(index, data, h, subject))
            self._heads[head.size] = head
            return index, head

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

    def leaf_hashes(self, size: int) -> list[bytes]:
        with self._lock:
            if not 0 <= size <= len(self._leaves):
                raise InvalidInputError(f"the ledger has {len(self._leaves)} leaves, not {size}")
            return self._hashes[:size]

    def latest_head(self) -> SignedTreeHead | None:
        with self._lock:
            return self._heads[max(self._heads)] if self._heads else None

    def head(self, size: int) -> SignedTreeHead | None:
        with self._lock:
            return self._heads.get(size)

    def heads(self) -> list[SignedTreeHead]:
        with self._lock:
            return [self._heads[size] for size in sorted(self._heads)]

    def leaves_for_subject(self, subject: str) -> list[StoredLeaf]:
        with self._lock:
            return [leaf for leaf in self._leaves if leaf.subject == subject]
