"""RFC 6962 / RFC 9162 Merkle tree hashes and proofs, as pure functions.

The hashing is Certificate Transparency's, byte for byte (leaves are prefixed
with 0x00 and interior nodes with 0x01, so a leaf can never be passed off as a
node), so any CT tooling can check our proofs. Proofs are *generated* from the
RFC 6962 definitions (MTH, PATH, PROOF/SUBPROOF) and *verified* with the RFC 9162
algorithms (§2.1.3.2 and §2.1.4.2), which never rebuild a tree: a verifier only
needs the hashes in the proof. Every verification failure, including malformed
arguments, is an ``InvalidProofError`` so a caller has one thing to catch.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

from creditshare.errors import InvalidInputError, InvalidProofError

__all__ = [
    "EMPTY_ROOT",
    "HASH_SIZE",
    "Frontier",
    "consistency_proof",
    "inclusion_proof",
    "leaf_hash",
    "node_hash",
    "root",
    "verify_consistency",
    "verify_inclusion",
]

HASH_SIZE = 32
EMPTY_ROOT = hashlib.sha256(b"").digest()


def leaf_hash(data: bytes) -> bytes:
    """SHA-256(0x00 || data): the hash of one log entry."""
    return hashlib.sha256(b"\x00" + data).digest()


def node_hash(left: bytes, right: bytes) -> bytes:
    """SHA-256(0x01 || left || right): the hash of an interior node."""
    return hashlib.sha256(b"\x01" + left + right).digest()


def _split(n: int) -> int:
    """The largest power of two strictly less than ``n`` (``n >= 2``): RFC 6962's k."""
    return 1 << ((n - 1).bit_length() - 1)


class Frontier:
    """The right edge of a growing tree: one perfect-subtree hash per set bit of the size.

    Appending is amortised O(1) hashing and ``root()`` is O(log n), so an auditor
    walking a log leaf by leaf can check the root of every signed head in one pass
    instead of rebuilding the tree for each head, and the log can sign a new head
    without rehashing every earlier leaf.
    """

    __slots__ = ("_nodes", "_size")

    def __init__(self) -> None:
        self._size = 0
        self._nodes: list[bytes] = []

    @property
    def size(self) -> int:
        return self._size

    def append(
        self, leaf: bytes, completed: list[tuple[int, int, bytes]] | None = None
    ) -> list[bytes]:
        """Add the next leaf hash (not the leaf data); return its inclusion proof.

        The new leaf is the last one, so every subtree on the old right edge is a
        left sibling on its path: PATH(n-1, D[n]) is the old edge, smallest first.
        Each interior node the leaf completes is added to ``completed`` as
        ``(level, index, hash)``: storage keeps them so proofs need no leaf list.
        """
        proof = self._nodes[::-1]
        node, size, index, level = leaf, self._size, self._size, 0
        while size & 1:
            node = node_hash(self._nodes.pop(), node)
            size >>= 1
            index >>= 1
            level += 1
            if completed is not None:
                completed.append((level, index, node))
        self._nodes.append(node)
        self._size += 1
        return proof

    @classmethod
    def from_nodes(cls, size: int, nodes: Sequence[bytes]) -> Frontier:
        """The frontier of a tree of ``size`` from its right edge's perfect-subtree hashes,
        largest first (as ``frontier_ids(size)`` names them)."""
        if len(nodes) != size.bit_count():
            raise InvalidInputError(f"a tree of size {size} has {size.bit_count()} edge nodes")
        frontier = cls()
        frontier._size, frontier._nodes = size, list(nodes)
        return frontier

    def nodes(self) -> list[bytes]:
        """The right edge's perfect-subtree hashes, largest first."""
        return list(self._nodes)

    def copy(self) -> Frontier:
        """An independent frontier at the same size: O(log n), to extend tentatively."""
        clone = Frontier()
        clone._size, clone._nodes = self._size, list(self._nodes)
        return clone

    def root(self) -> bytes:
        """MTH of the leaves appended so far (``EMPTY_ROOT`` for none)."""
        if not self._nodes:
            return EMPTY_ROOT
        result = self._nodes[-1]
        for left in reversed(self._nodes[:-1]):
            result = node_hash(left, result)
        return result


def root(hashes: Sequence[bytes]) -> bytes:
    """MTH over a list of leaf hashes (RFC 6962 §2.1); ``EMPTY_ROOT`` for an empty list."""
    frontier = Frontier()
    for h in hashes:
        frontier.append(h)
    return frontier.root()


#: A cache of perfect-subtree hashes, keyed (lo, hi). Only for one append-only log.
SubtreeMemo = dict[tuple[int, int], bytes]
#: Subtrees up to this many leaves are hashed directly rather than remembered.
_MEMO_MIN = 64


def _mth(hashes: Sequence[bytes], lo: int, hi: int, memo: SubtreeMemo | None = None) -> bytes:
    """MTH(D[lo:hi]). With ``memo``, perfect subtrees (aligned, power-of-two sizes: they
    never change once complete) are computed once, so a proof costs O(log² n) hashes
    instead of O(n)."""
    size = hi - lo
    if memo is None or size <= _MEMO_MIN:
        return root(hashes[lo:hi])
    perfect = size & (size - 1) == 0
    if perfect:
        cached = memo.get((lo, hi))
        if cached is not None:
            return cached
    k = size // 2 if perfect else _split(size)
    value = node_hash(_mth(hashes, lo, lo + k, memo), _mth(hashes, lo + k, hi, memo))
    if perfect:
        memo[(lo, hi)] = value
    return value


def _size(hashes: Sequence[bytes], size: int | None) -> int:
    if size is None:
        return len(hashes)
    if not _is_int(size) or not 0 <= size <= len(hashes):
        raise InvalidInputError(f"tree size {size!r} is outside 0..{len(hashes)}")
    return size


def inclusion_proof(
    index: int,
    hashes: Sequence[bytes],
    memo: SubtreeMemo | None = None,
    size: int | None = None,
) -> list[bytes]:
    """RFC 6962 PATH(index, D[n]) for the tree over ``hashes`` (its first ``size``), lowest
    level first. ``size`` spares a caller holding a longer list a copy of its prefix."""
    n = _size(hashes, size)
    if not _is_int(index) or not 0 <= index < n:
        raise InvalidInputError(f"leaf index {index!r} is outside a tree of size {n}")
    proof: list[bytes] = []
    lo, hi = 0, n
    while hi - lo > 1:
        k = _split(hi - lo)
        if index < lo + k:
            proof.append(_mth(hashes, lo + k, hi, memo))
            hi = lo + k
        else:
            proof.append(_mth(hashes, lo, lo + k, memo))
            lo += k
    proof.reverse()
    return proof


def consistency_proof(
    old_size: int,
    hashes: Sequence[bytes],
    memo: SubtreeMemo | None = None,
    size: int | None = None,
) -> list[bytes]:
    """RFC 6962 PROOF(old_size, D[n]) over the first ``size`` of ``hashes`` (default all);
    empty when ``old_size`` is 0 or ``n``."""
    n = _size(hashes, size)
    if not _is_int(old_size) or not 0 <= old_size <= n:
        raise InvalidInputError(f"old size {old_size!r} is outside 0..{n}")
    if old_size in (0, n):
        return []
    proof: list[bytes] = []
    lo, hi, whole = 0, n, True  # ``whole``: SUBPROOF's b, "old tree is a whole subtree"
    while True:
        m = old_size - lo
        if m == hi - lo:
            if not whole:
                proof.append(_mth(hashes, lo, hi, memo))
            break
        k = _split(hi - lo)
        if m <= k:
            proof.append(_mth(hashes, lo + k, hi, memo))
            hi = lo + k
        else:
            proof.append(_mth(hashes, lo, lo + k, memo))
            lo += k
            whole = False
    proof.reverse()
    return proof


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _check_hash(value: object, what: str) -> None:
    if not isinstance(value, bytes) or len(value) != HASH_SIZE:
        shown = f"{len(value)} bytes" if isinstance(value, bytes) else type(value).__name__
        raise InvalidProofError(f"{what} must be {HASH_SIZE} bytes, got {shown}")


def _check_proof(proof: Sequence[bytes]) -> None:
    for i, h in enumerate(proof):
        _check_hash(h, f"proof hash {i}")


def _inclusion_length(index: int, size: int) -> int:
    """Hashes in PATH(index, D[size]): the inner part below where the paths to
    ``index`` and ``size - 1`` meet, plus one border hash per set bit above it."""
    inner = (index ^ (size - 1)).bit_length()
    return inner + (index >> inner).bit_count()


def verify_inclusion(
    leaf_hash: bytes, index: int, size: int, proof: Sequence[bytes], root: bytes
) -> None:
    """Check that ``leaf_hash`` is leaf ``index`` of the tree of ``size`` with ``root``.

    RFC 9162 §2.1.3.2. Raises ``InvalidProofError`` saying what failed.
    """
    _check_hash(leaf_hash, "leaf hash")
    _check_hash(root, "root")
    _check_proof(proof)
    if not (_is_int(index) and _is_int(size)) or not 0 <= index < size:
        raise InvalidProofError(f"leaf index {index!r} is outside a tree of size {size!r}")
    expected = _inclusion_length(index, size)
    if len(proof) != expected:
        raise InvalidProofError(
            f"inclusion proof for leaf {index} of {size} needs {expected} hashes, got {len(proof)}"
        )
    fn, sn, r = index, size - 1, leaf_hash
    for p in proof:
        if sn == 0:
            raise InvalidProofError("inclusion proof is longer than the path to the root")
        if fn & 1 or fn == sn:
            r = node_hash(p, r)
            while not fn & 1 and fn != 0:
                fn >>= 1
                sn >>= 1
        else:
            r = node_hash(r, p)
        fn >>= 1
        sn >>= 1
    if sn != 0:
        raise InvalidProofError("inclusion proof is shorter than the path to the root")
    if r != root:
        raise InvalidProofError(f"inclusion proof for leaf {index} does not lead to the root")


def _consistency_length(old_size: int, new_size: int) -> int:
    """Hashes in PROOF(old_size, D[new_size]) for 0 < old_size < new_size."""
    shift = (old_size & -old_size).bit_length() - 1  # trailing zero bits of old_size
    index = old_size - 1
    inner = (index ^ (new_size - 1)).bit_length()
    border = (index >> inner).bit_count()
    seeded = 0 if old_size == 1 << shift else 1  # the old root is the seed when 2^k
    return seeded + (inner - shift) + border


def verify_consistency(
    old_size: int, new_size: int, old_root: bytes, new_root: bytes, proof: Sequence[bytes]
) -> None:
    """Check that the tree of ``new_size`` is an append-only extension of ``old_size``.

    RFC 9162 §2.1.4.2 for ``0 < old_size < new_size``. Equal sizes need equal roots
    and an empty proof; an empty old tree is consistent with anything, but its root
    must be ``EMPTY_ROOT`` and its proof empty. Raises ``InvalidProofError``.
    """
    _check_hash(old_root, "old root")
    _check_hash(new_root, "new root")
    _check_proof(proof)
    if not (_is_int(old_size) and _is_int(new_size)) or not 0 <= old_size <= new_size:
        raise InvalidProofError(f"sizes {old_size!r} -> {new_size!r} do not grow the tree")
    if old_size == 0 or old_size == new_size:
        if proof:
            raise InvalidProofError(f"proof from size {old_size} to {new_size} must be empty")
        if old_size == 0 and old_root != EMPTY_ROOT:
            raise InvalidProofError("the root of an empty tree must be SHA-256 of nothing")
        if old_size == new_size and old_root != new_root:
            raise InvalidProofError(f"two different roots for the same size {old_size}")
        return
    expected = _consistency_length(old_size, new_size)
    if len(proof) != expected:
        raise InvalidProofError(
            f"consistency proof {old_size} -> {new_size} needs {expected} hashes, got {len(proof)}"
        )
    path = list(proof)
    if old_size & (old_size - 1) == 0:
        path.insert(0, old_root)
    fn, sn = old_size - 1, new_size - 1
    while fn & 1:
        fn >>= 1
        sn >>= 1
    fr = sr = path[0]
    for c in path[1:]:
        if sn == 0:
            raise InvalidProofError("consistency proof is longer than the path to the root")
        if fn & 1 or fn == sn:
            fr = node_hash(c, fr)
            sr = node_hash(c, sr)
            while not fn & 1 and fn != 0:
                fn >>= 1
                sn >>= 1
        else:
            sr = node_hash(sr, c)
        fn >>= 1
        sn >>= 1
    if sn != 0:
        raise InvalidProofError("consistency proof is shorter than the path to the root")
    if fr != old_root:
        raise InvalidProofError(f"consistency proof does not reach the old root (size {old_size})")
    if sr != new_root:
        raise InvalidProofError(f"consistency proof does not reach the new root (size {new_size})")
