"""ECDH-PSI in bounded chunks: the bureau's and the node's state for one streamed run.

Why: the one-shot messages of ``_psi`` grow with the sets (32 bytes a point, both sets
in one response), so ~1.5 million ids filled gRPC's 64 MB message cap and every party
(the relay too) held both sets at once.  Here the same protocol (same hashing, same
scalars, same values on the wire) runs as two sequences of chunks of at most
``MAX_PSI_CHUNK`` points:

1. bureau → node, in order: chunks of ``X(a, H(x))``; the node answers each with
   ``X(b, ·)`` of it (``NodeRun.reblind``), which the bureau keeps as a sorted array of
   32-byte values with their positions (``BureauRun.answered``);
2. node → bureau, in order, once the bureau's last chunk came: pages of
   ``X(b, H(y))`` over the node's ids in a random order (``NodeRun.page``); the bureau
   applies ``X(a, ·)`` to each page and looks the results up in its sorted array
   (``BureauRun.match``), keeping, per id of its own that matched, the node's point.

Pure state machines, no I/O: the node's gRPC service, the coordinator's relay and the
bureau's SDK move the chunks; ``run_in_process`` drives both in one process (tests and
the bench's baseline).  Chunks and pages name their ``offset`` (how many values came
before), so one out of order, repeated or skipped is refused by name, not absorbed.

What each party holds (``n`` the bureau's ids, ``m`` the node's), whatever the chunk:

* bureau: its ids (the caller's), the double-blinded value and position of each
  (``32 + 8`` bytes an id in numpy arrays: 40 MB at 10^6), and per matched id the node's
  point (to name the intersection to the node at OpenJob); never the node's set;
* node: its ids in their random order (numpy bytes, ~18 bytes a USCC) and the point of
  each paged out so far (32 bytes), sorted at the end into the index that maps the
  intersection's points back to ids at OpenJob: ~50 bytes an id, 500 MB at 10^7 (it
  could recompute the points instead, at the cost of m scalar multiplications);
* the relay: one chunk at a time.

What each party learns is exactly what the one-shot protocol tells it (``_psi``): the
node's page order is a fresh random permutation, so positions say nothing about the
node's own ordering of its ids, as the one-shot shuffle did.
"""

from __future__ import annotations

import secrets
import threading
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np

from creditshare.errors import CapacityError, InvalidInputError, OutOfOrderError
from creditshare.federated._psi import MAX_PSI_ITEMS, POINT_BYTES, PsiParty

__all__ = [
    "DEFAULT_PSI_CHUNK",
    "MAX_PSI_CHUNK",
    "BureauRun",
    "NodeRun",
    "id_array",
    "run_in_process",
]

#: The most points one chunk or page may carry: 2 MB of points, ~3 MB as JSON base64.
MAX_PSI_CHUNK = 65_536
#: What the bureau's SDK sends and asks for: ~1.2 s of one core per chunk and party.
DEFAULT_PSI_CHUNK = 32_768
_POINT = f"S{POINT_BYTES}"


def _check_chunk(values: Sequence[object], what: str, allow_empty: bool) -> None:
    if isinstance(values, (str, bytes, bytearray)):
        raise InvalidInputError(f"{what} must be a sequence, not a single value")
    if len(values) > MAX_PSI_CHUNK:
        raise InvalidInputError(
            f"{what} has {len(values)} values; a chunk holds at most {MAX_PSI_CHUNK}"
        )
    if not values and not allow_empty:
        raise InvalidInputError(f"{what} is empty")


def _check_offset(got: int, expected: int, what: str) -> None:
    # InvalidInputError, not OutOfOrderError: the request's offset field is wrong, and
    # the caller (told so) can send the right chunk; the run is unchanged.
    if got != expected:
        raise InvalidInputError(
            f"{what} out of order: it starts at offset {got}, but {expected} values came before it"
        )


def _as_array(points: Sequence[bytes]) -> np.ndarray:
    """Points (already 32 bytes each) as a fixed-width numpy array (no copy per item)."""
    return np.frombuffer(b"".join(points), dtype=_POINT) if points else np.empty(0, _POINT)


def _as_list(points: np.ndarray) -> list[bytes]:
    """Back to 32-byte ``bytes``: through the buffer, since numpy's element access strips
    trailing zero bytes from fixed-width strings."""
    raw = points.tobytes()
    return [raw[k : k + POINT_BYTES] for k in range(0, len(raw), POINT_BYTES)]


def id_array(chunks: Iterable[Sequence[str]], *, distinct: bool = False) -> np.ndarray:
    """A party's ids as one numpy array of UTF-8 bytes (~ their length each, not the ~70
    bytes of a Python ``str``), from chunks so no list of all ids is ever built.

    Refuses ids with a NUL (fixed-width bytes would lose a trailing one) and, unless the
    caller knows them ``distinct`` (a node's primary keys: sorting 10^7 ids to check
    costs seconds), duplicates: they would give equal blinded values, telling the other
    side that an id repeats.
    """
    parts: list[np.ndarray] = []
    for chunk in chunks:
        encoded = []
        for identifier in chunk:
            if not isinstance(identifier, str):
                raise InvalidInputError("ids must be str")
            if "\x00" in identifier:
                raise InvalidInputError("an id holds a NUL character")
            try:
                encoded.append(identifier.encode("utf-8"))
            except UnicodeEncodeError:
                raise InvalidInputError("an id is not encodable as UTF-8") from None
        if encoded:
            parts.append(np.array(encoded, dtype=bytes))
    ids = np.concatenate(parts) if parts else np.empty(0, dtype="S1")
    if len(ids) > MAX_PSI_ITEMS:
        raise InvalidInputError(f"{len(ids)} ids; at most {MAX_PSI_ITEMS} allowed")
    if not distinct and len(ids) > 1:
        ordered = np.sort(ids)
        if bool((ordered[1:] == ordered[:-1]).any()):
            raise InvalidInputError("ids hold a duplicate")
    return ids


def _secret_order(count: int) -> np.ndarray:
    """A random permutation of ``count`` drawn from the OS's CSPRNG (as the one-shot
    protocol's ``SystemRandom`` shuffle): the order of 64-bit random keys.

    Not numpy's generators, whatever their seed: they are not cryptographic (PCG64's
    state can be recovered from its outputs), and the bureau sees where each id it shares
    with the node lands in the pages; a permutation it could reconstruct would tell it
    each other point's place in the node's own order of its ids (sorted USCCs: the
    neighbourhood of every id it does not hold). Ties among 10^7 keys: ~3·10^-6, harmless.
    """
    keys = np.frombuffer(secrets.token_bytes(8 * count), dtype=np.uint64)
    return np.argsort(keys)


def _decode(ids: np.ndarray) -> list[str]:
    return [identifier.decode("utf-8") for identifier in ids.tolist()]


class NodeRun:
    """The node's side of one streamed run: its fresh scalar, its ids in a random order,
    and the points paged out so far.

    Thread-safe: one call at a time per run (a second concurrent call is refused as
    busy, not queued, so a run cannot pile up threads).  A refused chunk or page changes
    nothing: the right one is still accepted."""

    def __init__(self, domain: bytes, ids: np.ndarray, *, workers: int = 1) -> None:
        self._party = PsiParty(domain, workers=workers)
        # A fresh secret permutation: the page order says nothing about the node's own
        # order of its ids.
        self._ids = ids[_secret_order(len(ids))]
        self._points = np.empty(len(ids), dtype=_POINT)
        self._received = 0
        self._answered = False
        self._sent = 0
        self._busy = threading.Lock()

    @property
    def domain(self) -> bytes:
        return self._party.domain

    @property
    def size(self) -> int:
        return len(self._ids)

    @property
    def done(self) -> bool:
        """Every point of the node's set was paged out: the run can be opened."""
        return self._answered and self._sent == len(self._ids)

    def reblind(self, offset: int, points: Sequence[bytes], more: bool) -> list[bytes]:
        """``X(b, p)`` for one chunk of the bureau's points, which must start at
        ``offset`` (the count of points before it); ``more=False`` ends the bureau's set."""
        _check_chunk(points, "chunk", allow_empty=offset == 0 and not more)
        with self._turn():
            if self._answered:
                raise InvalidInputError("the bureau's last chunk came already: page the node")
            _check_offset(offset, self._received, "chunk")
            if self._received + len(points) > MAX_PSI_ITEMS:
                raise InvalidInputError(f"the bureau's set exceeds {MAX_PSI_ITEMS} points")
            double = self._party.reblind_at(points, offset, "blinded")
            self._received += len(points)
            self._answered = not more
            return double

    def page(self, offset: int, limit: int) -> tuple[list[bytes], bool]:
        """The next page of ``X(b, H(y))``, starting at ``offset``, at most ``limit`` points,
        and whether it is the last."""
        if not 1 <= limit <= MAX_PSI_CHUNK:
            raise InvalidInputError(f"limit must be between 1 and {MAX_PSI_CHUNK}")
        with self._turn():
            if not self._answered:
                raise InvalidInputError("the node's points come after the bureau's last chunk")
            _check_offset(offset, self._sent, "page")
            if self._sent == len(self._ids) and len(self._ids):
                raise InvalidInputError("every point of the node's set was paged out already")
            stop = min(self._sent + limit, len(self._ids))
            blinded = self._party.blind_ids(_decode(self._ids[self._sent : stop]))
            self._points[self._sent : stop] = _as_array(blinded)
            self._sent = stop
            if self._sent == len(self._ids):
                self._index()
            return blinded, self._sent == len(self._ids)

    def ids_of(self, points: Sequence[bytes]) -> list[str]:
        """The node's ids behind ``points`` (its own, from this run), in their order."""
        if not self.done:
            raise OutOfOrderError("PSI with this node is not finished: page its points first")
        _check_points(points, 0, "points")
        wanted = _as_array(points)
        at = np.searchsorted(self._points, wanted)
        found = at < len(self._points)
        found[found] = self._points[at[found]] == wanted[found]
        if not found.all():
            raise InvalidInputError(f"point {int(np.argmin(found))} is not one this node answered")
        return _decode(self._ids[at])

    def _index(self) -> None:
        """Sort the points (ids alongside) for ``ids_of``: binary search, no hash table."""
        order = np.argsort(self._points, kind="stable")
        self._points = self._points[order]
        self._ids = self._ids[order]

    def _turn(self) -> _Turn:
        return _Turn(self._busy)


class _Turn:
    """Hold a run's lock for one call, or refuse at once when another call holds it."""

    __slots__ = ("_lock",)

    def __init__(self, lock: threading.Lock) -> None:
        self._lock = lock

    def __enter__(self) -> None:
        if not self._lock.acquire(blocking=False):
            raise CapacityError("another PSI call for this job is running on this node")

    def __exit__(self, *_: object) -> None:
        self._lock.release()


@dataclass(frozen=True, slots=True)
class BureauChunk:
    offset: int
    blinded: list[bytes]
    more: bool


class BureauRun:
    """The bureau's side of one streamed run with one node.

    ``chunks`` blinds the bureau's ids lazily, one chunk at a time; ``answered`` takes
    the node's reblinding of each; once all came, ``match`` takes the node's pages.
    """

    def __init__(self, domain: bytes, ids: Sequence[str], *, workers: int = 1) -> None:
        id_array([ids])  # refuses duplicates, non-strings, oversize sets
        self._party = PsiParty(domain, workers=workers)
        self._ids = ids
        self._double = np.empty(len(ids), dtype=_POINT)
        self._answered = 0
        self._sorted: np.ndarray | None = None
        self._positions: np.ndarray | None = None
        self._node_points: dict[int, bytes] = {}
        self._received = 0
        self._node_size: int | None = None

    def chunks(self, size: int = DEFAULT_PSI_CHUNK) -> Iterator[BureauChunk]:
        """``X(a, H(x))`` over the bureau's ids in chunks of ``size`` (one, empty, for an
        empty set: the node still needs to hear that the bureau's set ended)."""
        if not 1 <= size <= MAX_PSI_CHUNK:
            raise InvalidInputError(f"chunk size must be between 1 and {MAX_PSI_CHUNK}")
        count = len(self._ids)
        for start in range(0, max(count, 1), size):
            stop = min(start + size, count)
            blinded = self._party.blind_ids_at(self._ids[start:stop], start, "ids")
            yield BureauChunk(start, blinded, stop < count)

    def answered(self, offset: int, double: Sequence[bytes], node_size: int) -> None:
        """The node's ``X(b, ·)`` of the chunk that started at ``offset``."""
        _check_offset(offset, self._answered, "answer")
        stop = offset + len(double)
        if stop > len(self._ids):
            raise InvalidInputError(
                f"the node answered {stop} values for a set of {len(self._ids)}"
            )
        _check_points(double, offset, "double_blinded")
        self._double[offset:stop] = _as_array(double)
        self._answered = stop
        self._check_size(node_size)

    def match(self, offset: int, node_points: Sequence[bytes], node_size: int) -> int:
        """One page of the node's points: ``X(a, ·)`` of each, looked up among the
        double-blinded values; how many of the bureau's ids it matched."""
        if self._answered != len(self._ids):
            raise InvalidInputError("the node's points come after every chunk was answered")
        _check_chunk(node_points, "page", allow_empty=True)
        _check_offset(offset, self._received, "page")
        self._check_size(node_size)
        if self._received + len(node_points) > node_size:
            raise InvalidInputError(f"the node sent more points than its set's {node_size}")
        if self._sorted is None:
            order = np.argsort(self._double, kind="stable")
            self._sorted, self._positions = self._double[order], order
            self._double = np.empty(0, dtype=_POINT)
        assert self._positions is not None
        reblinded = _as_array(self._party.reblind_at(node_points, offset, "node_blinded"))
        self._received += len(node_points)
        at = np.searchsorted(self._sorted, reblinded)
        hit = at < len(self._sorted)
        hit[hit] = self._sorted[at[hit]] == reblinded[hit]
        matched = 0
        for k in np.flatnonzero(hit).tolist():
            position = int(self._positions[at[k]])
            if position in self._node_points:
                raise InvalidInputError(
                    f"the node sent two points of one id (node_blinded[{offset + k}])"
                )
            self._node_points[position] = node_points[k]
            matched += 1
        return matched

    @property
    def complete(self) -> bool:
        return self._node_size is not None and self._received == self._node_size

    def result(self) -> dict[str, bytes]:
        """Per id of the bureau's held by the node too, the node's point for it, in the
        bureau's order: how the bureau names the intersection to the node."""
        if not self.complete or self._answered != len(self._ids):
            raise InvalidInputError(
                f"PSI is not finished: {self._received} of the node's {self._node_size} points came"
            )
        return {self._ids[p]: self._node_points[p] for p in sorted(self._node_points)}

    def _check_size(self, node_size: int) -> None:
        if not 0 <= node_size <= MAX_PSI_ITEMS:
            raise InvalidInputError(f"the node's set size {node_size} is out of bounds")
        if self._node_size is None:
            self._node_size = node_size
        elif node_size != self._node_size:
            raise InvalidInputError(
                f"the node's set size changed from {self._node_size} to {node_size}"
            )


def _check_points(points: Sequence[bytes], offset: int, what: str) -> None:
    for k, point in enumerate(points):
        if not isinstance(point, bytes) or len(point) != POINT_BYTES:
            raise InvalidInputError(f"{what}[{offset + k}] is not a {POINT_BYTES}-byte value")


def run_in_process(
    domain: bytes,
    bureau_ids: Sequence[str],
    node_ids: Sequence[str],
    chunk: int = DEFAULT_PSI_CHUNK,
) -> dict[str, bytes]:
    """Both sides of a streamed run in one process: the bureau's ids held by the node,
    each with the node's point (tests, and the bench's in-process baseline)."""
    node = NodeRun(domain, id_array([node_ids]))
    bureau = BureauRun(domain, bureau_ids)
    for part in bureau.chunks(chunk):
        bureau.answered(part.offset, node.reblind(part.offset, part.blinded, part.more), node.size)
    offset, last = 0, False
    while not last:  # at least one page: an empty set's (empty, last) one
        page, last = node.page(offset, chunk)
        bureau.match(offset, page, node.size)
        offset += len(page)
    return bureau.result()
