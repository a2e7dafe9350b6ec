"""The regulator's side: summed values → figures with conservative error bounds.

After decryption the regulator holds, per cell, the nodes' summed noisy values and how
many nodes withheld the cell; k = nodes - withheld nodes released it. Each figure gets a
bound at ``confidence`` from the tail of the sum of k discrete Laplace noises
(``_bounds``): the chance that a cell is released with an interval that misses its
true figure (of the nodes that released it, over the clipped values) is at most
1 - confidence. Near the threshold a node releases a cell more often when its noise
happened to be high, so among the cells that were released there, figures lean high
and misses can be more frequent than that; far above it, release is near certain and
the two agree. Sums also allow for rounding to whole units; a mean is bounded by
interval arithmetic over its count and sum (each at half the miss probability) and
never leaves the clipping bounds. A cell is suppressed when no node released it or its
total noisy count is below the query's min_cell. A distribution's level is a cell of its
own: each node withholds it below its threshold (its own flag), so it is suppressed when
its cell is, when no node released it, or when its total is below min_cell; a level
released by fewer nodes than its cell is partial (``Figure.withheld_at``).
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass, replace
from numbers import Integral
from typing import Any

from creditshare.errors import InvalidInputError
from creditshare.statistics._bounds import noise_bound
from creditshare.statistics._catalogue import Catalogue
from creditshare.statistics._layout import LATEST, MAX_ADDITIONS, cell_values
from creditshare.statistics._noise import noise_scales
from creditshare.statistics._query import CohortQuery

__all__ = ["CohortCell", "CohortResult", "Figure", "decode"]


@dataclass(frozen=True, slots=True)
class Figure:
    """A released figure and its error bound: the truth lies in value ± bound with at
    least the result's confidence (0 ± 0 when suppressed).

    ``suppressed`` and ``withheld_at`` are the figure's own: its cell's for the count, a
    sum or a mean; for a distribution level, the level's (a level is withheld by a node
    whose noisy count of it is below its threshold, and by every node that withheld the
    cell; a level withheld by some nodes only is partial, its figure theirs who released
    it)."""

    value: float
    bound: float
    suppressed: bool = False
    #: Nodes that withheld this figure's cell or level.
    withheld_at: int = 0


@dataclass(frozen=True, slots=True)
class CohortCell:
    date: str
    group: dict[str, str]
    count: Figure
    #: Per requested measure: a Figure, or for ``distribution:<d>`` one per level.
    measures: dict[str, Figure | dict[str, Figure]]
    #: Nodes that withheld this cell (below their threshold, no snapshot, other chain).
    withheld_at: int
    #: The whole cell (a distribution's level may be suppressed in a cell that is not:
    #: see its ``Figure.suppressed``).
    suppressed: bool


@dataclass(frozen=True, slots=True)
class CohortResult:
    query: CohortQuery
    nodes: int
    confidence: float
    cells: tuple[CohortCell, ...]

    def rows(self) -> list[dict[str, Any]]:
        """One flat row per figure (for tables and CSV): date, the group's dimensions,
        measure, level (distributions), value, bound, suppressed, withheld_at (the
        figure's own: a distribution level's may differ from its cell's)."""
        out: list[dict[str, Any]] = []
        measures = self.query.measures
        if "count" not in measures:
            measures = ("count", *measures)
        for cell in self.cells:
            base: dict[str, Any] = {"date": cell.date, **cell.group}
            for measure in measures:
                figure = cell.count if measure == "count" else cell.measures[measure]
                items = figure.items() if isinstance(figure, dict) else [("", figure)]
                for level, value in items:
                    out.append(
                        {
                            **base,
                            "measure": measure,
                            "level": level,
                            "value": value.value,
                            "bound": value.bound,
                            "suppressed": value.suppressed,
                            "withheld_at": value.withheld_at,
                        }
                    )
        return out


def decode(
    values: Sequence[int],
    query: CohortQuery,
    catalogue: Catalogue,
    *,
    nodes: int,
    confidence: float = 0.95,
) -> CohortResult:
    """Figures from the summed values of ``nodes`` nodes' answers (layout order).

    ``values`` must be exactly the layout's values (whole numbers; every withheld flag
    within 0..nodes, a level's at least its cell's) and ``nodes`` (the answer's
    additions) within 1..``MAX_ADDITIONS``: InvalidInputError saying which otherwise."""
    query.check_against(catalogue)
    if isinstance(nodes, bool) or not isinstance(nodes, int):
        raise InvalidInputError(
            f"nodes (the answer's additions) must be a whole number, not {nodes!r}"
        )
    if not 1 <= nodes <= MAX_ADDITIONS:
        raise InvalidInputError(
            f"nodes (the answer's additions) must be within 1..{MAX_ADDITIONS}, not {nodes}"
        )
    if isinstance(confidence, bool) or not isinstance(confidence, int | float):
        raise InvalidInputError("confidence must be a number")
    if not 0.5 <= confidence < 1:
        raise InvalidInputError("confidence must be at least 0.5 and below 1")
    # The layout's cells, from the query and catalogue alone (no key needed to read them).
    levels = {d.name: d.levels for d in catalogue.dimensions}
    groups = list(itertools.product(*([(n, lv) for lv in levels[n]] for n in query.group_by)))
    dates = query.dates or (LATEST,)
    per_cell = cell_values(query, catalogue)
    if len(values) != len(dates) * len(groups) * per_cell:
        raise InvalidInputError(
            f"expected {len(dates) * len(groups) * per_cell} values (the layout's: "
            f"{len(dates) * len(groups)} cells of {per_cell}), got {len(values)}"
        )
    for index, value in enumerate(values):
        if isinstance(value, bool) or not isinstance(value, Integral):
            raise InvalidInputError(f"value {index} is not a whole number")
    scales = noise_scales(query, catalogue)
    miss = 1 - confidence
    cells: list[CohortCell] = []
    at = 0
    for day in dates:
        for group in groups:
            chunk = values[at : at + per_cell]
            at += per_cell
            cells.append(
                _cell(chunk, day, dict(group), query, catalogue, scales, nodes, miss, levels)
            )
    return CohortResult(query, nodes, confidence, tuple(cells))


def _cell(
    chunk: Sequence[int],
    day: str,
    group: dict[str, str],
    query: CohortQuery,
    catalogue: Catalogue,
    scales: dict[str, float],
    nodes: int,
    miss: float,
    levels: dict[str, tuple[str, ...]],
) -> CohortCell:
    count, withheld = int(chunk[0]), int(chunk[1])
    if not 0 <= withheld <= nodes:
        raise InvalidInputError(f"cell {day} {group}: says {withheld} of {nodes} nodes withheld it")
    k = nodes - withheld
    suppressed = k == 0 or count < query.min_cell
    sums = query.summed_columns
    by_column = dict(zip(sums, chunk[2 : 2 + len(sums)], strict=True))
    at = 2 + len(sums)
    distributions: dict[str, dict[str, Figure]] = {}
    for name in query.distributions:
        figures: dict[str, Figure] = {}
        for level in levels[name]:
            value, level_withheld = int(chunk[at]), int(chunk[at + 1])
            at += 2
            if not withheld <= level_withheld <= nodes:
                raise InvalidInputError(
                    f"cell {day} {group}: level {level} of distribution:{name} says "
                    f"{level_withheld} of {nodes} nodes withheld it (its cell: {withheld}; "
                    "a node that withholds a cell withholds its levels)"
                )
            released = nodes - level_withheld
            if suppressed or released == 0 or value < query.min_cell:
                figures[level] = Figure(0.0, 0.0, True, level_withheld)
            else:
                bound = noise_bound(released, scales[f"distribution:{name}"], 1 - miss)
                figures[level] = Figure(float(value), bound, False, level_withheld)
        distributions[name] = figures
    if suppressed:
        zero = Figure(0.0, 0.0, True, withheld)
        measures: dict[str, Figure | dict[str, Figure]] = {}
        for measure in query.measures:
            kind, _, target = measure.partition(":")
            measures[measure] = distributions[target] if kind == "distribution" else zero
        return CohortCell(day, group, zero, measures, withheld, True)
    count_figure = Figure(float(count), noise_bound(k, scales["count"], 1 - miss), False, withheld)
    measures = {}
    for measure in query.measures:
        kind, _, target = measure.partition(":")
        if kind == "count":
            measures[measure] = count_figure
        elif kind == "distribution":
            measures[measure] = distributions[target]
        elif kind == "sum":
            measures[measure] = _sum(by_column[target], count, k, target, catalogue, scales, miss)
        else:
            measures[measure] = _mean(by_column[target], count, k, target, catalogue, scales, miss)
        if kind in ("sum", "mean"):
            figure = measures[measure]
            assert isinstance(figure, Figure)
            measures[measure] = replace(figure, withheld_at=withheld)
    return CohortCell(day, group, count_figure, measures, withheld, False)


def _sum(
    total: int,
    count: int,
    k: int,
    column: str,
    catalogue: Catalogue,
    scales: dict[str, float],
    miss: float,
) -> Figure:
    """Σ clipped values: noise bound plus rounding (≤ half a unit per record, records
    bounded by the count's own interval); half the miss probability each."""
    spec = catalogue.sum_column(column)
    noise = noise_bound(k, scales[f"sum:{column}"], 1 - miss / 2)
    records = max(0.0, count + noise_bound(k, scales["count"], 1 - miss / 2))
    return Figure(total * spec.unit, (noise + 0.5 * records) * spec.unit)


def _mean(
    total: int,
    count: int,
    k: int,
    column: str,
    catalogue: Catalogue,
    scales: dict[str, float],
    miss: float,
) -> Figure:
    """Σ/n by interval arithmetic over the sum's and the count's intervals, kept within
    the clipping bounds (a mean of clipped values cannot leave them)."""
    spec = catalogue.sum_column(column)
    low, high = spec.lower_units, spec.upper_units
    c_bound = noise_bound(k, scales["count"], 1 - miss / 2)
    s_bound = noise_bound(k, scales[f"sum:{column}"], 1 - miss / 2)
    c_low, c_high = count - c_bound, count + c_bound
    # Rounding to units moves each record's value by at most half a unit.
    s_low = total - s_bound - 0.5 * max(c_high, 0)
    s_high = total + s_bound + 0.5 * max(c_high, 0)
    value = min(max(total / count, low), high) if count > 0 else (low + high) / 2
    if c_low >= 1:
        corners = [s / c for s in (s_low, s_high) for c in (c_low, c_high)]
        lo, hi = max(min(corners), low), min(max(corners), high)
        lo, hi = min(lo, value), max(hi, value)
    else:
        lo, hi = low, high
    bound = max(value - lo, hi - value)
    if not math.isfinite(bound):  # pragma: no cover - corners are finite when c_low ≥ 1
        bound = high - low
    return Figure(value * spec.unit, bound * spec.unit)
