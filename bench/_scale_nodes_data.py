"""Streamed department files for the nodes section of ``bench/scale.py``.

Millions of rows are written one at a time (nothing is held), in the tax schema's
columns, each enterprise's USCC a function of its number so two files of the same
numbers describe the same enterprises.
"""

from __future__ import annotations

import csv
import itertools
import random
from collections.abc import Iterable, Iterator, Sequence
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


def _rows(seed: int) -> Iterator[tuple[str, ...]]:
    rng = random.Random(seed)
    for number in itertools.count():
        yield (
            uscc_of(number),
            f"{rng.lognormvariate(11, 1.5):.2f}",
            _GRADES[rng.randrange(5)],
            str(rng.randrange(7) if rng.random() < 0.1 else 0),
        )


def write_tax_file(
    path: Path, count: int, seed: int = 16, first: Iterable[Sequence[str]] = ()
) -> int:
    """Write ``first`` (rows of a real export, e.g. the demo's) and then generated tax
    rows up to ``count`` rows in all to ``path``, streamed: memory does not grow with
    ``count``. The same ``seed`` and ``first`` always give the same first rows, so a
    file 1/10 the size is the first tenth of the larger one. How many rows it holds."""
    taken: set[str] = set()
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(HEADER)
        for row in first:
            writer.writerow(row)
            taken.add(row[0])
        fresh = (row for row in _rows(seed) if row[0] not in taken)
        writer.writerows(itertools.islice(fresh, max(count - len(taken), 0)))
    return max(count, len(taken))
