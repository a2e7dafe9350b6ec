"""Synthetic data: determinism, file contract, identity consistency, cross-chain records."""

from __future__ import annotations

import csv
from collections import Counter
from pathlib import Path

import pytest

from creditshare.identity import Chain, Uscc, is_valid_uscc
from creditshare.synth import (
    DEPARTMENT_COLUMNS,
    DEPARTMENTS,
    ENTERPRISES_FILE,
    LABELS_FILE,
    SynthManifest,
    department_file,
    generate,
    unknown_uscc,
)

N = 300
SEED = 20240611

EXPECTED_HEADERS = {
    "tax": "uscc,annual_tax_paid,tax_credit_grade,months_in_arrears,industry",
    "market": (
        "uscc,registered_capital,years_operating,administrative_penalties,abnormal_operations,"
        "industry"
    ),
    "social": "uscc,insured_headcount,months_in_arrears",
    "court": "uscc,judgments_as_defendant,dishonest_debtor",
    "utility": "uscc,electricity_kwh_trend,late_payments",
}


@pytest.fixture(scope="module")
def dataset(tmp_path_factory: pytest.TempPathFactory) -> SynthManifest:
    return generate(N, SEED, tmp_path_factory.mktemp("synth"))


def _read(path: Path) -> list[dict[str, str]]:
    with path.open(encoding="utf-8", newline="") as handle:
        return list(csv.DictReader(handle))


def _all_files(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*.csv"))}


def test_same_seed_is_byte_identical(tmp_path: Path, dataset: SynthManifest) -> None:
    again = generate(N, SEED, tmp_path / "again")
    assert _all_files(dataset.out_dir) == _all_files(again.out_dir)
    assert again.files == dataset.files
    assert again.cross_chain == dataset.cross_chain


def test_different_seed_differs(tmp_path: Path, dataset: SynthManifest) -> None:
    other = generate(N, SEED + 1, tmp_path / "other")
    assert _all_files(other.out_dir) != _all_files(dataset.out_dir)


def test_file_set_and_manifest(dataset: SynthManifest) -> None:
    expected = {department_file(c, d) for c in Chain for d in DEPARTMENTS}
    expected |= {ENTERPRISES_FILE, LABELS_FILE}
    assert set(_all_files(dataset.out_dir)) == expected
    assert set(dataset.files) == expected
    for relative, count in dataset.files.items():
        assert len(_read(dataset.out_dir / relative)) == count
    assert dataset.enterprises == N
    assert dataset.seed == SEED


def test_headers_exactly_as_specified(dataset: SynthManifest) -> None:
    assert tuple(DEPARTMENT_COLUMNS) == DEPARTMENTS
    for chain in Chain:
        for department in DEPARTMENTS:
            raw = (dataset.out_dir / department_file(chain, department)).read_bytes()
            assert raw.split(b"\n", 1)[0].decode() == EXPECTED_HEADERS[department]
            assert b"\r" not in raw
            assert raw.endswith(b"\n")
            assert EXPECTED_HEADERS[department] == ",".join(
                ("uscc", *DEPARTMENT_COLUMNS[department])
            )
    first = (dataset.out_dir / ENTERPRISES_FILE).read_text(encoding="utf-8").split("\n", 1)[0]
    assert first == "uscc,name,division,home_chain,record_chains"
    labels = (dataset.out_dir / LABELS_FILE).read_text(encoding="utf-8").split("\n", 1)[0]
    assert labels == "uscc,default"


def test_enterprises_are_valid_and_home_chain_matches(dataset: SynthManifest) -> None:
    rows = _read(dataset.out_dir / ENTERPRISES_FILE)
    assert len(rows) == N
    usccs = [row["uscc"] for row in rows]
    assert len(set(usccs)) == N
    for row in rows:
        uscc = Uscc.parse(row["uscc"])
        assert uscc.code == row["uscc"]
        assert uscc.division_code == row["division"]
        assert uscc.chain.value == row["home_chain"]
        assert row["name"]
        chains = row["record_chains"].split(";")
        assert chains == sorted(chains)
        assert row["home_chain"] in chains
    homes = Counter(row["home_chain"] for row in rows)
    for chain, share in (("yrd", 0.45), ("prd", 0.30), ("bth", 0.25)):
        assert abs(homes[chain] / N - share) < 0.08


def test_department_rows_are_known_valid_and_unique(dataset: SynthManifest) -> None:
    known = {row["uscc"] for row in _read(dataset.out_dir / ENTERPRISES_FILE)}
    for chain in Chain:
        for department in DEPARTMENTS:
            rows = _read(dataset.out_dir / department_file(chain, department))
            usccs = [row["uscc"] for row in rows]
            assert len(usccs) == len(set(usccs)), f"duplicate uscc in {chain}/{department}"
            assert set(usccs) <= known
            assert all(is_valid_uscc(u) for u in usccs)


def _chains_holding(root: Path) -> dict[str, set[str]]:
    holding: dict[str, set[str]] = {}
    for chain in Chain:
        for department in DEPARTMENTS:
            for row in _read(root / department_file(chain, department)):
                holding.setdefault(row["uscc"], set()).add(chain.value)
    return holding


def test_record_chains_and_cross_chain_enterprises(dataset: SynthManifest) -> None:
    holding = _chains_holding(dataset.out_dir)
    rows = _read(dataset.out_dir / ENTERPRISES_FILE)
    for row in rows:
        assert row["record_chains"].split(";") == sorted(holding[row["uscc"]])
    multi = [row["uscc"] for row in rows if len(holding[row["uscc"]]) > 1]
    assert multi == dataset.cross_chain
    assert 0.06 * N <= len(multi) <= 0.20 * N


def test_coverage_rates_in_home_chain(dataset: SynthManifest) -> None:
    rows = _read(dataset.out_dir / ENTERPRISES_FILE)
    home = {row["uscc"]: row["home_chain"] for row in rows}

    def home_share(department: str) -> float:
        present = 0
        for chain in Chain:
            for row in _read(dataset.out_dir / department_file(chain, department)):
                present += home[row["uscc"]] == chain.value
        return present / N

    assert home_share("market") == 1.0
    assert home_share("tax") >= 0.93
    assert 0.75 <= home_share("social") <= 0.95
    assert 0.70 <= home_share("utility") <= 0.90
    assert 0.10 <= home_share("court") <= 0.32


def test_value_ranges(dataset: SynthManifest) -> None:
    root = dataset.out_dir
    for chain in Chain:
        for row in _read(root / department_file(chain, "tax")):
            assert float(row["annual_tax_paid"]) >= 0
            assert len(row["annual_tax_paid"].split(".")[1]) == 2
            assert row["tax_credit_grade"] in {"A", "B", "M", "C", "D"}
            assert 0 <= int(row["months_in_arrears"]) <= 36
        for row in _read(root / department_file(chain, "market")):
            assert float(row["registered_capital"]) >= 0
            assert 0.0 <= float(row["years_operating"]) <= 40.0
            assert int(row["administrative_penalties"]) >= 0
            assert row["abnormal_operations"] in {"0", "1"}
        for row in _read(root / department_file(chain, "social")):
            assert int(row["insured_headcount"]) >= 0
            assert int(row["months_in_arrears"]) >= 0
        for row in _read(root / department_file(chain, "court")):
            assert int(row["judgments_as_defendant"]) >= 1
            assert row["dishonest_debtor"] in {"0", "1"}
        for row in _read(root / department_file(chain, "utility")):
            assert -100.0 <= float(row["electricity_kwh_trend"]) <= 500.0
            assert len(row["electricity_kwh_trend"].split(".")[1]) == 1
            assert 0 <= int(row["late_payments"]) <= 12


def test_label_rate_and_signal(dataset: SynthManifest) -> None:
    labels = {row["uscc"]: row["default"] for row in _read(dataset.out_dir / LABELS_FILE)}
    assert len(labels) == N
    assert set(labels.values()) <= {"0", "1"}
    rate = sum(v == "1" for v in labels.values()) / N
    assert 0.05 <= rate <= 0.22
    # Features must carry signal: bad tax grades default more often than good ones.
    grades: dict[str, str] = {}
    for chain in Chain:
        for row in _read(dataset.out_dir / department_file(chain, "tax")):
            grades.setdefault(row["uscc"], row["tax_credit_grade"])

    def default_rate(accepted: set[str]) -> float:
        group = [u for u, g in grades.items() if g in accepted]
        return sum(labels[u] == "1" for u in group) / len(group)

    assert default_rate({"C", "D"}) > 2 * default_rate({"A", "B"})


def test_zero_and_negative_counts(tmp_path: Path) -> None:
    empty = generate(0, SEED, tmp_path)
    assert all(count == 0 for count in empty.files.values())
    assert empty.cross_chain == []
    with pytest.raises(ValueError, match="enterprises"):
        generate(-1, SEED, tmp_path)


def test_unknown_uscc(dataset: SynthManifest) -> None:
    existing = {row["uscc"] for row in _read(dataset.out_dir / ENTERPRISES_FILE)}
    code = unknown_uscc(SEED, existing)
    assert code not in existing
    assert is_valid_uscc(code)
    assert Uscc.parse(code).chain in set(Chain)
    assert unknown_uscc(SEED, existing) == code
    assert unknown_uscc(SEED, existing | {code}) != code
