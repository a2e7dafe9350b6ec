"""A node's snapshot cubes: built when an import commits, kept per snapshot, found by date,
rebuilt for the latest snapshot when missing or built under another catalogue."""

from __future__ import annotations

import csv
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import delete, select, update
from sqlalchemy.engine import Engine

from creditshare.crypto import VerifyKey
from creditshare.errors import StaleRecordError
from creditshare.ledger import LogSigner
from creditshare.node import NodeSettings, import_into_node
from creditshare.node._cubes import CubeStore, _add, in_force_until
from creditshare.node._records import BATCHES, RECORDS
from creditshare.node._stats_tables import CUBES
from creditshare.node._storage import make_engine
from creditshare.statistics import Catalogue, CubeBuilder

from .._authority import authority

NOW = datetime(2026, 12, 1, 2, 0, tzinfo=UTC)


def _settings(tmp_path: Path) -> NodeSettings:
    return NodeSettings(
        node_id="yrd-tax",
        department="tax",
        chain="yrd",
        listen="127.0.0.1:0",
        database_url=f"sqlite:///{tmp_path / 'node.db'}",
        log_public_key=VerifyKey.from_cryptography(LogSigner.generate().public_key).to_text(),
        allow_insecure=True,
        credential_ca=authority().ca_cert,
    )


def _first_rows(source: Path, target: Path, rows: int) -> Path:
    """The first ``rows`` records of ``source`` (a smaller snapshot of the same records)."""
    with source.open(encoding="utf-8", newline="") as handle:
        lines = handle.read().splitlines(keepends=True)
    target.write_text("".join(lines[: rows + 1]), encoding="utf-8")
    return target


def _rows(path: Path) -> int:
    with path.open(encoding="utf-8", newline="") as handle:
        return sum(1 for _ in csv.DictReader(handle))


def _store(settings: NodeSettings, engine: Engine) -> CubeStore:
    department = settings.department_schema
    return CubeStore(engine, department, Catalogue.of(department), lambda: NOW)


def _date(engine: Engine, batch: int, when: str) -> None:
    with engine.begin() as conn:
        conn.execute(
            update(BATCHES)
            .where(BATCHES.c.id == batch)
            .values(imported_at=datetime.fromisoformat(when).replace(tzinfo=UTC))
        )


@pytest.fixture
def imported(tmp_path: Path, data_dir: Path) -> tuple[NodeSettings, Engine, int, int]:
    """Two snapshots: all of the file on 1 November, its first 40 records on 15 November."""
    settings = _settings(tmp_path)
    full = data_dir / "yrd" / "tax.csv"
    first = import_into_node(settings, [full])
    second = import_into_node(settings, [_first_rows(full, tmp_path / "tax-40.csv", 40)])
    engine = make_engine(settings.database_url)
    _date(engine, first.batch_id, "2026-11-01T09:00:00")
    _date(engine, second.batch_id, "2026-11-15T23:59:59")
    return settings, engine, _rows(full), 40


def test_every_import_keeps_its_snapshots_cube(
    imported: tuple[NodeSettings, Engine, int, int],
) -> None:
    settings, engine, _, _ = imported
    digest = Catalogue.of(settings.department_schema).digest
    with engine.connect() as conn:
        rows = conn.execute(select(CUBES.c.batch_id, CUBES.c.catalogue_digest)).all()
    assert sorted(rows) == [(1, digest), (2, digest)]


def test_a_date_finds_the_snapshot_in_force_at_the_end_of_that_day(
    imported: tuple[NodeSettings, Engine, int, int],
) -> None:
    settings, engine, full, small = imported
    store = _store(settings, engine)
    dates = ["2026-10-31", "2026-11-01", "2026-11-14", "2026-11-15", "2026-11-30"]
    assert store.batches_in_force(dates) == [None, 1, 1, 2, 2]
    cubes = store.cubes(dates)
    assert cubes[0] is None
    assert [c.records if c else None for c in cubes[1:]] == [full, full, small, small]
    assert [c.records if c else None for c in store.cubes([])] == [small]  # the latest
    assert in_force_until("2026-11-15") == datetime(2026, 11, 16, tzinfo=UTC)


def test_the_latest_cube_is_built_when_missing_or_built_under_another_catalogue(
    imported: tuple[NodeSettings, Engine, int, int],
) -> None:
    settings, engine, _, small = imported
    store = _store(settings, engine)
    with engine.begin() as conn:
        conn.execute(delete(CUBES).where(CUBES.c.batch_id == 2))
        conn.execute(update(CUBES).where(CUBES.c.batch_id == 1).values(catalogue_digest="0" * 64))
    latest, earlier = store.cubes(["2026-11-20", "2026-11-02"])
    assert latest is not None and latest.records == small
    # The earlier snapshot's records are gone: its cube of another catalogue is not used.
    assert earlier is None
    with engine.begin() as conn:
        conn.execute(update(CUBES).where(CUBES.c.batch_id == 2).values(catalogue_digest="0" * 64))
    assert [c.records if c else None for c in store.cubes([])] == [small]
    with engine.connect() as conn:
        digest = conn.execute(select(CUBES.c.catalogue_digest).where(CUBES.c.batch_id == 2))
        assert digest.scalar() == Catalogue.of(settings.department_schema).digest


def test_no_snapshot_no_cube(tmp_path: Path) -> None:
    settings = _settings(tmp_path)
    engine = make_engine(settings.database_url)
    store = _store(settings, engine)
    assert store.build_latest() is None
    assert store.cubes([]) == [None]
    assert store.cubes(["2026-11-30"]) == [None]


@pytest.mark.parametrize(
    ("column", "value", "named"),
    [
        ("annual_tax_paid", "not a number", "annual_tax_paid"),  # a band's column
        ("industry", "no such level", "industry"),  # a dimension's column
    ],
)
def test_a_stale_record_fails_the_lazy_build_with_stale_record_error(
    imported: tuple[NodeSettings, Engine, int, int], column: str, value: str, named: str
) -> None:
    """A record the catalogue cannot read (imported under an older schema) fails the
    build with StaleRecordError (FAILED_PRECONDITION on the wire) naming the column,
    never its value, and no cube is kept."""
    settings, engine, _, _ = imported
    with engine.begin() as conn:
        conn.execute(delete(CUBES))
        uscc, data = conn.execute(select(RECORDS.c.uscc, RECORDS.c.data).limit(1)).one()
        stale = {**dict(data), column: value}
        conn.execute(update(RECORDS).where(RECORDS.c.uscc == uscc).values(data=stale))
    with pytest.raises(StaleRecordError) as failed:
        _store(settings, engine).cubes(())
    assert named in str(failed.value) and value not in str(failed.value)
    assert "re-imported" in str(failed.value)
    with engine.connect() as conn:
        assert conn.execute(select(CUBES.c.batch_id)).first() is None


def test_a_summed_column_missing_from_a_record_is_a_stale_record(
    imported: tuple[NodeSettings, Engine, int, int],
) -> None:
    """A sum over a column some record lacks fails as a stale record (not a KeyError,
    which the node would answer as INTERNAL)."""
    settings, engine, _, _ = imported
    department = settings.department_schema
    store = _store(settings, engine)
    with engine.begin() as conn:
        conn.execute(delete(CUBES))
        uscc, data = conn.execute(select(RECORDS.c.uscc, RECORDS.c.data).limit(1)).one()
    builder = CubeBuilder(Catalogue.of(department), department)
    record = {k: v for k, v in dict(data).items() if k != "annual_tax_paid"}
    with pytest.raises(StaleRecordError, match="annual_tax_paid"):
        _add(builder, uscc, record)
    assert store.build_latest() is not None  # the stored records themselves are fine
