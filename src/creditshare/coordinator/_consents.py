"""Consent grants: stored once verified, checked and counted on every use.

The rules live in ``creditshare.consent.check``; this module keeps the rows. A
use is counted with a single conditional UPDATE, so two coordinator replicas
cannot both spend the last permitted use. Two identical grants racing each
other meet the primary key: the second is a 409, not a 500.
"""

from __future__ import annotations

import base64
import re
from collections.abc import Callable, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import insert, update
from sqlalchemy import select as core_select
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col, select

from creditshare.consent import ConsentGrant, ConsentState, Purpose, SignedConsent, check
from creditshare.coordinator._db import ConsentRow, Participant
from creditshare.coordinator._participants import ParticipantRegistry, Role
from creditshare.errors import (
    ConflictError,
    ConsentRefusedError,
    InvalidInputError,
    NotFoundError,
    PermissionDeniedError,
)
from creditshare.identity import Chain

__all__ = ["ConsentService"]

_CONSENT: Any = ConsentRow.__table__  # type: ignore[attr-defined]
#: A consent id is the first 32 hex digits of the SHA-256 of its signed bytes.
_CONSENT_ID = re.compile(r"^[0-9a-f]{32}$")


class ConsentService:
    def __init__(
        self, engine: Engine, participants: ParticipantRegistry, clock: Callable[[], datetime]
    ) -> None:
        self._engine = engine
        self._participants = participants
        self._clock = clock

    def grant(self, signed: SignedConsent, submitter: Participant) -> ConsentRow:
        grant = signed.grant
        is_subject = submitter.role == Role.ENTERPRISE and submitter.uscc == grant.uscc
        if not (is_subject or submitter.id == grant.grantee):
            raise PermissionDeniedError("only the enterprise or the grantee may submit a consent")
        try:
            grantee = self._participants.get(grant.grantee)
        except NotFoundError:
            raise InvalidInputError(f"grantee {grant.grantee!r} is not a participant").at(
                "grantee"
            ) from None
        if grantee.role not in (Role.BANK, Role.BUREAU):
            raise InvalidInputError(f"grantee {grant.grantee!r} is not a bank or bureau").at(
                "grantee"
            )
        conflict = ConflictError(f"consent {grant.consent_id} was already granted")
        # Under the lifecycle lock, a disabling or a key rotation happened either before
        # (and is seen here: the grant is refused) or after this grant is stored (and then
        # revokes it, or leaves it as a consent granted before the rotation).
        with self._participants.locked() as conn:
            key = self._participants.accepted_signing_key(conn, grant.uscc)
            signed.verify(key)
            stored = conn.execute(
                core_select(_CONSENT.c.id).where(_CONSENT.c.id == grant.consent_id)
            ).first()
            if stored is not None:
                raise conflict
            try:
                conn.execute(
                    insert(_CONSENT).values(
                        id=grant.consent_id,
                        uscc=grant.uscc,
                        grantee=grant.grantee,
                        purpose=grant.purpose.value,
                        document=grant.to_document(),
                        signature=signed.to_json()["signature"],
                        valid_from=grant.valid_from,
                        valid_until=grant.valid_until,
                        max_uses=grant.max_uses,
                        uses=0,
                        created_at=self._clock(),
                        revoked_at=None,
                    )
                )
            except IntegrityError:  # the same grant, stored by a concurrent request
                raise conflict from None
        return self._row(grant.consent_id)

    def _row(self, consent_id: str) -> ConsentRow:
        if not _CONSENT_ID.fullmatch(consent_id):  # never hand the driver a NUL or a megabyte
            raise NotFoundError(f"unknown consent {consent_id[:64]!r}")
        with Session(self._engine) as session:
            row = session.get(ConsentRow, consent_id)
            if row is None:
                raise NotFoundError(f"unknown consent {consent_id!r}")
            return row

    def get(self, consent_id: str, viewer: Participant) -> ConsentRow:
        row = self._row(consent_id)
        owner = viewer.role == Role.ENTERPRISE and viewer.uscc == row.uscc
        if not (owner or viewer.id == row.grantee or viewer.role == Role.OPERATOR):
            raise PermissionDeniedError("this consent belongs to another enterprise and grantee")
        return row

    def for_enterprise(self, uscc: str) -> list[ConsentRow]:
        with Session(self._engine) as session:
            query = select(ConsentRow).where(ConsentRow.uscc == uscc)
            return list(session.exec(query.order_by(col(ConsentRow.created_at))))

    def revoke(
        self, consent_id: str, by: Participant, revocation: dict[str, Any] | None = None
    ) -> ConsentRow:
        """Revoke at once; keep the enterprise's signed ``revocation`` (if any) to relay."""
        row = self._row(consent_id)
        owner = by.role == Role.ENTERPRISE and by.uscc == row.uscc
        if not (owner or by.role == Role.OPERATOR):
            raise PermissionDeniedError("only the enterprise that granted a consent may revoke it")
        with Session(self._engine) as session:
            session.execute(
                update(ConsentRow)
                .where(col(ConsentRow.id) == consent_id, col(ConsentRow.revoked_at).is_(None))
                .values(revoked_at=self._clock())
            )
            if revocation is not None:  # signed after an unsigned revocation: keep it too
                session.execute(
                    update(ConsentRow)
                    .where(col(ConsentRow.id) == consent_id, col(ConsentRow.revocation).is_(None))
                    .values(revocation=revocation)
                )
            session.commit()
        return self._row(consent_id)

    def check(
        self,
        consent_id: str,
        requester: Participant,
        uscc: str,
        purpose: Purpose,
        chains: Sequence[Chain] | None,
    ) -> SignedConsent:
        """The signed consent, if it covers this query; else refuse saying why. Counts nothing.

        The signature comes back too: the ledger records the consent as the enterprise
        signed it, so each node can check it against the enterprise's certified key.
        """
        if not _CONSENT_ID.fullmatch(consent_id):
            raise ConsentRefusedError(f"no consent with id {consent_id[:64]!r}").at("consent_id")
        with Session(self._engine) as session:
            row = session.get(ConsentRow, consent_id)
        if row is None:
            raise ConsentRefusedError(f"no consent with id {consent_id!r}").at("consent_id")
        # Disabling an enterprise revokes its consents; a grant that raced the disabling
        # is caught here, so nothing an enterprise signed works while it is disabled.
        enterprise = self._participants.enterprise(row.uscc)
        state = ConsentState(
            grant=ConsentGrant.from_document(row.document),
            revoked=row.revoked_at is not None or enterprise is None or enterprise.disabled,
            uses=row.uses,
        )
        grant = check(
            state,
            requester=requester.id,
            uscc=uscc,
            purpose=purpose,
            chains=chains,
            now=self._clock(),
        )
        return SignedConsent(grant, base64.b64decode(row.signature))

    def count_use(self, consent_id: str) -> None:
        """Spend one use in a single conditional UPDATE (safe across replicas), or refuse."""
        with Session(self._engine) as session:
            counted = session.execute(
                update(ConsentRow)
                .where(
                    col(ConsentRow.id) == consent_id,
                    col(ConsentRow.revoked_at).is_(None),
                    (col(ConsentRow.max_uses).is_(None))
                    | (col(ConsentRow.uses) < col(ConsentRow.max_uses)),
                )
                .values(uses=col(ConsentRow.uses) + 1)
            )
            session.commit()
        if counted.rowcount != 1:  # type: ignore[attr-defined]
            raise ConsentRefusedError(
                "the consent's use limit is exhausted (or it was revoked)"
            ).at("consent_id")

    def give_back_use(self, consent_id: str) -> None:
        """Undo ``count_use`` for a query that was never made (its recording failed)."""
        with Session(self._engine) as session:
            session.execute(
                update(ConsentRow)
                .where(col(ConsentRow.id) == consent_id, col(ConsentRow.uses) > 0)
                .values(uses=col(ConsentRow.uses) - 1)
            )
            session.commit()
