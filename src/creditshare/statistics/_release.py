"""One node's answer to a cohort query: noisy values in layout order, small cells withheld.

Per snapshot and release (the count, each summed column, each distribution) the node
takes the marginal of its cube over the query's cells and adds OpenDP discrete Laplace
noise of scale Δ/ε_r to every cell, so this node's answer alone is ε-DP whatever the
coordinator does with it. A cell whose *noisy* count is below the threshold is released
as count 0, withheld 1 and zeros. Each level of a distribution is a smaller cell (the
cell's enterprises at that level), so it is held to the same threshold: a level whose
*noisy* count is below it is released as 0 with its own withheld flag 1 (otherwise a
level held by one enterprise would go out as 1 ± noise, and a query grouped by nothing
would release ``distribution:region`` with no threshold at all). Every decision reads
only noisy values, so it spends no extra ε. Cells of another chain (when the query
groups by chain) and dates this node has no snapshot for are withheld too; both facts
are public.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from creditshare.errors import InvalidInputError
from creditshare.statistics._catalogue import CHAIN_LEVELS, Catalogue
from creditshare.statistics._cube import Cube, Int64Array
from creditshare.statistics._layout import MAX_NODE_RECORDS, value_limit, withheld_cell
from creditshare.statistics._noise import noise_scales, noisy
from creditshare.statistics._query import CohortQuery

__all__ = ["release"]


def release(
    cubes: Sequence[Cube | None],
    query: CohortQuery,
    catalogue: Catalogue,
    *,
    min_cell: int,
    chain: str | None = None,
) -> list[int]:
    """This node's noisy values in layout order (``Layout.for_query(...).cells``).

    ``cubes``: one per snapshot of the query (one for the latest when ``dates`` is
    empty), None where the node had no snapshot at that date. ``min_cell``: the node's
    threshold (the larger of the query's and its own). ``chain``: the node's chain,
    needed when the query groups by or distributes over ``chain``.
    """
    query.check_against(catalogue)
    if len(cubes) != query.snapshots:
        raise InvalidInputError(f"expected {query.snapshots} cubes, got {len(cubes)}")
    uses_chain = "chain" in query.group_by or "chain" in query.distributions
    if uses_chain and chain not in CHAIN_LEVELS:
        raise InvalidInputError("a query by chain needs the node's chain")
    threshold = max(min_cell, query.min_cell)
    scales = noise_scales(query, catalogue)
    limit = value_limit(query, catalogue)
    out: list[int] = []
    for cube in cubes:
        if cube is not None:
            if cube.catalogue_digest != catalogue.digest:
                raise InvalidInputError("cube was built for another catalogue")
            if cube.records > MAX_NODE_RECORDS:
                raise InvalidInputError(f"a snapshot of over {MAX_NODE_RECORDS} records")
        out.extend(_snapshot(cube, query, catalogue, scales, threshold, limit, chain))
    return out


def _snapshot(
    cube: Cube | None,
    query: CohortQuery,
    catalogue: Catalogue,
    scales: dict[str, float],
    threshold: int,
    limit: int,
    chain: str | None,
) -> list[int]:
    sizes = [len(catalogue.dimension(name).levels) for name in query.group_by]
    cells = int(np.prod(sizes)) if sizes else 1
    withheld = withheld_cell(query, catalogue)
    if cube is None:
        return withheld * cells
    full = _with_chain(cube.counts, catalogue, chain)
    counts = _clamp(noisy(_marginal(full, catalogue, query.group_by), scales["count"]), limit)
    sums = []
    for column in query.summed_columns:
        j = [s.column for s in catalogue.sums].index(column)
        units = _with_chain(cube.sums[j], catalogue, chain)
        sums.append(
            _clamp(
                noisy(_marginal(units, catalogue, query.group_by), scales[f"sum:{column}"]), limit
            )
        )
    distributions = []
    for name in query.distributions:
        levels = len(catalogue.dimension(name).levels)
        flat = _marginal(full, catalogue, (*query.group_by, name))
        values = _clamp(noisy(flat, scales[f"distribution:{name}"]), limit)
        distributions.append((levels, values))
    foreign = _foreign_cells(query, catalogue, chain)
    out: list[int] = []
    for c in range(cells):
        if c in foreign or counts[c] < threshold:
            out.extend(withheld)
            continue
        out.extend((counts[c], 0))
        out.extend(values[c] for values in sums)
        for levels, values in distributions:
            for value in values[c * levels : (c + 1) * levels]:
                # A level is a cell of its own (the enterprises of this cell at that
                # level): held to the same threshold, decided from its noisy count only.
                out.extend((0, 1) if value < threshold else (value, 0))
    return out


def _with_chain(array: Int64Array, catalogue: Catalogue, chain: str | None) -> Int64Array:
    """The cube's array with a leading chain axis: the node's data at its own chain."""
    full = np.zeros((len(CHAIN_LEVELS), *array.shape), dtype=np.int64)
    full[CHAIN_LEVELS.index(chain) if chain in CHAIN_LEVELS else 0] = array
    return full


def _marginal(full: Int64Array, catalogue: Catalogue, names: Sequence[str]) -> list[int]:
    """Totals over the cells of ``names`` (catalogue dimensions, in that order), flat in
    row-major order: the order of itertools.product over their levels."""
    axes = [d.name for d in catalogue.dimensions]
    keep = [axes.index(name) for name in names]
    summed = full.sum(axis=tuple(i for i in range(len(axes)) if i not in keep))
    # sum() keeps the kept axes in catalogue order; put them in the query's order.
    order = sorted(keep)
    moved = np.transpose(summed, [order.index(i) for i in keep]) if keep else summed
    return [int(v) for v in np.asarray(moved).reshape(-1)]


def _clamp(values: list[int], limit: int) -> list[int]:
    return [min(max(v, -limit), limit) for v in values]


def _foreign_cells(query: CohortQuery, catalogue: Catalogue, chain: str | None) -> set[int]:
    """Cells grouped to another chain than the node's (public zeros: withheld, no noise)."""
    if "chain" not in query.group_by:
        return set()
    sizes = [len(catalogue.dimension(name).levels) for name in query.group_by]
    axis = query.group_by.index("chain")
    stride = int(np.prod(sizes[axis + 1 :])) if axis + 1 < len(sizes) else 1
    own = CHAIN_LEVELS.index(chain) if chain in CHAIN_LEVELS else -1
    total = int(np.prod(sizes))
    return {c for c in range(total) if (c // stride) % sizes[axis] != own}
