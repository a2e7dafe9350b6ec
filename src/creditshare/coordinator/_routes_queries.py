"""POST /v1/queries: authorise, record, fan out, add; answer ciphertexts only."""

from __future__ import annotations

import asyncio
import base64
import time
from dataclasses import dataclass
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request, Response

from creditshare.consent import SignedConsent
from creditshare.coordinator._db import Participant
from creditshare.coordinator._deps import ServicesDep, require_roles
from creditshare.coordinator._limits import hit, pair, release
from creditshare.coordinator._metrics import CoordinatorMetrics, query_outcome
from creditshare.coordinator._participants import Role
from creditshare.coordinator._problems import status_of
from creditshare.coordinator._schemas import (
    Coverage,
    EncryptedIndicatorOut,
    FailedNode,
    PackingOut,
    QueryIn,
    QueryOut,
    ScoreUnavailable,
)
from creditshare.coordinator._services import Services
from creditshare.coordinator._settings import ModelEntry, NodeEntry
from creditshare.coordinator.relay import NodeCatalogue, PackedAnswer, QueryResult, chain_nodes
from creditshare.crypto import PublicKey
from creditshare.departments import PRESENCE_INDICATOR
from creditshare.errors import (
    ConsentRefusedError,
    CreditShareError,
    NoNodeAnsweredError,
)
from creditshare.identity import Uscc
from creditshare.ledger import MAX_REASON, QueryRecord
from creditshare.proto import node_pb2
from creditshare.signed import SignedQuery, query_document

__all__ = ["PRESENCE_INDICATOR", "router"]

_PRESENCE_BANDS = ["no record", "record held"]

router = APIRouter(tags=["queries"])
Requester = Annotated[Participant, Depends(require_roles(Role.BANK, Role.BUREAU))]


def _item(
    node: NodeEntry, name: str, description: str, bands: list[str], **where: Any
) -> EncryptedIndicatorOut:
    return EncryptedIndicatorOut(
        node=node.id,
        chain=node.chain,
        department=node.department,
        name=name,
        description=description,
        bands=bands,
        **where,
    )


def _about(catalogue: NodeCatalogue | None, name: str) -> tuple[str, list[str]]:
    description, bands = catalogue.indicators.get(name, ("", ())) if catalogue else ("", ())
    return description, list(bands)


def _indicators(
    result: QueryResult, catalogues: dict[str, NodeCatalogue]
) -> list[EncryptedIndicatorOut]:
    out: list[EncryptedIndicatorOut] = []
    presence = "whether this node holds a record"
    for answer in result.answers:
        node, catalogue = answer.node, catalogues.get(answer.node.id)
        if isinstance(answer, PackedAnswer):
            out.append(
                _item(node, PRESENCE_INDICATOR, presence, _PRESENCE_BANDS, slot=answer.first_slot)
            )
            for k, name in enumerate(answer.indicators, start=1):
                out.append(_item(node, name, *_about(catalogue, name), slot=answer.first_slot + k))
        else:
            out.append(
                _item(
                    node,
                    PRESENCE_INDICATOR,
                    presence,
                    _PRESENCE_BANDS,
                    ciphertext=answer.presence.to_text(),
                )
            )
            for name, ciphertext in answer.indicators:
                out.append(
                    _item(node, name, *_about(catalogue, name), ciphertext=ciphertext.to_text())
                )
    return out


def _signed_query(services: Services, caller: Participant, body: QueryIn, uscc: str) -> SignedQuery:
    """The request as the caller signed it, checked against its own credentials first.

    Nodes check it again, against keys their CA certified; checking here too turns a
    client's mistake into one clear 403 instead of every node refusing.
    """
    document = query_document(
        query_id=body.query_id,
        requester=caller.id,
        uscc=uscc,
        purpose=body.purpose.value,
        consent_id=body.consent_id,
        chains=[c.value for c in body.chains or ()],
        model_id=body.model_id,
        key_fingerprint=body.key_fingerprint,
        time=body.requested_at,
    )
    signed = SignedQuery(document, base64.b64decode(body.signature))
    services.credentials.check_signed(caller.id, signed)
    return signed


@dataclass(frozen=True, slots=True)
class _Checked:
    """What ``_checked`` read, and how each later step's read ended (value or error)."""

    signed: SignedQuery
    key: PublicKey
    model: ModelEntry
    _consent: SignedConsent | ConsentRefusedError
    _credentials: node_pb2.Credentials | CreditShareError | None

    def consent(self) -> SignedConsent:
        if isinstance(self._consent, ConsentRefusedError):
            raise self._consent
        return self._consent

    def credentials(self) -> node_pb2.Credentials:
        if isinstance(self._credentials, CreditShareError):
            raise self._credentials
        assert self._credentials is not None  # read whenever the consent was
        return self._credentials


def _checked(services: Services, caller: Participant, body: QueryIn, uscc: str) -> _Checked:
    """Every blocking read and check before anything is spent, in one trip off the event
    loop (each trip costs the loop a hand-off, and a query made six).

    Errors keep their order: the signature, the key and the model raise here; the
    consent's refusal and the credentials' error are raised where the query path reads
    them (a refusal is recorded first, with the signed request).
    """
    signed = _signed_query(services, caller, body, uscc)
    key = services.paillier_keys.resolve(caller, body.key_fingerprint)
    model = services.registry.model(body.model_id)
    try:
        consent: SignedConsent | ConsentRefusedError = services.consents.check(
            body.consent_id, caller, uscc, body.purpose, body.chains
        )
    except ConsentRefusedError as exc:
        return _Checked(signed, key, model, exc, None)
    credentials: node_pb2.Credentials | CreditShareError
    try:
        credentials = services.credentials.for_nodes(caller.id, uscc)
    except CreditShareError as exc:
        credentials = exc
    return _Checked(signed, key, model, consent, credentials)


def _record(
    services: Services, caller: Participant, body: QueryIn, uscc: str, **fields: Any
) -> QueryRecord:
    """The ledger record of a query or refusal: who asked, about whom, why, under what."""
    base: dict[str, Any] = {
        "kind": "refusal",
        "query_id": body.query_id,
        "time": services.clock(),
        "uscc": uscc,
        "requester": caller.id,
        "requester_role": caller.role,
        "purpose": body.purpose.value,
        "consent_id": body.consent_id,
        "model_id": body.model_id,
        "key_fingerprint": "",
        "chains": tuple(sorted(c.value for c in body.chains or ())),
        "indicators": (),
    }
    return QueryRecord(**(base | fields))


@router.post("/v1/queries", response_model=QueryOut)
async def create_query(
    body: QueryIn, caller: Requester, services: ServicesDep, request: Request
) -> Response:
    """Check consent, record the query in the ledger, then ask every node in scope.

    The answer holds ciphertexts that only the requester's private key opens. It is
    serialised here, once: returned as a model, FastAPI would dump and validate it
    again, item by item (one per node and indicator), before serialising it.
    """
    metrics: CoordinatorMetrics = request.app.state.metrics
    started = time.perf_counter()
    outcome = "error"
    try:
        out = await _answer(body, caller, services)
        outcome = "partial" if out.coverage.failed or out.score_unavailable else "answered"
        return Response(out.model_dump_json(), media_type="application/json")
    except CreditShareError as exc:
        outcome = query_outcome(exc, status_of(exc))
        raise
    finally:
        metrics.observe_query(outcome, time.perf_counter() - started)


async def _answer(body: QueryIn, caller: Participant, services: Services) -> QueryOut:
    services.ledger.check_can_sign()  # a ledger that refuses to sign: 503, nothing spent
    uscc = str(Uscc.parse(body.uscc))
    checked = await asyncio.to_thread(_checked, services, caller, body, uscc)
    signed, key, model = checked.signed, checked.key, checked.model
    consents, limits = services.consents, services.limits
    try:
        consent = checked.consent()
        grant = consent.grant
        chains = tuple(body.chains or grant.chains)
        services.registry.scope(chains)  # no node on these chains: 422, nothing spent
        # A tree model's owning nodes must all be in scope: else no score, 422.
        chain_nodes(model, services.registry, chains, services.settings.scale)
        # Only a query the consent covers spends this requester's budget for this
        # enterprise (other lenders have their own), and a use that the consent then
        # refuses after all (a replica spent the last one) gives the hit back.
        spent = await hit(limits.enterprise, pair(uscc, caller.id))
        try:
            await asyncio.to_thread(consents.count_use, body.consent_id)
        except ConsentRefusedError:
            await release(limits.enterprise, spent)
            raise
    except ConsentRefusedError as exc:
        # Refusals are recorded up to a bound per (requester, enterprise); beyond it the
        # answer is 429 and nothing is written, so nobody can flood an access log.
        await hit(limits.refusals, pair(caller.id, uscc))
        refusal = _record(
            services, caller, body, uscc, reason=str(exc)[:MAX_REASON], request=signed.to_json()
        )
        await services.ledger.append_async(refusal.to_bytes(), uscc)
        raise
    record = _record(
        services,
        caller,
        body,
        uscc,
        kind="query",
        model_id=model.id,
        key_fingerprint=key.fingerprint(),
        chains=tuple(sorted(c.value for c in chains)),
        indicators=grant.indicators,
        request=signed.to_json(),
        consent=consent.to_json(),
    )
    query_id = record.query_id
    credentials = checked.credentials()
    try:
        receipt = await services.ledger.append_async(record.to_bytes(), uscc)
    except BaseException:
        # Not recorded, so never made: the consent use and the budget come back.
        await asyncio.to_thread(consents.give_back_use, body.consent_id)
        await release(limits.enterprise, spent)
        raise
    result = await services.broker.query(
        query_id, uscc, model, key, chains, receipt, record.covers_indicator, credentials
    )
    if not result.answers:
        raise NoNodeAnsweredError(
            [{"node": f.node.id, "reason": f.reason} for f in result.failures]
        )
    return QueryOut(
        query_id=query_id,
        ledger_index=receipt.index,
        uscc=uscc,
        model_id=model.id,
        scale=result.encoding.scale,
        public_key_fingerprint=key.fingerprint(),
        encrypted_score=result.encrypted_score.to_text() if result.encrypted_score else None,
        packing=PackingOut(
            slot_bits=result.packed.layout.slot_bits,
            slots_per_ciphertext=result.packed.layout.slots,
            additions=result.packed.layout.additions,
            ciphertexts=[c.to_text() for c in result.packed.ciphertexts],
        )
        if result.packed
        else None,
        score_scale=model.score_scale,
        score_unavailable=None
        if result.score_unavailable is None
        else ScoreUnavailable(
            node=result.score_unavailable.node.id,
            chain=result.score_unavailable.node.chain,
            reason=result.score_unavailable.reason,
        ),
        indicators=_indicators(result, services.broker.catalogues),
        coverage=Coverage(
            answered=[a.node.id for a in result.answers],
            failed=[
                FailedNode(node=f.node.id, chain=f.node.chain, reason=f.reason)
                for f in result.failures
            ],
        ),
    )
