"""The verifiable query log: heads, proofs, and an enterprise's own entries."""

from __future__ import annotations

import asyncio

from fastapi import APIRouter
from fastapi.responses import PlainTextResponse

from creditshare.coordinator._db import Participant
from creditshare.coordinator._deps import CallerDep, ServicesDep
from creditshare.coordinator._participants import Role
from creditshare.coordinator._routes_trust import own_enterprise
from creditshare.coordinator._schemas import (
    CosignatureOut,
    CosignFailureOut,
    CosignRoundOut,
    LedgerEntryOut,
    LedgerHeadOut,
    LogKeyOut,
    PathIndex,
    PathText,
    ProofOut,
    TreeHeadOut,
    TreeSize,
    WitnessedHeadOut,
)
from creditshare.coordinator._services import Services
from creditshare.crypto import VerifyKey
from creditshare.errors import InvalidInputError, NotFoundError, PermissionDeniedError
from creditshare.ledger import (
    Cosignature,
    EmptyLogError,
    Receipt,
    SignedTreeHead,
    StoredLeaf,
    parse_record,
    proof_document,
)

__all__ = ["router"]

router = APIRouter(tags=["ledger"])


def head_out(head: SignedTreeHead) -> TreeHeadOut:
    """The ledger's JSON form of a head (``SignedTreeHead.to_dict``), as a response model."""
    return TreeHeadOut.model_validate(head.to_dict())


def _latest(services: Services) -> SignedTreeHead:
    try:
        return services.ledger.latest_head()
    except EmptyLogError:
        raise NotFoundError("the ledger is empty") from None


@router.get("/v1/ledger/public-key", response_model=LogKeyOut)
async def log_public_key(services: ServicesDep) -> LogKeyOut:
    """The key that signs tree heads; verifiers should pin it from a trusted channel too."""
    key = VerifyKey.from_cryptography(services.log_signer.public_key)
    return LogKeyOut(key_id=key.key_id, public_key=key.to_text())


def cosignature_out(cosignature: Cosignature) -> CosignatureOut:
    return CosignatureOut.model_validate(cosignature.to_dict())


@router.get("/v1/ledger/head", response_model=LedgerHeadOut)
async def latest_head(caller: CallerDep, services: ServicesDep) -> LedgerHeadOut:
    """The latest signed head, and the newest head the data nodes cosigned (their
    cosignatures cover ``witnessed_head`` only; clients demand a quorum of them)."""

    def load() -> LedgerHeadOut:
        latest = _latest(services)
        witnessed = services.witnesses.witnessed()
        out = LedgerHeadOut(**head_out(latest).model_dump())
        if witnessed is not None:
            out.witnessed_head = head_out(witnessed.head)
            out.cosignatures = [cosignature_out(c) for c in witnessed.cosignatures]
        return out

    return await asyncio.to_thread(load)


@router.get(
    "/v1/ledger/checkpoint",
    response_class=PlainTextResponse,
    responses={200: {"content": {"text/plain": {"schema": {"type": "string"}}}}},
)
async def checkpoint(caller: CallerDep, services: ServicesDep) -> PlainTextResponse:
    """The newest witnessed head as a C2SP checkpoint (c2sp.org/tlog-checkpoint): body,
    the log's signature line, then the witnesses' cosignature/v1 lines."""

    def load() -> str:
        _latest(services)  # 404 while the log is empty
        return services.witnesses.checkpoint()

    return PlainTextResponse(await asyncio.to_thread(load))


@router.post("/v1/ledger/cosign", response_model=CosignRoundOut)
async def cosign_now(caller: CallerDep, services: ServicesDep) -> CosignRoundOut:
    """Ask every data node to cosign the latest head now (one round; rounds also run
    every ``witness_interval_seconds``); returns what was collected and which nodes
    did not cosign, and why."""
    collected = await services.witnesses.cosign_round()
    return CosignRoundOut(
        tree_size=collected.size,
        heads=[
            WitnessedHeadOut(
                head=head_out(h.head), cosignatures=[cosignature_out(c) for c in h.cosignatures]
            )
            for h in collected.heads
        ],
        failures=[CosignFailureOut(node=n, reason=r) for n, r in collected.failures],
    )


@router.get("/v1/ledger/proofs/consistency", response_model=ProofOut)
async def consistency(
    caller: CallerDep,
    services: ServicesDep,
    first: TreeSize,
    second: TreeSize,
) -> ProofOut:
    size = (await asyncio.to_thread(_latest, services)).size
    if not first <= second <= size:
        raise InvalidInputError(f"need 0 ≤ first ≤ second ≤ {size}")
    proof = await asyncio.to_thread(services.ledger.consistency_proof, first, second)
    return ProofOut.model_validate(proof_document(proof))


def _may_see(caller: Participant, leaf: StoredLeaf) -> bool:
    if caller.role == Role.OPERATOR:
        return True
    record = parse_record(leaf.data)
    subject = caller.role == Role.ENTERPRISE and caller.uscc == record.uscc
    return subject or caller.id == record.requester


@router.get("/v1/ledger/entries/{index}", response_model=LedgerEntryOut)
async def ledger_entry(
    index: PathIndex, caller: CallerDep, services: ServicesDep
) -> LedgerEntryOut:
    """One entry with its inclusion proof in the latest head (operator, subject or requester)."""
    size = (await asyncio.to_thread(_latest, services)).size
    if not 0 <= index < size:
        raise NotFoundError(f"no ledger entry {index}; the log has {size}")
    receipt = await asyncio.to_thread(services.ledger.receipt, index)
    leaf = StoredLeaf(receipt.index, receipt.data, receipt.leaf_hash, "")
    if not _may_see(caller, leaf):
        raise PermissionDeniedError("this entry concerns another enterprise and requester")
    return LedgerEntryOut.of(receipt)


@router.get("/v1/enterprises/{uscc}/queries", response_model=list[LedgerEntryOut])
async def enterprise_queries(
    uscc: PathText, caller: CallerDep, services: ServicesDep
) -> list[LedgerEntryOut]:
    """Every query (and refusal) about the enterprise, each with its inclusion proof."""
    code = own_enterprise(caller, uscc)

    def load() -> list[Receipt]:
        leaves = services.ledger.entries_for(code)
        if not leaves:
            return []
        head = services.ledger.latest_head()
        return [services.ledger.receipt(leaf.index, head) for leaf in leaves]

    return [LedgerEntryOut.of(r) for r in await asyncio.to_thread(load)]
