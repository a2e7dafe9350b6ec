"""Registered Paillier public keys of banks, bureaus and regulators.

A requester's Paillier key is what every node encrypts its answer under, so it is
checked thoroughly (``PublicKey``'s constructor: size, parity, perfect powers,
primality, small factors) once, when the requester registers it. Afterwards queries
and training jobs name it by fingerprint, and the modulus comes from here, never from
the request: a request cannot smuggle in a key that was not checked, and the ledger
records exactly which registered key an answer was encrypted under.

Rotation is registering a new key and retiring the old one; a retired key stays on
record (ledger entries name it) but no new query may use it. A participant holds at
most ``MAX_ACTIVE_KEYS`` unretired keys, so registrations cannot grow without bound.
"""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, insert
from sqlalchemy.engine import Engine
from sqlmodel import Session, col, func, select

from creditshare.coordinator._db import PaillierKeyRow, Participant
from creditshare.crypto import PublicKey
from creditshare.errors import ConflictError, InvalidInputError, NotFoundError

__all__ = ["MAX_ACTIVE_KEYS", "MAX_KEYS", "PaillierKeyRegistry", "UnknownKeyError"]

#: Unretired keys one participant may hold at once (room for an overlap while rotating).
MAX_ACTIVE_KEYS = 4
#: Keys one participant may ever register (retired ones stay on record, for the ledger).
MAX_KEYS = 64

_KEY: Any = PaillierKeyRow.__table__  # type: ignore[attr-defined]


class UnknownKeyError(InvalidInputError):
    """A request named a key fingerprint that is not one of the caller's active keys."""

    field = "key_fingerprint"


@dataclass(frozen=True, slots=True)
class Registration:
    row: PaillierKeyRow
    created: bool


class PaillierKeyRegistry:
    def __init__(
        self,
        engine: Engine,
        clock: Callable[[], datetime],
        lock: Callable[[], AbstractContextManager[Connection]],
    ) -> None:
        self._engine = engine
        self._clock = clock
        self._lock = lock

    def register(self, owner: Participant, key: PublicKey) -> Registration:
        """Record ``key`` for ``owner``; registering the same key again is a no-op.

        Counted and inserted under the participants' lifecycle lock, so concurrent
        registrations (on any replica) cannot get past the bounds together.
        """
        fingerprint = key.fingerprint()
        with self._lock() as conn:
            existing = conn.execute(select(_KEY).where(_KEY.c.fingerprint == fingerprint)).first()
            if existing is not None:
                row = PaillierKeyRow.model_validate(existing._mapping)
                return Registration(self._same_owner(row, owner), created=False)
            mine = _KEY.c.participant_id == owner.id
            total = conn.execute(select(func.count()).select_from(_KEY).where(mine)).scalar_one()
            active = conn.execute(
                select(func.count()).select_from(_KEY).where(mine, _KEY.c.retired_at.is_(None))
            ).scalar_one()
            if active >= MAX_ACTIVE_KEYS:
                raise ConflictError(
                    f"participant {owner.id!r} already has {MAX_ACTIVE_KEYS} active Paillier "
                    "keys; retire one (POST /v1/paillier-keys/{fingerprint}/retire) first"
                )
            if total >= MAX_KEYS:
                raise ConflictError(
                    f"participant {owner.id!r} has registered {MAX_KEYS} Paillier keys; an "
                    "operator must register it anew to go on"
                )
            row = PaillierKeyRow(
                fingerprint=fingerprint,
                participant_id=owner.id,
                modulus=key.to_text(),
                bits=key.bits,
                created_at=self._clock(),
            )
            conn.execute(insert(_KEY).values(**row.model_dump()))
        return Registration(row, created=True)

    @staticmethod
    def _same_owner(row: PaillierKeyRow, owner: Participant) -> PaillierKeyRow:
        if row.participant_id != owner.id:
            raise ConflictError("this Paillier key is registered to another participant")
        if row.retired_at is not None:
            raise ConflictError(
                f"Paillier key {row.fingerprint} was retired; generate a new key pair"
            )
        return row

    def list(self, owner: Participant) -> list[PaillierKeyRow]:
        with Session(self._engine) as session:
            query = (
                select(PaillierKeyRow)
                .where(PaillierKeyRow.participant_id == owner.id)
                .order_by(col(PaillierKeyRow.created_at), col(PaillierKeyRow.fingerprint))
            )
            return list(session.exec(query))

    def retire(self, owner: Participant, fingerprint: str) -> PaillierKeyRow:
        with Session(self._engine) as session:
            row = session.get(PaillierKeyRow, fingerprint)
            if row is None or row.participant_id != owner.id:
                raise NotFoundError(f"no Paillier key {fingerprint!r} is registered to you")
            if row.retired_at is None:
                row.retired_at = self._clock()
                session.add(row)
                session.commit()
                session.refresh(row)
            return row

    def resolve(self, owner: Participant, fingerprint: str) -> PublicKey:
        """The caller's active key with this fingerprint, or a 422 naming the field."""
        with Session(self._engine) as session:
            row = session.get(PaillierKeyRow, fingerprint)
        if row is None or row.participant_id != owner.id:
            raise UnknownKeyError(
                f"no Paillier key with fingerprint {fingerprint!r} is registered to you; "
                "register it with POST /v1/paillier-keys first"
            )
        if row.retired_at is not None:
            raise UnknownKeyError(f"Paillier key {fingerprint} was retired; use an active key")
        return PublicKey.from_text(row.modulus)
