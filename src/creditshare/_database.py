"""The one way creditshare opens a database engine (coordinator, nodes, tools, tests).

Two settings matter for every engine, whoever builds it:

* ``hide_parameters``: SQLAlchemy puts a failed statement's bound parameters into the
  exception's text, and an unexpected error is logged with its traceback. Parameters
  hold consent signatures, USCCs and API-key hashes, so they are never rendered: a log
  line shows the statement and "[SQL parameters hidden ...]" instead.
* SQLite's busy timeout: writers wait for the database lock (30 s here rather than
  pysqlite's 5 s), so concurrent writers on a busy machine queue instead of failing
  with "database is locked".
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import create_engine
from sqlalchemy.engine import Engine

__all__ = ["SQLITE_BUSY_TIMEOUT_SECONDS", "open_engine"]

SQLITE_BUSY_TIMEOUT_SECONDS = 30


def open_engine(url: str, **options: Any) -> Engine:
    """An engine on ``url`` with the settings above (``options`` go to create_engine)."""
    connect_args: dict[str, Any] = {}
    if url.startswith("sqlite"):
        connect_args = {"check_same_thread": False, "timeout": SQLITE_BUSY_TIMEOUT_SECONDS}
    return create_engine(
        url, connect_args=connect_args, pool_pre_ping=True, hide_parameters=True, **options
    )
