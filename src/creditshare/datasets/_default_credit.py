"""The vertically split default_credit set (FATE's guest/host files) as creditshare data.

Ids become enterprise identifiers (valid USCCs derived from the id, stable across
runs) so the files travel the same path as real department data: the host file
becomes a ``card_history`` node's import file, the guest file's features a
``card_billing`` node's (the node the bureau runs for its own features) and its
labels the bureau's labels file. Both schemas are in the repository,
``data/default_credit/schemas/``. Nothing is downloaded: the source folder is given.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

from creditshare.errors import ImportRejectedError
from creditshare.identity import make_uscc

__all__ = ["DefaultCreditFiles", "prepare_default_credit", "uscc_for"]

_ORG_ALPHABET = "0123456789ABCDEFGHJKLMNPQRTUWXY"
_HOST_COLUMNS = tuple(f"x{j}" for j in range(10))


def uscc_for(identifier: int) -> str:
    """A valid USCC (Shanghai Huangpu, company) whose organisation code encodes the id."""
    if not 0 <= identifier < 31**8:
        raise ValueError("id out of range for an organisation code")
    digits = []
    value = identifier
    for _ in range(8):
        value, digit = divmod(value, 31)
        digits.append(_ORG_ALPHABET[digit])
    return str(make_uscc("9", "1", "310101", "".join(reversed(digits))))


@dataclass(frozen=True, slots=True)
class DefaultCreditFiles:
    #: The host features: a ``card_history`` node's import file.
    node_file: Path
    labels_file: Path
    #: The guest features: the import file of the ``card_billing`` node the bureau runs.
    bureau_node_file: Path
    rows: int


def _read(path: Path, expected: tuple[str, ...]) -> list[list[str]]:
    with path.open(encoding="utf-8", newline="") as handle:
        reader = csv.reader(handle)
        header = next(reader, None)
        if header is None or tuple(header[: len(expected)]) != expected:
            raise ImportRejectedError(
                str(path), 1, f"expected columns starting {','.join(expected)}"
            )
        rows = []
        for row in reader:
            if len(row) != len(header):
                raise ImportRejectedError(str(path), reader.line_num, "wrong number of fields")
            rows.append(row)
        return rows


def prepare_default_credit(source: Path, out: Path) -> DefaultCreditFiles:
    """Write ``card_history.csv`` and ``card_billing.csv`` (node import files) and
    ``labels.csv`` (uscc,default: the bureau's)."""
    guest = _read(source / "default_credit_hetero_guest.csv", ("id", "y"))
    host = _read(source / "default_credit_hetero_host.csv", ("id", *_HOST_COLUMNS))
    out.mkdir(parents=True, exist_ok=True)
    node_file, bureau_node_file = out / "card_history.csv", out / "card_billing.csv"
    labels_file = out / "labels.csv"
    with (
        node_file.open("w", encoding="utf-8", newline="") as hosts,
        bureau_node_file.open("w", encoding="utf-8", newline="") as guests,
        labels_file.open("w", encoding="utf-8", newline="") as labels,
    ):
        host_writer = csv.writer(hosts, lineterminator="\n")
        host_writer.writerow(("uscc", *_HOST_COLUMNS))
        for row in host:
            host_writer.writerow((uscc_for(int(row[0])), *row[1:]))
        guest_writer = csv.writer(guests, lineterminator="\n")
        label_writer = csv.writer(labels, lineterminator="\n")
        guest_writer.writerow(("uscc", *(f"x{j}" for j in range(len(guest[0]) - 2))))
        label_writer.writerow(("uscc", "default"))
        for row in guest:
            uscc = uscc_for(int(row[0]))
            label_writer.writerow((uscc, row[1].split(".")[0]))
            guest_writer.writerow((uscc, *row[2:]))
    return DefaultCreditFiles(node_file, labels_file, bureau_node_file, len(host))
