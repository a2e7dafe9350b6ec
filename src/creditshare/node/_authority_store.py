"""What a node keeps to check requests itself: revoked consents, revocation lists and
the requests it refused.

All three are rows in the node's own database, so a restart forgets none of them: a
node that forgot a consent's revocation after a reboot would answer under it again.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from datetime import datetime

from sqlalchemy import BigInteger, Column, LargeBinary, delete, insert
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError
from sqlmodel import Field, Session, SQLModel, col, select

__all__ = [
    "RefusalLog",
    "RefusalRow",
    "RevocationListRow",
    "RevokedConsentRow",
    "RevokedConsents",
    "StoredRevocationLists",
]

#: Refusals a node keeps (the newest): bounded, since an attacker decides how many come.
MAX_REFUSALS_KEPT = 100_000
#: Characters of a refusal's reason kept in the node's refusal log.
MAX_REFUSAL_REASON = 300


class RevokedConsentRow(SQLModel, table=True):
    """A consent its enterprise withdrew, with the signed withdrawal that proves it."""

    __tablename__ = "revoked_consent"

    consent_id: str = Field(primary_key=True, max_length=32)
    uscc: str = Field(max_length=18)
    revoked_at: datetime
    revocation: bytes = Field(sa_column=Column(LargeBinary, nullable=False))


class RevocationListRow(SQLModel, table=True):
    """The newest certificate revocation list accepted from each trusted CA."""

    __tablename__ = "revocation_list"

    issuer_fingerprint: str = Field(primary_key=True, max_length=64)
    number: int = Field(sa_column=Column(BigInteger, nullable=False))
    der: bytes = Field(sa_column=Column(LargeBinary, nullable=False))


class RefusalRow(SQLModel, table=True):
    """A request this node refused, and why: the department's own record of attempts."""

    __tablename__ = "refusal_log"

    id: int | None = Field(default=None, primary_key=True)
    refused_at: datetime = Field(index=True)
    rpc: str = Field(max_length=32)
    request_id: str = Field(max_length=64)
    status: str = Field(max_length=32)
    reason: str = Field(max_length=MAX_REFUSAL_REASON)


class RevokedConsents:
    """Revoked consent ids, kept in memory as well: every query asks, and only this node's
    own ``RevokeConsent`` calls add to them (the rows are what survives a restart)."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        self._lock = threading.Lock()
        with Session(engine) as session:
            self._ids = set(session.exec(select(RevokedConsentRow.consent_id)))

    def is_revoked(self, consent_id: str) -> bool:
        with self._lock:
            return consent_id in self._ids

    def add(self, consent_id: str, uscc: str, revoked_at: datetime, revocation: bytes) -> bool:
        """Record a verified revocation; False if this consent was already revoked."""
        table = RevokedConsentRow.__table__  # type: ignore[attr-defined]
        row = {
            "consent_id": consent_id,
            "uscc": uscc,
            "revoked_at": revoked_at,
            "revocation": revocation,
        }
        try:
            with self._engine.begin() as connection:
                connection.execute(insert(table).values(**row))
        except IntegrityError:
            return False
        finally:
            with self._lock:
                self._ids.add(consent_id)
        return True


class StoredRevocationLists:
    def __init__(self, engine: Engine) -> None:
        self._engine = engine

    def load(self) -> list[bytes]:
        with Session(self._engine) as session:
            return [row.der for row in session.exec(select(RevocationListRow))]

    def save(self, issuer_fingerprint: str, number: int, der: bytes) -> None:
        with Session(self._engine) as session:
            row = session.get(RevocationListRow, issuer_fingerprint)
            if row is None:
                row = RevocationListRow(
                    issuer_fingerprint=issuer_fingerprint, number=number, der=der
                )
            elif number <= row.number:
                return
            row.number, row.der = number, der
            session.add(row)
            session.commit()


class RefusalLog:
    """Refused requests, the newest ``keep`` of them: refusals are what an attacker (a
    compromised coordinator, the node's only client) can cause at will, so they must not
    be able to fill the node's disk. Older rows go as new ones come."""

    def __init__(
        self, engine: Engine, clock: Callable[[], datetime], keep: int = MAX_REFUSALS_KEPT
    ) -> None:
        self._engine = engine
        self._clock = clock
        self._keep = keep

    def add(self, rpc: str, request_id: str, status: str, reason: str) -> None:
        table = RefusalRow.__table__  # type: ignore[attr-defined]
        with self._engine.begin() as connection:
            added = connection.execute(
                insert(table).values(
                    refused_at=self._clock(),
                    rpc=rpc[:32],
                    request_id=request_id[:64],
                    status=status[:32],
                    reason=reason[:MAX_REFUSAL_REASON],
                )
            ).inserted_primary_key
            newest = int(added[0]) if added and added[0] is not None else 0
            if newest > self._keep:
                connection.execute(delete(table).where(table.c.id <= newest - self._keep))

    def entries(self, limit: int = 1000) -> list[RefusalRow]:
        with Session(self._engine) as session:
            query = select(RefusalRow).order_by(col(RefusalRow.id).desc())
            return list(session.exec(query.limit(limit)))
