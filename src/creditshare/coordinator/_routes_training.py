"""Training-job endpoints: the bureau drives each step; the coordinator relays and records."""

from __future__ import annotations

import asyncio
import base64
import binascii
from typing import Annotated, Any

from fastapi import APIRouter, Depends
from pydantic import BaseModel, ConfigDict, Field

from creditshare.coordinator._db import Participant, TrainingJobRow
from creditshare.coordinator._deps import CallerDep, ServicesDep, require_roles
from creditshare.coordinator._participants import Role
from creditshare.crypto import PublicKey
from creditshare.errors import (
    ConflictError,
    CreditShareError,
    InvalidInputError,
    PermissionDeniedError,
)
from creditshare.proto import node_pb2, training_pb2

__all__ = ["router"]

router = APIRouter(tags=["training"])
Bureau = Annotated[Participant, Depends(require_roles(Role.BUREAU))]
_MAX_ITEMS = 200_000


class JobIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    model_id: str = Field(min_length=1, max_length=64, pattern=r"^[a-z0-9][a-z0-9._-]*$")
    description: str = Field(default="", max_length=500)
    nodes: list[str] = Field(min_length=1, max_length=64)
    public_key: str = Field(max_length=4096)
    config: dict[str, Any] = Field(default_factory=dict)


class JobOut(BaseModel):
    id: str
    bureau: str
    model_id: str
    status: str
    nodes: list[str]
    config: dict[str, Any]
    progress: dict[str, Any]
    history: list[dict[str, Any]]
    sizes: dict[str, Any]
    error: str


class PsiIn(BaseModel):
    node: str
    domain: str = Field(max_length=512)
    blinded: list[str] = Field(max_length=_MAX_ITEMS)


class OpenIn(BaseModel):
    node: str
    points: list[str] = Field(min_length=1, max_length=_MAX_ITEMS)


class RowsIn(BaseModel):
    node: str
    rows: list[int] = Field(min_length=1, max_length=_MAX_ITEMS)
    #: Packed evaluation scores (see ForwardRequest); 0 = one ciphertext per row.
    slot_bits: int = Field(default=0, ge=0, le=512)
    additions: int = Field(default=0, ge=0, le=1024)


class GradientIn(BaseModel):
    node: str
    rows: list[int] = Field(min_length=1, max_length=_MAX_ITEMS)
    residuals: list[str] = Field(min_length=1, max_length=_MAX_ITEMS)


class ApplyIn(BaseModel):
    node: str
    values: list[str] = Field(min_length=1, max_length=10_000)
    randomness: list[str] = Field(min_length=1, max_length=10_000)
    batch_size: int = Field(ge=1)
    rate: float = Field(gt=0)


class ProgressIn(BaseModel):
    epoch: int = Field(ge=0)
    batch: int = Field(ge=0)
    batches: int = Field(ge=0)
    validation_loss: float | None = None
    validation_auc: float | None = None
    seconds: float | None = None


class FinishIn(BaseModel):
    intercept: float
    metrics: dict[str, float] = Field(default_factory=dict)


class FailIn(BaseModel):
    reason: str = Field(max_length=2000)


def _out(row: TrainingJobRow) -> JobOut:
    return JobOut(
        id=row.id,
        bureau=row.bureau,
        model_id=row.model_id,
        status=row.status,
        nodes=row.nodes,
        config=row.config,
        progress=row.progress,
        history=row.history,
        sizes=row.sizes,
        error=row.error,
    )


def _bytes(items: list[str], what: str) -> list[bytes]:
    try:
        return [base64.b64decode(i.encode("ascii"), validate=True) for i in items]
    except (binascii.Error, UnicodeEncodeError):
        raise InvalidInputError(f"{what} must be base64") from None


def _text(items: Any) -> list[str]:
    return [base64.b64encode(bytes(i)).decode("ascii") for i in items]


@router.post("/v1/training-jobs", response_model=JobOut, status_code=201)
async def create_job(body: JobIn, caller: Bureau, services: ServicesDep) -> JobOut:
    """Open a job: which nodes, which model id to publish, and the bureau's public key."""
    key = PublicKey.from_text(body.public_key)
    row = await asyncio.to_thread(
        services.training.create,
        caller,
        body.model_id,
        body.nodes,
        body.config,
        key,
        body.description,
    )
    return _out(row)


@router.get("/v1/training-jobs/{job_id}", response_model=JobOut)
async def get_job(job_id: str, caller: CallerDep, services: ServicesDep) -> JobOut:
    """Status, progress (epoch, batch) and the loss/AUC curve so far."""
    return _out(await asyncio.to_thread(services.training.get, job_id, caller))


@router.post("/v1/training-jobs/{job_id}/psi")
async def psi(job_id: str, body: PsiIn, caller: Bureau, services: ServicesDep) -> dict[str, Any]:
    """Relay one ECDH-PSI round: the coordinator sees only blinded points."""
    jobs = services.training
    row = jobs.active(job_id, caller, body.node)
    template = training_pb2.PsiAnswerRequest(
        job_id=job_id,
        domain=body.domain.encode("utf-8"),
        blinded=_bytes(body.blinded, "blinded"),
        public_key=node_pb2.PaillierPublicKey(n=PublicKey.from_text(row.public_key).to_bytes()),
    )

    async def call(stub: Any, proof: node_pb2.QueryReceipt, seconds: float) -> Any:
        request = training_pb2.PsiAnswerRequest()
        request.CopyFrom(template)
        request.receipt.CopyFrom(proof)
        return await stub.PsiAnswer(request, timeout=seconds)

    reply = await jobs.relay_with_receipt(row, body.node, call)
    return {
        "double_blinded": _text(reply.double_blinded),
        "node_blinded": _text(reply.node_blinded),
        "node_set_size": reply.node_set_size,
    }


@router.post("/v1/training-jobs/{job_id}/open")
async def open_job(
    job_id: str, body: OpenIn, caller: Bureau, services: ServicesDep
) -> dict[str, Any]:
    """Tell a node the intersection it trains on, as the node's own blinded points."""
    jobs = services.training
    row = jobs.active(job_id, caller, body.node)
    config = jobs.config(row)
    template = training_pb2.OpenJobRequest(
        job_id=job_id,
        public_key=node_pb2.PaillierPublicKey(n=PublicKey.from_text(row.public_key).to_bytes()),
        points=_bytes(body.points, "points"),
        l2=config.l2,
        feature_clip=config.feature_clip,
        score_bits=config.score_bits,
        feature_bits=config.feature_bits,
        mask_bits=config.mask_bits,
        learning_rate=config.learning_rate,
        unpacked=not config.packing,
    )

    async def call(stub: Any, proof: node_pb2.QueryReceipt, seconds: float) -> Any:
        request = training_pb2.OpenJobRequest()
        request.CopyFrom(template)
        request.receipt.CopyFrom(proof)
        return await stub.OpenJob(request, timeout=seconds)

    reply = await jobs.relay_with_receipt(row, body.node, call)
    sizes = {**row.sizes, body.node: {"rows": reply.rows, "features": list(reply.features)}}
    jobs.update(job_id, sizes=sizes, status="training")
    return {"features": list(reply.features), "rows": reply.rows}


@router.post("/v1/training-jobs/{job_id}/forward")
async def forward(
    job_id: str, body: RowsIn, caller: Bureau, services: ServicesDep
) -> dict[str, Any]:
    jobs = services.training
    jobs.active(job_id, caller, body.node)
    request = training_pb2.ForwardRequest(
        job_id=job_id, rows=body.rows, slot_bits=body.slot_bits, additions=body.additions
    )
    reply = await jobs.relay(job_id, body.node, lambda s: s.Forward(request, timeout=jobs.deadline))
    return {"ciphertexts": _text(reply.ciphertexts)}


@router.post("/v1/training-jobs/{job_id}/gradient")
async def gradient(
    job_id: str, body: GradientIn, caller: Bureau, services: ServicesDep
) -> dict[str, Any]:
    """Encrypted residuals in, encrypted *masked* gradients out."""
    jobs = services.training
    jobs.active(job_id, caller, body.node)
    request = training_pb2.MaskedGradientRequest(
        job_id=job_id, rows=body.rows, residuals=_bytes(body.residuals, "residuals")
    )
    reply = await jobs.relay(
        job_id, body.node, lambda s: s.MaskedGradient(request, timeout=jobs.deadline)
    )
    return {"ciphertexts": _text(reply.ciphertexts)}


@router.post("/v1/training-jobs/{job_id}/apply")
async def apply(
    job_id: str, body: ApplyIn, caller: Bureau, services: ServicesDep
) -> dict[str, Any]:
    jobs = services.training
    jobs.active(job_id, caller, body.node)
    request = training_pb2.ApplyGradientRequest(
        job_id=job_id,
        values=body.values,
        batch_size=body.batch_size,
        rate=body.rate,
        randomness=_bytes(body.randomness, "randomness"),
    )
    await jobs.relay(job_id, body.node, lambda s: s.ApplyGradient(request, timeout=jobs.deadline))
    return {}


@router.post("/v1/training-jobs/{job_id}/progress", response_model=JobOut)
async def progress(job_id: str, body: ProgressIn, caller: Bureau, services: ServicesDep) -> JobOut:
    jobs = services.training
    row = jobs.active(job_id, caller)
    history = list(row.history)
    if body.validation_loss is not None:
        history.append(body.model_dump())
    done = {"epoch": body.epoch, "batch": body.batch, "batches": body.batches}
    return _out(await asyncio.to_thread(jobs.update, job_id, progress=done, history=history))


@router.post("/v1/training-jobs/{job_id}/finish", response_model=JobOut)
async def finish(job_id: str, body: FinishIn, caller: Bureau, services: ServicesDep) -> JobOut:
    """Nodes keep their shards under the model id; the model is registered here."""
    jobs = services.training
    row = jobs.active(job_id, caller)
    jobs.check_publishable(row)  # before any node keeps a shard under that id
    features: dict[str, list[str]] = {}
    keep = training_pb2.CloseJobRequest(job_id=job_id, model_id=row.model_id)
    for node in row.nodes:
        reply = await jobs.relay(job_id, node, lambda s: s.CloseJob(keep, timeout=jobs.deadline))
        features[node] = list(reply.features)
    metrics = {**body.metrics, "epochs": len(row.history)}
    await asyncio.to_thread(jobs.register_model, row, body.intercept, metrics, features)
    return _out(await asyncio.to_thread(jobs.update, job_id, status="finished"))


@router.post("/v1/training-jobs/{job_id}/fail", response_model=JobOut)
async def fail(job_id: str, body: FailIn, caller: Bureau, services: ServicesDep) -> JobOut:
    """Close the job on every node (also after the coordinator failed it) and record why."""
    jobs = services.training
    row = jobs.get(job_id, caller)
    if row.bureau != caller.id:
        raise PermissionDeniedError("only the bureau that owns a job may end it")
    if row.status == "finished":
        raise ConflictError(f"training job {job_id} is finished")
    drop = training_pb2.CloseJobRequest(job_id=job_id)
    for node in row.nodes:
        try:
            await jobs.relay(job_id, node, lambda s: s.CloseJob(drop, timeout=10))
        except CreditShareError:  # a node that is down has no job state left to drop
            continue
    error = row.error or body.reason  # keep the coordinator's own reason if it failed first
    return _out(await asyncio.to_thread(jobs.update, job_id, status="failed", error=error))
