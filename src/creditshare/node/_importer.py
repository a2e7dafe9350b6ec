"""Snapshot import of CSV files: every row of every file is checked before anything is written.

A department's operator re-exports files from systems we do not control, so a
bad row is normal. The whole import is refused with the file, the line and the
reason, and the database is left exactly as it was. The files given together are
the department's complete current records (a snapshot): records absent from them
are removed, and the values each changed or removed record had are kept for change
detection (see ``_records``).
"""

from __future__ import annotations

import codecs
import csv
import hashlib
import io
import tempfile
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from creditshare._database import open_engine
from creditshare.departments import Department, FieldValue, listing
from creditshare.errors import ImportRejectedError
from creditshare.identity import InvalidUsccError, Uscc
from creditshare.node._records import RecordStore
from creditshare.node._staging import DuplicateRecordError, SnapshotStaging, StagedRow, staging
from creditshare.node.monitoring._detection import detect_events

__all__ = ["ImportSummary", "check_files", "import_files", "parse_file"]

#: Rows validated, then staged, at a time: what the importer holds (a few MB).
IMPORT_CHUNK = 5_000
#: Bytes read (and decoded) at a time.
_BLOCK = 1 << 20
#: Distinct cells remembered per column (bounded: a column of amounts is all distinct).
_PARSED_CELLS = 4096
#: Characters one line may hold: a file with no line break (a wrong export) is refused
#: here rather than held whole (csv bounds a field, not a line).
_MAX_LINE = 1 << 24
_MISSING = object()


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
    path: Path, department: Department, digest: Any = None
) -> Iterator[tuple[str, dict[str, FieldValue], int]]:
    """Parse and validate one file as it is read: (USCC, values, line) for each row.

    The file is read once, a block at a time (never whole), and ``digest`` (if given)
    hashes exactly the bytes parsed. The first bad row raises ImportRejectedError with
    the file, its line and the reason; duplicates are the caller's to find (across
    files: ``_staging``).
    """
    name = str(path)
    try:
        handle = path.open("rb")
    except OSError as exc:
        raise ImportRejectedError(name, None, f"cannot open: {exc.strerror}") from exc
    with handle:
        lines = _lines(handle, name, digest)
        reader = csv.reader(lines)
        try:
            header = next(reader, None)
            if header is None:
                raise ImportRejectedError(name, 1, "file is empty; expected a header row")
            header = [h.strip() for h in header]
            expected = department.columns
            # A column with missing = "default" may be left out: every row takes its default.
            optional = [f.name for f in department.fields if f.missing == "default"]
            missing = [c for c in expected if c not in header and c not in optional]
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
                    f"(expected {','.join(c for c in expected if c not in optional)})"
                    + (f", optionally also {','.join(optional)}" if optional else ""),
                )
            width = len(header)
            at = header.index("uscc")
            # Per column, the cells already parsed: a grade, a flag or a count takes a
            # handful of values, each parsed once (parsing is a pure function of the cell).
            fields: list[tuple[str, Callable[[str], FieldValue], int, dict[str, object]]] = [
                (f.name, f.parse, header.index(f.name), {})
                for f in department.fields
                # An absent optional column is not stored: readers take its default
                # (as for records imported before a schema added the column).
                if f.name in header
            ]
            for row in reader:
                if len(row) != width:
                    if not row or all(not cell.strip() for cell in row):
                        continue
                    extra = len(row) > width
                    hint = " (a comma inside a value must be quoted)" if extra else ""
                    raise ImportRejectedError(
                        name, reader.line_num, f"expected {width} fields, found {len(row)}{hint}"
                    )
                try:
                    uscc = str(Uscc.parse(row[at]))
                except InvalidUsccError as exc:
                    if all(not cell.strip() for cell in row):
                        continue
                    raise ImportRejectedError(name, reader.line_num, str(exc)) from exc
                data: dict[str, FieldValue] = {}
                for field, parse, index, seen in fields:
                    cell = row[index]
                    value = seen.get(cell, _MISSING)
                    if value is _MISSING:
                        try:
                            value = parse(cell)
                        except ValueError as exc:
                            raise ImportRejectedError(name, reader.line_num, str(exc)) from exc
                        if len(seen) < _PARSED_CELLS:
                            seen[cell] = value
                    data[field] = value  # type: ignore[assignment]
                yield uscc, data, reader.line_num
        except csv.Error as exc:
            raise ImportRejectedError(name, reader.line_num, f"malformed CSV: {exc}") from exc


def _lines(handle: BinaryIO, name: str, digest: Any) -> Iterator[str]:
    """The file's text lines (ends kept, as ``open(newline="")`` gives them to csv),
    decoded a block at a time: a byte that is not UTF-8 is refused with its line,
    after the lines before it (so the first bad line is the one reported)."""
    decoder = codecs.getincrementaldecoder("utf-8")()
    carry = ""
    newlines = 0  # in the blocks before this one: the line of a bad byte
    first = True
    while True:
        block = handle.read(_BLOCK)
        if digest is not None:
            digest.update(block)
        data = block
        if first:
            first = False
            # A byte-order mark is no part of the header (which may come in pieces).
            while len(data) < 3 and data == codecs.BOM_UTF8[: len(data)] and block:
                block = handle.read(_BLOCK)
                if digest is not None:
                    digest.update(block)
                data += block
            data = data.removeprefix(codecs.BOM_UTF8)
        pending = decoder.getstate()
        try:
            text = carry + decoder.decode(data, final=not block)
        except UnicodeDecodeError as exc:
            start = max(exc.start - len(pending[0]), 0)
            decoder.setstate(pending)
            yield from _complete(carry + decoder.decode(data[:start]))
            line = newlines + data[:start].count(b"\n") + 1
            raise ImportRejectedError(name, line, f"not UTF-8 text: {exc.reason}") from exc
        newlines += data.count(b"\n")
        pieces = io.StringIO(text, newline="").readlines()
        # A last piece without its end may continue in the next block (so may a "\r"
        # whose "\n" is the next block's first byte).
        carry = pieces.pop() if block and pieces and not pieces[-1].endswith("\n") else ""
        if len(carry) > _MAX_LINE:
            yield from pieces
            why = f"line longer than {_MAX_LINE:,} characters (is this a CSV export?)"
            raise ImportRejectedError(name, newlines + 1, why)
        yield from pieces
        if not block:
            return


def _complete(text: str) -> list[str]:
    """The lines of ``text`` that end before its last character (a bad byte's line is
    not one of them)."""
    pieces = io.StringIO(text, newline="").readlines()
    if pieces and not pieces[-1].endswith("\n"):
        pieces.pop()
    return pieces


def _shown(name: str) -> str:
    """A header cell for a message: cut short, quoted if it holds control characters."""
    return name[:64] if name.isprintable() else repr(name[:64])


def import_files(
    store: RecordStore,
    department: Department,
    paths: Sequence[Path],
    *,
    allow_empty: bool = False,
    max_rows: int | None = None,
    chunk_rows: int = IMPORT_CHUNK,
) -> ImportSummary:
    """Validate every file, then make them the current records in one transaction.

    Rows are validated and staged ``chunk_rows`` at a time (``_staging``): memory does
    not grow with the files. ``max_rows`` (none: no limit) refuses a larger snapshot.
    A snapshot that would remove every current record is refused unless
    ``allow_empty``: that is what a header-only or wrong export looks like. The events
    it raises for watched enterprises are queued in the same transaction.
    """
    if not paths:
        raise ImportRejectedError("(no files)", None, "give at least one CSV file to import")
    digest = hashlib.sha256()
    names = tuple(str(p) for p in paths)
    with staging(store.engine) as staged:
        _stage(staged, department, paths, digest, max_rows, chunk_rows)
        counts = staged.apply(
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


def _stage(
    staged: SnapshotStaging,
    department: Department,
    paths: Sequence[Path],
    digest: Any,
    max_rows: int | None,
    chunk_rows: int,
) -> None:
    """Validate every row of every file into ``staged``, ``chunk_rows`` at a time; the
    first bad row (a duplicate USCC included) refuses the import with where it is."""
    count = 0
    for source, path in enumerate(paths):
        pending: list[StagedRow] = []
        try:
            for uscc, data, line in parse_file(path, department, digest):
                pending.append((uscc, data, source, line))
                count += 1
                if max_rows is not None and count > max_rows:
                    raise ImportRejectedError(
                        str(path), line, f"more than {max_rows} rows (the node's import_max_rows)"
                    )
                if len(pending) >= chunk_rows:
                    _add(staged, pending, paths)
                    pending = []
        except ImportRejectedError:
            _add(staged, pending, paths)  # a duplicate on an earlier line comes first
            raise
        _add(staged, pending, paths)


def _add(staged: SnapshotStaging, rows: list[StagedRow], paths: Sequence[Path]) -> None:
    try:
        staged.add(rows)
    except DuplicateRecordError as exc:
        source, line = exc.first
        raise ImportRejectedError(
            str(paths[exc.source]),
            exc.line,
            f"duplicate USCC {exc.uscc} (first seen at {paths[source]}, line {line})",
        ) from None


def check_files(department: Department, paths: Sequence[Path]) -> int:
    """Check export files against a schema exactly as an import would, writing nothing;
    how many rows they hold (``creditshare node schema check --data``).

    Duplicates are found in a throw-away SQLite staging table, so that checking a file
    of any size needs no more memory than importing it."""
    if not paths:
        return 0
    with tempfile.TemporaryDirectory(prefix="creditshare-check-") as folder:
        engine = open_engine("sqlite:///" + str(Path(folder) / "check.db"))
        try:
            with staging(engine) as staged:
                _stage(staged, department, paths, None, None, IMPORT_CHUNK)
                return staged.rows
        finally:
            engine.dispose()
