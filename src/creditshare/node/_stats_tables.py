"""The node's statistics tables (revision n0009): snapshot cubes and privacy spend.

Kept apart from the code that fills them so the schema (and its migration test)
does not depend on the statistics room being importable.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Column, Index, LargeBinary, Table
from sqlmodel import Field, SQLModel

__all__ = ["CUBES", "SPEND", "PrivacySpendRow", "StatsCubeRow"]


class StatsCubeRow(SQLModel, table=True):
    """One snapshot's statistics cube (aggregates only) and the catalogue it follows."""

    __tablename__ = "stats_cube"

    batch_id: int = Field(primary_key=True, foreign_key="import_batch.id")
    #: The catalogue the cube was built under: another one's cells are not this one's.
    catalogue_digest: str = Field(max_length=64)
    data: bytes = Field(sa_column=Column(LargeBinary, nullable=False))
    built_at: datetime


class PrivacySpendRow(SQLModel, table=True):
    """The ε one answered statistics query spent (its ledger index is the key)."""

    __tablename__ = "privacy_spend"
    __table_args__ = (Index("ix_privacy_spend_requester_period", "requester", "period"),)

    leaf_index: int = Field(primary_key=True)
    requester: str = Field(max_length=64)
    #: "2026-12", "2026-Q4" or "2026" (``statistics.period_of`` of the record's time).
    period: str = Field(max_length=16)
    epsilon: float
    spent_at: datetime


def _table(model: type[SQLModel]) -> Table:
    table = model.__table__  # type: ignore[attr-defined]
    assert isinstance(table, Table)
    return table


CUBES = _table(StatsCubeRow)
SPEND = _table(PrivacySpendRow)
