"""ECDH-PSI over X25519: exact intersections, what the wire shows, and refused inputs."""

from __future__ import annotations

import copy
import hashlib
import pickle
import random
import secrets

import pytest
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey

from creditshare.errors import InvalidInputError
from creditshare.federated import _psi
from creditshare.federated._psi import (
    MAX_PSI_ITEMS,
    POINT_BYTES,
    PsiParty,
    PsiRequest,
    PsiResponse,
    bureau_intersect,
    bureau_request,
    hash_to_u,
    node_answer,
)

DOMAIN = b"job-0001/bureau-node-7"
P = 2**255 - 19
A = 486662


def x25519(scalar: bytes, u: bytes) -> bytes:
    return X25519PrivateKey.from_private_bytes(scalar).exchange(
        X25519PublicKey.from_public_bytes(u)
    )


def ids(start: int, stop: int) -> list[str]:
    """Enterprise-id-shaped strings (USCC length), distinct for distinct integers."""
    return [f"91{i:016d}" for i in range(start, stop)]


def run_psi(
    bureau_ids: list[str], node_ids: list[str], domain: bytes = DOMAIN
) -> tuple[list[str], PsiRequest, PsiResponse]:
    bureau, node = PsiParty(domain), PsiParty(domain)
    request = bureau_request(bureau, bureau_ids)
    response = node_answer(node, node_ids, request)
    return bureau_intersect(bureau, bureau_ids, response), request, response


def expected(bureau_ids: list[str], node_ids: list[str]) -> list[str]:
    node_set = set(node_ids)
    return [x for x in bureau_ids if x in node_set]


# --------------------------------------------------------------------------- the primitive


def test_x25519_scalar_multiplication_commutes() -> None:
    """The property the protocol rests on, on hashed (curve) and raw (maybe twist) inputs."""
    inputs = [hash_to_u(x, DOMAIN) for x in ids(0, 8)] + [secrets.token_bytes(32) for _ in range(8)]
    for u in inputs:
        a, b = secrets.token_bytes(32), secrets.token_bytes(32)
        assert x25519(a, x25519(b, u)) == x25519(b, x25519(a, u))


def test_clamping_is_applied_identically_each_time() -> None:
    """X25519 ignores the bits clamping overwrites, so a party's multiplier never varies."""
    a = bytearray(secrets.token_bytes(32))
    u = hash_to_u("91000000000000000001", DOMAIN)
    variant = bytearray(a)
    variant[0] ^= 0x07  # the three low bits are cleared by clamping
    variant[31] ^= 0xC0  # bit 255 is cleared and bit 254 set by clamping
    assert x25519(bytes(a), u) == x25519(bytes(variant), u)


def test_hash_to_u_is_a_canonical_curve_point() -> None:
    for identifier in ids(0, 32):
        u_bytes = hash_to_u(identifier, DOMAIN)
        assert len(u_bytes) == POINT_BYTES
        u = int.from_bytes(u_bytes, "little")
        assert 0 < u < P
        # Euler's criterion: u^3 + A u^2 + u is a square, i.e. on the curve, not the twist.
        assert pow((u * u * u + A * u * u + u) % P, (P - 1) // 2, P) == 1
        assert hash_to_u(identifier, DOMAIN) == u_bytes


def test_blinded_values_are_on_the_curve_too() -> None:
    """So the Legendre symbol of a wire value reveals nothing (it is always 1)."""
    party = PsiParty(DOMAIN)
    for value in party.blind_ids(ids(0, 32)):
        u = int.from_bytes(value, "little")
        assert pow((u * u * u + A * u * u + u) % P, (P - 1) // 2, P) == 1


# --------------------------------------------------------------------------- correctness


@pytest.mark.parametrize(
    ("bureau_ids", "node_ids"),
    [
        (ids(0, 10), ids(5, 20)),  # partial overlap
        (ids(0, 10), ids(10, 20)),  # disjoint
        (ids(0, 25), ids(0, 25)),  # identical
        (ids(0, 25), list(reversed(ids(0, 25)))),  # identical, other order
        ([], ids(0, 10)),  # bureau side empty
        (ids(0, 10), []),  # node side empty
        ([], []),
        (ids(0, 1), ids(0, 1)),
        (ids(0, 30), ids(29, 31)),  # one in common, at the end
        (["甲公司", "乙公司", "", "a\u0301"], ["乙公司", "", "\u00e1"]),  # non-ASCII, empty id
    ],
)
def test_intersection_is_exact_and_in_bureau_order(
    bureau_ids: list[str], node_ids: list[str]
) -> None:
    got, _, _ = run_psi(bureau_ids, node_ids)
    assert got == expected(bureau_ids, node_ids)


def test_two_thousand_ids_with_half_overlap() -> None:
    rng = random.Random(7)
    bureau_ids = ids(0, 2000)
    rng.shuffle(bureau_ids)
    node_ids = ids(1000, 3000)
    rng.shuffle(node_ids)
    got, request, response = run_psi(bureau_ids, node_ids)
    assert got == expected(bureau_ids, node_ids)
    assert len(got) == 1000
    assert len(request.blinded) == len(response.double_blinded) == 2000
    assert len(response.node_blinded) == 2000


def test_parallel_workers_give_the_same_values(monkeypatch: pytest.MonkeyPatch) -> None:
    """The process-pool path (forced on for a small input) matches the in-process path."""
    monkeypatch.setattr(_psi, "_PARALLEL_MIN_ITEMS", 1)
    bureau = PsiParty(DOMAIN, workers=2)
    node = PsiParty(DOMAIN, workers=2)
    bureau_ids, node_ids = ids(0, 60), ids(30, 90)
    request = bureau_request(bureau, bureau_ids)
    response = node_answer(node, node_ids, request)
    assert bureau_intersect(bureau, bureau_ids, response) == ids(30, 60)
    monkeypatch.setattr(_psi, "_PARALLEL_MIN_ITEMS", 10**9)
    assert list(request.blinded) == bureau.blind_ids(bureau_ids)
    assert sorted(response.node_blinded) == sorted(node.blind_ids(node_ids))


def test_parallel_worker_errors_name_the_global_index(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(_psi, "_PARALLEL_MIN_ITEMS", 1)
    party = PsiParty(DOMAIN, workers=2)
    points = PsiParty(DOMAIN).blind_ids(ids(0, 40))
    points[37] = bytes(32)
    with pytest.raises(InvalidInputError, match=r"points\[37\]"):
        party.reblind(points)


# --------------------------------------------------------------------------- unlinkability


def test_domains_separate_jobs() -> None:
    """The same ids in two jobs share no hashed, blinded or double-blinded value."""
    population = ids(0, 50)
    assert not {hash_to_u(x, b"job-A") for x in population} & {
        hash_to_u(x, b"job-B") for x in population
    }
    _, request_a, response_a = run_psi(population, population, b"job-A")
    _, request_b, response_b = run_psi(population, population, b"job-B")
    values_a = set(request_a.blinded + response_a.double_blinded + response_a.node_blinded)
    values_b = set(request_b.blinded + response_b.double_blinded + response_b.node_blinded)
    assert not values_a & values_b


def test_parties_in_different_domains_find_nothing() -> None:
    bureau, node = PsiParty(b"job-A"), PsiParty(b"job-B")
    population = ids(0, 20)
    response = node_answer(node, population, bureau_request(bureau, population))
    assert bureau_intersect(bureau, population, response) == []


def test_domain_encoding_is_unambiguous() -> None:
    assert hash_to_u("c", b"ab") != hash_to_u("bc", b"a")


def test_two_parties_blind_the_same_id_differently() -> None:
    one, two = PsiParty(DOMAIN), PsiParty(DOMAIN)
    population = ids(0, 20)
    blinded_one, blinded_two = one.blind_ids(population), two.blind_ids(population)
    assert not set(blinded_one) & set(blinded_two)
    # ...while one party is deterministic, which the protocol needs.
    assert one.blind_ids(population) == blinded_one


def test_blinded_values_do_not_contain_the_id_or_its_hash() -> None:
    party = PsiParty(DOMAIN)
    population = ids(0, 50)
    blinded = party.blind_ids(population)
    for identifier, value in zip(population, blinded, strict=True):
        assert identifier.encode() not in value
        assert value != hashlib.sha256(identifier.encode()).digest()
        assert value != hash_to_u(identifier, DOMAIN)
    assert len(set(blinded)) == len(blinded)


def test_relay_sees_only_blinded_32_byte_values() -> None:
    """Everything the coordinator relays is 32 bytes and none is an unblinded hash."""
    bureau_ids, node_ids = ids(0, 200), ids(100, 300)
    _, request, response = run_psi(bureau_ids, node_ids)
    wire = request.blinded + response.double_blinded + response.node_blinded
    assert all(type(v) is bytes and len(v) == POINT_BYTES for v in wire)
    everyone = bureau_ids + node_ids
    unblinded = {hash_to_u(x, DOMAIN) for x in everyone}
    unblinded |= {hashlib.sha256(x.encode()).digest() for x in everyone}
    assert not unblinded & set(wire)
    assert not any(x.encode() in v for v in wire for x in everyone[:20])
    # The relay cannot match request to response by value: a and b both change each value.
    assert not set(request.blinded) & set(response.double_blinded)
    assert not set(request.blinded) & set(response.node_blinded)


def test_node_values_are_shuffled() -> None:
    node = PsiParty(DOMAIN)
    node_ids = ids(0, 200)
    response = node_answer(node, node_ids, PsiRequest(()))
    in_order = node.blind_ids(node_ids)
    assert sorted(response.node_blinded) == sorted(in_order)
    assert list(response.node_blinded) != in_order  # 1/200! chance of a false failure


def test_party_secret_does_not_leak_through_repr_pickle_or_copy() -> None:
    party = PsiParty(DOMAIN)
    assert "scalar" not in repr(party)
    assert party._scalar.hex() not in repr(party)
    with pytest.raises(TypeError):
        pickle.dumps(party)
    with pytest.raises(TypeError):
        copy.deepcopy(party)
    assert PsiParty(DOMAIN)._scalar != party._scalar


# --------------------------------------------------------------------------- refused inputs


def test_duplicate_ids_are_refused_by_index() -> None:
    party = PsiParty(DOMAIN)
    with pytest.raises(InvalidInputError, match=r"ids\[2\] duplicates ids\[0\]") as info:
        party.blind_ids(["x-1", "x-2", "x-1"])
    assert "x-1" not in str(info.value)  # ids may be logged; indices only
    with pytest.raises(InvalidInputError, match="node_ids"):
        node_answer(party, ["a", "a"], PsiRequest(()))
    with pytest.raises(InvalidInputError, match="bureau_ids"):
        bureau_intersect(party, ["a", "a"], PsiResponse((bytes(32),) * 2, ()))


def test_too_many_items_are_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    assert MAX_PSI_ITEMS == 50_000_000
    monkeypatch.setattr(_psi, "MAX_PSI_ITEMS", 3)
    party = PsiParty(DOMAIN)
    party.blind_ids(ids(0, 3))
    with pytest.raises(InvalidInputError, match="at most 3"):
        party.blind_ids(ids(0, 4))
    with pytest.raises(InvalidInputError, match="at most 3"):
        party.reblind(party.blind_ids(ids(0, 3)) * 2)


@pytest.mark.parametrize(
    "bad",
    [b"", b"\x01" * 31, b"\x01" * 33, "x" * 32, bytearray(32), None],
)
def test_reblind_refuses_malformed_points_by_index(bad: object) -> None:
    party = PsiParty(DOMAIN)
    points: list[object] = [*party.blind_ids(["a", "b"]), bad]
    with pytest.raises(InvalidInputError, match=r"points\[2\] is not a 32-byte value"):
        party.reblind(points)  # type: ignore[arg-type]


def test_reblind_refuses_small_order_points_by_index() -> None:
    party = PsiParty(DOMAIN)
    good = party.blind_ids(["a"])
    for small in (bytes(32), (1).to_bytes(32, "little")):  # orders 2 and 4
        with pytest.raises(InvalidInputError, match=r"points\[1\] has small order"):
            party.reblind([good[0], small])


def test_malformed_id_collections_are_refused() -> None:
    party = PsiParty(DOMAIN)
    with pytest.raises(InvalidInputError, match="single string"):
        party.blind_ids("91000000000000000001")
    with pytest.raises(InvalidInputError, match=r"ids\[1\] is not a str"):
        party.blind_ids(["a", 1])  # type: ignore[list-item]
    with pytest.raises(InvalidInputError, match=r"ids\[1\] is not encodable"):
        party.blind_ids(["a", "\ud800"])
    with pytest.raises(InvalidInputError, match="not bytes"):
        party.reblind(bytes(64))  # type: ignore[arg-type]


def test_response_length_must_match_the_request() -> None:
    bureau, node = PsiParty(DOMAIN), PsiParty(DOMAIN)
    bureau_ids = ids(0, 5)
    response = node_answer(node, ids(0, 5), bureau_request(bureau, bureau_ids))
    short = PsiResponse(response.double_blinded[:-1], response.node_blinded)
    with pytest.raises(InvalidInputError, match="4 double-blinded values for a request of 5"):
        bureau_intersect(bureau, bureau_ids, short)
    malformed = PsiResponse((*response.double_blinded[:-1], b"short"), response.node_blinded)
    with pytest.raises(InvalidInputError, match=r"double_blinded\[4\]"):
        bureau_intersect(bureau, bureau_ids, malformed)
    bad_node = PsiResponse(response.double_blinded, (*response.node_blinded, bytes(32)))
    with pytest.raises(InvalidInputError, match=r"node_blinded\[5\] has small order"):
        bureau_intersect(bureau, bureau_ids, bad_node)


def test_malformed_request_is_refused_by_the_node() -> None:
    with pytest.raises(InvalidInputError, match=r"request.blinded\[0\]"):
        node_answer(PsiParty(DOMAIN), ["a"], PsiRequest((b"\x00" * 16,)))


@pytest.mark.parametrize("domain", [b"", "job", None])
def test_domain_must_be_non_empty_bytes(domain: object) -> None:
    with pytest.raises(InvalidInputError, match="domain"):
        PsiParty(domain)  # type: ignore[arg-type]
    with pytest.raises(InvalidInputError, match="domain"):
        hash_to_u("a", domain)  # type: ignore[arg-type]


@pytest.mark.parametrize("workers", [0, -1, 65, True, 1.5])
def test_worker_count_is_checked(workers: object) -> None:
    with pytest.raises(InvalidInputError, match="workers"):
        PsiParty(DOMAIN, workers=workers)  # type: ignore[arg-type]
