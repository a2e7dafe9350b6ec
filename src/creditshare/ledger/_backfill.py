"""Fill ``ledger_node`` for leaves stored before interior nodes were (migration c0011).

One streamed pass in index order: leaf hashes are read a page at a time (keyset
pagination, never OFFSET) and fed to a ``Frontier``, whose merges are exactly the
perfect subtrees the leaves complete; those are inserted a page at a time. Memory
is one page plus the frontier's O(log n) hashes whatever the log's size. It uses
plain table names rather than the models, so the migration keeps working when the
models move on. The bench builds its large ledgers with this same code.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from sqlalchemy import Connection, column, func, insert, select, table
from sqlalchemy.types import BigInteger, LargeBinary, SmallInteger

from creditshare.ledger._merkle import Frontier

__all__ = ["backfill_nodes", "leaf_count"]

log = logging.getLogger("creditshare.ledger")

_LEAF = table("ledger_leaf", column("idx", BigInteger), column("leaf_hash", LargeBinary))
_NODE = table(
    "ledger_node",
    column("level", SmallInteger),
    column("idx", BigInteger),
    column("hash", LargeBinary),
)


def backfill_nodes(
    conn: Connection, page: int = 20_000, progress: Callable[[int], None] | None = None
) -> int:
    """Insert the interior node of every perfect subtree the stored leaves complete,
    for the leaves from 0 up to the first missing index (a log with a gap is left for
    the start-up check and ``creditshare ledger verify`` to report). Runs on the
    caller's connection and transaction; the table must be empty. Returns the number
    of leaves covered."""
    frontier = Frontier()
    nodes: list[tuple[int, int, bytes]] = []
    while True:
        query = (
            select(_LEAF.c.idx, _LEAF.c.leaf_hash)
            .where(_LEAF.c.idx >= frontier.size)
            .order_by(_LEAF.c.idx)
            .limit(page)
        )
        rows = conn.execute(query).all()
        for idx, value in rows:
            if idx != frontier.size:
                log.warning("ledger entry %d is missing: interior nodes stop there", frontier.size)
                rows = []
                break
            frontier.append(bytes(value), nodes)
        if nodes:
            conn.execute(
                insert(_NODE), [{"level": lv, "idx": ix, "hash": h} for lv, ix, h in nodes]
            )
            nodes = []
        if progress is not None:
            progress(frontier.size)
        if len(rows) < page:
            return frontier.size


def leaf_count(conn: Connection) -> int:
    """Rows in ``ledger_leaf`` (for progress messages)."""
    return int(conn.execute(select(func.count()).select_from(_LEAF)).scalar() or 0)
