"""Database schemas, versioned with Alembic: one migration history per service.

The coordinator's database (participants, consents, models, training jobs, the
ledger) and each node's database (records, model shards, trusted head, access log)
evolve separately, so each has its own history under ``migrations/<service>/`` and
its own version table (``creditshare_<service>_version``): the two can even share a
database without stepping on each other.

``upgrade`` is what ``creditshare db upgrade`` runs, and what every service runs when
it opens its database, so the embedded SQLite default needs no separate step. It is
safe to run from several processes at once (replicas starting together): the whole
upgrade is one transaction that first takes a database-wide lock (an advisory lock
on PostgreSQL, ``BEGIN IMMEDIATE`` on SQLite) and only then reads the current
revision. A database created before migrations existed (tables present, no version
table) is adopted at the first revision and upgraded from there.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from contextlib import contextmanager
from functools import cache
from pathlib import Path
from typing import Any, Literal

from alembic.config import Config
from alembic.runtime.environment import EnvironmentContext
from alembic.script import ScriptDirectory
from sqlalchemy import inspect, text
from sqlalchemy.engine import Connection, Engine

from creditshare.errors import ConfigurationError

__all__ = ["SERVICES", "Service", "current", "head", "upgrade", "version_table"]

Service = Literal["coordinator", "node"]
SERVICES: tuple[Service, ...] = ("coordinator", "node")

_ROOT = Path(__file__).resolve().parent
#: A table the first revision creates: present without a version table means a
#: database made by ``create_all`` before migrations existed.
_FIRST_TABLE: dict[str, str] = {"coordinator": "participant", "node": "enterprise_record"}


def _check(service: str) -> None:
    if service not in SERVICES:
        raise ConfigurationError(f"no migrations for {service!r}: choose one of {SERVICES}")


def version_table(service: str) -> str:
    return f"creditshare_{service}_version"


@cache
def _config(service: str) -> Config:
    config = Config()
    config.set_main_option("script_location", str(_ROOT / service))
    return config


@cache
def _script(service: str) -> ScriptDirectory:
    return ScriptDirectory.from_config(_config(service))


def head(service: str) -> str:
    """The newest revision of ``service``'s schema."""
    _check(service)
    revision = _script(service).get_current_head()
    assert revision is not None  # every history has at least the initial revision
    return revision


def _lock_key(service: str) -> int:
    digest = hashlib.sha256(f"creditshare.migrations.{service}".encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


@contextmanager
def _locked(engine: Engine, service: str) -> Iterator[Connection]:
    """A connection inside one transaction that holds the database-wide migration lock."""
    with engine.connect() as conn:
        if engine.dialect.name == "sqlite":
            # pysqlite would run DDL outside any transaction; take the write lock first.
            conn.exec_driver_sql("BEGIN IMMEDIATE")
        else:
            conn.begin()
            if engine.dialect.name == "postgresql":
                conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _lock_key(service)})
        try:
            yield conn
        except BaseException:
            conn.rollback()
            raise
        conn.commit()


def _run(conn: Connection, service: str, revision: str, action: str) -> None:
    script = _script(service)

    def steps(rev: Any, _context: Any) -> Any:
        if action == "stamp":
            return script._stamp_revs(revision, rev)
        return script._upgrade_revs(revision, rev)

    with EnvironmentContext(_config(service), script, fn=steps, destination_rev=revision) as env:
        env.configure(
            connection=conn,
            version_table=version_table(service),
            transactional_ddl=True,
        )
        with env.begin_transaction():
            env.run_migrations()


def _current(conn: Connection, service: str) -> str | None:
    tables = set(inspect(conn).get_table_names())
    if version_table(service) not in tables:
        return None
    row = conn.execute(text(f"SELECT version_num FROM {version_table(service)}")).first()  # noqa: S608 - fixed name
    return None if row is None else str(row[0])


def current(engine: Engine, service: str) -> str | None:
    """The revision ``service``'s database is at (None: never migrated)."""
    _check(service)
    with engine.connect() as conn:
        return _current(conn, service)


def upgrade(engine: Engine, service: str, revision: str = "head") -> str:
    """Bring the database to ``revision`` (default: the newest); return where it is now."""
    _check(service)
    with _locked(engine, service) as conn:
        if _current(conn, service) is None:
            tables = set(inspect(conn).get_table_names())
            if _FIRST_TABLE[service] in tables:
                first = _script(service).get_base()
                assert first is not None
                _run(conn, service, first, "stamp")
        _run(conn, service, revision, "upgrade")
        now = _current(conn, service)
    if now is None:
        raise ConfigurationError(f"migrating the {service} database left no revision recorded")
    return now
