"""The cosignatures the data nodes gave on tree heads, kept in the coordinator database.

In the database rather than in memory so that every replica publishes the same
cosignatures, whichever one collected them. Rows are keyed by (tree size, witness)
and carry the root they cosign: a head is published only with cosignatures over its
own root, so heads are never mixed. Bounded: only the newest ``KEPT_HEADS`` sizes
are kept (a client needs the newest witnessed head, not the history).
"""

from __future__ import annotations

from collections import defaultdict
from datetime import datetime

from sqlalchemy import BigInteger, Column, LargeBinary, delete, func, insert, select
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import IntegrityError
from sqlmodel import Field, SQLModel

from creditshare.ledger import Cosignature, SignedTreeHead

__all__ = ["KEPT_HEADS", "CosignatureRow", "CosignatureStore"]

#: Distinct tree sizes whose cosignatures are kept.
KEPT_HEADS = 16


class CosignatureRow(SQLModel, table=True):
    """One witness's cosignature over the checkpoint of the head of ``tree_size``."""

    __tablename__ = "tree_head_cosignature"

    tree_size: int = Field(sa_column=Column(BigInteger, primary_key=True, autoincrement=False))
    witness: str = Field(primary_key=True, max_length=64)
    root: bytes = Field(sa_column=Column(LargeBinary, nullable=False))
    key_id: bytes = Field(sa_column=Column(LargeBinary, nullable=False))
    timestamp: int = Field(sa_column=Column(BigInteger, nullable=False))
    signature: bytes = Field(sa_column=Column(LargeBinary, nullable=False))
    collected_at: datetime


class CosignatureStore:
    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        self._table = CosignatureRow.__table__  # type: ignore[attr-defined]

    def add(
        self, head: SignedTreeHead, cosignatures: list[Cosignature], collected_at: datetime
    ) -> None:
        """Keep verified cosignatures of ``head``; a witness's newer one replaces its older
        one for the same size (both are valid: the newest timestamp is the freshest word)."""
        table = self._table
        with self._engine.begin() as conn:
            for c in cosignatures:
                conn.execute(
                    delete(table).where(
                        table.c.tree_size == head.size, table.c.witness == c.witness
                    )
                )
                try:
                    with conn.begin_nested():
                        conn.execute(
                            insert(table).values(
                                tree_size=head.size,
                                witness=c.witness,
                                root=head.root,
                                key_id=c.key_id,
                                timestamp=c.timestamp,
                                signature=c.signature,
                                collected_at=collected_at,
                            )
                        )
                except IntegrityError:
                    continue  # a replica stored this witness's word at the same moment
            self._prune(conn)

    def _prune(self, conn: Connection) -> None:
        table = self._table
        sizes = (
            select(table.c.tree_size)
            .group_by(table.c.tree_size)
            .order_by(table.c.tree_size.desc())
            .limit(KEPT_HEADS)
        )
        kept = [row[0] for row in conn.execute(sizes)]
        if len(kept) == KEPT_HEADS:
            conn.execute(delete(table).where(table.c.tree_size < min(kept)))

    def newest(self, limit: int = KEPT_HEADS) -> list[tuple[int, bytes, list[Cosignature]]]:
        """(size, root, cosignatures) per stored size, newest first; one root per size."""
        table = self._table
        with self._engine.connect() as conn:
            top = conn.execute(select(func.max(table.c.tree_size))).scalar()
            if top is None:
                return []
            rows = conn.execute(
                select(table).order_by(table.c.tree_size.desc(), table.c.witness).limit(limit * 256)
            ).all()
        grouped: defaultdict[tuple[int, bytes], list[Cosignature]] = defaultdict(list)
        for row in rows:
            grouped[(row.tree_size, bytes(row.root))].append(
                Cosignature(row.witness, bytes(row.key_id), row.timestamp, bytes(row.signature))
            )
        return [(size, root, cos) for (size, root), cos in grouped.items()]
