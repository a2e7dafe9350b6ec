"""What a node remembers about the ledger: the tree head it trusts and what it answered.

Both survive restarts (they are rows in the node's own database): a node that
forgot its trusted head could be shown a rewritten log after a reboot.

An answer usually moves the trusted head and always claims its receipt. Within
``AccessLog.deferring_heads`` (the Score and TreeScore path) the new head is written in
the claim's own transaction: one commit per answer instead of two. A head the tracker
accepted is written before the call that accepted it returns, whatever happens: with
the claim, or alone when the call ends without one; and every claim first writes any
head still unwritten, so no answer is ever stored without the head it was checked
against. Elsewhere (training, monitoring, cosigning) a head is written at once.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime
from typing import Any

from sqlalchemy import BigInteger, Column, bindparam, insert, update
from sqlalchemy.engine import Connection, Engine
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
#: Only forward: heads written from concurrent answers may commit out of order.
_UPDATE_HEAD = update(_HEADS).where(_HEADS.c.id == 1, _HEADS.c.size < bindparam("new_size"))
_HEAD_EXISTS = select(_HEADS.c.id).where(_HEADS.c.id == 1)
_INSERT_HEAD = insert(_HEADS)
_INSERT_CLAIM = insert(AccessLogRow.__table__)  # type: ignore[attr-defined]


class TrustedHeadStore:
    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        self._lock = threading.Lock()
        #: The newest head accepted but not yet committed (see the module docstring).
        self._unwritten: SignedTreeHead | None = None
        self._local = threading.local()

    def load(self) -> SignedTreeHead | None:
        with Session(self._engine) as session:
            row = session.get(TrustedHeadRow, 1)
            if row is None:
                return None
            return SignedTreeHead(row.size, row.root, row.timestamp_ms, row.signature, row.key_id)

    def save(self, head: SignedTreeHead) -> None:
        """The tracker's hook, under its lock: written now, or (on a thread within
        ``deferring``) with the claim that follows or when ``deferring`` ends."""
        with self._lock:
            if self._unwritten is None or head.size > self._unwritten.size:
                self._unwritten = head
        if not getattr(self._local, "deferring", False):
            self.flush()

    @contextmanager
    def deferring(self) -> Iterator[None]:
        """On this thread, ``save`` leaves the head to the next ``write_unwritten``;
        whatever is still unwritten when the block ends (refused, or the claim lost) is
        written then, so the head is stored before the call answers or refuses."""
        self._local.deferring = True
        try:
            yield
        finally:
            self._local.deferring = False
            self.flush()

    def flush(self) -> None:
        """Write the unwritten head, if any, in a transaction of its own."""
        if self._unwritten is None:
            return
        with self._engine.begin() as connection:
            head = self.write_unwritten(connection)
        self.written(head)

    def write_unwritten(self, connection: Connection) -> SignedTreeHead | None:
        """Write the unwritten head in the caller's transaction; the head written (give
        it to ``written`` once the transaction commits), or None."""
        with self._lock:
            head = self._unwritten
        if head is None:
            return None
        values: dict[str, Any] = {
            "size": head.size,
            "root": head.root,
            "timestamp_ms": head.timestamp_ms,
            "signature": head.signature,
            "key_id": head.key_id,
        }
        updated = connection.execute(_UPDATE_HEAD, {**values, "new_size": head.size})
        if updated.rowcount == 0 and connection.execute(_HEAD_EXISTS).first() is None:
            connection.execute(_INSERT_HEAD, {"id": 1, **values})
        return head

    def written(self, head: SignedTreeHead | None) -> None:
        """``head`` is committed: forget it unless a newer one arrived meanwhile."""
        with self._lock:
            if head is not None and self._unwritten is head:
                self._unwritten = None


class AccessLog:
    def __init__(
        self,
        engine: Engine,
        clock: Callable[[], datetime],
        heads: TrustedHeadStore | None = None,
    ) -> None:
        """``heads`` (on the same database) has its unwritten head written with each claim."""
        self._engine = engine
        self._clock = clock
        self._heads = heads

    @contextmanager
    def deferring_heads(self) -> Iterator[None]:
        """A head accepted within this block (this thread) is written with the claim."""
        if self._heads is None:
            yield
            return
        with self._heads.deferring():
            yield

    def seen(self, leaf_index: int) -> bool:
        with Session(self._engine) as session:
            return session.get(AccessLogRow, leaf_index) is not None

    def claim(
        self,
        leaf_index: int,
        record: QueryRecord,
        rpc: str = "Score",
        also: Callable[[Connection], None] | None = None,
    ) -> bool:
        """Log a query before answering it; False if this receipt was already used by
        ``rpc`` ("Score", or "TreeScore": a row of its own, see ``AccessLogRow``).

        The primary key decides, so two concurrent uses of one receipt cannot both win.
        ``also`` runs in the claim's transaction, after the row is written (a statistics
        query's privacy spend): if it raises, nothing of the claim is kept.
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
        head = None
        try:
            # One transaction per answer: the head it was checked against, and its row.
            with self._engine.begin() as connection:
                if self._heads is not None:
                    head = self._heads.write_unwritten(connection)
                connection.execute(_INSERT_CLAIM, row)
                if also is not None:
                    also(connection)
        except IntegrityError:
            return False  # rolled back: the head stays unwritten, for deferring's end
        if self._heads is not None:
            self._heads.written(head)
        return True

    def entries(self, limit: int = 1000) -> list[AccessLogRow]:
        with Session(self._engine) as session:
            query = select(AccessLogRow).order_by(col(AccessLogRow.leaf_index).desc())
            return list(session.exec(query.limit(limit)))
