"""Snapshot import of CSV files: every row of every file is checked before anything is written.

A department's operator re-exports files from systems we do not control, so a
bad row is normal. The whole import is refused with the file, the line and the
reason, and the database is left exactly as it was. The files given together are
the department's complete current records (a snapshot): records absent from them
are removed, and the values each changed or removed record had are kept for change
detection (see ``_records``).
"""

from __future__ import annotations

import csv
import hashlib
import io
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from creditshare.departments import Department, FieldValue, listing
from creditshare.errors import ImportRejectedError
from creditshare.identity import InvalidUsccError, Uscc
from creditshare.node._records import RecordStore
from creditshare.node.monitoring._detection import detect_events

__all__ = ["ImportSummary", "check_files", "import_files", "parse_file"]

#: A hard ceiling so one malformed export cannot exhaust the node's memory.
MAX_ROWS_PER_IMPORT = 5_000_000


@dataclass(frozen=True, slots=True)
class ImportSummary:
    """One accepted snapshot: its files, their digest and what it did to the records."""

    files: tuple[str, ...]
    #: Records in the snapshot (added + changed + unchanged).
    rows: int
    sha256: str
    batch_id: int
    added: int
    changed: int
    removed: int
    unchanged: int

    def to_json(self) -> dict[str, Any]:
        return {
            "snapshot": self.batch_id,
            "files": list(self.files),
            "sha256": self.sha256,
            "rows": self.rows,
            "added": self.added,
            "changed": self.changed,
            "removed": self.removed,
            "unchanged": self.unchanged,
        }


def parse_file(
    path: Path, department: Department, seen: dict[str, str], digest: Any = None
) -> list[tuple[str, dict[str, FieldValue]]]:
    """Parse and validate one file; ``seen`` maps USCCs to where they first appeared.

    The file is read once, and ``digest`` (if given) hashes exactly the bytes parsed.
    """
    name = str(path)
    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise ImportRejectedError(name, None, f"cannot open: {exc.strerror}") from exc
    if digest is not None:
        digest.update(raw)
    try:
        text = raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ImportRejectedError(name, None, f"not UTF-8 text: {exc.reason}") from exc
    records: list[tuple[str, dict[str, FieldValue]]] = []
    with io.StringIO(text, newline="") as handle:
        reader = csv.reader(handle)
        try:
            header = next(reader, None)
            if header is None:
                raise ImportRejectedError(name, 1, "file is empty; expected a header row")
            header = [h.strip() for h in header]
            expected = department.columns
            missing = [c for c in expected if c not in header]
            unknown = [c for c in header if c not in expected]
            if missing or unknown or len(header) != len(set(header)):
                parts = []
                # listing(): a data row read as a header must not make a 100 kB message.
                if missing:
                    parts.append(f"missing column(s) {listing(missing)}")
                if unknown:
                    parts.append(f"unknown column(s) {listing(_shown(c) for c in unknown)}")
                if not parts:
                    parts.append("duplicate column names")
                raise ImportRejectedError(
                    name,
                    1,
                    f"header does not match the {department.id} schema: {'; '.join(parts)} "
                    f"(expected {','.join(expected)})",
                )
            index = {column: header.index(column) for column in expected}
            for row in reader:
                line = reader.line_num
                if not row or all(not cell.strip() for cell in row):
                    continue
                if len(row) != len(header):
                    extra = len(row) > len(header)
                    hint = " (a comma inside a value must be quoted)" if extra else ""
                    raise ImportRejectedError(
                        name, line, f"expected {len(header)} fields, found {len(row)}{hint}"
                    )
                try:
                    uscc = str(Uscc.parse(row[index["uscc"]]))
                except InvalidUsccError as exc:
                    raise ImportRejectedError(name, line, str(exc)) from exc
                if uscc in seen:
                    raise ImportRejectedError(
                        name, line, f"duplicate USCC {uscc} (first seen at {seen[uscc]})"
                    )
                seen[uscc] = f"{name}, line {line}"
                data: dict[str, FieldValue] = {}
                for spec in department.fields:
                    try:
                        data[spec.name] = spec.parse(row[index[spec.name]])
                    except ValueError as exc:
                        raise ImportRejectedError(name, line, str(exc)) from exc
                records.append((uscc, data))
                if len(seen) > MAX_ROWS_PER_IMPORT:
                    raise ImportRejectedError(name, line, f"more than {MAX_ROWS_PER_IMPORT} rows")
        except csv.Error as exc:
            raise ImportRejectedError(name, reader.line_num, f"malformed CSV: {exc}") from exc
    return records


def _shown(name: str) -> str:
    """A header cell for a message: cut short, quoted if it holds control characters."""
    return name[:64] if name.isprintable() else repr(name[:64])


def import_files(
    store: RecordStore,
    department: Department,
    paths: Sequence[Path],
    *,
    allow_empty: bool = False,
) -> ImportSummary:
    """Validate every file, then make them the current records in one transaction.

    A snapshot that would remove every current record is refused unless
    ``allow_empty``: that is what a header-only or wrong export looks like. The events
    it raises for watched enterprises are queued in the same transaction.
    """
    if not paths:
        raise ImportRejectedError("(no files)", None, "give at least one CSV file to import")
    seen: dict[str, str] = {}
    digest = hashlib.sha256()
    records: list[tuple[str, dict[str, FieldValue]]] = []
    for path in paths:
        records.extend(parse_file(path, department, seen, digest))
    del seen  # the store keeps its own set of USCCs; do not hold two
    names = tuple(str(p) for p in paths)
    counts = store.apply_snapshot(
        records,
        files=";".join(names),
        sha256=digest.hexdigest(),
        allow_empty=allow_empty,
        # Post-loan monitoring compares each watched enterprise with the values this
        # snapshot replaces, which only this transaction still sees.
        on_snapshot=lambda conn, snapshot, at: detect_events(conn, department, snapshot, at),
    )
    return ImportSummary(
        files=names,
        rows=counts.rows,
        sha256=digest.hexdigest(),
        batch_id=counts.batch_id,
        added=counts.added,
        changed=counts.changed,
        removed=counts.removed,
        unchanged=counts.unchanged,
    )


def check_files(department: Department, paths: Sequence[Path]) -> int:
    """Check export files against a schema exactly as an import would, writing nothing;
    how many rows they hold (``creditshare node schema check --data``)."""
    seen: dict[str, str] = {}
    return sum(len(parse_file(path, department, seen)) for path in paths)
