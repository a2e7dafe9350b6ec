"""The one way creditshare opens a database engine (coordinator, nodes, tools, tests).

Two settings matter for every engine, whoever builds it:

* ``hide_parameters``: SQLAlchemy puts a failed statement's bound parameters into the
  exception's text, and an unexpected error is logged with its traceback. Parameters
  hold consent signatures, USCCs and API-key hashes, so they are never rendered: a log
  line shows the statement and "[SQL parameters hidden ...]" instead.
* SQLite's busy timeout: writers wait for the database lock (30 s here rather than
  pysqlite's 5 s), so concurrent writers on a busy machine queue instead of failing
  with "database is locked".

Read-modify-write under ``SELECT ... FOR UPDATE`` needs one more thing on SQLite, which
ignores ``FOR UPDATE`` and whose driver opens transactions lazily and DEFERRED: two
sessions could both read a row before either writes (a compare-and-set that lets both
through). ``write_session`` takes SQLite's write lock before the first read.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from sqlalchemy import create_engine
from sqlalchemy.engine import Engine
from sqlmodel import Session

__all__ = ["SQLITE_BUSY_TIMEOUT_SECONDS", "open_engine", "write_session"]

SQLITE_BUSY_TIMEOUT_SECONDS = 30


def open_engine(url: str, **options: Any) -> Engine:
    """An engine on ``url`` with the settings above (``options`` go to create_engine)."""
    connect_args: dict[str, Any] = {}
    sqlite = url.startswith("sqlite")
    if sqlite:
        connect_args = {"check_same_thread": False, "timeout": SQLITE_BUSY_TIMEOUT_SECONDS}
    # A server's connection can die under the pool (a restart, an idle timeout): ping it
    # at checkout. A SQLite file cannot, and a ping there is one more statement on every
    # session of every query.
    return create_engine(
        url, connect_args=connect_args, pool_pre_ping=not sqlite, hide_parameters=True, **options
    )


@contextmanager
def write_session(engine: Engine) -> Iterator[Session]:
    """A session whose transaction holds the database's write lock from its first read
    on SQLite (``BEGIN IMMEDIATE``); on PostgreSQL the caller's ``FOR UPDATE`` locks the
    rows it reads. Concurrent read-modify-write sessions on one row thus run one after
    the other on both: the second reads what the first committed."""
    with Session(engine) as session:
        if engine.dialect.name == "sqlite":
            conn = session.connection()
            if conn.connection.driver_connection.in_transaction:  # type: ignore[union-attr]
                conn.exec_driver_sql("ROLLBACK")  # an empty transaction some hook opened
            conn.exec_driver_sql("BEGIN IMMEDIATE")
        yield session
