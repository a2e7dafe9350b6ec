"""Banks, bureaus and regulators register the Paillier public keys their answers are
encrypted under."""

from __future__ import annotations

import asyncio
from typing import Annotated

from fastapi import APIRouter, Depends, Path, Response

from creditshare.coordinator._db import PaillierKeyRow, Participant
from creditshare.coordinator._deps import ServicesDep, require_roles
from creditshare.coordinator._participants import Role
from creditshare.coordinator._schemas import FINGERPRINT_PATTERN, PaillierKeyIn, PaillierKeyOut
from creditshare.crypto import PublicKey

__all__ = ["key_out", "router"]

router = APIRouter(tags=["paillier keys"])
Requester = Annotated[Participant, Depends(require_roles(Role.BANK, Role.BUREAU, Role.REGULATOR))]
Fingerprint = Annotated[str, Path(pattern=FINGERPRINT_PATTERN)]


def key_out(row: PaillierKeyRow) -> PaillierKeyOut:
    return PaillierKeyOut(
        fingerprint=row.fingerprint,
        bits=row.bits,
        created_at=row.created_at,
        retired_at=row.retired_at,
        active=row.retired_at is None,
    )


@router.post(
    "/v1/paillier-keys",
    response_model=PaillierKeyOut,
    status_code=201,
    responses={200: {"model": PaillierKeyOut, "description": "the key was registered already"}},
)
async def register_key(
    body: PaillierKeyIn, caller: Requester, services: ServicesDep, response: Response
) -> PaillierKeyOut:
    """Register a Paillier public key (checked thoroughly, once); 200 if it was already.

    Queries and training jobs then name it by its fingerprint. Rotate by registering a
    new key and retiring the old one.
    """
    key = await asyncio.to_thread(PublicKey.from_text, body.public_key)
    registration = await asyncio.to_thread(services.paillier_keys.register, caller, key)
    if not registration.created:
        response.status_code = 200
    return key_out(registration.row)


@router.get("/v1/paillier-keys", response_model=list[PaillierKeyOut])
async def list_keys(caller: Requester, services: ServicesDep) -> list[PaillierKeyOut]:
    """The caller's registered keys, oldest first, retired ones included."""
    return [key_out(r) for r in await asyncio.to_thread(services.paillier_keys.list, caller)]


@router.post("/v1/paillier-keys/{fingerprint}/retire", response_model=PaillierKeyOut)
async def retire_key(
    fingerprint: Fingerprint, caller: Requester, services: ServicesDep
) -> PaillierKeyOut:
    """No new query or training job may use the key; past records still name it."""
    row = await asyncio.to_thread(services.paillier_keys.retire, caller, fingerprint)
    return key_out(row)
