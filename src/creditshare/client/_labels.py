"""The bureau's labels file: one reader for the CLI and the console."""

from __future__ import annotations

import csv
import io

from creditshare.errors import ImportRejectedError

__all__ = ["read_labels"]


def read_labels(data: bytes, name: str) -> dict[str, int]:
    """A bureau's labels from CSV bytes (columns ``uscc,default``, default 0 or 1; USCCs
    upper-cased), as ``bureau train --labels`` and the bureau's console read them;
    ImportRejectedError naming ``name`` and the line of the first bad row."""
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise ImportRejectedError(name, line, "not UTF-8 text") from None
    reader = csv.DictReader(io.StringIO(text, newline=""))
    if reader.fieldnames is None or not {"uscc", "default"} <= set(reader.fieldnames):
        raise ImportRejectedError(name, 1, "expected columns uscc,default")
    labels: dict[str, int] = {}
    for row in reader:
        uscc, default = (row.get("uscc") or "").strip().upper(), row.get("default")
        if default not in ("0", "1"):
            raise ImportRejectedError(
                name, reader.line_num, f"default must be 0 or 1, got {default!r}"
            )
        if not uscc:
            raise ImportRejectedError(name, reader.line_num, "the row has no uscc")
        labels[uscc] = int(default)
    if not labels:
        raise ImportRejectedError(name, 1, "no labelled rows")
    return labels
