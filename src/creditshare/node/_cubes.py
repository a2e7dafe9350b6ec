"""Snapshot cubes: the aggregates a node's statistics answers are computed from.

A regulator asks about the snapshot in force at given dates, but a node keeps only its
current records (and the latest snapshot's previous values). So after each import
commits, the node sums the new snapshot into a cube (``statistics.CubeBuilder``: int64
counts and clipped per-column totals over region x every catalogue dimension; no row,
no USCC) and keeps it under the snapshot's batch id. A query's cells are marginals of
the cube in force at each date.

The cube is built after the import's transaction, never in it: the staging path does
not get slower, and a failed build loses no import (the latest snapshot's cube is built
again when a query first needs it). A cube is kept with the digest of the catalogue it
was built under; after a schema change an older snapshot's cube no longer matches and
that date is withheld, while the latest snapshot's is rebuilt from its records. A
record the catalogue cannot read (imported under an older schema) fails the build with
StaleRecordError: the query is refused before it spends anything.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

from sqlalchemy import delete, func, insert, select
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError

from creditshare.departments import Department
from creditshare.errors import CreditShareError, StaleRecordError
from creditshare.node._records import BATCHES, RECORDS, latest_batch
from creditshare.node._stats_tables import CUBES
from creditshare.statistics import Catalogue, Cube, CubeBuilder

__all__ = ["CubeStore", "in_force_until"]

log = logging.getLogger("creditshare.node")

#: Records read per round trip while a cube is built (memory stays flat).
_BUILD_CHUNK = 5_000


_CUBES = CUBES


def in_force_until(day: str) -> datetime:
    """The end of ``day`` (ISO date) in UTC: a date asks for the snapshot in force then."""
    return datetime.combine(date.fromisoformat(day), time(), UTC) + timedelta(days=1)


def _add(builder: CubeBuilder, uscc: str, data: dict[str, Any]) -> None:
    """Count one stored record, or raise StaleRecordError: a record imported under an
    older schema that lacks (or holds an unreadable value for) a column the catalogue
    sums. The error names the column, never a value: its text leaves the node."""
    try:
        builder.add(uscc, data)
    except KeyError as exc:
        raise StaleRecordError(
            f"a stored record holds no value for {exc.args[0]} that this node's statistics "
            "catalogue sums: this node's records must be re-imported under its schema"
        ) from None
    except (TypeError, ValueError):
        raise StaleRecordError(
            "a stored record holds a value this node's statistics catalogue cannot sum: "
            "this node's records must be re-imported under its schema"
        ) from None


class CubeStore:
    """The cubes of one node's snapshots under its department's catalogue."""

    def __init__(
        self,
        engine: Engine,
        department: Department,
        catalogue: Catalogue,
        clock: Callable[[], datetime],
    ) -> None:
        self._engine = engine
        self._department = department
        self._catalogue = catalogue
        self._clock = clock

    def build_latest(self) -> int | None:
        """Build and keep the latest snapshot's cube unless it is kept already; the batch
        id (None: no snapshot yet). Safe to run concurrently with queries and imports."""
        with self._engine.connect() as conn:
            batch = latest_batch(conn)
            if batch is None:
                return None
            digest = conn.execute(
                select(_CUBES.c.catalogue_digest).where(_CUBES.c.batch_id == batch)
            ).scalar()
        if digest == self._catalogue.digest:
            return batch
        cube = self._build(batch)
        if cube is not None:
            self._keep(batch, cube, replace=digest is not None)
        return batch

    def _build(self, batch: int) -> Cube | None:
        """The cube of the current records, if they are still snapshot ``batch``'s.

        The records are read in one statement (a consistent view); an import that
        committed meanwhile shows as a newer latest batch afterwards, and then this
        cube is not ``batch``'s: it is dropped (the newer import builds its own).
        """
        builder = CubeBuilder(self._catalogue, self._department)
        with self._engine.connect() as conn:
            rows = conn.execution_options(stream_results=True, yield_per=_BUILD_CHUNK).execute(
                select(RECORDS.c.uscc, RECORDS.c.data)
            )
            for part in rows.partitions(_BUILD_CHUNK):
                for row in part:
                    _add(builder, row.uscc, dict(row.data))
        with self._engine.connect() as conn:
            if latest_batch(conn) != batch:
                log.info("snapshot %d was replaced while its cube was built; dropped", batch)
                return None
        return builder.finish()

    def _keep(self, batch: int, cube: Cube, *, replace: bool) -> None:
        values = {
            "batch_id": batch,
            "catalogue_digest": self._catalogue.digest,
            "data": cube.to_bytes(),
            "built_at": self._clock(),
        }
        try:
            with self._engine.begin() as conn:
                if replace:  # built under another catalogue: the records are still here
                    conn.execute(delete(_CUBES).where(_CUBES.c.batch_id == batch))
                conn.execute(insert(_CUBES), values)
        except IntegrityError:
            return  # built by a concurrent call meanwhile: the same records, the same cube
        log.info("statistics cube of snapshot %d built (%d records)", batch, cube.records)

    def batches_in_force(self, dates: Sequence[str]) -> list[int | None]:
        """Per date, the snapshot in force at the end of that UTC day (None: none yet);
        no dates: the latest snapshot."""
        with self._engine.connect() as conn:
            if not dates:
                return [latest_batch(conn)]
            found: list[int | None] = []
            for day in dates:
                value = conn.execute(
                    select(func.max(BATCHES.c.id)).where(
                        BATCHES.c.imported_at < in_force_until(day)
                    )
                ).scalar()
                found.append(None if value is None else int(value))
            return found

    def cubes(self, dates: Sequence[str]) -> list[Cube | None]:
        """The cube in force at each date (no dates: the latest), in order; None where
        the node had no snapshot then or keeps no cube of it under this catalogue. The
        latest snapshot's cube is built here if it is missing."""
        batches = self.batches_in_force(dates)
        if any(b is not None for b in batches):
            self.build_latest()  # a lookup when it is kept already
        wanted = sorted({b for b in batches if b is not None})
        stored: dict[int, Cube] = {}
        if wanted:
            with self._engine.connect() as conn:
                rows = conn.execute(
                    select(_CUBES.c.batch_id, _CUBES.c.catalogue_digest, _CUBES.c.data).where(
                        _CUBES.c.batch_id.in_(wanted)
                    )
                )
                for row in rows:
                    if row.catalogue_digest != self._catalogue.digest:
                        continue  # an older catalogue's cells: not this query's
                    try:
                        stored[int(row.batch_id)] = Cube.from_bytes(
                            bytes(row.data), self._catalogue
                        )
                    except CreditShareError:
                        log.warning("the stored cube of snapshot %d is unreadable", row.batch_id)
        return [None if b is None else stored.get(b) for b in batches]
