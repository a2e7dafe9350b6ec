"""The demo's regulator: one grouped cohort query, checked against the raw files.

What it shows: the operator registers a regulator (role ``regulator``; its signing key
certified by every chain CA, like a bank's); the regulator makes a Paillier key on its
own machine and asks the tax departments of all three chains for a grouped cohort query
(count, mean tax paid and the tax-grade distribution per region). Each tax node adds its
own discrete Laplace noise, suppresses its cells with too few enterprises by its noisy
count, and encrypts its partial figures under the regulator's key; the coordinator adds
the ciphertexts without being able to read them. The regulator decrypts the totals and
reads each figure as value ± bound.

The check (``--verify``): only the demo may read the raw files (it generated them), so
it recomputes every figure in plaintext, node by node, cell by cell (region from the
USCC, values clipped and rounded to whole units as the catalogue says) and checks each
released figure lies within its bound of the plaintext figure of the nodes that
released that cell. The bounds checked are the ``VERIFY_CONFIDENCE`` ones (a 95 % bound
is, by design, missed by one figure in twenty). How many nodes withheld each cell must
fit the plaintext counts: a node whose count is ``SURE_SCALES`` noise scales below the
minimum must have withheld it, that far above released it (at the demo's ε, split over
three releases, the noise is too wide for any count to be that sure; the e2e test asks
with less noise), and a cell no node released must be suppressed.

Calls, in order: ``POST /v1/participants`` (role regulator), ``GET
/v1/statistics/catalogue``, ``POST /v1/paillier-keys`` (on the first query's 422),
``POST /v1/statistics``, ``GET /v1/statistics/budget``.
"""

from __future__ import annotations

import csv
import itertools
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from creditshare.client import CohortAnswer, CreditShareClient, cohort_rows
from creditshare.crypto import PrivateKey
from creditshare.demo._federation import FederationLayout, NodeLayout
from creditshare.departments import FieldValue, get_department
from creditshare.statistics import LATEST, Catalogue, CohortQuery, decode, noise_scales

__all__ = [
    "DIMENSION_CHAIN",
    "DIMENSION_REGION",
    "VERIFY_CONFIDENCE",
    "PlaintextCohort",
    "StatisticsOutcome",
    "check_cohort",
    "check_rows",
    "run_statistics",
]

#: The implicit dimensions every catalogue has.
DIMENSION_CHAIN = "chain"
DIMENSION_REGION = "region"
#: The demo's query.
DEPARTMENT = "tax"
GROUP_BY = ("region",)
MEASURES = ("count", "mean:annual_tax_paid", "distribution:tax_credit_grade")
EPSILON = 1.0
MIN_CELL = 10
CONFIDENCE = 0.95
#: The confidence of the bounds ``--verify`` holds every figure to: a figure outside
#: these is a defect, not chance (about one check in a billion fails by chance).
VERIFY_CONFIDENCE = 1 - 1e-9
#: The nodes' own minimum cell size (``stats_min_cell``; the demo keeps the default).
NODE_MIN_CELL = 10
#: A node's plaintext count this far from the minimum cell size decides its noisy
#: suppression with certainty but for about one in a billion (in noise scales).
SURE_SCALES = 21.0

#: A cell: (date, ((dimension, level), ...)) as the layout orders them.
Key = tuple[str, tuple[tuple[str, str], ...]]


@dataclass(slots=True)
class Part:
    """One node's plaintext contribution to one cell."""

    count: int = 0
    #: sum column -> clipped, unit-rounded total (in units).
    sums: dict[str, int] = field(default_factory=dict)
    #: distribution dimension -> level -> count.
    levels: dict[str, dict[str, int]] = field(default_factory=dict)


class PlaintextCohort:
    """The cohort figures recomputed from the raw files, kept per node and cell.

    The same definitions the nodes use, written out independently: a record's region
    is its USCC's province (characters 3–4) if the catalogue lists it, else ``other``;
    its chain is its node's; a summed value is clipped to the column's bounds and
    rounded to whole units.
    """

    def __init__(
        self, nodes: Sequence[NodeLayout], catalogue: Catalogue, query: CohortQuery
    ) -> None:
        self.catalogue = catalogue
        self.query = query
        self.parts: dict[str, dict[Key, Part]] = {}
        department = get_department(catalogue.department)
        self._department = department
        self._defaults = {f.name: f.default for f in department.fields if f.missing == "default"}
        sums = {s.column: s for s in catalogue.sums}
        columns = [m.split(":", 1)[1] for m in query.measures if m.split(":")[0] in ("sum", "mean")]
        shown = [m.split(":", 1)[1] for m in query.measures if m.startswith("distribution:")]
        for node in nodes:
            if node.department != catalogue.department or node.chain.value not in query.chains:
                continue
            cells: dict[Key, Part] = {}
            self.parts[node.node_id] = cells
            if not node.data_file.exists():
                continue
            with node.data_file.open(encoding="utf-8", newline="") as handle:
                for row in csv.DictReader(handle):
                    record = {
                        f.name: f.parse(row[f.name]) for f in department.fields if f.name in row
                    }
                    levels = {
                        name: self._level(name, row["uscc"], node.chain.value, record)
                        for name in (*query.group_by, *shown)
                    }
                    key: Key = ("", tuple((g, levels[g]) for g in query.group_by))
                    part = cells.setdefault(key, Part())
                    part.count += 1
                    for column in columns:
                        s = sums[column]
                        raw = record.get(column)
                        raw = self._defaults.get(column) if raw is None else raw
                        value = min(max(float(raw or 0), s.lower), s.upper)
                        part.sums[column] = part.sums.get(column, 0) + round(value / s.unit)
                    for name in shown:
                        counts = part.levels.setdefault(name, {})
                        counts[levels[name]] = counts.get(levels[name], 0) + 1

    def _level(self, name: str, uscc: str, chain: str, record: Mapping[str, FieldValue]) -> str:
        """The level of dimension ``name`` a record falls in, from the schema's words:
        a category column's value, a boolean's no/yes, an indicator's band."""
        if name == DIMENSION_CHAIN:
            return chain
        levels = self.catalogue.dimension(name).levels
        if name == DIMENSION_REGION:
            return uscc[2:4] if uscc[2:4] in levels else "other"
        spec = next(d for d in self._department.statistics.dimensions if d.name == name)
        if spec.indicator:
            return levels[int(self._department.indicator_values(record)[spec.indicator])]
        value = record.get(spec.column)
        if value is None:
            value = self._defaults.get(spec.column)
        if isinstance(value, bool):
            return levels[int(value)]
        return str(value)

    def part(self, node_id: str, group: Mapping[str, str]) -> Part:
        """Node ``node_id``'s plaintext part of the cell of ``group`` (a level per
        grouped dimension; every snapshot date: the demo's nodes hold one)."""
        key: Key = ("", tuple((g, str(group[g])) for g in self.query.group_by))
        return self.parts[node_id].get(key, Part())

    def expected(
        self, group: Mapping[str, str], released: Iterable[str]
    ) -> dict[tuple[str, str], float]:
        """(measure, level) -> the plaintext figure of a cell over the nodes in
        ``released`` (level "" but for distributions)."""
        parts = [self.part(n, group) for n in released]
        sums = {s.column: s for s in self.catalogue.sums}
        count = sum(p.count for p in parts)
        out: dict[tuple[str, str], float] = {("count", ""): float(count)}
        for measure in self.query.measures:
            kind, _, name = measure.partition(":")
            if kind in ("sum", "mean"):
                total = sum(p.sums.get(name, 0) for p in parts) * sums[name].unit
                out[(measure, "")] = (
                    total if kind == "sum" else total / count if count else math.nan
                )
            elif kind == "distribution":
                dimension = next(d for d in self.catalogue.dimensions if d.name == name)
                for level in dimension.levels:
                    out[(measure, level)] = float(
                        sum(p.levels.get(name, {}).get(level, 0) for p in parts)
                    )
        return out


def check_cohort(
    answer: CohortAnswer,
    plain: PlaintextCohort,
    confidence: float = VERIFY_CONFIDENCE,
    node_min_cell: int = NODE_MIN_CELL,
) -> list[str]:
    """``check_rows`` of ``answer``'s figures, their bounds taken at ``confidence``."""
    wide = decode(
        answer.values, answer.query, answer.catalogue, nodes=answer.additions, confidence=confidence
    )
    return check_rows(cohort_rows(wide), plain, answer.answered, node_min_cell)


def check_rows(
    rows: Sequence[Mapping[str, Any]],
    plain: PlaintextCohort,
    answered: Sequence[str],
    node_min_cell: int = NODE_MIN_CELL,
) -> list[str]:
    """Every way the figures in ``rows`` (``cohort_rows``, or the CLI's ``--json`` rows)
    disagree with the plaintext figures (empty: they agree).

    Per cell: each node of ``answered`` whose plaintext count is ``SURE_SCALES`` noise
    scales below the minimum must have withheld its part, each that far above must have
    released it, so the number withheld (``withheld_at``) must fit; a cell no node
    released must be suppressed; and every figure of a cell not suppressed must lie
    within its bound of the plaintext figure over one set of releasing nodes consistent
    with those facts (nodes near the minimum may go either way). A node withholds below
    the larger of the query's minimum and its own (``node_min_cell``).
    """
    query, catalogue = plain.query, plain.catalogue
    minimum = max(query.min_cell, node_min_cell)
    margin = SURE_SCALES * noise_scales(query, catalogue)["count"]
    cells: dict[tuple[Any, ...], list[Mapping[str, Any]]] = {}
    for row in rows:
        cells.setdefault((row["date"], *(row[g] for g in query.group_by)), []).append(row)
    expected_cells = len(query.dates or (LATEST,)) * math.prod(
        len(catalogue.dimension(g).levels) for g in query.group_by
    )
    problems: list[str] = []
    if len(cells) != expected_cells:
        problems.append(f"{len(cells)} cells; the query and catalogue make {expected_cells}")
    for key, figures in cells.items():
        group = {g: str(v) for g, v in zip(query.group_by, key[1:], strict=True)}
        where = f"cell {key[0]} {group}"
        withheld_at, suppressed = int(figures[0]["withheld_at"]), bool(figures[0]["suppressed"])
        counts = {n: plain.part(n, group).count for n in answered}
        withheld = {n for n, c in counts.items() if c <= minimum - margin}
        released = {n for n, c in counts.items() if c >= minimum + margin}
        unsure = sorted(set(answered) - withheld - released)
        if not len(withheld) <= withheld_at <= len(withheld) + len(unsure):
            problems.append(
                f"{where}: withheld at {withheld_at} nodes; the plaintext counts "
                f"{counts} say between {len(withheld)} and {len(withheld) + len(unsure)}"
            )
            continue
        if withheld_at == len(answered) and not suppressed:
            problems.append(f"{where}: no node released it, yet it is not suppressed")
        if suppressed:
            continue
        choices = [
            released | set(extra)
            for extra in itertools.combinations(unsure, len(unsure) - (withheld_at - len(withheld)))
        ]
        misses: list[str] = []
        for chosen in choices:
            expected = plain.expected(group, chosen)
            misses = [
                _miss(f, expected.get((f["measure"], f["level"]), math.nan))
                for f in figures
                # A distribution level is withheld on its own count: check it when the
                # cell's releasing nodes released it too (not suppressed, not partial).
                if not f["suppressed"]
                and int(f["withheld_at"]) == withheld_at
                and not abs(float(f["value"]) - expected.get((f["measure"], f["level"]), math.nan))
                <= float(f["bound"]) + 1e-6
            ]
            if not misses:
                break
        if misses:
            problems.append(f"{where}: {'; '.join(misses)}")
    return problems


def _miss(figure: Mapping[str, Any], expected: float) -> str:
    level = f"={figure['level']}" if figure["level"] else ""
    return (
        f"{figure['measure']}{level}: {float(figure['value']):.6g} ± "
        f"{float(figure['bound']):.4g}, plaintext {expected:.6g}"
    )


@dataclass(frozen=True, slots=True)
class StatisticsOutcome:
    regulator: str
    answer: CohortAnswer
    #: The ledger's per-period account of the regulator's ε, after the query.
    budget: dict[str, Any]
    #: None: not verified; else every disagreement with the plaintext (empty: none).
    problems: list[str] | None

    @property
    def verified(self) -> bool:
        return self.problems is not None and not self.problems

    def to_json(self) -> dict[str, Any]:
        doc = self.answer.to_json()
        doc["regulator"] = self.regulator
        doc["budget"] = self.budget
        if self.problems is not None:
            doc["verify_confidence"] = VERIFY_CONFIDENCE
            doc["problems"] = self.problems
            doc["verified"] = self.verified
        return doc


def run_statistics(
    operator: CreditShareClient,
    layout: FederationLayout,
    verify: bool,
    say: Callable[[str], None],
    *,
    group_by: Sequence[str] = GROUP_BY,
    measures: Sequence[str] = MEASURES,
) -> StatisticsOutcome:
    """Register the demo regulator and run its grouped cohort query over the tax nodes."""
    regulator_id = "demo-regulator"
    registered = operator.register_participant(regulator_id, "regulator", "Demo central bank")
    api_key = registered["api_key"]
    identity = layout.identity(regulator_id, "regulator")
    key = PrivateKey.generate()
    say(
        f"operator registered {regulator_id} (role regulator; each chain CA certified its "
        f"signing key); it made a {key.public_key.bits}-bit Paillier key of its own"
    )
    with CreditShareClient(
        layout.coordinator_url, api_key=api_key, private_key=key, identity=identity
    ) as regulator:
        answer = regulator.run_cohort_query(
            DEPARTMENT,
            group_by=group_by,
            measures=measures,
            epsilon=EPSILON,
            min_cell=MIN_CELL,
            confidence=CONFIDENCE,
        )
        budget = regulator.privacy_budget()
    suppressed = sum(1 for c in answer.result.cells if c.suppressed)
    say(
        f"{regulator_id} asked the {DEPARTMENT} nodes for {', '.join(measures)} by "
        f"{', '.join(group_by)} at ε {EPSILON:g} (ledger entry {answer.ledger_index}): "
        f"{len(answer.result.cells)} cells, {suppressed} suppressed (fewer than {MIN_CELL})"
    )
    problems = None
    if verify:
        plain = PlaintextCohort(layout.nodes, answer.catalogue, answer.query)
        problems = check_cohort(answer, plain)
        verdict = "every figure within its bound" if not problems else f"{len(problems)} PROBLEMS"
        say(f"plaintext recomputation of the cohort figures from the raw files: {verdict}")
    return StatisticsOutcome(regulator_id, answer, budget, problems)
