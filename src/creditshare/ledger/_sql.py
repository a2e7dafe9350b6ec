"""The ledger in a SQL database (SQLite for the demo, PostgreSQL in production).

Appends from several coordinator processes can race, so each append takes the
database's write lock *before* it reads the current size: ``BEGIN IMMEDIATE`` on
SQLite, a transaction-scoped advisory lock on PostgreSQL. Everything after that
(read new rows, insert the leaves and the interior nodes they complete, sign and
insert the head) happens inside the same transaction, so a crash or a failed
signature leaves nothing behind. ``Ledger`` batches concurrent appends into one
such transaction (group commit), so the lock is taken once per batch.

``ledger_node`` holds one hash per complete perfect subtree above the leaves
(``_subtrees``): n - 1 rows for n leaves, so a proof is one indexed read of
O(log n) rows and no process keeps a list of leaf hashes.
"""

from __future__ import annotations

from collections.abc import Collection, Sequence
from typing import Any

from sqlalchemy import (
    BigInteger,
    Column,
    Connection,
    LargeBinary,
    SmallInteger,
    Table,
    and_,
    func,
    insert,
    inspect,
    literal,
    or_,
    select,
    text,
)
from sqlalchemy.engine import Engine
from sqlmodel import Field, SQLModel

from creditshare.errors import (
    ConfigurationError,
    InvalidInputError,
    LedgerIntegrityError,
    NotFoundError,
)
from creditshare.ledger._merkle import leaf_hash
from creditshare.ledger._storage import (
    MAX_LEVEL,
    BuildBatch,
    StoredLeaf,
    check_append_input,
    check_new_head,
    check_range,
    checked_hashes,
)
from creditshare.ledger._subtrees import NodeId
from creditshare.ledger._tree_head import SignedTreeHead

__all__ = ["LedgerHeadRow", "LedgerLeafRow", "LedgerNodeRow", "SqlLedgerStorage"]

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


class LedgerNodeRow(SQLModel, table=True):
    """The hash of one complete perfect subtree of the log (level >= 1), stored in the
    same transaction as the leaf that completed it. Never updated."""

    __tablename__ = "ledger_node"

    level: int = Field(sa_column=Column(SmallInteger, primary_key=True, autoincrement=False))
    idx: int = Field(sa_column=Column(BigInteger, primary_key=True, autoincrement=False))
    hash: bytes = Field(sa_column=Column(LargeBinary(32), nullable=False))


_LEAF: Table = SQLModel.metadata.tables["ledger_leaf"]
_HEAD: Table = SQLModel.metadata.tables["ledger_head"]
_NODE: Table = SQLModel.metadata.tables["ledger_node"]


def _to_leaf(row: Sequence[Any]) -> StoredLeaf:
    index, data, stored_hash = int(row[0]), row[1], row[2]
    # SQLite stores whatever a writer gives a column: a leaf whose data or hash was
    # rewritten as text is tampering to report by its index, not a TypeError.
    for what, value in (("data", data), ("leaf hash", stored_hash)):
        if not isinstance(value, bytes | bytearray | memoryview):
            raise LedgerIntegrityError(
                f"leaf {index}: the stored {what} is {type(value).__name__}, not bytes "
                "(the row was rewritten outside the ledger)"
            )
    return StoredLeaf(index, bytes(data), bytes(stored_hash), str(row[3]))


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
    missing = {_LEAF.name, _HEAD.name, _NODE.name} - set(inspect(engine).get_table_names())
    if missing:
        raise ConfigurationError(
            f"the ledger tables {sorted(missing)} are missing from this database: "
            "run `creditshare db upgrade coordinator`"
        )


def _read_hashes(conn: Connection, start: int, end: int) -> list[bytes]:
    query = (
        select(_LEAF.c.idx, _LEAF.c.leaf_hash)
        .where(_LEAF.c.idx >= start, _LEAF.c.idx < end)
        .order_by(_LEAF.c.idx)
    )
    rows = ((int(i), bytes(h)) for i, h in conn.execute(query))
    return checked_hashes(start, rows, end)


class SqlLedgerStorage:
    """A ``LedgerStorage`` over a SQLAlchemy engine (SQLite or PostgreSQL).

    Its three tables belong to the coordinator's schema (``creditshare.migrations``).
    It keeps nothing in memory between calls: what a running coordinator must trust
    (the right edge of the last head it signed) is ``Ledger``'s, O(log n), and checked
    against the database inside every append.

    On SQLite this class issues ``BEGIN IMMEDIATE`` and ``COMMIT`` itself, so it
    works with pysqlite's default transaction handling and with engines that
    begin their own transactions (SQLAlchemy's documented ``isolation_level=None``
    recipe). Concurrent appenders wait for the lock up to the engine's SQLite
    busy timeout (pysqlite's default is 5 seconds), on PostgreSQL up to
    ``lock_timeout_s``; then that batch fails and stores nothing.
    """

    def __init__(self, engine: Engine, lock_timeout_s: float = 30.0) -> None:
        if engine.dialect.name not in ("sqlite", "postgresql"):
            raise ConfigurationError(
                f"the ledger supports SQLite and PostgreSQL, not {engine.dialect.name}"
            )
        if lock_timeout_s <= 0:
            raise ConfigurationError(f"lock_timeout_s must be positive, got {lock_timeout_s}")
        self._engine = engine
        self._lock_timeout_ms = max(1, round(lock_timeout_s * 1000))
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
            # A replica that hangs holding the lock (or a session someone opened to hold
            # it) must not stall every append of every replica forever: the wait is
            # bounded, as SQLite's busy timeout bounds it, and the batch fails instead.
            conn.execute(text(f"SET LOCAL lock_timeout = {self._lock_timeout_ms}"))
            conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _PG_LOCK_KEY})

    def _commit(self, conn: Connection) -> None:
        if self._engine.dialect.name == "sqlite":
            # We opened the transaction by hand, so close it by hand: this commits
            # whatever pysqlite's isolation setting is; SQLAlchemy's commit then finds
            # nothing left to do and just resets its own state.
            conn.exec_driver_sql("COMMIT")
        conn.commit()

    def append(
        self, entries: Sequence[tuple[bytes, str]], build: BuildBatch
    ) -> tuple[int, SignedTreeHead]:
        for data, subject in entries:
            check_append_input(data, subject)
        if not entries:
            raise InvalidInputError("an append needs at least one entry")
        with self._engine.connect() as conn:
            self._begin_append(conn)
            try:
                last = conn.execute(select(func.max(_LEAF.c.idx))).scalar()
                first = 0 if last is None else int(last) + 1
                head, nodes = build(first, lambda start, end: _read_hashes(conn, start, end))
                head = check_new_head(head, first + len(entries))
                conn.execute(
                    insert(_LEAF),
                    [
                        {
                            "idx": first + offset,
                            "data": data,
                            "leaf_hash": leaf_hash(data),
                            "subject": subject,
                        }
                        for offset, (data, subject) in enumerate(entries)
                    ],
                )
                if nodes:
                    conn.execute(
                        insert(_NODE),
                        [{"level": lv, "idx": ix, "hash": value} for lv, ix, value in nodes],
                    )
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
                conn.rollback()
                raise
        return first, head

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

    def leaf_hashes(self, start: int, end: int) -> list[bytes]:
        check_range(start, end)
        with self._engine.connect() as conn:
            return _read_hashes(conn, start, end)

    def nodes(self, ids: Collection[NodeId]) -> dict[NodeId, bytes]:
        leaves = sorted({index for level, index in ids if level == 0})
        by_level: dict[int, list[int]] = {}
        for level, index in ids:
            if level > 0:
                by_level.setdefault(level, []).append(index)
        out: dict[NodeId, bytes] = {}
        with self._engine.connect() as conn:
            if leaves:
                query = select(_LEAF.c.idx, _LEAF.c.leaf_hash).where(_LEAF.c.idx.in_(leaves))
                out.update(((0, int(i)), bytes(h)) for i, h in conn.execute(query))
            if by_level:
                match = or_(
                    *(
                        and_(_NODE.c.level == level, _NODE.c.idx.in_(indices))
                        for level, indices in by_level.items()
                    )
                )
                query = select(_NODE.c.level, _NODE.c.idx, _NODE.c.hash).where(match)
                for row in conn.execute(query):
                    out[(int(row[0]), int(row[1]))] = bytes(row[2])
        return out

    def stray_nodes(self, size: int, limit: int) -> list[NodeId]:
        beyond = literal(size, BigInteger).op(">>")(_NODE.c.level)
        query = (
            select(_NODE.c.level, _NODE.c.idx)
            .where(
                or_(
                    _NODE.c.level < 1,
                    _NODE.c.level > MAX_LEVEL,
                    _NODE.c.idx < 0,
                    and_(_NODE.c.level <= MAX_LEVEL, _NODE.c.idx >= beyond),
                )
            )
            .order_by(_NODE.c.level, _NODE.c.idx)
            .limit(limit)
        )
        with self._engine.connect() as conn:
            return [(int(level), int(index)) for level, index in conn.execute(query)]

    def latest_head(self) -> SignedTreeHead | None:
        query = select(*_HEAD_COLUMNS).order_by(_HEAD.c.size.desc()).limit(1)
        with self._engine.connect() as conn:
            row = conn.execute(query).first()
        return None if row is None else _to_head(row)

    def head(self, size: int) -> SignedTreeHead | None:
        with self._engine.connect() as conn:
            row = conn.execute(select(*_HEAD_COLUMNS).where(_HEAD.c.size == size)).first()
        return None if row is None else _to_head(row)

    def heads(self, after: int = -1, limit: int | None = None) -> list[SignedTreeHead]:
        query = select(*_HEAD_COLUMNS).where(_HEAD.c.size > after).order_by(_HEAD.c.size)
        if limit is not None:
            query = query.limit(limit)
        with self._engine.connect() as conn:
            rows = conn.execute(query).all()
        return [_to_head(row) for row in rows]

    def leaves_for_subject(self, subject: str) -> list[StoredLeaf]:
        query = select(*_LEAF_COLUMNS).where(_LEAF.c.subject == subject).order_by(_LEAF.c.idx)
        with self._engine.connect() as conn:
            return [_to_leaf(row) for row in conn.execute(query)]
