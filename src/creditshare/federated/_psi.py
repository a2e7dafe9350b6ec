"""Private set intersection (ECDH-PSI over X25519) for aligning federated training rows.

Why this exists: the credit bureau holds labels keyed by enterprise id, each data node holds
features keyed by the same ids, and training needs the rows both sides have. Neither side may
reveal the ids outside the intersection, and the coordinator that relays the messages must
see nothing but blinded bytes.

The protocol is the classic Diffie–Hellman PSI (Meadows 1986; Huberman–Franklin–Hogg 1999).
Scalar multiplication on Curve25519 commutes, so with ``X(k, u)`` the X25519 function::

    X(a, X(b, H(x))) == X(b, X(a, H(x)))

1. bureau  → relay → node:   ``PsiRequest``  = [X(a, H(x)) for x in bureau ids]
2. node    → relay → bureau: ``PsiResponse`` = [X(b, r) for r in request] (same order)
                                             + shuffled [X(b, H(y)) for y in node ids]
3. bureau: X(a, ·) on the node's values; an id x is in the intersection iff
   X(b, X(a, H(x))) equals some X(a, X(b, H(y))), i.e. iff H(x) == H(y).

Over the network the same messages travel in bounded chunks (``_psi_stream``): step 1
as ordered chunks the node answers one by one, step 2's node values as ordered pages
in a fresh random order, so no message and no relay holds a whole set, and the sets'
sizes are bounded by ``MAX_PSI_ITEMS`` (what a peer may make a party compute), not by
a message cap.  This module's one-shot functions are the same protocol in one piece
(tests, and the in-process baseline of ``bench/psi.py``).

What each party learns (semi-honest model: parties follow the protocol):

* The bureau learns the intersection (as its own ids) and the size of the node's set.
* The node learns the size of the bureau's set, nothing about which ids it holds.  It does
  **not** learn the intersection from the protocol; but it trains on exactly those rows, so
  the bureau must tell it afterwards (over the authenticated channel for that job).  From
  then on the node knows the intersection too — that is the point of the alignment.
* The relay (coordinator) learns both sizes and sees 32-byte values that are
  indistinguishable from random without a or b (decisional Diffie–Hellman).  It cannot
  compute the intersection: that needs X(a, ·) on the node's values.

Streamed in chunks, nothing more is learnt: the chunk boundaries follow from the
sizes and the chunk size, which the parties choose; the node's pages come in a fresh
random order (as the one-shot shuffle); the relay still sees only blinded 32-byte
values, one chunk at a time.  On the node, the first chunk of a run carries the job's
ledger receipt and a job runs PSI once (a second run is refused); later chunks and
pages continue that run, in order.

Not covered: a malicious party can choose its input set freely (as in any PSI) and the
sizes are not hidden; pad with dummy ids if they matter.  Nor is a *compromised* relay:
the bureau's points reach the node unauthenticated (only the first chunk's receipt is
checked), so a relay that puts ``H(x)`` for ids of its choosing into a job's run (its
own chunks, or in place of the bureau's) learns which of them the node holds from the
node's pages.  Closing that needs the bureau to sign its transcript (say, a hash of
every chunk, with its last chunk) and the node to page nothing before that verifies.

A party must use a fresh ``PsiParty`` (fresh scalar) and a job-specific ``domain`` per
run, so blinded values from different jobs cannot be linked to each other.
"""

from __future__ import annotations

import hashlib
import multiprocessing
import secrets
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass
from typing import NoReturn

import gmpy2
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey

from creditshare.errors import InvalidInputError

__all__ = [
    "MAX_PSI_ITEMS",
    "POINT_BYTES",
    "PsiParty",
    "PsiRequest",
    "PsiResponse",
    "bureau_intersect",
    "bureau_request",
    "hash_to_u",
    "node_answer",
]

#: Refuse larger sets (a bound on what a peer can make us compute): 50 million ids cost a
#: party ~30 minutes of one core (one scalar multiplication per id, ~37 µs each).  Sets
#: travel in chunks (``_psi_stream``), so no message cap bounds them any more.
MAX_PSI_ITEMS = 50_000_000
#: Every value on the wire is one X25519 u-coordinate: 32 bytes, little-endian.
POINT_BYTES = 32

# Version tag first, so a future change of the hash cannot collide with this one.
_PREFIX = b"creditshare/psi/v1\n"
_P = 2**255 - 19  # the Curve25519 field prime
_A = 486662  # Montgomery coefficient: v^2 = u^3 + A u^2 + u
_MASK_255 = (1 << 255) - 1
_COUNTERS = tuple(bytes([i]) for i in range(256))
# Below this many scalar multiplications per call, a process pool (~0.1-0.15 s to spawn)
# is not worth it: on 2 cores, 20,000 items ran slower in parallel when another process
# held a core; 100,000 ran 1.7-1.9x faster.
_PARALLEL_MIN_ITEMS = 50_000
_MAX_WORKERS = 64

_Exchange = Callable[[X25519PublicKey], bytes]
_Hash = Callable[[str], bytes]


# --------------------------------------------------------------------------- hashing


def _make_hasher(domain: bytes) -> _Hash:
    """Return ``H`` for one domain, with the domain prefix absorbed once (it runs per id).

    The domain is hashed to a fixed 32 bytes first, so ``(domain, id)`` pairs encode
    unambiguously (no "ab" + "c" == "a" + "bc").

    Try-and-increment onto the curve: a raw 32-byte u is a point on Curve25519 *or* on its
    quadratic twist, and X25519 keeps it on the same side.  Anyone can tell the side of a
    blinded value from a Legendre symbol, so hashing to both sides would leak one bit per
    id (whether H(id) landed on the curve) to the other party and the relay.  Keeping only
    u < p with u^3 + A u^2 + u a non-zero square makes every H(id) a curve point, uniform
    over the curve's u-coordinates.  Half the candidates succeed, so ~2 hashes per id; the
    loop length depends on the id, which is local computation on the party's own data.
    """
    base = hashlib.sha256(_PREFIX + hashlib.sha256(domain).digest())
    copy = base.copy
    jacobi = gmpy2.jacobi
    from_bytes = int.from_bytes

    def hash_one(identifier: str) -> bytes:
        data = identifier.encode("utf-8")
        for counter in _COUNTERS:
            h = copy()
            h.update(counter)
            h.update(data)
            u = from_bytes(h.digest(), "little") & _MASK_255
            if u < _P and jacobi(u * (u * (u + _A) + 1) % _P, _P) == 1:
                return u.to_bytes(POINT_BYTES, "little")
        # Probability 2**-256 per id: unreachable unless SHA-256 is broken.
        raise InvalidInputError("identifier does not hash onto Curve25519")

    return hash_one


def hash_to_u(identifier: str, domain: bytes) -> bytes:
    """Hash an enterprise id to a Curve25519 u-coordinate (32 bytes), separated by ``domain``.

    ``H(id) = SHA-256("creditshare/psi/v1\\n" || SHA-256(domain) || counter || UTF-8 id)``,
    top bit cleared, taking the first counter (0, 1, ...) whose u is a point on the curve.
    ``domain`` must be job-specific so the same id hashes to unrelated points in unrelated
    jobs; ids are hashed as given (no case or Unicode normalisation — normalise first).

    Why any 32-byte string would be a valid X25519 input at all: RFC 7748 defines X25519 on
    every u (bit 255 masked, reduced mod p), and the Montgomery ladder computes on the curve
    or its twist without point validation.  Curve25519 is *twist-secure* — the twist's order
    is 4 times a 253-bit prime — so a scalar multiplication of an off-curve u leaks nothing
    beyond the low bits that clamping fixes anyway.  The only failure is an input of small
    order (the curve's 8-torsion or the twist's 4-torsion): the result is the point at
    infinity, encoded as 32 zero bytes, which ``exchange()`` refuses with ``ValueError``.
    For a hashed u that has probability ~2**-250; ``PsiParty`` still maps it to
    ``InvalidInputError`` naming the index.  (We hash onto the curve anyway, for the reason
    given in ``_make_hasher``.)
    """
    _check_domain(domain)
    if not isinstance(identifier, str):
        raise InvalidInputError("identifier must be a str")
    try:
        return _make_hasher(domain)(identifier)
    except UnicodeEncodeError:
        raise InvalidInputError("identifier is not encodable as UTF-8") from None


# --------------------------------------------------------------------------- validation


def _check_domain(domain: bytes) -> None:
    if not isinstance(domain, bytes) or not domain:
        raise InvalidInputError("PSI domain must be non-empty bytes (one per job)")


def _check_ids(ids: Sequence[str], what: str, offset: int = 0) -> None:
    """Refuse what would break the protocol: non-strings, duplicates, oversize sets.

    Duplicates would give equal blinded values, telling the other side (and the relay)
    that an id repeats.  Error messages name indices, never ids: they may be logged.
    """
    if isinstance(ids, (str, bytes, bytearray)):
        raise InvalidInputError(f"{what} must be a sequence of ids, not a single string")
    count = len(ids)
    if count > MAX_PSI_ITEMS:
        raise InvalidInputError(f"{what} has {count} items; at most {MAX_PSI_ITEMS} allowed")
    for index, identifier in enumerate(ids, start=offset):
        if not isinstance(identifier, str):
            raise InvalidInputError(f"{what}[{index}] is not a str")
    if len(set(ids)) != count:
        first: dict[str, int] = {}
        for index, identifier in enumerate(ids, start=offset):
            earlier = first.setdefault(identifier, index)
            if earlier != index:
                raise InvalidInputError(f"{what}[{index}] duplicates {what}[{earlier}]")


def _check_points(points: Sequence[bytes], what: str, offset: int = 0) -> None:
    if isinstance(points, (bytes, bytearray, str)):
        raise InvalidInputError(f"{what} must be a sequence of 32-byte values, not bytes")
    count = len(points)
    if count > MAX_PSI_ITEMS:
        raise InvalidInputError(f"{what} has {count} items; at most {MAX_PSI_ITEMS} allowed")
    for index, point in enumerate(points, start=offset):
        if not isinstance(point, bytes) or len(point) != POINT_BYTES:
            raise InvalidInputError(f"{what}[{index}] is not a {POINT_BYTES}-byte value")


# --------------------------------------------------------------------------- scalar loops
#
# The hot loops are list comprehensions over prebound callables: ~36 µs of the ~38 µs per
# item is the X25519 ladder itself.  On any failure the comprehension is abandoned and a
# slow indexed loop finds the culprit, so the fast path carries no per-item bookkeeping.


def _blind(
    exchange: _Exchange, hash_one: _Hash, ids: Sequence[str], offset: int, what: str
) -> list[bytes]:
    from_public = X25519PublicKey.from_public_bytes
    try:
        return [exchange(from_public(hash_one(identifier))) for identifier in ids]
    except ValueError:  # includes UnicodeEncodeError and a small-order result
        pass
    for index, identifier in enumerate(ids, start=offset):
        try:
            exchange(from_public(hash_one(identifier)))
        except UnicodeEncodeError:
            raise InvalidInputError(f"{what}[{index}] is not encodable as UTF-8") from None
        except ValueError:
            raise InvalidInputError(f"{what}[{index}] hashes to a small-order point") from None
    raise AssertionError("unreachable: the fast path failed but no item does")  # pragma: no cover


def _reblind(exchange: _Exchange, points: Sequence[bytes], offset: int, what: str) -> list[bytes]:
    from_public = X25519PublicKey.from_public_bytes
    try:
        return [exchange(from_public(point)) for point in points]
    except ValueError:
        pass
    for index, point in enumerate(points, start=offset):
        try:
            exchange(from_public(point))
        except ValueError:
            raise InvalidInputError(
                f"{what}[{index}] has small order (X25519 result is all zero)"
            ) from None
    raise AssertionError("unreachable: the fast path failed but no item does")  # pragma: no cover


# Worker entry points for ProcessPoolExecutor: module level so they pickle by name.
#
# The secret scalar is sent to the workers as an argument.  That is acceptable because the
# workers are this party's own child processes on the same machine, reached over a local
# pipe, and exit when the call returns; the scalar never goes to another party, the relay,
# disk or a log.


def _blind_chunk(
    scalar: bytes, domain: bytes, ids: Sequence[str], offset: int, what: str
) -> list[bytes]:
    exchange = X25519PrivateKey.from_private_bytes(scalar).exchange
    return _blind(exchange, _make_hasher(domain), ids, offset, what)


def _reblind_chunk(scalar: bytes, points: Sequence[bytes], offset: int, what: str) -> list[bytes]:
    exchange = X25519PrivateKey.from_private_bytes(scalar).exchange
    return _reblind(exchange, points, offset, what)


def _spans(count: int, parts: int) -> list[tuple[int, int]]:
    size = max(1, -(-count // parts))
    return [(start, min(start + size, count)) for start in range(0, count, size)]


# --------------------------------------------------------------------------- the party


class PsiParty:
    """One side of one PSI run: a fresh secret scalar and the job's hash domain.

    The scalar is 32 bytes from ``secrets`` and lives only in this object: it has no
    accessor, is not shown by ``repr`` and the object refuses to be pickled or copied.
    X25519 clamps it identically on every call, so the party applies the same secret
    multiplier every time, which is all commutativity needs.

    ``workers > 1`` spreads calls with at least 50,000 scalar multiplications over that
    many processes, started per call with ``spawn`` (safe inside a threaded server, unlike
    ``fork``; ~0.1-0.15 s start-up).  Measured on 2 cores: 1.7-1.9x faster at 100,000
    ids, no gain (or a loss, on a loaded machine) at 10,000-20,000.  ``exchange()`` holds
    the GIL, so threads would not help.  As with any ``spawn`` pool, a script that uses
    ``workers > 1`` needs the ``if __name__ == "__main__":`` guard.
    """

    __slots__ = ("_domain", "_exchange", "_hash", "_scalar", "_workers")

    def __init__(self, domain: bytes, *, workers: int = 1) -> None:
        _check_domain(domain)
        if isinstance(workers, bool) or not isinstance(workers, int):
            raise InvalidInputError("workers must be an int")
        if not 1 <= workers <= _MAX_WORKERS:
            raise InvalidInputError(f"workers must be between 1 and {_MAX_WORKERS}")
        self._domain = domain
        self._workers = workers
        self._scalar = secrets.token_bytes(32)
        self._exchange: _Exchange = X25519PrivateKey.from_private_bytes(self._scalar).exchange
        self._hash = _make_hasher(domain)

    @property
    def domain(self) -> bytes:
        return self._domain

    @property
    def workers(self) -> int:
        return self._workers

    def __repr__(self) -> str:
        return f"PsiParty(domain={self._domain!r}, workers={self._workers})"

    def __reduce__(self) -> NoReturn:
        raise TypeError("PsiParty holds a secret scalar and cannot be pickled or copied")

    def blind_ids(self, ids: Sequence[str]) -> list[bytes]:
        """``X(a, H(id))`` for each id, in order; refuses duplicates and oversize sets."""
        return self.blind_ids_at(ids, 0, "ids")

    def reblind(self, points: Sequence[bytes]) -> list[bytes]:
        """``X(a, p)`` for each point the other party blinded, in order."""
        return self.reblind_at(points, 0, "points")

    def blind_ids_at(self, ids: Sequence[str], offset: int, what: str) -> list[bytes]:
        """``blind_ids`` of one chunk of a set that starts at ``offset``: errors name the
        item's index in the whole set (``what[offset + k]``)."""
        _check_ids(ids, what, offset)
        return self._run(ids, (), (what, what), offset)[0]

    def reblind_at(self, points: Sequence[bytes], offset: int, what: str) -> list[bytes]:
        """``reblind`` of one chunk of a sequence that starts at ``offset``."""
        _check_points(points, what, offset)
        return self._run((), points, (what, what), offset)[1]

    def _run(
        self,
        ids: Sequence[str],
        points: Sequence[bytes],
        labels: tuple[str, str],
        offset: int = 0,
    ) -> tuple[list[bytes], list[bytes]]:
        """Blind ``ids`` and reblind ``points`` (already validated), in one pool if parallel."""
        ids_label, points_label = labels
        total = len(ids) + len(points)
        if self._workers == 1 or total < _PARALLEL_MIN_ITEMS:
            return (
                _blind(self._exchange, self._hash, ids, offset, ids_label),
                _reblind(self._exchange, points, offset, points_label),
            )
        # A few chunks per worker so an unevenly loaded core does not hold up the rest.
        parts = self._workers * 4
        context = multiprocessing.get_context("spawn")
        pool = ProcessPoolExecutor(max_workers=self._workers, mp_context=context)
        try:
            blinded: list[Future[list[bytes]]] = [
                pool.submit(
                    _blind_chunk, self._scalar, self._domain, ids[lo:hi], offset + lo, ids_label
                )
                for lo, hi in _spans(len(ids), parts)
            ]
            reblinded: list[Future[list[bytes]]] = [
                pool.submit(_reblind_chunk, self._scalar, points[lo:hi], offset + lo, points_label)
                for lo, hi in _spans(len(points), parts)
            ]
            return (
                [value for future in blinded for value in future.result()],
                [value for future in reblinded for value in future.result()],
            )
        finally:
            pool.shutdown(wait=True, cancel_futures=True)


# --------------------------------------------------------------------------- protocol


@dataclass(frozen=True, slots=True)
class PsiRequest:
    """Bureau → node: ``X(a, H(x))`` for each bureau id, in the bureau's order."""

    blinded: tuple[bytes, ...]


@dataclass(frozen=True, slots=True)
class PsiResponse:
    """Node → bureau.

    ``double_blinded``: ``X(b, r)`` for each request value ``r``, in request order (the
    bureau needs the order to map matches back to its ids; the node learns nothing from
    it, the values are blinded by ``a``).
    ``node_blinded``: ``X(b, H(y))`` for each node id, shuffled with ``SystemRandom`` so
    positions say nothing about the node's own ordering of its ids.
    """

    double_blinded: tuple[bytes, ...]
    node_blinded: tuple[bytes, ...]


def bureau_request(party: PsiParty, bureau_ids: Sequence[str]) -> PsiRequest:
    """Step 1 (bureau): blind the bureau's ids for the node."""
    return PsiRequest(tuple(party.blind_ids(bureau_ids)))


def node_answer(party: PsiParty, node_ids: Sequence[str], request: PsiRequest) -> PsiResponse:
    """Step 2 (node): reblind the bureau's values and blind (then shuffle) the node's ids."""
    _check_ids(node_ids, "node_ids")
    _check_points(request.blinded, "request.blinded")
    node_blinded, double_blinded = party._run(
        node_ids, request.blinded, ("node_ids", "request.blinded")
    )
    secrets.SystemRandom().shuffle(node_blinded)
    return PsiResponse(tuple(double_blinded), tuple(node_blinded))


def bureau_intersect(
    party: PsiParty, bureau_ids: Sequence[str], response: PsiResponse
) -> list[str]:
    """Step 3 (bureau): the intersection as bureau ids, in the bureau's original order.

    ``bureau_ids`` must be the list the request was made from, in the same order: the
    response carries no ids, only positions.
    """
    _check_ids(bureau_ids, "bureau_ids")
    if len(response.double_blinded) != len(bureau_ids):
        raise InvalidInputError(
            f"response has {len(response.double_blinded)} double-blinded values "
            f"for a request of {len(bureau_ids)}"
        )
    _check_points(response.double_blinded, "response.double_blinded")
    _check_points(response.node_blinded, "response.node_blinded")
    theirs = set(party._run((), response.node_blinded, ("", "response.node_blinded"))[1])
    return [
        identifier
        for identifier, value in zip(bureau_ids, response.double_blinded, strict=True)
        if value in theirs
    ]
