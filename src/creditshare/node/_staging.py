"""A snapshot staged in a temporary table, then applied set-wise in one transaction.

An import's files may hold millions of rows, so no process may hold them all: rows are
validated a chunk at a time into a temporary table of the importing connection (its
primary key finds a USCC listed twice, across chunks and files, without a set in
memory), and only when every row of every file has passed is the snapshot applied, by
a handful of set-wise statements inside one transaction. Memory is bounded by the chunk
size whatever the files' size; the database's own tables are untouched until the
apply, and the apply is one transaction: all of the snapshot lands, or nothing.

The temporary table lives in the connection's temporary schema (SQLite's temp
database, a PostgreSQL session's ``pg_temp``): other connections never see it, it
spills to disk rather than growing in memory, and SQLite takes no lock on the node's
database while it is filled, so queries keep being answered while a large file is
validated. Only the apply holds the snapshot lock (``snapshot_transaction``).

Which staged rows change a stored record is found BEFORE the lock is taken (a read,
into a second temporary table), because it is the apply's only per-row work in Python
and SQLite's write lock makes every writer of the node wait (a query's access-log row
included, for at most the busy timeout). Under the lock the comparison is reused if no
snapshot was applied since it began (the latest snapshot id is the one it read; every
write to the records is a snapshot), else done again there; the previous values and the
new ones are then written by one set-wise statement each, whatever their number.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from datetime import UTC, datetime
from typing import Any

import psycopg
from sqlalchemy import (
    JSON,
    Column,
    ColumnElement,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    bindparam,
    cast,
    delete,
    exists,
    func,
    insert,
    literal,
    select,
    type_coerce,
    update,
)
from sqlalchemy.engine import Connection, Engine

from creditshare.departments import FieldValue
from creditshare.errors import ImportRejectedError
from creditshare.node._records import (
    BATCHES,
    PREVIOUS,
    RECORDS,
    SnapshotCounts,
    SnapshotHook,
    latest_batch,
    lock_snapshot,
)

__all__ = ["APPLY_CHUNK", "DuplicateRecordError", "SnapshotStaging", "StagedRow", "staging"]

#: One staged row: USCC, values, and where it came from (file number, line) so that
#: a USCC listed twice is reported with both places.
StagedRow = tuple[str, Mapping[str, FieldValue], int, int]

#: Records whose JSON text differs compared as values in Python per round trip.
APPLY_CHUNK = 2_000

#: Temporary: each connection has its own, in its temporary schema (never the node's).
STAGING = Table(
    "snapshot_staging",
    MetaData(),
    Column("uscc", String(18), primary_key=True),
    #: The values as JSON text, as the records' JSON column stores them.
    Column("data", Text, nullable=False),
    Column("source", Integer, nullable=False),
    Column("line", Integer, nullable=False),
    prefixes=["TEMPORARY"],
    sqlite_with_rowid=False,
)
#: Temporary too: the USCCs of stored records whose values the staged rows change.
CHANGED = Table(
    "snapshot_changed",
    MetaData(),
    Column("uscc", String(18), primary_key=True),
    prefixes=["TEMPORARY"],
    sqlite_with_rowid=False,
)
#: A chunk staged by a statement whose row count is the rows inserted: fewer than
#: given means a USCC staged before (or earlier in the chunk: rows go in file order).
#: The driver's own calls, without SQLAlchemy's per-row parameter processing: SQLite's
#: executemany (in-process, cheap per row); on PostgreSQL, COPY into a chunk table
#: (a statement per row costs the server more than the parsing costs the importer),
#: then one INSERT from it.
_STAGE_SQLITE = (
    "INSERT INTO snapshot_staging (uscc, data, source, line) "
    "VALUES (?, ?, ?, ?) ON CONFLICT (uscc) DO NOTHING"
)
_COPY = "COPY snapshot_chunk (uscc, data, source, line) FROM STDIN"
_STAGE_POSTGRES = (
    "INSERT INTO snapshot_staging (uscc, data, source, line) "
    "SELECT uscc, data, source, line FROM snapshot_chunk ORDER BY source, line "
    "ON CONFLICT (uscc) DO NOTHING"
)
#: SQLAlchemy keeps an INSERT's row count only when asked (2.1).
_COUNTED = {"preserve_rowcount": True}
#: PostgreSQL's COPY target: a chunk at a time, then emptied.
CHUNK_TABLE = Table(
    "snapshot_chunk",
    MetaData(),
    Column("uscc", String(18), nullable=False),
    Column("data", Text, nullable=False),
    Column("source", Integer, nullable=False),
    Column("line", Integer, nullable=False),
    prefixes=["TEMPORARY"],
)
#: Qualified, so that they can never drop a table of the node's own schema.
_DROP = {
    "sqlite": (
        "DROP TABLE IF EXISTS temp.snapshot_staging",
        "DROP TABLE IF EXISTS temp.snapshot_changed",
    ),
    "postgresql": (
        "DROP TABLE IF EXISTS pg_temp.snapshot_staging",
        "DROP TABLE IF EXISTS pg_temp.snapshot_changed",
        "DROP TABLE IF EXISTS pg_temp.snapshot_chunk",
    ),
}


_dumps = json.JSONEncoder().encode  # json.dumps' own encoder, without its per-call checks


class DuplicateRecordError(ValueError):
    """A USCC listed twice in one snapshot: the later place, and where it came first."""

    def __init__(self, uscc: str, source: int, line: int, first: tuple[int, int]) -> None:
        super().__init__(f"a snapshot lists each USCC once; {uscc} is listed twice")
        self.uscc = uscc
        self.source = source
        self.line = line
        self.first = first


class SnapshotStaging:
    """The rows of one snapshot being validated; ``apply`` makes them the records."""

    def __init__(self, conn: Connection) -> None:
        self._conn = conn
        self._postgres = conn.dialect.name == "postgresql"
        #: Rows staged so far (the snapshot's size once every file has been read).
        self.rows = 0

    def add(self, rows: Sequence[StagedRow]) -> None:
        """Stage ``rows`` (in file order); DuplicateRecordError names the first USCC already
        staged (in an earlier chunk or earlier in this one), and where it came first."""
        if not rows:
            return
        encoded = [(u, _dumps(d), s, n) for u, d, s, n in rows]
        if not self._conn.in_transaction():
            # The driver's own calls below open a transaction SQLAlchemy would not know
            # of: one of them failing would then leave it aborted, and the clean-up's
            # rollback undone (``staging``).
            self._conn.begin()
        if self._postgres:
            inserted = self._copy(encoded)
        else:
            inserted = self._conn.exec_driver_sql(
                _STAGE_SQLITE, encoded, execution_options=_COUNTED
            ).rowcount
        if inserted != len(rows):
            self._raise_duplicate(rows)
        self.rows += len(rows)

    def _copy(self, encoded: list[tuple[str, str, int, int]]) -> int:
        """COPY a chunk in and stage it; the rows inserted. The driver's own calls, so
        SQLAlchemy's hidden parameters do not cover them: a refusal is raised with the
        server's primary message only (its detail and context quote the row: a USCC
        and its values, which no log may hold)."""
        driver: Any = self._conn.connection.driver_connection
        try:
            with driver.cursor() as cursor:
                with cursor.copy(_COPY) as copy:
                    for row in encoded:
                        copy.write_row(row)
                cursor.execute(_STAGE_POSTGRES)
                inserted = int(cursor.rowcount)
                cursor.execute("TRUNCATE snapshot_chunk")
        except psycopg.Error as exc:
            raise type(exc)(exc.diag.message_primary or type(exc).__name__) from None
        return inserted

    def _raise_duplicate(self, rows: Sequence[StagedRow]) -> None:
        """The chunk held a USCC staged before: the first such row, in file order."""
        first: dict[str, tuple[int, int]] = {}
        for start in range(0, len(rows), 500):
            usccs = [u for u, _, _, _ in rows[start : start + 500]]
            found = self._conn.execute(
                select(STAGING.c.uscc, STAGING.c.source, STAGING.c.line).where(
                    STAGING.c.uscc.in_(usccs)
                )
            )
            first.update({r.uscc: (int(r.source), int(r.line)) for r in found})
        for uscc, _, source, line in rows:
            if first.get(uscc, (source, line)) != (source, line):
                raise DuplicateRecordError(uscc, source, line, first[uscc])
        raise AssertionError("a staged row was not inserted, yet none is a duplicate")

    def apply(
        self,
        *,
        files: str,
        sha256: str,
        allow_empty: bool = False,
        now: datetime | None = None,
        on_snapshot: SnapshotHook | None = None,
    ) -> SnapshotCounts:
        """Make the staged rows the current records, in one transaction that holds the
        snapshot lock (see ``RecordStore.apply_snapshot`` for what it guarantees)."""
        conn = self._conn
        if conn.in_transaction():
            conn.commit()  # the staged rows (temporary: nobody else sees them)
        imported_at = now or datetime.now(UTC)
        compared = self._compare(conn)  # a read: the records stay writable meanwhile
        if conn.in_transaction():
            conn.commit()
        lock_snapshot(conn)
        try:
            if latest_batch(conn) != compared:
                # A snapshot was applied since the comparison began: it compared
                # records that are no longer the current ones.
                self._compare(conn)
            counts = self._apply(conn, files, sha256, allow_empty, imported_at)
            if on_snapshot is not None:
                on_snapshot(conn, counts.batch_id, imported_at)
        except BaseException:
            conn.rollback()
            raise
        conn.commit()
        return counts

    def _apply(
        self, conn: Connection, files: str, sha256: str, allow_empty: bool, at: datetime
    ) -> SnapshotCounts:
        before = int(conn.execute(select(func.count()).select_from(RECORDS)).scalar_one())
        # The previous snapshot's changes are superseded by this one's.
        conn.execute(delete(PREVIOUS))
        inserted = conn.execute(
            insert(BATCHES).values(files=files, sha256=sha256, rows=0, imported_at=at)
        ).inserted_primary_key
        assert inserted is not None
        batch = int(inserted[0])
        changed = self._apply_changes(conn, batch)
        staged = exists().where(STAGING.c.uscc == RECORDS.c.uscc)
        # Removed: absent from the snapshot. Their last values are kept, then dropped.
        removed = conn.execute(
            insert(PREVIOUS).from_select(
                ["uscc", "data", "batch_id", "replaced_by", "removed"],
                select(
                    RECORDS.c.uscc,
                    RECORDS.c.data,
                    RECORDS.c.batch_id,
                    literal(batch),
                    literal(True),
                ).where(~staged),
            ),
            execution_options=_COUNTED,
        ).rowcount
        if before and removed == before and not allow_empty:
            raise ImportRejectedError(
                files,
                None,
                f"this snapshot would remove all {before} current records (it holds "
                f"{self.rows} record(s), none of them current): an import is the "
                "department's complete current data, so a header-only or wrong export "
                "would empty the node. If the department really holds none of these "
                "enterprises now, import it again with --allow-empty",
            )
        if removed:
            conn.execute(
                delete(RECORDS).where(
                    RECORDS.c.uscc.in_(select(PREVIOUS.c.uscc).where(PREVIOUS.c.removed))
                )
            )
        held = exists().where(RECORDS.c.uscc == STAGING.c.uscc)
        added = conn.execute(
            insert(RECORDS).from_select(
                ["uscc", "data", "batch_id"],
                select(STAGING.c.uscc, self._as_json(), literal(batch))
                .where(~held)
                .order_by(STAGING.c.uscc),
            ),
            execution_options=_COUNTED,
        ).rowcount
        counts = SnapshotCounts(batch, added, changed, removed, self.rows - added - changed)
        conn.execute(
            update(BATCHES)
            .where(BATCHES.c.id == batch)
            .values(
                rows=counts.rows,
                added=counts.added,
                changed=counts.changed,
                removed=counts.removed,
                unchanged=counts.unchanged,
            )
        )
        return counts

    def _compare(self, conn: Connection) -> int | None:
        """Fill CHANGED with the USCCs of the stored records whose values the staged rows
        change; the latest snapshot id before the comparison read anything.

        The database compares the stored JSON text, set-wise; the rows whose text
        differs are compared again as values here (a record written under an older
        field order, or ``1`` against ``1.0``, is unchanged), a chunk at a time in key
        order, and the unchanged ones dropped from CHANGED.
        """
        seen = latest_batch(conn)
        held = self._held_text()
        conn.execute(delete(CHANGED))
        conn.execute(
            insert(CHANGED).from_select(
                ["uscc"],
                select(STAGING.c.uscc)
                .join(RECORDS, RECORDS.c.uscc == STAGING.c.uscc)
                .where(STAGING.c.data != held),
            )
        )
        after = ""
        while True:
            rows = conn.execute(
                select(STAGING.c.uscc, STAGING.c.data.label("new"), held.label("old"))
                .join(RECORDS, RECORDS.c.uscc == STAGING.c.uscc)
                .join(CHANGED, CHANGED.c.uscc == STAGING.c.uscc)
                # Every bound: a merge join would otherwise walk the records from the
                # first key on every page (quadratic in the changed records).
                .where(STAGING.c.uscc > after, RECORDS.c.uscc > after, CHANGED.c.uscc > after)
                .order_by(STAGING.c.uscc)
                .limit(APPLY_CHUNK)
            ).all()
            if not rows:
                return seen
            after = rows[-1].uscc
            same = [{"u": r.uscc} for r in rows if json.loads(r.old) == json.loads(r.new)]
            if same:
                conn.execute(delete(CHANGED).where(CHANGED.c.uscc == bindparam("u")), same)

    def _apply_changes(self, conn: Connection, batch: int) -> int:
        """Keep the values of the records in CHANGED (``_compare``), then write the new
        ones: one statement each, whatever their number; how many changed."""
        changed = conn.execute(
            insert(PREVIOUS).from_select(
                ["uscc", "data", "batch_id", "replaced_by", "removed"],
                select(
                    RECORDS.c.uscc,
                    RECORDS.c.data,
                    RECORDS.c.batch_id,
                    literal(batch),
                    literal(False),
                ).where(RECORDS.c.uscc.in_(select(CHANGED.c.uscc))),
            ),
            execution_options=_COUNTED,
        ).rowcount
        if changed:
            conn.execute(
                update(RECORDS)
                .where(
                    RECORDS.c.uscc == STAGING.c.uscc,
                    STAGING.c.uscc.in_(select(CHANGED.c.uscc)),
                )
                .values(data=self._as_json(), batch_id=batch)
            )
        return int(changed)

    def _held_text(self) -> ColumnElement[Any]:
        """A stored record's values as JSON text, as the staging table holds them."""
        if self._postgres:
            return cast(RECORDS.c.data, Text)
        return type_coerce(RECORDS.c.data, Text)

    def _as_json(self) -> ColumnElement[Any]:
        """A staged row's values as the records' JSON column takes them."""
        if self._postgres:
            return cast(STAGING.c.data, JSON)
        return type_coerce(STAGING.c.data, JSON)


@contextmanager
def staging(engine: Engine) -> Iterator[SnapshotStaging]:
    """An empty staging table on a connection of its own; dropped on the way out."""
    with engine.connect() as conn:
        drops = _DROP[conn.dialect.name]
        for drop in drops:
            conn.exec_driver_sql(drop)
        STAGING.create(conn)
        CHANGED.create(conn)
        if conn.dialect.name == "postgresql":
            CHUNK_TABLE.create(conn)
        conn.commit()
        try:
            yield SnapshotStaging(conn)
        except BaseException:
            with suppress(Exception):  # the first error is the one to report
                _drop(conn, drops)
            raise
        _drop(conn, drops)


def _drop(conn: Connection, drops: Sequence[str]) -> None:
    """Roll back what is pending and drop the staging tables; a connection on which that
    fails (a lost session) is discarded, never pooled with the tables in it."""
    try:
        if conn.in_transaction():
            conn.rollback()
        for drop in drops:
            conn.exec_driver_sql(drop)
        conn.commit()
    except BaseException:
        conn.invalidate()
        raise
