"""What a node remembers about the ledger: the tree head it trusts and what it answered.

Both survive restarts (they are rows in the node's own database): a node that
forgot its trusted head could be shown a rewritten log after a reboot.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime

from sqlalchemy import BigInteger, Column, insert, update
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError
from sqlmodel import Field, Session, SQLModel, col, select

from creditshare.ledger import QueryRecord, SignedTreeHead

__all__ = ["TREE_CLAIM_PREFIX", "AccessLog", "AccessLogRow", "TrustedHeadRow", "TrustedHeadStore"]

#: The query id of a TreeScore claim is this prefix and the query's id (at most 64).
TREE_CLAIM_PREFIX = "tree:"


class TrustedHeadRow(SQLModel, table=True):
    __tablename__ = "trusted_tree_head"

    id: int = Field(default=1, primary_key=True)
    # 64-bit: milliseconds since 1970 overflow PostgreSQL's 32-bit INTEGER.
    size: int = Field(sa_column=Column(BigInteger, nullable=False))
    root: bytes
    timestamp_ms: int = Field(sa_column=Column(BigInteger, nullable=False))
    signature: bytes
    key_id: str


class AccessLogRow(SQLModel, table=True):
    """One answered query. The leaf index is unique, so a receipt cannot be replayed; and
    the query id (which the requester chose and signed) is unique, so a signed request
    recorded a second time under a new leaf is not answered twice either.

    A query with a tree model asks an owning node twice under one receipt: Score (its
    presence and indicators) and TreeScore (its step of the private score). Each claims
    the receipt once: TreeScore's row is keyed by leaf index −1 − index and query id
    ``tree:<query id>`` (``claim``), so neither call can be replayed and neither blocks
    the other.
    """

    __tablename__ = "access_log"

    leaf_index: int = Field(primary_key=True)
    query_id: str = Field(index=True, unique=True, max_length=64)
    uscc: str = Field(index=True, max_length=18)
    requester: str = Field(max_length=64)
    purpose: str = Field(max_length=32)
    consent_id: str = Field(max_length=64)
    model_id: str = Field(max_length=64)
    answered_at: datetime = Field(index=True)


#: The statements every answered query runs, built once: SQLAlchemy then reuses their
#: compiled form without working out a cache key from a new statement each time.
_HEADS = TrustedHeadRow.__table__  # type: ignore[attr-defined]
_UPDATE_HEAD = update(_HEADS).where(_HEADS.c.id == 1)
_INSERT_HEAD = insert(_HEADS)
_INSERT_CLAIM = insert(AccessLogRow.__table__)  # type: ignore[attr-defined]


class TrustedHeadStore:
    def __init__(self, engine: Engine) -> None:
        self._engine = engine

    def load(self) -> SignedTreeHead | None:
        with Session(self._engine) as session:
            row = session.get(TrustedHeadRow, 1)
            if row is None:
                return None
            return SignedTreeHead(row.size, row.root, row.timestamp_ms, row.signature, row.key_id)

    def save(self, head: SignedTreeHead) -> None:
        """One UPDATE (an INSERT the first time): this runs on every answered query."""
        values = {
            "size": head.size,
            "root": head.root,
            "timestamp_ms": head.timestamp_ms,
            "signature": head.signature,
            "key_id": head.key_id,
        }
        with self._engine.begin() as connection:
            updated = connection.execute(_UPDATE_HEAD, values)
            if updated.rowcount == 0:
                connection.execute(_INSERT_HEAD, {"id": 1, **values})


class AccessLog:
    def __init__(self, engine: Engine, clock: Callable[[], datetime]) -> None:
        self._engine = engine
        self._clock = clock

    def seen(self, leaf_index: int) -> bool:
        with Session(self._engine) as session:
            return session.get(AccessLogRow, leaf_index) is not None

    def claim(self, leaf_index: int, record: QueryRecord, rpc: str = "Score") -> bool:
        """Log a query before answering it; False if this receipt was already used by
        ``rpc`` ("Score", or "TreeScore": a row of its own, see ``AccessLogRow``).

        The primary key decides, so two concurrent uses of one receipt cannot both win.
        """
        tree = rpc == "TreeScore"
        row = {
            "leaf_index": -1 - leaf_index if tree else leaf_index,
            "query_id": f"{TREE_CLAIM_PREFIX}{record.query_id}" if tree else record.query_id,
            "uscc": record.uscc,
            "requester": record.requester,
            "purpose": record.purpose,
            "consent_id": record.consent_id,
            "model_id": record.model_id,
            "answered_at": self._clock(),
        }
        try:
            with self._engine.begin() as connection:  # one INSERT: this runs on every query
                connection.execute(_INSERT_CLAIM, row)
        except IntegrityError:
            return False
        return True

    def entries(self, limit: int = 1000) -> list[AccessLogRow]:
        with Session(self._engine) as session:
            query = select(AccessLogRow).order_by(col(AccessLogRow.leaf_index).desc())
            return list(session.exec(query.limit(limit)))
