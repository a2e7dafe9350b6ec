"""The public default_credit split becomes node and bureau files that import cleanly."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest

from creditshare.datasets import prepare_default_credit, uscc_for
from creditshare.departments import load_schema
from creditshare.identity import Uscc
from creditshare.node import RecordStore, import_files, make_engine

SHARED = Path(__file__).resolve().parents[2] / "data" / "default_credit"


def test_ids_map_to_distinct_valid_usccs() -> None:
    codes = [uscc_for(i) for i in (0, 1, 2, 30_000, 31**8 - 1)]
    assert len(set(codes)) == len(codes)
    assert all(str(Uscc.parse(c)) == c for c in codes)
    with pytest.raises(ValueError):
        uscc_for(31**8)


def test_prepare_and_import_the_host_file(tmp_path: Path) -> None:
    files = prepare_default_credit(SHARED, tmp_path / "out")
    assert files.rows == 30_000
    store = RecordStore(make_engine(f"sqlite:///{tmp_path / 'node.db'}"))
    summary = import_files(
        store, load_schema(SHARED / "schemas" / "card_history.toml"), [files.node_file]
    )
    assert summary.rows == store.count() == 30_000
    with files.labels_file.open() as handle:
        labels = {r["uscc"]: r["default"] for r in csv.DictReader(handle)}
    assert len(labels) == 30_000 and set(labels.values()) == {"0", "1"}
    assert sum(v == "1" for v in labels.values()) == 6636  # as SOURCE.md counts
    first = next(iter(labels))
    assert store.get(first) is not None


def test_the_bureau_features_become_a_node_file(tmp_path: Path) -> None:
    files = prepare_default_credit(SHARED, tmp_path / "out")
    with files.bureau_node_file.open() as handle:
        rows = list(csv.reader(handle))
    with (SHARED / "default_credit_hetero_guest.csv").open() as handle:
        source = list(csv.reader(handle))
    assert rows[0] == ["uscc", *(f"x{j}" for j in range(13))]
    assert len(rows) == len(source) == 30_001
    # Same enterprise, same values, in the source's order; the label is not among them.
    assert rows[1] == [uscc_for(int(source[1][0])), *source[1][2:]]
    assert rows[-1] == [uscc_for(int(source[-1][0])), *source[-1][2:]]
