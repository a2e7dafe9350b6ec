"""Participants, their API credentials and their lifecycle.

An API key is ``cs_<key id>.<secret>``: the key id finds the row, the secret is
compared as a SHA-256 hash in constant time. Secrets carry 256 bits of entropy,
so a fast hash is enough (no password stretching needed), and the database
never holds anything that would let a reader call the API.

Lifecycle: disabling a participant stops all of its keys at once, and disabling
an enterprise also revokes every consent it granted and stops its signing key
from being accepted; re-enabling restores the keys, not the consents. The chain
must always keep one enabled operator with an active key (else nobody could
re-enable anyone): disabling that operator or revoking its last key is a 409.
That check and the change it guards run in one transaction holding a
database-wide lock (an advisory lock on PostgreSQL, ``BEGIN IMMEDIATE`` on
SQLite), so two replicas disabling the last two operators at once cannot both win.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import func, text, update
from sqlalchemy import select as core_select
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, select

from creditshare.coordinator._db import ApiCredential, ConsentRow, Participant
from creditshare.crypto import VerifyKey
from creditshare.errors import (
    AuthenticationError,
    ConflictError,
    InvalidInputError,
    NotFoundError,
    PermissionDeniedError,
)
from creditshare.identity import Uscc

__all__ = [
    "IssuedKey",
    "ParticipantRegistry",
    "Role",
    "key_id_of",
]

_ID = re.compile(r"^[a-z0-9][a-z0-9._-]{0,63}$")
_KEY = re.compile(r"^cs_([0-9a-f]{16})\.([A-Za-z0-9_-]{43})$")
_KEY_ID = re.compile(r"^[0-9a-f]{16}$")
# pg_advisory_xact_lock key: the first 8 bytes of SHA-256("creditshare.participants"), signed.
_PG_LOCK_KEY = int.from_bytes(
    hashlib.sha256(b"creditshare.participants").digest()[:8], "big", signed=True
)
_PARTICIPANT: Any = Participant.__table__  # type: ignore[attr-defined]
_CREDENTIAL: Any = ApiCredential.__table__  # type: ignore[attr-defined]
_CONSENT: Any = ConsentRow.__table__  # type: ignore[attr-defined]


class Role(StrEnum):
    BANK = "bank"
    BUREAU = "bureau"
    DEPARTMENT = "department"
    ENTERPRISE = "enterprise"
    OPERATOR = "operator"
    #: The central bank's branches: cohort statistics only (POST /v1/statistics), never a
    #: query about one enterprise, a consent, a training job or a subscription.
    REGULATOR = "regulator"


@dataclass(frozen=True, slots=True)
class IssuedKey:
    participant_id: str
    api_key: str  # shown once, never stored


def key_id_of(api_key: str) -> str | None:
    """The key id of a well-formed API key (not a secret: it only finds the row)."""
    match = _KEY.fullmatch(api_key)
    return match.group(1) if match else None


def _checked_id(participant_id: str) -> str:
    """The id, if it could name a participant; else NotFoundError without asking the database
    (a NUL or an overlong string would otherwise reach the driver)."""
    if not _ID.fullmatch(participant_id):
        raise NotFoundError(f"unknown participant {participant_id[:64]!r}")
    return participant_id


def _hash(secret: str) -> str:
    return hashlib.sha256(secret.encode("ascii")).hexdigest()


class ParticipantRegistry:
    def __init__(self, engine: Engine, clock: Callable[[], datetime]) -> None:
        self._engine = engine
        self._clock = clock

    def register(
        self,
        participant_id: str,
        role: Role | str,
        name: str,
        *,
        uscc: str | None = None,
        signing_key: str | None = None,
    ) -> Participant:
        participant, _ = self._register(participant_id, role, name, uscc, signing_key, False)
        return participant

    def register_with_key(
        self,
        participant_id: str,
        role: Role | str,
        name: str,
        *,
        uscc: str | None = None,
        signing_key: str | None = None,
    ) -> tuple[Participant, IssuedKey]:
        """Register and issue the first API key in one transaction: both or neither."""
        participant, issued = self._register(participant_id, role, name, uscc, signing_key, True)
        assert issued is not None
        return participant, issued

    def _register(
        self,
        participant_id: str,
        role: Role | str,
        name: str,
        uscc: str | None,
        signing_key: str | None,
        with_key: bool,
    ) -> tuple[Participant, IssuedKey | None]:
        if not _ID.fullmatch(participant_id):
            raise InvalidInputError(
                "participant id must be 1–64 of a-z, 0-9, '.', '_', '-' and start alphanumeric"
            )
        try:
            role = Role(role)
        except ValueError:
            roles = ", ".join(r.value for r in Role)
            raise InvalidInputError(f"role must be one of {roles}").at("role") from None
        if not name.strip():
            raise InvalidInputError("participant name must not be empty").at("name")
        if not name.isprintable():
            raise InvalidInputError("participant name must not hold control characters").at("name")
        if role is Role.ENTERPRISE:
            if uscc is None or signing_key is None:
                raise InvalidInputError("an enterprise needs its uscc and an Ed25519 signing_key")
            uscc = str(Uscc.parse(uscc))
            VerifyKey.from_text(signing_key)
        elif uscc is not None or signing_key is not None:
            raise InvalidInputError("only enterprises carry a uscc and signing_key")
        with Session(self._engine) as session:
            if session.get(Participant, participant_id) is not None:
                raise ConflictError(f"participant {participant_id!r} already exists").at("id")
            if (
                uscc is not None
                and session.exec(select(Participant).where(Participant.uscc == uscc)).first()
            ):
                raise ConflictError(f"enterprise {uscc} is already registered").at("uscc")
            row = Participant(
                id=participant_id,
                role=role.value,
                name=name.strip(),
                uscc=uscc,
                signing_key=signing_key,
                created_at=self._clock(),
            )
            session.add(row)
            issued = None
            try:
                if with_key:
                    session.flush()  # the credential's foreign key needs the participant first
                    credential, issued = self._new_key(participant_id)
                    session.add(credential)
                session.commit()
            except IntegrityError:  # a concurrent registration of the same id or uscc
                raise ConflictError(
                    f"participant {participant_id!r} (or its uscc) was just registered"
                ) from None
            session.refresh(row)
            return row, issued

    def get(self, participant_id: str) -> Participant:
        with Session(self._engine) as session:
            row = session.get(Participant, _checked_id(participant_id))
            if row is None:
                raise NotFoundError(f"unknown participant {participant_id!r}")
            return row

    def list(self) -> list[Participant]:
        with Session(self._engine) as session:
            return list(session.exec(select(Participant).order_by(Participant.id)))

    def enterprise(self, uscc: str) -> Participant | None:
        with Session(self._engine) as session:
            return session.exec(select(Participant).where(Participant.uscc == uscc)).first()

    def _new_key(self, participant_id: str) -> tuple[ApiCredential, IssuedKey]:
        key_id = secrets.token_hex(8)
        secret = secrets.token_urlsafe(32)
        credential = ApiCredential(
            key_id=key_id,
            participant_id=participant_id,
            secret_sha256=_hash(secret),
            created_at=self._clock(),
        )
        return credential, IssuedKey(participant_id, f"cs_{key_id}.{secret}")

    def issue_key(self, participant_id: str) -> IssuedKey:
        self.get(participant_id)
        credential, issued = self._new_key(participant_id)
        with Session(self._engine) as session:
            session.add(credential)
            session.commit()
        return issued

    @contextmanager
    def locked(self) -> Iterator[Connection]:
        """One transaction holding the lifecycle lock from its first statement.

        Commits when the block ends normally, rolls back when it raises. Everything that
        changes who may act (disabling, enabling, key revocation, signing-key rotation)
        and storing a consent run under it, so each sees the others whole.
        """
        sqlite = self._engine.dialect.name == "sqlite"
        with self._engine.connect() as conn:
            if not sqlite:
                # The lock's wait must end with a fresh view of what the holder committed,
                # which REPEATABLE READ (a snapshot taken before the wait) would hide.
                conn.execution_options(isolation_level="READ COMMITTED")
            conn.begin()
            if sqlite:
                # pysqlite opens transactions lazily and DEFERRED: two writers could both
                # read "two operators left" first. Take the write lock before reading.
                if conn.connection.driver_connection.in_transaction:  # type: ignore[union-attr]
                    conn.exec_driver_sql("ROLLBACK")
                conn.exec_driver_sql("BEGIN IMMEDIATE")
            else:
                conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _PG_LOCK_KEY})
            yield conn
            if sqlite:
                conn.exec_driver_sql("COMMIT")
            conn.commit()

    @staticmethod
    def accepted_signing_key(conn: Connection, uscc: str) -> VerifyKey:
        """The enterprise's current signing key, inside ``locked``; refuses a disabled one."""
        row = conn.execute(
            core_select(_PARTICIPANT.c.signing_key, _PARTICIPANT.c.disabled).where(
                _PARTICIPANT.c.uscc == uscc
            )
        ).first()
        if row is None or row.signing_key is None:
            raise InvalidInputError(f"enterprise {uscc} has no registered signing key")
        if row.disabled:
            raise PermissionDeniedError(
                f"enterprise {uscc} is disabled: its signing key is not accepted"
            )
        return VerifyKey.from_text(row.signing_key)

    @staticmethod
    def _role_of(conn: Connection, participant_id: str) -> str:
        role = conn.execute(
            core_select(_PARTICIPANT.c.role).where(_PARTICIPANT.c.id == _checked_id(participant_id))
        ).scalar()
        if role is None:
            raise NotFoundError(f"unknown participant {participant_id!r}")
        return str(role)

    @staticmethod
    def _keep_an_operator(conn: Connection, what: str) -> None:
        """409 unless an enabled operator with an active key remains (inside ``locked``)."""
        p, c = _PARTICIPANT, _CREDENTIAL
        remaining = conn.execute(
            core_select(func.count())
            .select_from(p.join(c, c.c.participant_id == p.c.id))
            .where(
                (p.c.role == Role.OPERATOR.value)
                & (p.c.disabled == False)  # noqa: E712 - SQL, not Python
                & c.c.revoked_at.is_(None)
            )
        ).scalar_one()
        if remaining == 0:
            raise ConflictError(
                f"{what} would leave no enabled operator with an active API key, "
                "and then nobody could re-enable anyone; add another operator first"
            )

    def disable(self, participant_id: str) -> Participant:
        """Every credential of the participant stops working at once; an enterprise's
        consents are all revoked and its signing key is no longer accepted."""
        with self.locked() as conn:
            role = self._role_of(conn, participant_id)
            conn.execute(
                update(_PARTICIPANT)
                .where(_PARTICIPANT.c.id == participant_id)
                .values(disabled=True)
            )
            if role == Role.ENTERPRISE.value:
                uscc = core_select(_PARTICIPANT.c.uscc).where(_PARTICIPANT.c.id == participant_id)
                conn.execute(
                    update(_CONSENT)
                    .where(_CONSENT.c.uscc == uscc.scalar_subquery())
                    .where(_CONSENT.c.revoked_at.is_(None))
                    .values(revoked_at=self._clock())
                )
            if role == Role.OPERATOR.value:
                self._keep_an_operator(conn, f"disabling {participant_id!r}")
        return self.get(participant_id)

    def enable(self, participant_id: str) -> Participant:
        """Its keys work again (those not revoked); revoked consents stay revoked."""
        with self.locked() as conn:
            self._role_of(conn, participant_id)
            conn.execute(
                update(_PARTICIPANT)
                .where(_PARTICIPANT.c.id == participant_id)
                .values(disabled=False)
            )
        return self.get(participant_id)

    def revoke_key(self, participant_id: str, key_id: str) -> None:
        if not _KEY_ID.fullmatch(key_id):
            raise NotFoundError(f"participant {participant_id[:64]!r} has no key {key_id[:64]!r}")
        with self.locked() as conn:
            owner = conn.execute(
                core_select(_CREDENTIAL.c.participant_id).where(_CREDENTIAL.c.key_id == key_id)
            ).scalar()
            if owner is None or owner != participant_id:
                raise NotFoundError(f"participant {participant_id[:64]!r} has no key {key_id!r}")
            conn.execute(
                update(_CREDENTIAL)
                .where(_CREDENTIAL.c.key_id == key_id, _CREDENTIAL.c.revoked_at.is_(None))
                .values(revoked_at=self._clock())
            )
            if self._role_of(conn, participant_id) == Role.OPERATOR.value:
                self._keep_an_operator(conn, f"revoking key {key_id!r}")

    def rotate_signing_key(
        self, participant_id: str, signing_key: str, by: Participant
    ) -> Participant:
        """Replace an enterprise's consent-signing key (by itself or an operator).

        Grants are verified against the current key, so from now on a grant signed
        with the old key is refused; consents granted before stay as they are (the
        enterprise revokes those it no longer stands by).
        """
        if not (by.id == participant_id or by.role == Role.OPERATOR):
            raise PermissionDeniedError(
                "only the enterprise itself or an operator may rotate its signing key"
            )
        VerifyKey.from_text(signing_key)
        with (
            self.locked() as conn
        ):  # a grant verified with the old key is stored before or not at all
            current = conn.execute(
                core_select(_PARTICIPANT.c.role, _PARTICIPANT.c.signing_key).where(
                    _PARTICIPANT.c.id == _checked_id(participant_id)
                )
            ).first()
            if current is None:
                raise NotFoundError(f"unknown participant {participant_id!r}")
            if current.role != Role.ENTERPRISE:
                raise InvalidInputError(
                    f"{participant_id!r} is not an enterprise: it has no signing key"
                )
            if current.signing_key is not None and hmac.compare_digest(
                current.signing_key, signing_key
            ):
                raise InvalidInputError("the new signing key is the current one")
            conn.execute(
                update(_PARTICIPANT)
                .where(_PARTICIPANT.c.id == participant_id)
                .values(signing_key=signing_key)
            )
        return self.get(participant_id)

    def authenticate(self, api_key: str) -> Participant:
        """The participant an API key belongs to; every failure looks the same to the caller."""
        match = _KEY.fullmatch(api_key)
        failure = AuthenticationError(
            "API key not accepted: unknown, revoked, or its participant is disabled"
        )
        if match is None:
            raise failure
        key_id, secret = match.groups()
        with Session(self._engine) as session:
            credential = session.get(ApiCredential, key_id)
            # Compare even when the key id is unknown, so timing does not say which.
            stored = credential.secret_sha256 if credential else "0" * 64
            matches = hmac.compare_digest(stored, _hash(secret))
            if credential is None or not matches or credential.revoked_at is not None:
                raise failure
            participant = session.get(Participant, credential.participant_id)
            if participant is None or participant.disabled:
                raise failure
            return participant
