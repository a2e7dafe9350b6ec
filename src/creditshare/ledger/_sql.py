"""The ledger in a SQL database (SQLite for the demo, PostgreSQL in production).

Appends from several coordinator processes can race, so each append takes the
database's write lock *before* it reads the current size: ``BEGIN IMMEDIATE`` on
SQLite, a transaction-scoped advisory lock on PostgreSQL. Everything after that
(read new rows, insert the leaf, sign and insert the head) happens inside the
same transaction, so a crash or a failed signature leaves nothing behind.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import Any

from sqlalchemy import (
    BigInteger,
    Column,
    Connection,
    LargeBinary,
    Table,
    func,
    insert,
    inspect,
    select,
    text,
)
from sqlalchemy.engine import Engine
from sqlmodel import Field, SQLModel

from creditshare.errors import ConfigurationError, InvalidInputError, NotFoundError
from creditshare.ledger._errors import integrity_error
from creditshare.ledger._merkle import leaf_hash
from creditshare.ledger._storage import (
    BuildHead,
    StoredLeaf,
    check_append_input,
    check_new_head,
    check_range,
)
from creditshare.ledger._tree_head import SignedTreeHead

__all__ = ["LedgerHeadRow", "LedgerLeafRow", "SqlLedgerStorage"]

# pg_advisory_xact_lock key: the first 8 bytes of SHA-256("creditshare.ledger.append"),
# as a signed 64-bit integer. Any constant works as long as every process uses the same.
_PG_LOCK_KEY = -0x5CD1_AE6B_93F5_307C


class LedgerLeafRow(SQLModel, table=True):
    """One log entry. ``idx`` is assigned under the append lock, never by the database."""

    __tablename__ = "ledger_leaf"

    idx: int = Field(sa_column=Column(BigInteger, primary_key=True, autoincrement=False))
    data: bytes = Field(sa_column=Column(LargeBinary, nullable=False))
    leaf_hash: bytes = Field(sa_column=Column(LargeBinary(32), nullable=False))
    subject: str = Field(index=True)


class LedgerHeadRow(SQLModel, table=True):
    """One signed tree head, stored in the same transaction as the leaf that made it."""

    __tablename__ = "ledger_head"

    size: int = Field(sa_column=Column(BigInteger, primary_key=True, autoincrement=False))
    root: bytes = Field(sa_column=Column(LargeBinary(32), nullable=False))
    timestamp_ms: int = Field(sa_column=Column(BigInteger, nullable=False))
    signature: bytes = Field(sa_column=Column(LargeBinary(64), nullable=False))
    key_id: str = Field(max_length=16)


_LEAF: Table = SQLModel.metadata.tables["ledger_leaf"]
_HEAD: Table = SQLModel.metadata.tables["ledger_head"]


def _to_leaf(row: Sequence[Any]) -> StoredLeaf:
    return StoredLeaf(int(row[0]), bytes(row[1]), bytes(row[2]), str(row[3]))


def _to_head(row: Sequence[Any]) -> SignedTreeHead:
    return SignedTreeHead(int(row[0]), bytes(row[1]), int(row[2]), bytes(row[3]), str(row[4]))


_LEAF_COLUMNS = (_LEAF.c.idx, _LEAF.c.data, _LEAF.c.leaf_hash, _LEAF.c.subject)
_HEAD_COLUMNS = (
    _HEAD.c.size,
    _HEAD.c.root,
    _HEAD.c.timestamp_ms,
    _HEAD.c.signature,
    _HEAD.c.key_id,
)


def _check_tables(engine: Engine) -> None:
    """The schema is the coordinator's migrations' business; say so if it is missing."""
    missing = {_LEAF.name, _HEAD.name} - set(inspect(engine).get_table_names())
    if missing:
        raise ConfigurationError(
            f"the ledger tables {sorted(missing)} are missing from this database: "
            "run `creditshare db upgrade coordinator`"
        )


class SqlLedgerStorage:
    """A ``LedgerStorage`` over a SQLAlchemy engine (SQLite or PostgreSQL).

    Its two tables belong to the coordinator's schema (``creditshare.migrations``). Keeps one
    in-process cache, the leaf hashes already committed; on every use it is checked
    against the database (the row at the cached size - 1 must still hold the cached
    hash, else ``LedgerIntegrityError``) and extended with rows other processes
    appended, so it cannot go stale unnoticed. Rows below the
    cached size are immutable by contract; tampering with them is what
    ``verify_log`` detects, reading the rows themselves.

    On SQLite this class issues ``BEGIN IMMEDIATE`` and ``COMMIT`` itself, so it
    works with pysqlite's default transaction handling and with engines that
    begin their own transactions (SQLAlchemy's documented ``isolation_level=None``
    recipe). Concurrent appenders wait for the lock up to the engine's SQLite
    busy timeout (pysqlite's default is 5 seconds).
    """

    def __init__(self, engine: Engine) -> None:
        if engine.dialect.name not in ("sqlite", "postgresql"):
            raise ConfigurationError(
                f"the ledger supports SQLite and PostgreSQL, not {engine.dialect.name}"
            )
        self._engine = engine
        self._lock = threading.Lock()
        self._hashes: list[bytes] = []
        _check_tables(engine)

    def _begin_append(self, conn: Connection) -> None:
        """Take the database-wide append lock, first thing in the transaction."""
        if self._engine.dialect.name == "postgresql":
            # Under REPEATABLE READ the snapshot would be taken by the lock statement
            # itself, before the wait, hiding the rows of the appender we waited for.
            conn.execution_options(isolation_level="READ COMMITTED")
        conn.begin()
        if self._engine.dialect.name == "sqlite":
            # pysqlite opens transactions lazily and DEFERRED, which would let two
            # processes read the same size and then race to write. An engine that
            # emits its own BEGIN in a "begin" hook has opened an empty deferred
            # transaction by now: end it, nothing has happened in it yet.
            if conn.connection.driver_connection.in_transaction:  # type: ignore[union-attr]
                conn.exec_driver_sql("ROLLBACK")
            conn.exec_driver_sql("BEGIN IMMEDIATE")
        else:
            conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _PG_LOCK_KEY})

    def _commit(self, conn: Connection) -> None:
        if self._engine.dialect.name == "sqlite":
            # We opened the transaction by hand, so close it by hand: this commits
            # whatever pysqlite's isolation setting is; SQLAlchemy's commit then finds
            # nothing left to do and just resets its own state.
            conn.exec_driver_sql("COMMIT")
        conn.commit()

    def _sync(self, conn: Connection) -> None:
        """Validate the leaf-hash cache and extend it with rows committed since.

        A cache the database no longer agrees with (the row at its last index gone
        or changed) is not silently rebuilt: the hashes it handed out may already be
        signed over, and rebuilding from whatever the database holds now is how a log
        forks. It raises ``LedgerIntegrityError``, and keeps raising (the cache stays),
        until the process restarts and checks the database afresh.
        """
        n = len(self._hashes)
        if n:
            last = conn.execute(select(_LEAF.c.leaf_hash).where(_LEAF.c.idx == n - 1)).scalar()
            if last is None or bytes(last) != self._hashes[-1]:
                what = "is gone from" if last is None else "has another hash in"
                raise integrity_error(
                    f"entry {n - 1}, already read by this process, {what} the database: "
                    "the ledger was changed or replaced underneath the running coordinator"
                )
        rows = conn.execute(
            select(_LEAF.c.idx, _LEAF.c.leaf_hash).where(_LEAF.c.idx >= n).order_by(_LEAF.c.idx)
        )
        for idx, stored in rows:
            if idx != len(self._hashes):
                raise integrity_error(
                    f"entry {len(self._hashes)} is missing "
                    f"(ledger_leaf has no row for index {len(self._hashes)})"
                )
            self._hashes.append(bytes(stored))

    def append(
        self, data: bytes, subject: str, build_head: BuildHead
    ) -> tuple[int, SignedTreeHead]:
        check_append_input(data, subject)
        h = leaf_hash(data)
        with self._lock, self._engine.connect() as conn:
            self._begin_append(conn)
            self._sync(conn)
            index = len(self._hashes)
            self._hashes.append(h)
            try:
                conn.execute(
                    insert(_LEAF).values(idx=index, data=data, leaf_hash=h, subject=subject)
                )
                head = check_new_head(build_head(index + 1, self._hashes), index + 1)
                conn.execute(
                    insert(_HEAD).values(
                        size=head.size,
                        root=head.root,
                        timestamp_ms=head.timestamp_ms,
                        signature=head.signature,
                        key_id=head.key_id,
                    )
                )
                self._commit(conn)
            except BaseException:
                del self._hashes[index:]
                conn.rollback()
                raise
        return index, head

    def size(self) -> int:
        with self._engine.connect() as conn:
            last = conn.execute(select(func.max(_LEAF.c.idx))).scalar()
        return 0 if last is None else int(last) + 1

    def leaf(self, index: int) -> StoredLeaf:
        with self._engine.connect() as conn:
            row = conn.execute(select(*_LEAF_COLUMNS).where(_LEAF.c.idx == index)).first()
        if row is None:
            raise NotFoundError(f"the ledger has no leaf {index}")
        return _to_leaf(row)

    def leaves(self, start: int, end: int) -> list[StoredLeaf]:
        check_range(start, end)
        query = (
            select(*_LEAF_COLUMNS)
            .where(_LEAF.c.idx >= start, _LEAF.c.idx < end)
            .order_by(_LEAF.c.idx)
        )
        with self._engine.connect() as conn:
            return [_to_leaf(row) for row in conn.execute(query)]

    def leaf_hashes(self, size: int) -> list[bytes]:
        with self._lock, self._engine.connect() as conn:
            self._sync(conn)
            if not 0 <= size <= len(self._hashes):
                raise InvalidInputError(f"the ledger has {len(self._hashes)} leaves, not {size}")
            return self._hashes[:size]

    def latest_head(self) -> SignedTreeHead | None:
        query = select(*_HEAD_COLUMNS).order_by(_HEAD.c.size.desc()).limit(1)
        with self._engine.connect() as conn:
            row = conn.execute(query).first()
        return None if row is None else _to_head(row)

    def head(self, size: int) -> SignedTreeHead | None:
        with self._engine.connect() as conn:
            row = conn.execute(select(*_HEAD_COLUMNS).where(_HEAD.c.size == size)).first()
        return None if row is None else _to_head(row)

    def heads(self) -> list[SignedTreeHead]:
        with self._engine.connect() as conn:
            rows = conn.execute(select(*_HEAD_COLUMNS).order_by(_HEAD.c.size)).all()
        return [_to_head(row) for row in rows]

    def leaves_for_subject(self, subject: str) -> list[StoredLeaf]:
        query = select(*_LEAF_COLUMNS).where(_LEAF.c.subject == subject).order_by(_LEAF.c.idx)
        with self._engine.connect() as conn:
            return [_to_leaf(row) for row in conn.execute(query)]
