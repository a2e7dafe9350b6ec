"""Deterministic synthetic data set: three chains x five departments + bureau labels.

Determinism is the design constraint: a demo, a benchmark and a test must be able
to regenerate exactly the same bytes from a seed, so the only source of randomness
is one ``random.Random(seed)`` consumed in a fixed order, dictionaries are iterated
in insertion order, and every number is formatted before it is stored.
"""

from __future__ import annotations

import csv
import random
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from creditshare.identity.chains import DIVISIONS, Chain, Division
from creditshare.identity.uscc import ALPHABET, make_uscc
from creditshare.synth.names import enterprise_name
from creditshare.synth.records import (
    Profile,
    court_row,
    market_row,
    social_row,
    tax_row,
    utility_row,
)
from creditshare.synth.sampling import bernoulli, sigmoid
from creditshare.synth.schema import (
    DEPARTMENT_COLUMNS,
    DEPARTMENTS,
    ENTERPRISES_COLUMNS,
    ENTERPRISES_FILE,
    INDUSTRY_DEPARTMENTS,
    LABELS_COLUMNS,
    LABELS_FILE,
    department_file,
)

__all__ = ["SynthManifest", "generate", "unknown_uscc"]

_CHAINS: tuple[Chain, ...] = (Chain.YRD, Chain.PRD, Chain.BTH)
_CHAIN_WEIGHTS = (0.45, 0.30, 0.25)
_PROVINCE_WEIGHTS: dict[Chain, tuple[tuple[str, ...], tuple[float, ...]]] = {
    Chain.YRD: (("31", "32", "33", "34"), (0.30, 0.30, 0.28, 0.12)),
    Chain.PRD: (("44",), (1.0,)),
    Chain.BTH: (("11", "12", "13"), (0.45, 0.25, 0.30)),
}
# "91" company, "92" individual business, "93" farmers' cooperative (authority 9).
_ENTITY_TYPES = ("91", "92", "93")
_ENTITY_WEIGHTS = (0.80, 0.15, 0.05)
_SOCIAL_RATE = {"91": 0.88, "92": 0.72, "93": 0.72}
_TAX_RATE = 0.98
_UTILITY_RATE = 0.80
_CROSS_CHAIN_RATE = 0.12
_BRANCH_SOCIAL_RATE = 0.6
_BRANCH_UTILITY_RATE = 0.6
_MAX_YEARS = 40.0
_MEAN_YEARS = 8.0
# Industry sections (the tax and market schemas' levels) by entity type; a few
# enterprises have an empty cell, which the schemas read as "unknown".
_INDUSTRIES = (
    "agriculture",
    "manufacturing",
    "construction",
    "trade",
    "transport",
    "hospitality",
    "information",
    "services",
    "other",
    "",
)
_INDUSTRY_WEIGHTS = {
    "91": (0.03, 0.24, 0.09, 0.24, 0.07, 0.07, 0.09, 0.12, 0.03, 0.02),
    "92": (0.04, 0.06, 0.04, 0.44, 0.08, 0.20, 0.02, 0.10, 0.01, 0.01),
    "93": (0.80, 0.06, 0.00, 0.08, 0.02, 0.00, 0.00, 0.02, 0.01, 0.01),
}


@dataclass(frozen=True)
class SynthManifest:
    """What ``generate`` wrote: enough for a caller to find and sanity-check it."""

    out_dir: Path
    enterprises: int
    seed: int
    files: dict[str, int] = field(default_factory=dict)
    """Relative POSIX path -> number of data rows (header excluded)."""
    cross_chain: list[str] = field(default_factory=list)
    """USCCs with records in more than one chain, in generation order."""


@dataclass
class _Tables:
    """Rows accumulated in memory, keyed by relative path, in a fixed file order."""

    rows: dict[str, list[tuple[str, ...]]] = field(
        default_factory=lambda: {
            department_file(chain, department): []
            for chain in _CHAINS
            for department in DEPARTMENTS
        }
    )
    enterprises: list[tuple[str, ...]] = field(default_factory=list)
    labels: list[tuple[str, ...]] = field(default_factory=list)
    cross_chain: list[str] = field(default_factory=list)


def _org_body(rng: random.Random, entity_type: str) -> str:
    """Pre-2015 companies kept their all-digit code; newer ones got an "MA..." code."""
    if entity_type == "91" and bernoulli(rng, 0.25):
        return "".join(rng.choice("0123456789") for _ in range(8))
    return "MA" + "".join(rng.choice(ALPHABET) for _ in range(6))


def _new_uscc(rng: random.Random, entity_type: str, division: Division, taken: set[str]) -> str:
    while True:
        code = make_uscc(entity_type[0], entity_type[1], division.code, _org_body(rng, entity_type))
        if code.code not in taken:
            taken.add(code.code)
            return code.code


def _pick_division(rng: random.Random, chain: Chain) -> Division:
    provinces, weights = _PROVINCE_WEIGHTS[chain]
    province = rng.choices(provinces, weights)[0]
    return rng.choice(DIVISIONS[province])


def _industry(uscc: str, entity_type: str) -> str:
    """One industry per enterprise, the same in every chain's tax and market file.

    Drawn from its own USCC-seeded stream, not the generator's: adding the column left
    every other value of a seed's data set as it was.
    """
    rng = random.Random(f"creditshare.synth.industry:{uscc}")
    return rng.choices(_INDUSTRIES, _INDUSTRY_WEIGHTS[entity_type])[0]


def _home_rows(rng: random.Random, profile: Profile) -> dict[str, tuple[str, ...]]:
    """Rows an enterprise has where it is registered; market always (it registered)."""
    rows: dict[str, tuple[str, ...]] = {"market": market_row(rng, profile, profile.years, False)}
    if bernoulli(rng, _TAX_RATE):
        rows["tax"] = tax_row(rng, profile, profile.years, False)
    if bernoulli(rng, _SOCIAL_RATE[profile.entity_type]):
        rows["social"] = social_row(rng, profile, False)
    if bernoulli(rng, _UTILITY_RATE):
        rows["utility"] = utility_row(rng, profile)
    if bernoulli(rng, sigmoid(-2.0 - 0.9 * profile.health + 0.25 * profile.size)):
        rows["court"] = court_row(rng, profile)
    return rows


def _away_rows(rng: random.Random, profile: Profile) -> dict[str, tuple[str, ...]]:
    """Rows in another chain: a lawsuit filed there, a branch registered there, or both."""
    kind = rng.choices(("court", "branch", "both"), (0.4, 0.4, 0.2))[0]
    rows: dict[str, tuple[str, ...]] = {}
    if kind != "court":
        years = profile.years * rng.uniform(0.1, 1.0)
        rows["tax"] = tax_row(rng, profile, years, True)
        rows["market"] = market_row(rng, profile, years, True)
        if bernoulli(rng, _BRANCH_SOCIAL_RATE):
            rows["social"] = social_row(rng, profile, True)
        if bernoulli(rng, _BRANCH_UTILITY_RATE):
            rows["utility"] = utility_row(rng, profile)
    if kind != "branch":
        rows["court"] = court_row(rng, profile)
    return rows


def _add_enterprise(rng: random.Random, tables: _Tables, taken: set[str]) -> None:
    home = rng.choices(_CHAINS, _CHAIN_WEIGHTS)[0]
    division = _pick_division(rng, home)
    entity_type = rng.choices(_ENTITY_TYPES, _ENTITY_WEIGHTS)[0]
    uscc = _new_uscc(rng, entity_type, division, taken)
    name = enterprise_name(rng, entity_type, division)
    profile = Profile(
        entity_type=entity_type,
        health=rng.gauss(0.0, 1.0),
        size=rng.gauss(0.0, 1.0),
        years=min(_MAX_YEARS, rng.expovariate(1.0 / _MEAN_YEARS)),
    )
    by_chain: dict[Chain, dict[str, tuple[str, ...]]] = {home: _home_rows(rng, profile)}
    if bernoulli(rng, _CROSS_CHAIN_RATE):
        away = rng.choice([chain for chain in _CHAINS if chain != home])
        by_chain[away] = _away_rows(rng, profile)
        tables.cross_chain.append(uscc)
    industry = _industry(uscc, entity_type)
    for chain, rows in by_chain.items():
        for department, values in rows.items():
            extra = (industry,) if department in INDUSTRY_DEPARTMENTS else ()
            tables.rows[department_file(chain, department)].append((uscc, *values, *extra))
    record_chains = ";".join(sorted(chain.value for chain in by_chain))
    tables.enterprises.append((uscc, name, division.code, home.value, record_chains))
    defaulted = bernoulli(rng, profile.default_probability())
    tables.labels.append((uscc, "1" if defaulted else "0"))


def _write_csv(path: Path, header: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8", newline="") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(header)
        writer.writerows(rows)


def generate(enterprises: int, seed: int, out_dir: Path) -> SynthManifest:
    """Write the synthetic data set under ``out_dir`` and describe what was written.

    Same ``(enterprises, seed)`` gives byte-identical files. Existing files with the
    same names are overwritten; other files in ``out_dir`` are left alone.
    """
    if enterprises < 0:
        raise ValueError(f"enterprises must be >= 0, got {enterprises}")
    rng = random.Random(seed)
    tables = _Tables()
    taken: set[str] = set()
    for _ in range(enterprises):
        _add_enterprise(rng, tables, taken)

    files: dict[str, int] = {}
    for relative, rows in tables.rows.items():
        department = relative.rsplit("/", 1)[1].removesuffix(".csv")
        _write_csv(out_dir / relative, ("uscc", *DEPARTMENT_COLUMNS[department]), rows)
        files[relative] = len(rows)
    _write_csv(out_dir / LABELS_FILE, LABELS_COLUMNS, tables.labels)
    files[LABELS_FILE] = len(tables.labels)
    _write_csv(out_dir / ENTERPRISES_FILE, ENTERPRISES_COLUMNS, tables.enterprises)
    files[ENTERPRISES_FILE] = len(tables.enterprises)
    return SynthManifest(
        out_dir=out_dir,
        enterprises=enterprises,
        seed=seed,
        files=files,
        cross_chain=tables.cross_chain,
    )


def unknown_uscc(seed: int, existing: set[str]) -> str:
    """A valid, in-network USCC absent from ``existing``, for "nobody knows it" demos.

    It is registered in a chain's province (so routing has a node to ask) and drawn
    from its own seed-derived stream so it does not depend on how many enterprises
    were generated.
    """
    rng = random.Random(f"creditshare.synth.unknown_uscc:{seed}")
    while True:
        chain = rng.choice(_CHAINS)
        code = make_uscc("9", "1", _pick_division(rng, chain).code, _org_body(rng, "91"))
        if code.code not in existing:
            return code.code
