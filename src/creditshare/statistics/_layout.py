"""Where every released number sits: cells, values per cell, slots and ciphertexts.

The layout is a function of the query, the catalogue and the regulator's key only,
never of any node's data: every node answers the same number of ciphertexts of the
same size for a query, whatever it holds, so the coordinator (which forwards and adds
them) learns nothing from the traffic. Slots are wide enough for a node's largest
possible value (``MAX_NODE_RECORDS`` records at the clipping bound, plus noise up to
``NOISE_TAILS`` scales, beyond which a release clamps: post-processing, so ε holds) summed
over up to ``MAX_ADDITIONS`` nodes.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass

from creditshare.crypto import FixedPointEncoding, PublicKey, SlotLayout
from creditshare.errors import InvalidInputError
from creditshare.statistics._catalogue import Catalogue
from creditshare.statistics._noise import noise_scales
from creditshare.statistics._query import CohortQuery

__all__ = [
    "LATEST",
    "MAX_ADDITIONS",
    "MAX_NODE_RECORDS",
    "MAX_VALUES",
    "NOISE_TAILS",
    "CellKey",
    "Layout",
    "cell_values",
    "value_limit",
    "withheld_cell",
]

#: The cell date of a query without dates (each node's latest snapshot).
LATEST = "latest"
#: Records one node may hold in one snapshot (a cube of more is refused).
MAX_NODE_RECORDS = 2**24
#: Nodes whose answers may be added into one sum (the slot width allows for this many).
MAX_ADDITIONS = 64
#: Released values are clamped to the true range ± this many noise scales: the chance
#: that discrete Laplace noise goes further is below e^-64.
NOISE_TAILS = 64
#: Most values one query may release per node (cells × values per cell).
MAX_VALUES = 100_000


@dataclass(frozen=True, slots=True)
class CellKey:
    """One cell: a snapshot date (``LATEST`` without dates) and one level per group_by."""

    date: str
    group: tuple[tuple[str, str], ...]


def cell_values(query: CohortQuery, catalogue: Catalogue) -> int:
    """Values per cell: the noisy count and its withheld flag, one noisy sum per summed
    column, then per distribution two per level (its noisy count and its own withheld
    flag). From the query and catalogue only, like every part of the layout."""
    levels = sum(len(catalogue.dimension(d).levels) for d in query.distributions)
    return 2 + len(query.summed_columns) + 2 * levels


def withheld_cell(query: CohortQuery, catalogue: Catalogue) -> list[int]:
    """What a node releases for a cell it withholds: count 0, flag 1, every sum 0, and
    every distribution level 0 with its flag 1 (a level of a withheld cell is withheld)."""
    levels = sum(len(catalogue.dimension(d).levels) for d in query.distributions)
    return [0, 1, *([0] * len(query.summed_columns)), *([0, 1] * levels)]


def value_limit(query: CohortQuery, catalogue: Catalogue) -> int:
    """The largest magnitude one node's released value may have (a release clamps to it)."""
    scales = noise_scales(query, catalogue)
    sensitivity = max([1, *(catalogue.sum_column(c).sensitivity for c in query.summed_columns)])
    noise = max(math.ceil(b * NOISE_TAILS) for b in scales.values())
    return MAX_NODE_RECORDS * sensitivity + noise


@dataclass(frozen=True, slots=True)
class Layout:
    """Cells in their fixed order, each ``values_per_cell`` values, packed into slots.

    A cell's values: noisy count, withheld flag, one noisy sum per summed column, then
    per ``distribution:<d>`` measure, for each of d's levels in order, the level's noisy
    count and its withheld flag (``cell_values``). Summed over nodes, a flag counts the
    nodes that withheld that cell or level."""

    cells: tuple[CellKey, ...]
    values_per_cell: int
    slot: SlotLayout
    limit: int
    key: PublicKey

    @classmethod
    def for_query(
        cls, query: CohortQuery, catalogue: Catalogue, key: PublicKey, additions: int
    ) -> Layout:
        """The layout of ``query``'s answers under ``key``, for sums of ``additions``
        nodes' answers (at most ``MAX_ADDITIONS``; the slot width allows for that many
        whatever ``additions`` is, so the layout itself never depends on it)."""
        query.check_against(catalogue)
        if not 1 <= additions <= MAX_ADDITIONS:
            raise InvalidInputError(f"additions must be within 1..{MAX_ADDITIONS}")
        groups = list(
            itertools.product(
                *(
                    [(name, level) for level in catalogue.dimension(name).levels]
                    for name in query.group_by
                )
            )
        )
        cells = tuple(
            CellKey(day, tuple(group)) for day in (query.dates or (LATEST,)) for group in groups
        )
        per_cell = cell_values(query, catalogue)
        if len(cells) * per_cell > MAX_VALUES:
            raise InvalidInputError(
                f"the query releases {len(cells) * per_cell} values per node (at most "
                f"{MAX_VALUES}): group by fewer dimensions or ask for fewer dates"
            )
        limit = value_limit(query, catalogue)
        slot_bits = (limit * MAX_ADDITIONS).bit_length() + 2
        if slot_bits > 512:
            raise InvalidInputError(
                "the query's values are too large to pack (slots over 512 bits)"
            )
        slot = SlotLayout.for_key(key, slot_bits, additions)
        return cls(cells, per_cell, slot, limit, key)

    @property
    def values(self) -> int:
        """Values per answer: cells × values per cell."""
        return len(self.cells) * self.values_per_cell

    @property
    def ciphertexts(self) -> int:
        """Ciphertexts per answer (each holds ``slot.slots`` values)."""
        return -(-self.values // self.slot.slots)

    def pack(self, values: Sequence[int]) -> list[int]:
        """One node's values (layout order) as ``ciphertexts`` plaintexts in Z_n."""
        if len(values) != self.values:
            raise InvalidInputError(f"expected {self.values} values, got {len(values)}")
        for index, value in enumerate(values):
            if abs(value) > self.limit:
                raise InvalidInputError(f"value {index} is beyond the layout's limit")
        width = self.slot.slots
        return [
            FixedPointEncoding.encode_integer(
                self.slot.pack(values[start : start + width]), self.key
            )
            for start in range(0, len(values), width)
        ]

    def unpack(self, plaintexts: Sequence[int]) -> list[int]:
        """The summed values from decrypted plaintexts (DecryptionOverflowError if a slot
        overflowed: more nodes added than the layout allows)."""
        if len(plaintexts) != self.ciphertexts:
            raise InvalidInputError(
                f"expected {self.ciphertexts} plaintexts, got {len(plaintexts)}"
            )
        width = self.slot.slots
        out: list[int] = []
        for index, plaintext in enumerate(plaintexts):
            count = min(width, self.values - index * width)
            total = FixedPointEncoding.decode_integer(plaintext, self.key)
            out.extend(self.slot.unpack(total, count))
        return out
