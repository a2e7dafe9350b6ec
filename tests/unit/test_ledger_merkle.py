"""RFC 6962 Merkle hashing and proofs: CT known answers, definitions, every tampering.

Known answers are the Certificate Transparency test vectors (eight leaves, roots for
sizes 1..8, inclusion and consistency proofs) as published in
transparency-dev/merkle ``proof/verify_test.go`` (from the Go and C++ CT code).
Everything else is checked against a naive implementation written here straight
from the RFC 6962 §2.1 definitions (MTH, PATH, PROOF/SUBPROOF), for every tree
size 1..64 and every index / old size.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

import pytest

from creditshare.errors import InvalidInputError, InvalidProofError
from creditshare.ledger import (
    EMPTY_ROOT,
    Frontier,
    consistency_proof,
    inclusion_proof,
    leaf_hash,
    node_hash,
    root,
    verify_consistency,
    verify_inclusion,
)

CT_LEAVES = [
    bytes.fromhex(h)
    for h in (
        "",
        "00",
        "10",
        "2021",
        "3031",
        "40414243",
        "5051525354555657",
        "606162636465666768696a6b6c6d6e6f",
    )
]
CT_ROOTS = [
    "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
    "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125",
    "aeb6bcfe274b70a14fb067a5e5578264db0fa9b51af5e0ba159158f329e06e77",
    "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
    "4e3bbb1f7b478dcfe71fb631631519a3bca12c9aefca1612bfce4c13a86264d4",
    "76e67dadbcdf1e10e1b74ddc608abd2f98dfb16fbce75277b5232a127f2087ef",
    "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c",
    "5dc9da79a70659a9ad559cb701ded9a2ab9d823aad2f4960cfe370eff4604328",
]
# (zero-based leaf index, tree size, proof); the Go file numbers leaves from 1.
CT_INCLUSION = [
    (0, 1, []),
    (
        0,
        8,
        [
            "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
        ],
    ),
    (
        5,
        8,
        [
            "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
            "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
            "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        ],
    ),
    (2, 3, ["fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125"]),
    (
        1,
        5,
        [
            "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
        ],
    ),
]
CT_CONSISTENCY = [
    (1, 1, []),
    (
        1,
        8,
        [
            "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7",
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
        ],
    ),
    (
        6,
        8,
        [
            "0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
            "ca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0",
            "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        ],
    ),
    (
        2,
        5,
        [
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e",
            "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
        ],
    ),
    (
        6,
        7,
        [
            "0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6a",
            "b08693ec2e721597130641e8211e7eedccb4c26413963eee6c1e2ed16ffb1a5f",
            "d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        ],
    ),
]

MAX_SIZE = 64
DATA = CT_LEAVES + [b"leaf %d" % j for j in range(len(CT_LEAVES), MAX_SIZE)]


# --- RFC 6962 §2.1, written from the definitions (hashlib only, no code under test) ---


def _k(n: int) -> int:
    k = 1
    while k * 2 < n:
        k *= 2
    return k


def ref_mth(d: Sequence[bytes]) -> bytes:
    if not d:
        return hashlib.sha256(b"").digest()
    if len(d) == 1:
        return hashlib.sha256(b"\x00" + d[0]).digest()
    k = _k(len(d))
    return hashlib.sha256(b"\x01" + ref_mth(d[:k]) + ref_mth(d[k:])).digest()


def ref_path(m: int, d: Sequence[bytes]) -> list[bytes]:
    if len(d) == 1:
        return []
    k = _k(len(d))
    if m < k:
        return [*ref_path(m, d[:k]), ref_mth(d[k:])]
    return [*ref_path(m - k, d[k:]), ref_mth(d[:k])]


def ref_subproof(m: int, d: Sequence[bytes], b: bool) -> list[bytes]:
    if m == len(d):
        return [] if b else [ref_mth(d)]
    k = _k(len(d))
    if m <= k:
        return [*ref_subproof(m, d[:k], b), ref_mth(d[k:])]
    return [*ref_subproof(m - k, d[k:], False), ref_mth(d[:k])]


def ref_proof(m: int, d: Sequence[bytes]) -> list[bytes]:
    return ref_subproof(m, d, True)


def path_shape(m: int, n: int) -> list[bool]:
    """For PATH(m, D[n]), bottom-up: is each sibling on the left? The shape is all a
    verifier uses besides the hashes, so two (index, size) pairs with the same shape
    accept the same proofs: only the signed (size, root) pair tells them apart."""
    if n == 1:
        return []
    k = _k(n)
    return [*path_shape(m, k), False] if m < k else [*path_shape(m - k, n - k), True]


HASHES = [leaf_hash(d) for d in DATA]
ROOTS = [ref_mth(DATA[:n]) for n in range(MAX_SIZE + 1)]


def inclusion_ok(leaf: bytes, index: int, size: int, proof: Sequence[bytes], root_: bytes) -> bool:
    try:
        verify_inclusion(leaf, index, size, proof, root_)
    except InvalidProofError:
        return False
    return True


def consistency_ok(
    old: int, new: int, old_root: bytes, new_root: bytes, proof: Sequence[bytes]
) -> bool:
    try:
        verify_consistency(old, new, old_root, new_root, proof)
    except InvalidProofError:
        return False
    return True


def _flip(h: bytes, position: int) -> bytes:
    return h[:position] + bytes([h[position] ^ 0x01]) + h[position + 1 :]


# --- known answers ---


def test_hash_primitives_known_answers() -> None:
    assert EMPTY_ROOT.hex() == "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
    assert root([]) == EMPTY_ROOT
    assert leaf_hash(b"").hex() == CT_ROOTS[0]
    assert node_hash(b"a", b"b") == hashlib.sha256(b"\x01ab").digest()
    # Domain separation: a leaf whose data looks like two children is not that node.
    assert leaf_hash(b"\x01" + HASHES[0] + HASHES[1]) != node_hash(HASHES[0], HASHES[1])


@pytest.mark.parametrize("size", range(1, 9))
def test_ct_roots(size: int) -> None:
    assert root(HASHES[:size]).hex() == CT_ROOTS[size - 1]


@pytest.mark.parametrize(("index", "size", "expected"), CT_INCLUSION)
def test_ct_inclusion_proofs(index: int, size: int, expected: list[str]) -> None:
    proof = inclusion_proof(index, HASHES[:size])
    assert [h.hex() for h in proof] == expected
    verify_inclusion(HASHES[index], index, size, proof, bytes.fromhex(CT_ROOTS[size - 1]))


@pytest.mark.parametrize(("old", "new", "expected"), CT_CONSISTENCY)
def test_ct_consistency_proofs(old: int, new: int, expected: list[str]) -> None:
    proof = consistency_proof(old, HASHES[:new])
    assert [h.hex() for h in proof] == expected
    old_root, new_root = (bytes.fromhex(CT_ROOTS[s - 1]) for s in (old, new))
    verify_consistency(old, new, old_root, new_root, proof)


# --- against the definitions, every size ---


@pytest.mark.parametrize("size", range(1, MAX_SIZE + 1))
def test_generation_matches_rfc_definitions(size: int) -> None:
    hashes, data = HASHES[:size], DATA[:size]
    assert root(hashes) == ROOTS[size]
    frontier = Frontier()
    for n, h in enumerate(hashes, start=1):
        assert frontier.append(h) == ref_path(n - 1, data[:n])
    assert frontier.size == size
    assert frontier.root() == ROOTS[size]
    for index in range(size):
        assert inclusion_proof(index, hashes) == ref_path(index, data)
    for old in range(1, size + 1):
        assert consistency_proof(old, hashes) == ref_proof(old, data)
    assert consistency_proof(0, hashes) == []


@pytest.mark.parametrize("size", range(1, MAX_SIZE + 1))
def test_inclusion_every_index_and_every_tampering(size: int) -> None:
    good_root = ROOTS[size]
    for index in range(size):
        leaf = HASHES[index]
        proof = inclusion_proof(index, HASHES[:size])
        verify_inclusion(leaf, index, size, proof, good_root)

        for j in range(len(proof)):
            for position in (0, (index + j) % 32, 31):
                bad = [*proof[:j], _flip(proof[j], position), *proof[j + 1 :]]
                assert not inclusion_ok(leaf, index, size, bad, good_root)
        for position in (0, 17, 31):
            flipped_leaf, flipped_root = _flip(leaf, position), _flip(good_root, position)
            assert not inclusion_ok(flipped_leaf, index, size, proof, good_root)
            assert not inclusion_ok(leaf, index, size, proof, flipped_root)
        for other in range(-1, size + 1):
            if other != index:
                assert not inclusion_ok(leaf, other, size, proof, good_root)
        for other_size in range(0, MAX_SIZE + 2):
            if other_size == size:
                continue
            accepted = inclusion_ok(leaf, index, other_size, proof, good_root)
            same_shape = index < other_size and path_shape(index, other_size) == path_shape(
                index, size
            )
            assert accepted == same_shape, (index, size, other_size)
        variants = [proof[:-1], proof[1:], [*proof, good_root], [good_root, *proof]]
        variants += [[*proof, proof[-1]]] if proof else [[EMPTY_ROOT]]
        for bad in variants:
            if bad != proof:
                assert not inclusion_ok(leaf, index, size, bad, good_root)


@pytest.mark.parametrize("size", range(1, MAX_SIZE + 1))
def test_consistency_every_old_size_and_every_tampering(size: int) -> None:
    new_root = ROOTS[size]
    for old in range(1, size + 1):
        old_root = ROOTS[old]
        proof = consistency_proof(old, HASHES[:size])
        verify_consistency(old, size, old_root, new_root, proof)
        if old == size:
            assert proof == []
            assert not consistency_ok(old, size, old_root, new_root, [old_root])
            continue

        for j in range(len(proof)):
            for position in (0, (old + j) % 32, 31):
                bad = [*proof[:j], _flip(proof[j], position), *proof[j + 1 :]]
                assert not consistency_ok(old, size, old_root, new_root, bad)
        for position in (0, 31):
            bad_old, bad_new = _flip(old_root, position), _flip(new_root, position)
            assert not consistency_ok(old, size, bad_old, new_root, proof)
            assert not consistency_ok(old, size, old_root, bad_new, proof)
        assert not consistency_ok(old, size, new_root, old_root, proof)
        for other_old in range(-1, size + 1):
            if other_old != old:
                assert not consistency_ok(other_old, size, old_root, new_root, proof)
        for other_new in range(0, MAX_SIZE + 2):
            if other_new == size:
                continue
            accepted = consistency_ok(old, other_new, old_root, new_root, proof)
            # A consistency proof is the upper part of leaf old-1's inclusion path.
            same_shape = old < other_new and path_shape(old - 1, other_new) == path_shape(
                old - 1, size
            )
            assert accepted == same_shape, (old, size, other_new)
        variants = [[], proof[:-1], proof[1:], [*proof, new_root], [old_root, *proof]]
        variants += [[proof[0], *proof], [*proof, EMPTY_ROOT]]
        for bad in variants:
            assert not consistency_ok(old, size, old_root, new_root, bad)


# --- malformed arguments ---

H = HASHES[0]


@pytest.mark.parametrize(
    ("leaf", "index", "size", "proof", "root_", "message"),
    [
        (H, 0, 0, [], H, "outside a tree of size 0"),
        (H, -1, 1, [], H, "outside"),
        (H, 1, 1, [], H, "outside"),
        (H, True, 2, [H], H, "outside"),
        (H[:31], 0, 1, [], H, "leaf hash must be 32 bytes, got 31"),
        (H, 0, 1, [], H + b"\x00", "root must be 32 bytes, got 33"),
        (H, 0, 2, [b""], H, "proof hash 0 must be 32 bytes"),
        (H, 0, 2, ["ab" * 16], H, "proof hash 0 must be 32 bytes, got str"),
        (H, 0, 2, [], H, "needs 1 hashes, got 0"),
        (H, 0, 1, [H], H, "needs 0 hashes, got 1"),
        (H, 0, 1, [], HASHES[1], "does not lead to the root"),
    ],
)
def test_verify_inclusion_refuses_malformed_arguments(
    leaf: bytes, index: int, size: int, proof: list[bytes], root_: bytes, message: str
) -> None:
    with pytest.raises(InvalidProofError, match=message):
        verify_inclusion(leaf, index, size, proof, root_)


def test_single_leaf_tree_root_is_its_leaf_hash() -> None:
    verify_inclusion(H, 0, 1, [], H)
    assert root([H]) == H


@pytest.mark.parametrize(
    ("old", "new", "old_root", "new_root", "proof", "message"),
    [
        (2, 1, ROOTS[2], ROOTS[1], [], "do not grow"),
        (-1, 1, ROOTS[1], ROOTS[1], [], "do not grow"),
        (0, 0, EMPTY_ROOT, EMPTY_ROOT, [EMPTY_ROOT], "must be empty"),
        (0, 3, EMPTY_ROOT, ROOTS[3], [H], "must be empty"),
        (0, 3, ROOTS[1], ROOTS[3], [], "empty tree"),
        (3, 3, ROOTS[3], ROOTS[2], [], "two different roots"),
        (3, 3, ROOTS[3], ROOTS[3], [H], "must be empty"),
        (1, 2, ROOTS[1], ROOTS[2], [], "needs 1 hashes, got 0"),
        (1, 2, ROOTS[1][:16], ROOTS[2], [H], "old root must be 32 bytes"),
        (1, 2, ROOTS[1], ROOTS[2], [H * 2], "proof hash 0 must be 32 bytes, got 64"),
    ],
)
def test_verify_consistency_refuses_malformed_arguments(
    old: int, new: int, old_root: bytes, new_root: bytes, proof: list[bytes], message: str
) -> None:
    with pytest.raises(InvalidProofError, match=message):
        verify_consistency(old, new, old_root, new_root, proof)


def test_consistency_from_the_empty_tree_needs_no_proof() -> None:
    verify_consistency(0, 0, EMPTY_ROOT, EMPTY_ROOT, [])
    verify_consistency(0, 5, EMPTY_ROOT, ROOTS[5], [])


def test_generation_refuses_out_of_range_arguments() -> None:
    with pytest.raises(InvalidInputError, match="outside a tree of size 3"):
        inclusion_proof(3, HASHES[:3])
    with pytest.raises(InvalidInputError):
        inclusion_proof(-1, HASHES[:3])
    with pytest.raises(InvalidInputError):
        inclusion_proof(0, [])
    with pytest.raises(InvalidInputError, match=r"outside 0\.\.3"):
        consistency_proof(4, HASHES[:3])
    with pytest.raises(InvalidInputError):
        consistency_proof(-1, HASHES[:3])


# --- the perfect-subtree memo (used by Ledger) ---


def test_memoised_proofs_equal_plain_ones_as_the_log_grows() -> None:
    """One memo across a growing log (sizes past the 64-leaf memo threshold, several
    levels of perfect subtrees): every proof equals the one computed from scratch,
    and every proof verifies against the plain roots."""
    hashes = [leaf_hash(b"entry %d" % i) for i in range(700)]
    memo: dict[tuple[int, int], bytes] = {}
    for size in (65, 128, 129, 255, 256, 300, 513, 700):
        prefix = hashes[:size]
        new_root = root(prefix)
        for index in sorted({0, 1, 63, 64, 127, 128, size // 2, size - 2, size - 1}):
            if index < size:
                proof = inclusion_proof(index, prefix, memo)
                assert proof == inclusion_proof(index, prefix)
                verify_inclusion(hashes[index], index, size, proof, new_root)
        for old in sorted({1, 64, 65, 128, 200, size - 1, size}):
            if old <= size:
                proof = consistency_proof(old, prefix, memo)
                assert proof == consistency_proof(old, prefix)
                verify_consistency(old, size, root(hashes[:old]), new_root, proof)
    assert memo, "perfect subtrees above the threshold were remembered"
    assert all(hi - lo > 64 and (hi - lo) & (hi - lo - 1) == 0 for lo, hi in memo)
