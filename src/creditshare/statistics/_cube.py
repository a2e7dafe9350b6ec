"""A node's cube: per snapshot, counts and clipped sums over the finest cells.

The finest cells are region × every department dimension; a query's cells are
marginals of them (the node's chain is the node's own, so it is no axis). The cube
holds aggregates only, never a row, so a node keeps one per snapshot cheaply and
answers a series of dates without re-reading records. Sums are held in whole units
after clipping, exactly what the noise is calibrated to.
"""

from __future__ import annotations

import json
import math
import struct
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from creditshare._canonical import canonical_json
from creditshare.departments import Department, FieldValue
from creditshare.errors import InvalidInputError
from creditshare.statistics._catalogue import REGION_LEVELS, Catalogue

__all__ = ["Cube", "CubeBuilder", "region_of"]

_MAGIC = b"creditshare-cube/v1\n"
_REGION_INDEX = {code: i for i, code in enumerate(REGION_LEVELS)}
_OTHER = len(REGION_LEVELS) - 1
_MAX_HEADER = 4096

Int64Array = npt.NDArray[np.int64]


def region_of(uscc: str) -> str:
    """The region level of an enterprise: its USCC's province (characters 3–4) when a
    chain holds that province, else ``other``."""
    code = uscc[2:4]
    return code if code in _REGION_INDEX else REGION_LEVELS[_OTHER]


def _shape(catalogue: Catalogue) -> tuple[int, ...]:
    return (len(REGION_LEVELS), *(len(d.levels) for d in catalogue.own_dimensions))


@dataclass(frozen=True, slots=True)
class Cube:
    """``counts[region, d1, …]`` and ``sums[j, region, d1, …]`` (whole units of the
    catalogue's j-th sum column) of one snapshot at one node."""

    catalogue_digest: str
    counts: Int64Array
    sums: Int64Array

    @property
    def records(self) -> int:
        return int(self.counts.sum())

    def to_bytes(self) -> bytes:
        header = canonical_json(
            {
                "catalogue_digest": self.catalogue_digest,
                "shape": list(self.counts.shape),
                "sums": int(self.sums.shape[0]),
            }
        )
        return b"".join(
            (
                _MAGIC,
                struct.pack(">I", len(header)),
                header,
                self.counts.astype("<i8").tobytes(),
                self.sums.astype("<i8").tobytes(),
            )
        )

    @classmethod
    def from_bytes(cls, data: bytes, catalogue: Catalogue) -> Cube:
        """A stored cube, checked against ``catalogue`` (InvalidInputError otherwise: a
        cube built under another schema must be rebuilt, never misread)."""
        if not data.startswith(_MAGIC) or len(data) < len(_MAGIC) + 4:
            raise InvalidInputError("not a stored cube")
        start = len(_MAGIC) + 4
        (length,) = struct.unpack(">I", data[len(_MAGIC) : start])
        if length > _MAX_HEADER:
            raise InvalidInputError("stored cube header is too long")
        try:
            header = json.loads(data[start : start + length].decode("utf-8"))
        except (ValueError, UnicodeDecodeError):
            raise InvalidInputError("stored cube header is not JSON") from None
        if not isinstance(header, dict) or header.get("catalogue_digest") != catalogue.digest:
            raise InvalidInputError("stored cube was built for another catalogue: rebuild it")
        shape = _shape(catalogue)
        if header.get("shape") != list(shape) or header.get("sums") != len(catalogue.sums):
            raise InvalidInputError("stored cube does not have its catalogue's shape")
        cells = math.prod(shape)
        body = data[start + length :]
        if len(body) != 8 * cells * (1 + len(catalogue.sums)):
            raise InvalidInputError("stored cube has the wrong length")
        values = np.frombuffer(body, dtype="<i8").astype(np.int64)
        counts = values[:cells].reshape(shape)
        sums = values[cells:].reshape((len(catalogue.sums), *shape))
        if (counts < 0).any():
            raise InvalidInputError("stored cube holds a negative count")
        return cls(catalogue.digest, counts, sums)


class CubeBuilder:
    """Counts and clipped sums of one snapshot's records, added one record at a time."""

    def __init__(self, catalogue: Catalogue, department: Department) -> None:
        if Catalogue.of(department).digest != catalogue.digest:
            raise InvalidInputError(
                f"catalogue is not department {department.id}'s (its digest differs)"
            )
        self._catalogue = catalogue
        self._dimensions = department.statistics.dimensions
        # The schema's readers (``StatisticsSum.read``) paired with the catalogue's
        # clipping: same columns in the same order, as the digest check above proves.
        self._sums = tuple(zip(department.statistics.sums, catalogue.sums, strict=True))
        self._shape = _shape(catalogue)
        self._strides = [math.prod(self._shape[i + 1 :]) for i in range(len(self._shape))]
        self._cells: list[int] = []
        self._units: list[list[int]] = [[] for _ in self._sums]

    def add(self, uscc: str, record: Mapping[str, FieldValue]) -> None:
        """Count one enterprise's record.

        Every column, dimension or sum, is read through the schema's stored-value reader:
        a column added since the record was imported reads as its default when it has
        ``missing = "default"``; without one, or holding a value the schema no longer
        accepts, the record is stale and the build stops with StaleRecordError naming the
        column (its operator must re-import), never a KeyError. Nothing is kept of a
        record that fails, so the builder's totals are never of a partial record."""
        cell = _REGION_INDEX.get(uscc[2:4], _OTHER) * self._strides[0]
        for axis, dimension in enumerate(self._dimensions, start=1):
            cell += dimension.derive(record) * self._strides[axis]
        units = [column.units(spec.read(record)) for spec, column in self._sums]
        self._cells.append(cell)
        for j, value in enumerate(units):
            self._units[j].append(value)

    def finish(self) -> Cube:
        cells = math.prod(self._shape)
        index = np.asarray(self._cells, dtype=np.int64)
        counts = np.bincount(index, minlength=cells).astype(np.int64)
        sums = np.zeros((len(self._sums), cells), dtype=np.int64)
        for j, units in enumerate(self._units):
            np.add.at(sums[j], index, np.asarray(units, dtype=np.int64))
        return Cube(
            self._catalogue.digest,
            counts.reshape(self._shape),
            sums.reshape((len(self._sums), *self._shape)),
        )
