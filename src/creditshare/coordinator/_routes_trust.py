"""Participants (operators register them) and consents (enterprises grant and revoke)."""

from __future__ import annotations

import asyncio
import logging
from typing import Annotated

from fastapi import APIRouter, Depends, Query, Response
from pydantic import Field

from creditshare.consent import ALL_INDICATORS, ConsentRevocation, SignedConsent
from creditshare.coordinator._credentials import MissingCredentialError
from creditshare.coordinator._db import ConsentRow, Participant
from creditshare.coordinator._deps import CallerDep, ServicesDep, require_roles
from creditshare.coordinator._listing import (
    DEFAULT_LIMIT,
    PAGED,
    Cursor,
    PageLimit,
    consents_for,
    next_page,
)
from creditshare.coordinator._participants import Role
from creditshare.coordinator._schemas import (
    ConsentOut,
    ConsentRevocationIn,
    InputModel,
    IssuedKeyOut,
    NodeRevocationOut,
    ParticipantIn,
    ParticipantOut,
    PathText,
    SignedConsentIn,
)
from creditshare.coordinator._services import Services
from creditshare.crypto import VerifyKey
from creditshare.errors import (
    CreditShareError,
    InvalidInputError,
    InvalidSignatureError,
    PermissionDeniedError,
)
from creditshare.identity import Uscc

__all__ = ["consent_out", "participant_out", "router"]

log = logging.getLogger("creditshare.coordinator")
router = APIRouter()
Operator = Annotated[Participant, Depends(require_roles(Role.OPERATOR))]
#: Who has consents to list: grantees, grantors, and operators (all of them).
ConsentHolder = Annotated[
    Participant,
    Depends(require_roles(Role.BANK, Role.BUREAU, Role.ENTERPRISE, Role.OPERATOR)),
]


def participant_out(row: Participant) -> ParticipantOut:
    return ParticipantOut(
        id=row.id,
        role=row.role,
        name=row.name,
        uscc=row.uscc,
        signing_key=row.signing_key,
        disabled=row.disabled,
        created_at=row.created_at,
    )


def consent_out(row: ConsentRow) -> ConsentOut:
    return ConsentOut(
        consent_id=row.id,
        uscc=row.uscc,
        grantee=row.grantee,
        purpose=row.purpose,
        document=row.document,
        signature=row.signature,
        uses=row.uses,
        max_uses=row.max_uses,
        revoked=row.revoked_at is not None,
        created_at=row.created_at,
    )


@router.post(
    "/v1/participants", response_model=IssuedKeyOut, status_code=201, tags=["participants"]
)
async def register_participant(
    body: ParticipantIn, caller: Operator, services: ServicesDep
) -> IssuedKeyOut:
    """Register a bank, bureau, department, enterprise, operator or regulator and issue its
    first key (one transaction: a participant without a key is never left behind)."""
    row, issued = await asyncio.to_thread(
        services.participants.register_with_key,
        body.id,
        body.role,
        body.name,
        uscc=body.uscc,
        signing_key=body.signing_key,
    )
    return IssuedKeyOut(participant=participant_out(row), api_key=issued.api_key)


@router.get("/v1/participants", response_model=list[ParticipantOut], tags=["participants"])
async def list_participants(
    caller: Operator,
    services: ServicesDep,
    role: Annotated[Role | None, Query(description="only participants of this role")] = None,
) -> list[ParticipantOut]:
    """Every participant (or those of one role), by id; disabled ones included."""
    rows = await asyncio.to_thread(services.participants.list)
    return [participant_out(r) for r in rows if role is None or r.role == role]


@router.post(
    "/v1/participants/{participant_id}/credentials",
    response_model=IssuedKeyOut,
    status_code=201,
    tags=["participants"],
)
async def issue_credential(
    participant_id: PathText, caller: Operator, services: ServicesDep
) -> IssuedKeyOut:
    row = await asyncio.to_thread(services.participants.get, participant_id)
    issued = await asyncio.to_thread(services.participants.issue_key, participant_id)
    return IssuedKeyOut(participant=participant_out(row), api_key=issued.api_key)


@router.post(
    "/v1/participants/{participant_id}/disable",
    response_model=ParticipantOut,
    tags=["participants"],
)
async def disable_participant(
    participant_id: PathText, caller: Operator, services: ServicesDep
) -> ParticipantOut:
    """Suspend a participant: all of its API keys fail from the next request on.

    An enterprise's consents are all revoked and its signing key is no longer accepted.
    The last enabled operator with an active key cannot be disabled (409).
    """
    return participant_out(await asyncio.to_thread(services.participants.disable, participant_id))


@router.post(
    "/v1/participants/{participant_id}/enable",
    response_model=ParticipantOut,
    tags=["participants"],
)
async def enable_participant(
    participant_id: PathText, caller: Operator, services: ServicesDep
) -> ParticipantOut:
    """Lift a suspension: its unrevoked API keys work again; revoked consents stay revoked."""
    return participant_out(await asyncio.to_thread(services.participants.enable, participant_id))


class SigningKeyIn(InputModel):
    signing_key: str = Field(
        min_length=1, max_length=64, description="the new Ed25519 public key, base64"
    )


@router.post(
    "/v1/participants/{participant_id}/signing-key",
    response_model=ParticipantOut,
    tags=["participants"],
)
async def rotate_signing_key(
    participant_id: PathText, body: SigningKeyIn, caller: CallerDep, services: ServicesDep
) -> ParticipantOut:
    """Replace an enterprise's consent-signing key (the enterprise itself or an operator).

    Grants signed with the old key are refused from now on; consents granted before
    stay valid until they expire or the enterprise revokes them.
    """
    row = await asyncio.to_thread(
        services.participants.rotate_signing_key, participant_id, body.signing_key, caller
    )
    return participant_out(row)


@router.post(
    "/v1/participants/{participant_id}/credentials/{key_id}/revoke",
    status_code=204,
    tags=["participants"],
)
async def revoke_credential(
    participant_id: PathText, key_id: PathText, caller: Operator, services: ServicesDep
) -> None:
    """Revoke one API key (``cs_<key id>.…``); the participant's other keys keep working.

    The last active key of the last enabled operator cannot be revoked (409).
    """
    await asyncio.to_thread(services.participants.revoke_key, participant_id, key_id)


@router.post("/v1/consents", response_model=ConsentOut, status_code=201, tags=["consents"])
async def grant_consent(
    body: SignedConsentIn, caller: CallerDep, services: ServicesDep
) -> ConsentOut:
    """Store a consent the enterprise signed; submitted by the enterprise or the grantee."""
    signed = SignedConsent.from_json(body.model_dump())
    await _names_published_indicators(services, signed)
    await asyncio.to_thread(_has_credential, services, signed.grant.uscc)
    row = await asyncio.to_thread(services.consents.grant, signed, caller)
    return consent_out(row)


async def _names_published_indicators(services: Services, signed: SignedConsent) -> None:
    """A consent's indicators must be ones the nodes of its chains publish: a misspelt
    name would otherwise be a consent that shows the bank nothing, found out only when
    its profile comes back empty."""
    names = [n for n in signed.grant.indicators if n != ALL_INDICATORS]
    if not names:
        return
    nodes = [n for n in services.registry.nodes if n.chain in signed.grant.chains]
    published, silent = await services.broker.published_indicators(nodes)
    unknown = [n for n in names if n not in published]
    if unknown:
        # Bounded: many nodes of up to 64 indicators each must not make a 100 kB message.
        known = _first(sorted(published)) or "none"
        unreachable = f"; not described (unreachable): {_first(silent)}" if silent else ""
        raise InvalidInputError(
            f"the consent names indicator(s) {', '.join(repr(n) for n in unknown)} that no "
            f"node of its chains publishes (GET /v1/indicators); they publish: {known}"
            f"{unreachable}"
        )


def _first(names: list[str], limit: int = 20) -> str:
    more = f", … ({len(names)} in all)" if len(names) > limit else ""
    return ", ".join(names[:limit]) + more


def _has_credential(services: Services, uscc: str) -> None:
    """Nodes check a consent against the enterprise's CA-issued credential: without one on
    file for its current signing key (say, just after a rotation) every node would refuse
    the consent, so say so now, at the door."""
    enterprise = services.participants.enterprise(uscc)
    if enterprise is None or enterprise.signing_key is None:
        return  # the grant itself names what is missing
    current = VerifyKey.from_text(enterprise.signing_key)
    if current not in services.credentials.verify_keys(enterprise.id):
        raise MissingCredentialError(
            "the enterprise has no credential on file for its current signing key: it has "
            "the chain CAs certify that key (`pki request`, `pki sign`) and uploads the "
            "credentials (POST /v1/credentials) before granting consents"
        )


@router.get("/v1/consents", response_model=list[ConsentOut], tags=["consents"], responses=PAGED)
async def list_consents(
    caller: ConsentHolder,
    services: ServicesDep,
    response: Response,
    uscc: Annotated[
        str | None, Query(max_length=64, description="only consents about this enterprise")
    ] = None,
    limit: PageLimit = DEFAULT_LIMIT,
    before: Cursor = None,
) -> list[ConsentOut]:
    """The caller's consents, newest first: a bank's or bureau's those granted to it, an
    enterprise's those it granted, an operator's all (a department or regulator: 403). At
    most `limit`; when a page is full, the next one is `before=<the last consent's id>`
    (also in the `Link` header)."""
    code = str(Uscc.parse(uscc)) if uscc is not None else None
    rows = await asyncio.to_thread(consents_for, services.engine, caller, code, limit, before)
    next_page(response, "/v1/consents", rows, limit, uscc=code)
    return [consent_out(r) for r in rows]


@router.get("/v1/consents/{consent_id}", response_model=ConsentOut, tags=["consents"])
async def get_consent(consent_id: PathText, caller: CallerDep, services: ServicesDep) -> ConsentOut:
    """The consent; once its enterprise signed a revocation, which nodes hold it."""
    row = await asyncio.to_thread(services.consents.get, consent_id, caller)
    out = consent_out(row)
    status = await asyncio.to_thread(services.revocations.status, row)
    out.nodes = [
        NodeRevocationOut(node=node.id, chain=node.chain, holds_revocation=held)
        for node, held in status
    ]
    return out


@router.post("/v1/consents/{consent_id}/revoke", response_model=ConsentOut, tags=["consents"])
async def revoke_consent(
    consent_id: PathText,
    caller: CallerDep,
    services: ServicesDep,
    body: ConsentRevocationIn | None = None,
) -> ConsentOut:
    """Revoke at once: the next query under this consent is refused, and monitoring
    subscriptions under it end.

    With the enterprise's signed revocation in the body, every data node of the
    consent's chains is also handed it, and refuses the consent itself from then on;
    ``nodes`` says which nodes hold it. Without one (an operator's revocation), only
    this coordinator enforces it.
    """
    revocation = ConsentRevocation.from_json(body.model_dump()) if body is not None else None
    if revocation is not None:
        await asyncio.to_thread(_check_revocation, services, revocation, consent_id, caller)
    signed = revocation.to_json() if revocation is not None else None
    row = await asyncio.to_thread(services.consents.revoke, consent_id, caller, signed)
    # Its post-loan monitoring subscriptions end with it (each end recorded in the ledger;
    # one that cannot be recorded now is ended by the next cycle's sweep: the consent is
    # revoked either way, and no cycle serves a subscription of a revoked consent).
    try:
        await services.monitoring.subscriptions.end_for_consent(consent_id)
    except CreditShareError as exc:
        log.warning("ending the subscriptions of a revoked consent failed: %s", exc)
    out = consent_out(row)
    if row.revocation is not None:
        results = await services.revocations.deliver(row)
        out.nodes = [
            NodeRevocationOut(
                node=node.id, chain=node.chain, holds_revocation=reason is None, reason=reason
            )
            for node, reason in results
        ]
    return out


def _check_revocation(
    services: Services, revocation: ConsentRevocation, consent_id: str, caller: Participant
) -> None:
    """The signed revocation is the caller enterprise's, for this consent."""
    if revocation.consent_id != consent_id:
        raise InvalidInputError("the signed revocation names another consent")
    if caller.role != Role.ENTERPRISE or caller.uscc != revocation.uscc:
        raise PermissionDeniedError("only the enterprise itself signs a revocation")
    with services.participants.locked() as conn:
        key = services.participants.accepted_signing_key(conn, revocation.uscc)
    try:
        revocation.verify(key)
    except InvalidSignatureError:
        raise PermissionDeniedError(
            "the revocation is not signed by the enterprise's signing key"
        ) from None


def own_enterprise(caller: Participant, uscc: str) -> str:
    code = str(Uscc.parse(uscc))
    if caller.role != Role.ENTERPRISE or caller.uscc != code:
        raise PermissionDeniedError("only the enterprise itself may see this")
    return code


@router.get("/v1/enterprises/{uscc}/consents", response_model=list[ConsentOut], tags=["consents"])
async def enterprise_consents(
    uscc: PathText, caller: CallerDep, services: ServicesDep
) -> list[ConsentOut]:
    code = own_enterprise(caller, uscc)
    return [consent_out(r) for r in await asyncio.to_thread(services.consents.for_enterprise, code)]
