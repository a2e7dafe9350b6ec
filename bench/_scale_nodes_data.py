"""Streamed department files for the nodes section of ``bench/scale.py``.

Millions of rows are written one at a time (nothing is held), in the tax schema's
columns, each enterprise's USCC a function of its number so two files of the same
numbers describe the same enterprises.
"""

from __future__ import annotations

import csv
import random
from collections.abc import Iterator
from pathlib import Path

from creditshare.identity import make_uscc
from creditshare.identity.uscc import ALPHABET

__all__ = ["HEADER", "uscc_of", "write_tax_file"]

HEADER = ("uscc", "annual_tax_paid", "tax_credit_grade", "months_in_arrears")
_GRADES = "ABMCD"


def uscc_of(number: int) -> str:
    """The USCC of enterprise ``number`` (0 <= number < 31**6): an "MA" body in base 31."""
    digits = []
    for _ in range(6):
        number, digit = divmod(number, len(ALPHABET))
        digits.append(ALPHABET[digit])
    return str(make_uscc("9", "1", "310101", "MA" + "".join(reversed(digits))))


def _rows(count: int, seed: int, start: int = 0) -> Iterator[tuple[str, ...]]:
    rng = random.Random(seed)
    for number in range(start, start + count):
        yield (
            uscc_of(number),
            f"{rng.lognormvariate(11, 1.5):.2f}",
            _GRADES[rng.randrange(5)],
            str(rng.randrange(7) if rng.random() < 0.1 else 0),
        )


def write_tax_file(path: Path, count: int, seed: int = 16, start: int = 0) -> Path:
    """Write ``count`` tax rows to ``path`` (streamed: memory does not grow with count)."""
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(HEADER)
        writer.writerows(_rows(count, seed, start))
    return path
