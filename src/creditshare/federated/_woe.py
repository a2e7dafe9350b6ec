"""WOE-binned categories: weights of evidence from labels the node never sees one by one.

A schema feature with ``encoding = "woe"`` gives each record the index of its level;
a training job turns levels into numbers with the weight of evidence over the job's
fit rows:

    WOE_l = ln((pos_l + ½) / (P + ½)) − ln((n_l − pos_l + ½) / (N + ½))

(pos_l positives among the n_l fit rows of level l; P, N over every group summed). The
node needs pos_l, a sum of labels only the bureau holds, so (``LevelSumsFit``):

1. the bureau sends Enc(y_i) under its Paillier key for the fit rows (by row position),
   in chunks the node adds into per-level encrypted sums (each row once; the last call,
   ``final``, is refused until all the fit rows announced have come);
2. the node groups its levels (a level with fewer than ``min_rows`` fit rows joins one
   pooled "rare" group; a pool still under ``min_rows`` is not summed at all), sums each
   group's labels under encryption, packs the sums into slots, and adds a mask drawn
   uniformly from Z_n to each packed plaintext;
3. the bureau decrypts with proofs (``PrivateKey.decrypt_with_proof``); the node checks
   every proof, unmasks, and checks each sum is one of 0/1 labels (0 ≤ pos ≤ n).

The bureau only ever decrypts uniformly random values: whatever it encrypted as
"labels" (y_i = 2^i, to read which rows share a level) it learns nothing, and a
bounded mask would not do (the high bits of Σ 2^i would show through an 80-bit mask).
The node learns per-group label counts over the fit rows, never over fewer than
``min_rows`` rows. The table is part of the shard's ``Preprocessing``, so scoring
applies exactly what training did. A level without its own group (pooled, unseen in
the fit rows, or added to the schema after training) scores with the pool's WOE, or
0 (no evidence either way) when the pool was too small to be summed.
"""

from __future__ import annotations

import math
import secrets
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
from numpy.typing import NDArray

from creditshare.crypto import Ciphertext, Encryptor, PrivateKey, PublicKey
from creditshare.errors import InvalidInputError, OutOfOrderError

__all__ = [
    "LEVEL_SUMS_CHUNK",
    "LevelGroups",
    "LevelSumsEndpoint",
    "LevelSumsFit",
    "WoeFeature",
    "WoeTable",
    "share_level_sums",
    "weight_of_evidence",
]

Matrix = NDArray[np.float64]
#: Laplace-style smoothing of the WOE ratios: a group with no positives (or no
#: negatives) still gets a finite weight.
_SMOOTHING = 0.5
#: No group of fewer rows is ever summed, whatever a schema says (the loader bounds
#: min_rows from below by the same floor).
MIN_GROUP_FLOOR = 10
#: Fit rows per LevelSums call: a chunk of Enc(y) stays a few MiB even at 4096 bits
#: (far under the coordinator's body limit), however large the fit set.
LEVEL_SUMS_CHUNK = 4096


def weight_of_evidence(positives: int, rows: int, total_positives: int, total_rows: int) -> float:
    """WOE of a group of ``rows`` with ``positives`` among ``total_rows`` with
    ``total_positives`` (smoothed by ½ so that empty classes stay finite)."""
    negatives = rows - positives
    total_negatives = total_rows - total_positives
    return math.log((positives + _SMOOTHING) / (total_positives + _SMOOTHING)) - math.log(
        (negatives + _SMOOTHING) / (total_negatives + _SMOOTHING)
    )


@dataclass(frozen=True, slots=True)
class WoeFeature:
    """A WOE-binned feature as the node knows it from its schema."""

    name: str
    levels: tuple[str, ...]
    min_rows: int


@dataclass(frozen=True, slots=True)
class WoeTable:
    """Level index → weight of evidence, as fitted by one job (part of its preprocessing).

    ``other`` is the value of any index without its own level here: a level added to
    the schema after training scores as the pooled levels do.
    """

    levels: tuple[str, ...]
    values: tuple[float, ...]
    pooled: tuple[bool, ...]
    other: float

    def __post_init__(self) -> None:
        if not len(self.levels) == len(self.values) == len(self.pooled):
            raise InvalidInputError("a WOE table needs one value and one pooled flag per level")
        if not all(math.isfinite(v) for v in (*self.values, self.other)):
            raise InvalidInputError("WOE values must be finite")

    def lookup(self, column: Matrix) -> Matrix:
        """Each level index in ``column`` as its WOE (anything else: ``other``)."""
        table = np.array([*self.values, self.other], dtype=float)
        index = np.asarray(column, dtype=float)
        whole = (index == np.floor(index)) & (index >= 0) & (index < len(self.values))
        positions = np.where(whole, index, len(self.values)).astype(np.int64)
        out: Matrix = table[positions]
        return out

    def to_document(self) -> dict[str, Any]:
        return {
            "levels": list(self.levels),
            "values": list(self.values),
            "pooled": list(self.pooled),
            "other": self.other,
        }

    @classmethod
    def from_document(cls, document: Mapping[str, Any]) -> WoeTable:
        try:
            return cls(
                tuple(str(level) for level in document["levels"]),
                tuple(float(v) for v in document["values"]),
                tuple(bool(p) for p in document["pooled"]),
                float(document["other"]),
            )
        except (KeyError, TypeError, ValueError):
            raise InvalidInputError("a WOE table is malformed") from None


@dataclass(frozen=True, slots=True)
class LevelGroups:
    """How one WOE feature's levels are summed over the fit rows.

    ``group_of_level[l]`` is the group level l's rows are summed in, or -1 when they are
    not summed (a rare level whose pool stays under ``min_rows``); ``pool`` is the pooled
    group's index, if it was big enough to be summed.
    """

    feature: WoeFeature
    group_of_level: tuple[int, ...]
    sizes: tuple[int, ...]
    pool: int | None

    @classmethod
    def of(cls, feature: WoeFeature, indices: Sequence[int]) -> LevelGroups:
        """Group ``indices`` (one level index per fit row)."""
        counts = np.bincount(np.asarray(indices, dtype=np.int64), minlength=len(feature.levels))
        return cls.from_counts(feature, [int(c) for c in counts[: len(feature.levels)]])

    @classmethod
    def from_counts(cls, feature: WoeFeature, counts: Sequence[int]) -> LevelGroups:
        """Group the levels by their counts of fit rows (``counts[l]`` for level l)."""
        floor = max(MIN_GROUP_FLOOR, feature.min_rows)
        group_of_level = [-1] * len(feature.levels)
        sizes: list[int] = []
        for level, count in enumerate(counts[: len(feature.levels)]):
            if count >= floor:
                group_of_level[level] = len(sizes)
                sizes.append(int(count))
        rare = [lv for lv, g in enumerate(group_of_level) if g < 0]
        pooled_rows = int(sum(counts[lv] for lv in rare))
        pool = None
        if pooled_rows >= floor:
            pool = len(sizes)
            sizes.append(pooled_rows)
            for level in rare:
                group_of_level[level] = pool
        return cls(feature, tuple(group_of_level), tuple(sizes), pool)

    def table(self, positives: Sequence[int]) -> WoeTable:
        """The WOE of every level, from each group's count of positive labels."""
        if len(positives) != len(self.sizes):
            raise InvalidInputError(f"{len(positives)} sums for {len(self.sizes)} groups")
        for count, size in zip(positives, self.sizes, strict=True):
            if not 0 <= count <= size:
                # Generic on purpose: this goes back to the bureau, and a group's size
                # (how many fit rows hold a level) is the node's to keep.
                raise InvalidInputError(
                    "the level sums do not fit their groups: the labels sent were not 0 or 1"
                )
        total_positives, total_rows = sum(positives), sum(self.sizes)
        woe = [
            weight_of_evidence(p, n, total_positives, total_rows)
            for p, n in zip(positives, self.sizes, strict=True)
        ]
        other = woe[self.pool] if self.pool is not None else 0.0
        values = tuple(woe[g] if g >= 0 else 0.0 for g in self.group_of_level)
        pooled = tuple(g < 0 or g == self.pool for g in self.group_of_level)
        return WoeTable(self.feature.levels, values, pooled, other)


class LevelSumsEndpoint(Protocol):
    """What the bureau needs from a node whose job has WOE features."""

    @property
    def name(self) -> str: ...

    def level_sums(
        self, ids: Sequence[str], labels: Sequence[Ciphertext], total: int, final: bool
    ) -> list[Ciphertext]: ...

    def apply_level_sums(self, masked_plain: Sequence[int], proofs: Sequence[int]) -> None: ...


def _slot_bits(sizes: Sequence[int]) -> int:
    """Slot width for sums of 0/1 labels over groups of at most these sizes."""
    return max([1, *sizes]).bit_length() + 1


class LevelSumsFit:
    """The node's side: its WOE features wait here for their level sums.

    ``rows`` are the job's aligned rows (raw feature values, a WOE feature's value
    being its level index), in job row order. The labels come in chunks (a large fit
    set does not fit one request): each chunk is added to per-level encrypted sums, and
    the final call groups the levels, masks and answers. Every fit row is summed once:
    a row position already summed is refused, and the final call is refused until the
    ``total`` rows announced by the first call have all been sent. One round per job: a
    call after the final one is refused, so no one can have the node sum labels over
    two row sets and difference them. A refused call changes nothing.
    """

    def __init__(
        self,
        features: Sequence[WoeFeature],
        columns: Sequence[int],
        rows: Sequence[Sequence[float]],
        key: PublicKey,
        encryptor: Encryptor,
    ) -> None:
        if len(features) != len(columns) or not features:
            raise InvalidInputError("one column per WOE feature, and at least one")
        self.features = tuple(features)
        self._columns = tuple(columns)
        self._rows = rows
        self._key = key
        self._encryptor = encryptor
        self._total: int | None = None
        self._summed = bytearray(len(rows))  # 1 where a row's label was summed
        self._received = 0
        # Per feature, per level: the encrypted label sum and the row count so far.
        self._level_sums = [[_total([], key)] * len(f.levels) for f in self.features]
        self._level_rows = [[0] * len(f.levels) for f in self.features]
        self._groups: list[LevelGroups] | None = None
        self._masked: list[Ciphertext] = []
        self._pending: list[tuple[int, int, int]] = []  # per ciphertext: (mask, slots, width)
        self.tables: dict[str, WoeTable] | None = None

    @property
    def received(self) -> int:
        """Fit rows summed so far."""
        return self._received

    def level_sums(
        self,
        positions: Sequence[int],
        labels: Sequence[Ciphertext],
        total: int,
        final: bool = True,
    ) -> list[Ciphertext]:
        """Add a chunk of Enc(y); on the final call, [[Σ y + R]] per packed group of
        groups (R uniform in Z_n), else nothing."""
        self._check_chunk(positions, labels, total, final)
        for label in labels:
            Ciphertext.validated(self._key, label.value)
        for k, (feature, column) in enumerate(zip(self.features, self._columns, strict=True)):
            sums, counts = self._level_sums[k], self._level_rows[k]
            for p, label in zip(positions, labels, strict=True):
                level = int(self._rows[p][column])
                if 0 <= level < len(feature.levels):
                    sums[level] = sums[level] + label
                    counts[level] += 1
        for p in positions:
            self._summed[p] = 1
        self._total = total
        self._received += len(positions)
        return self._finish() if final else []

    def _check_chunk(
        self, positions: Sequence[int], labels: Sequence[Ciphertext], total: int, final: bool
    ) -> None:
        """Everything a chunk is refused for, checked before anything is summed."""
        if self._groups is not None or self.tables is not None:
            raise OutOfOrderError("this job's level sums were asked already (once per job)")
        if len(labels) != len(positions):
            raise InvalidInputError(f"{len(labels)} labels for {len(positions)} rows")
        if not 0 < total <= len(self._rows):
            raise InvalidInputError(f"total must be within 1..{len(self._rows)} fit rows")
        if self._total is not None and total != self._total:
            raise InvalidInputError(
                f"total is {total}, but the first call announced {self._total} fit rows"
            )
        if len(set(positions)) != len(positions):
            raise InvalidInputError("the fit rows must be distinct row positions")
        if any(not 0 <= p < len(self._rows) for p in positions):
            raise InvalidInputError(f"row positions must be below {len(self._rows)}")
        again = next((p for p in positions if self._summed[p]), None)
        if again is not None:
            raise InvalidInputError(f"row position {again} was sent already (each fit row once)")
        received = self._received + len(positions)
        if received > total:
            raise InvalidInputError(f"{received} fit rows sent, more than the {total} announced")
        if final and received != total:
            raise InvalidInputError(
                f"only {received} of the {total} fit rows were sent: send the rest "
                "before the final call"
            )

    def _finish(self) -> list[Ciphertext]:
        """Group each feature's levels, sum the groups, pack and mask."""
        groups: list[LevelGroups] = []
        sums: list[Ciphertext] = []
        for feature, level_sums, level_rows in zip(
            self.features, self._level_sums, self._level_rows, strict=True
        ):
            grouping = LevelGroups.from_counts(feature, level_rows)
            members: list[list[Ciphertext]] = [[] for _ in grouping.sizes]
            for level, group in enumerate(grouping.group_of_level):
                if group >= 0:
                    members[group].append(level_sums[level])
            sums.extend(_total(m, self._key) for m in members)
            groups.append(grouping)
        width = _slot_bits([s for g in groups for s in g.sizes])
        per = max(1, (self._key.n.bit_length() - 2) // width)
        masked, pending = [], []
        # Fit rows too few for any group: one masked zero, so the round still completes
        # (every level then scores 0).
        for start in range(0, max(1, len(sums)), per):
            chunk = sums[start : start + per]
            packed = chunk[-1] if chunk else _total([], self._key)
            for c in reversed(chunk[:-1]):
                packed = packed.multiply(1 << width) + c
            mask = secrets.randbelow(self._key.n)
            masked.append(packed + self._encryptor.encrypt_encoded(mask))
            pending.append((mask, len(chunk), width))
        self._groups, self._masked, self._pending = groups, masked, pending
        return masked

    def apply_level_sums(
        self, masked_plain: Sequence[int], proofs: Sequence[int]
    ) -> dict[str, WoeTable]:
        """Check each decryption's proof, unmask, and build every feature's WOE table."""
        if self._groups is None:
            raise OutOfOrderError("ask for the level sums before applying them")
        if self.tables is not None:
            raise OutOfOrderError("this job's level sums were applied already")
        if not len(masked_plain) == len(proofs) == len(self._masked):
            raise InvalidInputError(f"expected {len(self._masked)} decrypted level sums")
        n = self._key.n
        sums: list[int] = []
        for k, (value, r, c, (mask, count, width)) in enumerate(
            zip(masked_plain, proofs, self._masked, self._pending, strict=True)
        ):
            if not self._key.verify_decryption(c.value, value, r):
                raise InvalidInputError(f"value {k} is not the decryption of the masked level sums")
            packed = (value - mask) % n
            if packed >> (count * width):
                raise InvalidInputError(
                    "the level sums overflow their slots: labels were not 0 or 1"
                )
            sums.extend((packed >> (s * width)) & ((1 << width) - 1) for s in range(count))
        tables, at = {}, 0
        for grouping in self._groups:
            take = len(grouping.sizes)
            tables[grouping.feature.name] = grouping.table(sums[at : at + take])
            at += take
        self.tables = tables
        return tables


def _total(ciphertexts: Sequence[Ciphertext], key: PublicKey) -> Ciphertext:
    total = Ciphertext(key, 1)  # Enc(0) with r = 1: only ever summed, then masked
    for c in ciphertexts:
        total = total + c
    return total


def share_level_sums(
    host: LevelSumsEndpoint,
    ids: Sequence[str],
    labels: Mapping[str, int],
    key: PrivateKey,
    encryptor: Encryptor,
    chunk: int | None = None,
) -> None:
    """The bureau's side, for the fit rows ``ids``: labels out encrypted, in chunks of
    ``chunk`` rows (default ``LEVEL_SUMS_CHUNK``), masked sums in after the last one,
    decrypted with proofs (never unmasked here: the bureau cannot)."""
    try:
        values = [labels[i] for i in ids]
    except KeyError as exc:
        raise InvalidInputError(f"id {exc.args[0]!r} has no label") from None
    if any(v not in (0, 1) for v in values):
        raise InvalidInputError("labels must be 0 or 1")
    size = chunk or LEVEL_SUMS_CHUNK
    if not ids or size < 1:
        raise InvalidInputError("the level sums need at least one fit row, in chunks of >= 1")
    masked: list[Ciphertext] = []
    for start in range(0, len(ids), size):
        final = start + size >= len(ids)
        part = slice(start, start + size)
        masked = host.level_sums(
            ids[part], [encryptor.encrypt_encoded(v) for v in values[part]], len(ids), final
        )
        if masked and not final:
            raise InvalidInputError(f"node {host.name} answered level sums before the final call")
    # Every group a node sums holds at least MIN_GROUP_FLOOR rows, so an honest node never
    # returns more values than that allows: a bound on how many of our ciphertexts a node
    # could have us decrypt in place of its sums.
    most = max(1, len(ids) // MIN_GROUP_FLOOR)
    if not 0 < len(masked) <= most:
        raise InvalidInputError(
            f"node {host.name} returned {len(masked)} masked level sums for {len(ids)} rows "
            f"(at most {most})"
        )
    opened = [key.decrypt_with_proof(c.value) for c in masked]
    host.apply_level_sums([m for m, _ in opened], [r for _, r in opened])
