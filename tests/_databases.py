"""Databases for tests: SQLite files and throw-away PostgreSQL databases.

PostgreSQL comes from ``CREDITSHARE_TEST_POSTGRES_URL`` (a superuser URL; ``.ci/run``
starts a server with ``scripts/postgres.sh`` and sets it). Without it, PostgreSQL
cases are skipped on a developer's machine but fail in CI (``CI`` set), so a CI run
can never pass without having exercised PostgreSQL.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import Engine, make_url

from creditshare import migrations
from creditshare._database import open_engine

POSTGRES_ENV = "CREDITSHARE_TEST_POSTGRES_URL"


def postgres_admin_url() -> str:
    url = os.environ.get(POSTGRES_ENV)
    if not url:
        if os.environ.get("CI"):
            pytest.fail(f"{POSTGRES_ENV} is not set: CI must run the PostgreSQL tests")
        pytest.skip(f"{POSTGRES_ENV} is not set (run scripts/postgres.sh start)")
    return url


@contextmanager
def fresh_postgres_database() -> Iterator[str]:
    """A new, empty database on the test server; dropped afterwards."""
    admin_url = postgres_admin_url()
    name = f"cs_test_{uuid.uuid4().hex[:16]}"
    admin = create_engine(admin_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield make_url(admin_url).set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def migrated_engine(url: str, service: migrations.Service = "coordinator") -> Engine:
    """An engine on ``url`` with ``service``'s schema at the newest revision."""
    engine = open_engine(url)
    migrations.upgrade(engine, service)
    return engine
