"""Proofs from stored perfect subtrees: O(log n) hashes read, no list of every leaf.

Every subtree an RFC 6962 proof names is either *perfect* (an aligned power of two
of leaves, complete once its last leaf is appended and never changed after) or the
tree's ragged right edge, which splits into perfect subtrees exactly as
``Frontier`` keeps them. So storage keeps one hash per perfect subtree, written in
the transaction that completes it (``NodeId`` (level, index) covers leaves
``[index << level, (index + 1) << level)``; level 0 is the leaf hash itself), and a
proof reads O(log n) of them by key, as C2SP tlog-tiles serves a proof from tiles.
The proof's *shape* comes from the same RFC 6962 walk as ``_merkle``'s list-based
functions, which stay the reference the storage contract tests compare against.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping, Sequence

from creditshare.errors import InvalidInputError
from creditshare.ledger._errors import integrity_error
from creditshare.ledger._merkle import EMPTY_ROOT, node_hash

__all__ = [
    "NodeId",
    "ReadNodes",
    "consistency_ranges",
    "frontier_ids",
    "inclusion_ranges",
    "node_ids",
    "pieces",
    "proof_from_nodes",
    "read_proof",
    "read_root",
]

NodeId = tuple[int, int]
"""(level, index): the perfect subtree over leaves [index << level, (index + 1) << level)."""

ReadNodes = Callable[[Collection[NodeId]], Mapping[NodeId, bytes]]
"""Storage's batched read of stored subtree hashes; absent ids are left out."""


def _split(n: int) -> int:
    return 1 << ((n - 1).bit_length() - 1)


def pieces(lo: int, hi: int) -> list[NodeId]:
    """The perfect subtrees that make up ``[lo, hi)``, left to right (largest first).

    Valid for every range an RFC 6962 proof names: its start is aligned to the
    largest power of two not above its length, so each piece is aligned too.
    """
    out: list[NodeId] = []
    while lo < hi:
        level = (hi - lo).bit_length() - 1
        out.append((level, lo >> level))
        lo += 1 << level
    return out


def frontier_ids(size: int) -> list[NodeId]:
    """The right edge of a tree of ``size``: what ``Frontier`` holds, largest first."""
    return pieces(0, size)


def _check(index: int, size: int, what: str) -> None:
    if not isinstance(size, int) or isinstance(size, bool) or size < 0:
        raise InvalidInputError(f"tree size {size!r} must be a non-negative integer")
    if not isinstance(index, int) or isinstance(index, bool) or not 0 <= index < size:
        raise InvalidInputError(f"{what} {index!r} is outside a tree of size {size}")


def inclusion_ranges(index: int, size: int) -> list[tuple[int, int]]:
    """The leaf ranges whose MTHs make PATH(index, D[size]), lowest level first."""
    _check(index, size, "leaf index")
    ranges: list[tuple[int, int]] = []
    lo, hi = 0, size
    while hi - lo > 1:
        k = _split(hi - lo)
        if index < lo + k:
            ranges.append((lo + k, hi))
            hi = lo + k
        else:
            ranges.append((lo, lo + k))
            lo += k
    ranges.reverse()
    return ranges


def consistency_ranges(old_size: int, size: int) -> list[tuple[int, int]]:
    """The leaf ranges whose MTHs make PROOF(old_size, D[size]); empty for 0 or ``size``."""
    if not isinstance(old_size, int) or isinstance(old_size, bool) or not 0 <= old_size <= size:
        raise InvalidInputError(f"old size {old_size!r} is outside 0..{size}")
    if old_size in (0, size):
        return []
    ranges: list[tuple[int, int]] = []
    lo, hi, whole = 0, size, True
    while True:
        m = old_size - lo
        if m == hi - lo:
            if not whole:
                ranges.append((lo, hi))
            break
        k = _split(hi - lo)
        if m <= k:
            ranges.append((lo + k, hi))
            hi = lo + k
        else:
            ranges.append((lo, lo + k))
            lo += k
            whole = False
    ranges.reverse()
    return ranges


def node_ids(ranges: Sequence[tuple[int, int]]) -> list[NodeId]:
    """Every stored subtree the ranges need, each once."""
    return list(dict.fromkeys(node for lo, hi in ranges for node in pieces(lo, hi)))


def _fold(hashes: Sequence[bytes]) -> bytes:
    """MTH of a range from its pieces (largest first): the ragged edge, right to left."""
    if not hashes:
        return EMPTY_ROOT
    result = hashes[-1]
    for left in reversed(hashes[:-1]):
        result = node_hash(left, result)
    return result


def proof_from_nodes(
    ranges: Sequence[tuple[int, int]], nodes: Mapping[NodeId, bytes]
) -> list[bytes]:
    """The proof over ``ranges`` from subtree hashes; ``LedgerIntegrityError`` names
    the first one storage does not hold (a ledger never backfilled, or tampered with)."""
    proof = []
    for lo, hi in ranges:
        hashes = []
        for node in pieces(lo, hi):
            value = nodes.get(node)
            if value is None:
                level, index = node
                raise integrity_error(
                    f"the ledger stores no hash for the subtree at level {level}, index "
                    f"{index} (leaves {index << level}..{((index + 1) << level) - 1})"
                )
            hashes.append(value)
        proof.append(_fold(hashes))
    return proof


def read_proof(read: ReadNodes, ranges: Sequence[tuple[int, int]]) -> list[bytes]:
    """A proof in one batched read of O(log n) stored hashes."""
    return proof_from_nodes(ranges, read(node_ids(ranges)))


def read_root(read: ReadNodes, size: int) -> bytes:
    """MTH of the first ``size`` leaves from the O(log n) stored hashes of its right edge."""
    if size == 0:
        return EMPTY_ROOT
    return proof_from_nodes([(0, size)], read(frontier_ids(size)))[0]
