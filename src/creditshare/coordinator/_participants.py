"""Participants and their API credentials.

An API key is ``cs_<key id>.<secret>``: the key id finds the row, the secret is
compared as a SHA-256 hash in constant time. Secrets carry 256 bits of entropy,
so a fast hash is enough (no password stretching needed), and the database
never holds anything that would let a reader call the API.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

from sqlalchemy.engine import Engine
from sqlmodel import Session, select

from creditshare.coordinator._db import ApiCredential, Participant
from creditshare.crypto import VerifyKey
from creditshare.errors import (
    AuthenticationError,
    ConflictError,
    InvalidInputError,
    NotFoundError,
)
from creditshare.identity import Uscc

__all__ = [
    "IssuedKey",
    "ParticipantRegistry",
    "Role",
]

_ID = re.compile(r"^[a-z0-9][a-z0-9._-]{0,63}$")
_KEY = re.compile(r"^cs_([0-9a-f]{16})\.([A-Za-z0-9_-]{43})$")


class Role(StrEnum):
    BANK = "bank"
    BUREAU = "bureau"
    DEPARTMENT = "department"
    ENTERPRISE = "enterprise"
    OPERATOR = "operator"


@dataclass(frozen=True, slots=True)
class IssuedKey:
    participant_id: str
    api_key: str  # shown once, never stored


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
        if not _ID.match(participant_id):
            raise InvalidInputError(
                "participant id must be 1–64 of a-z, 0-9, '.', '_', '-' and start alphanumeric"
            )
        try:
            role = Role(role)
        except ValueError:
            roles = ", ".join(r.value for r in Role)
            raise InvalidInputError(f"role must be one of {roles}") from None
        if not name.strip():
            raise InvalidInputError("participant name must not be empty")
        if role is Role.ENTERPRISE:
            if uscc is None or signing_key is None:
                raise InvalidInputError("an enterprise needs its uscc and an Ed25519 signing_key")
            uscc = str(Uscc.parse(uscc))
            VerifyKey.from_text(signing_key)
        elif uscc is not None or signing_key is not None:
            raise InvalidInputError("only enterprises carry a uscc and signing_key")
        with Session(self._engine) as session:
            if session.get(Participant, participant_id) is not None:
                raise ConflictError(f"participant {participant_id!r} already exists")
            if (
                uscc is not None
                and session.exec(select(Participant).where(Participant.uscc == uscc)).first()
            ):
                raise ConflictError(f"enterprise {uscc} is already registered")
            row = Participant(
                id=participant_id,
                role=role.value,
                name=name.strip(),
                uscc=uscc,
                signing_key=signing_key,
                created_at=self._clock(),
            )
            session.add(row)
            session.commit()
            session.refresh(row)
            return row

    def get(self, participant_id: str) -> Participant:
        with Session(self._engine) as session:
            row = session.get(Participant, participant_id)
            if row is None:
                raise NotFoundError(f"unknown participant {participant_id!r}")
            return row

    def list(self) -> list[Participant]:
        with Session(self._engine) as session:
            return list(session.exec(select(Participant).order_by(Participant.id)))

    def enterprise(self, uscc: str) -> Participant | None:
        with Session(self._engine) as session:
            return session.exec(select(Participant).where(Participant.uscc == uscc)).first()

    def issue_key(self, participant_id: str) -> IssuedKey:
        self.get(participant_id)
        key_id = secrets.token_hex(8)
        secret = secrets.token_urlsafe(32)
        with Session(self._engine) as session:
            session.add(
                ApiCredential(
                    key_id=key_id,
                    participant_id=participant_id,
                    secret_sha256=_hash(secret),
                    created_at=self._clock(),
                )
            )
            session.commit()
        return IssuedKey(participant_id, f"cs_{key_id}.{secret}")

    def disable(self, participant_id: str) -> Participant:
        """Every credential of the participant stops working at once."""
        with Session(self._engine) as session:
            row = session.get(Participant, participant_id)
            if row is None:
                raise NotFoundError(f"unknown participant {participant_id!r}")
            row.disabled = True
            session.add(row)
            session.commit()
            session.refresh(row)
            return row

    def revoke_key(self, participant_id: str, key_id: str) -> None:
        with Session(self._engine) as session:
            credential = session.get(ApiCredential, key_id)
            if credential is None or credential.participant_id != participant_id:
                raise NotFoundError(f"participant {participant_id!r} has no key {key_id!r}")
            credential.revoked_at = self._clock()
            session.add(credential)
            session.commit()

    def authenticate(self, api_key: str) -> Participant:
        """The participant an API key belongs to; every failure looks the same to the caller."""
        match = _KEY.match(api_key)
        failure = AuthenticationError("invalid or revoked credential")
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
