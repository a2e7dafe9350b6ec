"""The engine of the node's read tools (``node imports|access-log|refusals`` and the
department console) cannot write, on SQLite (also on a WAL database a node is serving
at that moment) and on PostgreSQL: a write through it is refused by the database."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.engine import Engine
from sqlalchemy.exc import DBAPIError

from creditshare import migrations
from creditshare.node import RecordStore, make_engine, make_read_only_engine

from .._databases import fresh_postgres_database

_WRITE = "INSERT INTO write_probe (x) VALUES (1)"


@pytest.fixture(params=["sqlite", "postgresql"])
def node_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A node database at the newest schema, with a small table a write would touch."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'node.db'}"
        yield from _prepared(url)
    else:
        with fresh_postgres_database() as url:
            yield from _prepared(url)


def _prepared(url: str) -> Iterator[str]:
    node = make_engine(url)  # migrates (and on SQLite: WAL)
    with node.begin() as conn:
        conn.execute(text("CREATE TABLE write_probe (x INTEGER)"))
    node.dispose()
    yield url


def _refused(engine: Engine) -> str:
    with pytest.raises(DBAPIError) as refused, engine.begin() as conn:
        conn.execute(text(_WRITE))
    return str(refused.value.orig).lower()


def test_a_write_through_the_read_only_engine_is_refused(node_url: str) -> None:
    reader = make_read_only_engine(node_url)
    try:
        assert migrations.current(reader, "node") == migrations.head("node")
        assert RecordStore(reader).count() == 0
        message = _refused(reader)
        assert "readonly" in message or "read-only" in message, message
        with reader.connect() as conn:  # nothing was written
            assert conn.execute(text("SELECT count(*) FROM write_probe")).scalar() == 0
    finally:
        reader.dispose()


def test_it_reads_a_wal_database_while_the_node_holds_it_open_and_writes(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'node.db'}"
    list(_prepared(url))
    node = make_engine(url, migrate=False)  # a running node: WAL, its connection open
    reader = make_read_only_engine(url)
    try:
        with node.connect() as serving:
            assert serving.execute(text("PRAGMA journal_mode")).scalar() == "wal"
            serving.execute(text("INSERT INTO write_probe (x) VALUES (7)"))
            serving.commit()
            assert (tmp_path / "node.db-shm").exists()
            with reader.connect() as conn:
                seen = conn.execute(text("SELECT x FROM write_probe")).scalars()
                assert list(seen) == [7]
            # A write through the reader is refused even while the node writes too.
            message = _refused(reader)
            assert "readonly" in message, message
            serving.execute(text("INSERT INTO write_probe (x) VALUES (8)"))
            serving.commit()
        with reader.connect() as conn:
            assert conn.execute(text("SELECT count(*) FROM write_probe")).scalar() == 2
    finally:
        reader.dispose()
        node.dispose()
