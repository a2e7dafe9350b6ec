"""Credentials (participants upload what the chain CA issued them) and revocation lists
(operators upload what the CA published): stored here only to be relayed to nodes."""

from __future__ import annotations

import asyncio
import hashlib
from typing import Annotated

from fastapi import APIRouter, Depends

from creditshare.coordinator._credentials import issuer_key
from creditshare.coordinator._db import Participant
from creditshare.coordinator._deps import CallerDep, ServicesDep, require_roles
from creditshare.coordinator._participants import Role
from creditshare.coordinator._schemas import (
    CredentialIn,
    CredentialOut,
    PathText,
    RevocationListIn,
    RevocationListOut,
)
from creditshare.coordinator._services import Services

__all__ = ["router"]

router = APIRouter(tags=["credentials"])
Operator = Annotated[Participant, Depends(require_roles(Role.OPERATOR))]


def _add(services: Services, caller: Participant, pem: str) -> CredentialOut:
    signing_key = None
    if caller.role == Role.ENTERPRISE and caller.uscc is not None:
        with services.participants.locked() as conn:
            signing_key = services.participants.accepted_signing_key(conn, caller.uscc)
    credential = services.credentials.add(caller, pem.encode("ascii", "replace"), signing_key)
    return CredentialOut(
        fingerprint=hashlib.sha256(credential.der).hexdigest(),
        participant_id=credential.participant_id,
        serial=format(credential.serial, "x"),
        not_after=credential.not_after,
    )


@router.post("/v1/credentials", response_model=CredentialOut, status_code=201)
async def upload_credential(
    body: CredentialIn, caller: CallerDep, services: ServicesDep
) -> CredentialOut:
    """Keep the caller's credential (its certified signing key), to relay with its requests.

    Nodes verify it against their chain CA; here it must name the caller, its role and,
    for an enterprise, its USCC and registered signing key. Uploading the same one again
    changes nothing.
    """
    return await asyncio.to_thread(_add, services, caller, body.certificate)


@router.get("/v1/credentials", response_model=list[CredentialOut])
async def list_credentials(caller: CallerDep, services: ServicesDep) -> list[CredentialOut]:
    rows = await asyncio.to_thread(services.credentials.listed, caller.id)
    return [
        CredentialOut(
            fingerprint=r.fingerprint,
            participant_id=r.participant_id,
            serial=r.serial,
            not_after=r.not_after,
        )
        for r in rows
    ]


@router.delete("/v1/credentials/{fingerprint}", status_code=204)
async def remove_credential(
    fingerprint: PathText, caller: CallerDep, services: ServicesDep
) -> None:
    await asyncio.to_thread(services.credentials.remove, caller.id, fingerprint)


@router.put("/v1/revocation-lists", response_model=RevocationListOut)
async def upload_revocation_list(
    body: RevocationListIn, caller: Operator, services: ServicesDep
) -> RevocationListOut:
    """Relay a chain CA's newest revocation list to the nodes (with every request).

    Nodes check the CA's signature and keep a list only if it is newer than theirs, and
    refuse every request while the one they hold is older than their bound: an operator
    uploads each day's list (or nodes stop serving once theirs goes stale).
    """
    uploaded = await asyncio.to_thread(
        services.credentials.put_list, body.crl.encode("ascii", "replace")
    )
    return RevocationListOut(
        issuer=issuer_key(uploaded),
        number=uploaded.number,
        this_update=uploaded.this_update,
        next_update=uploaded.next_update,
    )


@router.get("/v1/revocation-lists", response_model=list[RevocationListOut])
async def list_revocation_lists(
    caller: CallerDep, services: ServicesDep
) -> list[RevocationListOut]:
    rows = await asyncio.to_thread(services.credentials.list_rows)
    return [
        RevocationListOut(
            issuer=r.issuer, number=r.number, this_update=r.this_update, next_update=r.next_update
        )
        for r in rows
    ]
