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
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from itertools import islice
from typing import Any, TypeVar

from sqlalchemy import (
    JSON,
    Column,
    Table,
    func,
    select,
    text,
)
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.sql import Select
from sqlmodel import Field, Session, SQLModel

from creditshare.departments import FieldValue

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

#: Rows of ``apply_snapshot``'s iterable staged per round trip (``_staging``): what
#: bounds the memory a snapshot needs whatever its size and the table's. (The importer
#: stages its own, larger chunks: ``_importer.IMPORT_CHUNK``.)
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
    """The USCCs the latest snapshot added, changed and removed (each sorted; the first
    ``limit`` of each if one was asked for), and how many of each there are."""

    batch_id: int
    added: tuple[str, ...]
    changed: tuple[str, ...]
    removed: tuple[str, ...]
    #: (added, changed, removed): the full counts, however many USCCs are listed.
    counts: tuple[int, int, int] = (0, 0, 0)


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


def lock_snapshot(conn: Connection) -> None:
    """Begin ``conn``'s transaction holding the snapshot lock, before it reads anything.

    A snapshot compares what it reads with what it writes, so two at once must not
    interleave: SQLite takes its write lock up front (``BEGIN IMMEDIATE``),
    PostgreSQL an advisory lock (readers, such as scoring, are never blocked).
    """
    if conn.dialect.name == "sqlite":
        conn.exec_driver_sql("BEGIN IMMEDIATE")
        return
    if not conn.in_transaction():
        conn.begin()
    if conn.dialect.name == "postgresql":
        conn.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _SNAPSHOT_LOCK})


@contextmanager
def snapshot_transaction(engine: Engine) -> Iterator[Connection]:
    """One transaction that holds the snapshot lock (``lock_snapshot``)."""
    with engine.connect() as conn:
        lock_snapshot(conn)
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


def _count(conn: Connection, query: Select[Any]) -> int:
    return int(conn.execute(select(func.count()).select_from(query.subquery())).scalar_one())


class RecordStore:
    def __init__(self, engine: Engine) -> None:
        self._engine = engine

    @property
    def engine(self) -> Engine:
        return self._engine

    def get(self, uscc: str) -> dict[str, FieldValue] | None:
        with Session(self._engine) as session:
            row = session.get(RecordRow, uscc)
            return dict(row.data) if row is not None else None

    def all(self) -> dict[str, dict[str, FieldValue]]:
        """Every record (for training on this node's own data; never sent anywhere)."""
        with self._engine.connect() as conn:
            rows = conn.execute(select(RECORDS.c.uscc, RECORDS.c.data))
            return {row.uscc: dict(row.data) for row in rows}

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

    def latest_changes(self, limit: int | None = None) -> SnapshotChanges | None:
        """What the latest snapshot added, changed and removed; None before any import.

        ``limit``: list only the first so many USCCs of each kind (a first import of
        millions of enterprises "added" them all: a page shows a few and the count).
        """
        with self._engine.connect() as conn:
            latest = latest_batch(conn)
            if latest is None:
                return None
            mine = PREVIOUS.c.replaced_by == latest
            kept = select(PREVIOUS.c.uscc).where(mine, PREVIOUS.c.uscc == RECORDS.c.uscc).exists()
            # Values written by the latest snapshot are its additions and its changes.
            kinds = {
                "added": select(RECORDS.c.uscc).where(RECORDS.c.batch_id == latest, ~kept),
                "changed": select(PREVIOUS.c.uscc).where(mine, PREVIOUS.c.removed.is_(False)),
                "removed": select(PREVIOUS.c.uscc).where(mine, PREVIOUS.c.removed.is_(True)),
            }
            listed = {
                kind: tuple(
                    conn.execute(query.order_by(query.selected_columns[0]).limit(limit))
                    .scalars()
                    .all()
                )
                for kind, query in kinds.items()
            }
            batch = conn.execute(
                select(BATCHES.c.added, BATCHES.c.changed, BATCHES.c.removed).where(
                    BATCHES.c.id == latest
                )
            ).one()
            # The snapshot's own counts (none for one imported before n0005: counted).
            counts = {
                kind: int(known) if known is not None else _count(conn, query)
                for kind, known, query in zip(kinds, batch, kinds.values(), strict=True)
            }
        return SnapshotChanges(
            latest,
            listed["added"],
            listed["changed"],
            listed["removed"],
            (counts["added"], counts["changed"], counts["removed"]),
        )

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

        ``records`` is consumed once, in chunks (staged in a temporary table, then
        applied set-wise: ``_staging``), so it may be a generator of any length; one
        that raises, or lists a USCC twice (DuplicateRecord, a ValueError), leaves the
        database as it was. A snapshot that would remove every
        current record (a header-only or wrong export) is refused with
        ImportRejectedError unless ``allow_empty``.

        ``on_snapshot(conn, snapshot id, imported at)`` runs last, inside the same
        transaction (post-loan monitoring's event detection): it sees this snapshot's
        changes and the values they replaced, and what it writes lands with the
        snapshot or not at all.
        """
        from creditshare.node._staging import staging  # it builds on this module's tables

        with staging(self._engine) as staged:
            for number, chunk in enumerate(_chunks(records)):
                staged.add(
                    [(uscc, data, 0, number * CHUNK + k) for k, (uscc, data) in enumerate(chunk)]
                )
            return staged.apply(
                files=files,
                sha256=sha256,
                allow_empty=allow_empty,
                now=now,
                on_snapshot=on_snapshot,
            )
