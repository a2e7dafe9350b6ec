"""A node's enterprise records, imported as snapshots that keep the previous values.

Each import is a **snapshot**: the files given together are the department's
complete current records. Against the records held, every enterprise is added (new
USCC), changed (different values), unchanged, or removed (absent from the snapshot;
it no longer scores). Post-loan monitoring compares an enterprise's values with the
previous snapshot's, so the values each changed or removed record had before the
latest snapshot are kept in ``previous_record``; unchanged records need no copy
(their previous values are their current ones), so a snapshot writes rows in
proportion to what changed, never the whole table. Everything a snapshot does,
including its ``import_batch`` row, is one transaction: all of it lands, or nothing.

Raw values are stored as imported (JSON of typed fields) because the node is their
legitimate home; what may leave the node is decided by the department schema, not
by the store.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from itertools import islice
from typing import Any, TypeVar

from sqlalchemy import (
    JSON,
    Column,
    Table,
    bindparam,
    delete,
    func,
    insert,
    select,
    text,
    update,
)
from sqlalchemy.engine import Connection, Engine
from sqlmodel import Field, Session, SQLModel

from creditshare.departments import FieldValue
from creditshare.errors import ImportRejectedError

__all__ = [
    "ImportBatch",
    "PreviousRecordRow",
    "RecordRow",
    "RecordStore",
    "SnapshotChanges",
    "SnapshotCounts",
    "SnapshotHook",
    "latest_batch",
    "snapshot_transaction",
]

T = TypeVar("T")
#: Work done inside a snapshot's transaction: (connection, snapshot id, imported at).
SnapshotHook = Callable[[Connection, int, datetime], object]

#: Records compared and written per round trip: bounds the memory a snapshot needs
#: beyond its own rows (and the statement size) whatever the table's size.
CHUNK = 500


class RecordRow(SQLModel, table=True):
    __tablename__ = "enterprise_record"

    uscc: str = Field(primary_key=True, max_length=18)
    data: dict[str, Any] = Field(sa_column=Column(JSON, nullable=False))
    #: The snapshot these values came from (an unchanged record keeps its older one).
    batch_id: int = Field(foreign_key="import_batch.id", index=True)


class ImportBatch(SQLModel, table=True):
    """One accepted snapshot: the history an operator lists (``node imports``)."""

    __tablename__ = "import_batch"

    id: int | None = Field(default=None, primary_key=True)
    files: str
    sha256: str = Field(max_length=64)
    #: Records in the snapshot (added + changed + unchanged).
    rows: int
    imported_at: datetime
    # None: imported before snapshots were compared (revision n0005), counts unknown.
    added: int | None = None
    changed: int | None = None
    removed: int | None = None
    unchanged: int | None = None


class PreviousRecordRow(SQLModel, table=True):
    """The values a record had before the latest snapshot changed or removed it.

    Only the latest snapshot's changes are kept: the next snapshot replaces them, so
    raw values of a removed enterprise are not kept longer than change detection
    needs them.
    """

    __tablename__ = "previous_record"

    uscc: str = Field(primary_key=True, max_length=18)
    data: dict[str, Any] = Field(sa_column=Column(JSON, nullable=False))
    #: The snapshot these (previous) values came from.
    batch_id: int = Field(foreign_key="import_batch.id")
    #: The snapshot that changed or removed them: always the latest one.
    replaced_by: int = Field(foreign_key="import_batch.id", index=True)
    #: True: absent from the latest snapshot (no longer scored); False: changed.
    removed: bool


@dataclass(frozen=True, slots=True)
class SnapshotCounts:
    """What one snapshot did to the records held."""

    batch_id: int
    added: int
    changed: int
    removed: int
    unchanged: int

    @property
    def rows(self) -> int:
        """Records in the snapshot."""
        return self.added + self.changed + self.unchanged


@dataclass(frozen=True, slots=True)
class SnapshotChanges:
    """The USCCs the latest snapshot added, changed and removed (each sorted)."""

    batch_id: int
    added: tuple[str, ...]
    changed: tuple[str, ...]
    removed: tuple[str, ...]


def _table(model: type[SQLModel]) -> Table:
    table = model.__table__  # type: ignore[attr-defined]
    assert isinstance(table, Table)
    return table


RECORDS = _table(RecordRow)
BATCHES = _table(ImportBatch)
PREVIOUS = _table(PreviousRecordRow)

#: PostgreSQL advisory lock that queues concurrent snapshots of one node's database.
_SNAPSHOT_LOCK = int.from_bytes(
    hashlib.sha256(b"creditshare.node.snapshot").digest()[:8], "big", signed=True
)


@contextmanager
def snapshot_transaction(engine: Engine) -> Iterator[Connection]:
    """One transaction that holds the snapshot lock before it reads anything.

    A snapshot compares what it reads with what it writes, so two at once must not
    interleave: SQLite takes its write lock up front (``BEGIN IMMEDIATE``),
    PostgreSQL an advisory lock (readers, such as scoring, are never blocked).
    """
    with engine.connect() as conn:
        if engine.dialect.name == "sqlite":
            conn.exec_driver_sql("BEGIN IMMEDIATE")
        else:
            conn.begin()
            if engine.dialect.name == "postgresql":
                conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _SNAPSHOT_LOCK})
        try:
            yield conn
        except BaseException:
            conn.rollback()
            raise
        conn.commit()


def _chunks(items: Iterable[T], size: int = CHUNK) -> Iterator[list[T]]:
    iterator = iter(items)
    while chunk := list(islice(iterator, size)):
        yield chunk


def latest_batch(conn: Connection) -> int | None:
    value = conn.execute(select(func.max(BATCHES.c.id))).scalar()
    return None if value is None else int(value)


class RecordStore:
    def __init__(self, engine: Engine) -> None:
        self._engine = engine

    def get(self, uscc: str) -> dict[str, FieldValue] | None:
        with Session(self._engine) as session:
            row = session.get(RecordRow, uscc)
            return dict(row.data) if row is not None else None

    def all(self) -> dict[str, dict[str, FieldValue]]:
        """Every record (for training on this node's own data; never sent anywhere)."""
        with self._engine.connect() as conn:
            rows = conn.execute(select(RECORDS.c.uscc, RECORDS.c.data))
            return {row.uscc: dict(row.data) for row in rows}

    def ids(self, batch: int = 100_000) -> Iterator[list[str]]:
        """Every record's USCC, ``batch`` at a time, streamed (PSI: no list of all ids)."""
        with self._engine.connect() as conn:
            rows = conn.execution_options(stream_results=True, yield_per=batch).execute(
                select(RECORDS.c.uscc)
            )
            for part in rows.partitions(batch):
                yield [row.uscc for row in part]

    def count(self) -> int:
        with self._engine.connect() as conn:
            return int(conn.execute(select(func.count()).select_from(RECORDS)).scalar_one())

    def previous(self, uscc: str) -> dict[str, FieldValue] | None:
        """The values ``uscc`` had in the snapshot before the latest one.

        None if it had none there: added by the latest snapshot, or absent from both.
        A record the latest snapshot removed no longer scores, but its values are here.
        (If the latest import predates snapshots (n0005), what it wrote counts as added:
        the values it overwrote were not kept.)
        """
        with self._engine.connect() as conn:
            latest = latest_batch(conn)
            if latest is None:
                return None
            kept = conn.execute(
                select(PREVIOUS.c.data).where(
                    PREVIOUS.c.uscc == uscc, PREVIOUS.c.replaced_by == latest
                )
            ).first()
            if kept is not None:
                return dict(kept.data)
            current = conn.execute(
                select(RECORDS.c.data, RECORDS.c.batch_id).where(RECORDS.c.uscc == uscc)
            ).first()
            if current is None or current.batch_id == latest:
                return None  # absent, or added by the latest snapshot
            return dict(current.data)  # unchanged by the latest snapshot

    def latest_changes(self) -> SnapshotChanges | None:
        """What the latest snapshot added, changed and removed; None before any import."""
        with self._engine.connect() as conn:
            latest = latest_batch(conn)
            if latest is None:
                return None
            kept = conn.execute(
                select(PREVIOUS.c.uscc, PREVIOUS.c.removed).where(PREVIOUS.c.replaced_by == latest)
            ).all()
            changed = sorted(row.uscc for row in kept if not row.removed)
            removed = sorted(row.uscc for row in kept if row.removed)
            # Values written by the latest snapshot are its additions and its changes.
            written = conn.execute(
                select(RECORDS.c.uscc).where(RECORDS.c.batch_id == latest)
            ).scalars()
            changed_set = set(changed)
            added = sorted(uscc for uscc in written if uscc not in changed_set)
        return SnapshotChanges(latest, tuple(added), tuple(changed), tuple(removed))

    def snapshots(self, limit: int = 100) -> list[ImportBatch]:
        """The snapshot history, newest first."""
        with self._engine.connect() as conn:
            rows = conn.execute(select(BATCHES).order_by(BATCHES.c.id.desc()).limit(limit))
            return [ImportBatch.model_validate(dict(row._mapping)) for row in rows]

    def apply_snapshot(
        self,
        records: Iterable[tuple[str, Mapping[str, FieldValue]]],
        *,
        files: str,
        sha256: str,
        allow_empty: bool = False,
        now: datetime | None = None,
        on_snapshot: SnapshotHook | None = None,
    ) -> SnapshotCounts:
        """Make ``records`` (unique USCCs) the current records, in one transaction.

        ``records`` is consumed once, in chunks, so it may be a generator; one that
        raises leaves the database as it was. A snapshot that would remove every
        current record (a header-only or wrong export) is refused with
        ImportRejectedError unless ``allow_empty``.

        ``on_snapshot(conn, snapshot id, imported at)`` runs last, inside the same
        transaction (post-loan monitoring's event detection): it sees this snapshot's
        changes and the values they replaced, and what it writes lands with the
        snapshot or not at all.
        """
        imported_at = now or datetime.now(UTC)
        with snapshot_transaction(self._engine) as conn:
            before = int(conn.execute(select(func.count()).select_from(RECORDS)).scalar_one())
            # The previous snapshot's changes are superseded by this one's.
            conn.execute(delete(PREVIOUS))
            inserted = conn.execute(
                insert(BATCHES).values(files=files, sha256=sha256, rows=0, imported_at=imported_at)
            ).inserted_primary_key
            assert inserted is not None
            batch_id = int(inserted[0])
            seen: set[str] = set()
            added = changed = unchanged = 0
            for chunk in _chunks(records):
                a, c, u = _write_chunk(conn, chunk, batch_id, seen)
                added, changed, unchanged = added + a, changed + c, unchanged + u
            # Only the USCCs, a chunk at a time: the table's values are never all loaded.
            gone = [
                uscc
                for uscc in conn.execute(
                    select(RECORDS.c.uscc).execution_options(yield_per=CHUNK)
                ).scalars()
                if uscc not in seen
            ]
            if before and len(gone) == before and not allow_empty:
                raise ImportRejectedError(
                    files,
                    None,
                    f"this snapshot would remove all {before} current records (it holds "
                    f"{len(seen)} record(s), none of them current): an import is the "
                    "department's complete current data, so a header-only or wrong export "
                    "would empty the node. If the department really holds none of these "
                    "enterprises now, import it again with --allow-empty",
                )
            for usccs in _chunks(gone):
                _remove_chunk(conn, usccs, batch_id)
            counts = SnapshotCounts(batch_id, added, changed, len(gone), unchanged)
            conn.execute(
                update(BATCHES)
                .where(BATCHES.c.id == batch_id)
                .values(
                    rows=counts.rows,
                    added=counts.added,
                    changed=counts.changed,
                    removed=counts.removed,
                    unchanged=counts.unchanged,
                )
            )
            if on_snapshot is not None:
                on_snapshot(conn, batch_id, imported_at)
        return counts


def _write_chunk(
    conn: Connection,
    chunk: Sequence[tuple[str, Mapping[str, FieldValue]]],
    batch_id: int,
    seen: set[str],
) -> tuple[int, int, int]:
    """Compare one chunk with the records held and write what differs; the counts
    (added, changed, unchanged)."""
    for uscc, _ in chunk:
        if uscc in seen:
            raise ValueError("a snapshot lists each USCC once")  # the importer checks first
        seen.add(uscc)
    held = {
        row.uscc: row
        for row in conn.execute(
            select(RECORDS.c.uscc, RECORDS.c.data, RECORDS.c.batch_id).where(
                RECORDS.c.uscc.in_([uscc for uscc, _ in chunk])
            )
        )
    }
    new: list[dict[str, Any]] = []
    changes: list[dict[str, Any]] = []
    kept: list[dict[str, Any]] = []
    for uscc, values in chunk:
        data = dict(values)
        old = held.get(uscc)
        if old is None:
            new.append({"uscc": uscc, "data": data, "batch_id": batch_id})
        elif old.data != data:
            changes.append({"key": uscc, "data": data, "batch_id": batch_id})
            kept.append(
                {
                    "uscc": uscc,
                    "data": old.data,
                    "batch_id": old.batch_id,
                    "replaced_by": batch_id,
                    "removed": False,
                }
            )
    if new:
        conn.execute(insert(RECORDS), new)
    if changes:
        conn.execute(
            update(RECORDS)
            .where(RECORDS.c.uscc == bindparam("key"))
            .values(data=bindparam("data"), batch_id=bindparam("batch_id")),
            changes,
        )
    if kept:
        conn.execute(insert(PREVIOUS), kept)
    return len(new), len(changes), len(chunk) - len(new) - len(changes)


def _remove_chunk(conn: Connection, usccs: list[str], batch_id: int) -> None:
    """Keep the last values of records absent from the snapshot, then drop them."""
    rows = conn.execute(
        select(RECORDS.c.uscc, RECORDS.c.data, RECORDS.c.batch_id).where(RECORDS.c.uscc.in_(usccs))
    ).all()
    conn.execute(
        insert(PREVIOUS),
        [
            {
                "uscc": row.uscc,
                "data": row.data,
                "batch_id": row.batch_id,
                "replaced_by": batch_id,
                "removed": True,
            }
            for row in rows
        ],
    )
    conn.execute(delete(RECORDS).where(RECORDS.c.uscc.in_(usccs)))
