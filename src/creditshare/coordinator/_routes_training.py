"""Training-job endpoints: the bureau drives each step; the coordinator relays and records.

What a bureau may send each step (bounded before anything is relayed or written) is
``_training_bodies``; the gradient-boosted-tree steps are ``_routes_tree_training``.
"""

from __future__ import annotations

import asyncio
import base64
from collections.abc import Awaitable, Callable
from typing import Annotated, Any, TypeVar

from fastapi import APIRouter, Depends, Query, Response

from creditshare.coordinator._db import Participant, TrainingJobRow
from creditshare.coordinator._deps import CallerDep, ServicesDep, require_roles
from creditshare.coordinator._listing import (
    DEFAULT_LIMIT,
    PAGED,
    Cursor,
    JobStatus,
    PageLimit,
    jobs_for,
    next_page,
)
from creditshare.coordinator._participants import Role
from creditshare.coordinator._schemas import (
    JobOut,
    JobSummaryOut,
)
from creditshare.coordinator._services import Services
from creditshare.coordinator._training import TrainingJobs
from creditshare.coordinator._training_bodies import (
    ApplyIn,
    ApplyLevelSumsIn,
    CancelIn,
    FailIn,
    FinishIn,
    GradientIn,
    JobId,
    JobIn,
    LevelSumsIn,
    OpenIn,
    ProgressIn,
    PsiIn,
    PsiPointsIn,
    RowsIn,
    from_base64,
    model_type_of,
    to_base64,
)
from creditshare.coordinator._training_steps import LabelSums, Step
from creditshare.crypto import PublicKey
from creditshare.errors import InvalidInputError, PermissionDeniedError
from creditshare.federated import TrainingConfig
from creditshare.proto import node_pb2, settings_to_pb, training_pb2, tree_settings_to_pb
from creditshare.signed import SignedTrainingJob, training_document
from creditshare.trees import TreeConfig, TreeModel, check_leaf_spans

__all__ = ["router"]

router = APIRouter(tags=["training"])
T = TypeVar("T")
Bureau = Annotated[Participant, Depends(require_roles(Role.BUREAU))]
BureauOrOperator = Annotated[Participant, Depends(require_roles(Role.BUREAU, Role.OPERATOR))]
#: Entries of a job's validation curve: one per epoch (max_epochs is at most 1000).
_MAX_HISTORY = 1000


def _summary(row: TrainingJobRow) -> JobSummaryOut:
    return JobSummaryOut(
        id=row.id,
        bureau=row.bureau,
        model_id=row.model_id,
        model_type=model_type_of(row.config),
        status=row.status,
        nodes=row.nodes,
        config=row.config,
        progress=row.progress,
        sizes=row.sizes,
        error=row.error,
        created_at=row.created_at,
        updated_at=row.updated_at,
    )


def _out(row: TrainingJobRow) -> JobOut:
    return JobOut(**_summary(row).model_dump(), history=row.history)


@router.post("/v1/training-jobs", response_model=JobOut, status_code=201)
async def create_job(body: JobIn, caller: Bureau, services: ServicesDep) -> JobOut:
    """Open a job: which nodes, which model id to publish, and the bureau's registered key.

    The bureau signs the job (its id, key fingerprint, nodes, the hash of its config and
    its purpose); the ledger records the signed job and each node checks it before it
    aligns or trains, and trains only with the settings whose hash it signed.
    """
    services.ledger.check_can_sign()  # a ledger that refuses to sign: 503, nothing checked
    signed = await asyncio.to_thread(_signed_job, services, caller, body)
    key = await asyncio.to_thread(services.paillier_keys.resolve, caller, body.key_fingerprint)
    row = await asyncio.to_thread(
        services.training.create,
        caller,
        body.model_id,
        body.nodes,
        body.config,
        key,
        body.description,
        signed,
    )
    return _out(row)


def _signed_job(services: Services, caller: Participant, body: JobIn) -> SignedTrainingJob:
    # Checked before the signature: a body whose config is not the one signed for is the
    # caller's mistake (422 naming the field), not a forgery; nothing is recorded.
    if body.config.digest() != body.config_sha256:
        raise InvalidInputError(
            "config does not match config_sha256: the settings sent are not the ones the "
            "job was signed for (config_sha256 is the SHA-256 of the canonical JSON of the "
            "whole config, defaults included)"
        )
    document = training_document(
        job_id=body.job_id,
        requester=caller.id,
        key_fingerprint=body.key_fingerprint,
        nodes=body.nodes,
        config_sha256=body.config_sha256,
        time=body.requested_at,
    )
    signed = SignedTrainingJob(document, base64.b64decode(body.signature))
    services.credentials.check_signed(caller.id, signed)
    return signed


@router.get("/v1/training-jobs", response_model=list[JobSummaryOut], responses=PAGED)
async def list_jobs(
    caller: BureauOrOperator,
    services: ServicesDep,
    response: Response,
    status: Annotated[JobStatus | None, Query(description="only jobs in this state")] = None,
    limit: PageLimit = DEFAULT_LIMIT,
    before: Cursor = None,
) -> list[JobSummaryOut]:
    """A bureau's own training jobs (an operator: every bureau's), newest first, without
    their curves (`GET /v1/training-jobs/{id}` has it). At most `limit`; when a page is
    full, the next one is `before=<the last job's id>` (also in the `Link` header)."""
    rows = await asyncio.to_thread(jobs_for, services.engine, caller, status, limit, before)
    next_page(response, "/v1/training-jobs", rows, limit, status=status)
    return [_summary(r) for r in rows]


@router.get("/v1/training-jobs/{job_id}", response_model=JobOut)
async def get_job(job_id: JobId, caller: CallerDep, services: ServicesDep) -> JobOut:
    """Status, progress (epoch, batch) and the loss/AUC curve so far."""
    return _out(await services.training.view(job_id, caller))


@router.post("/v1/training-jobs/{job_id}/psi")
async def psi(job_id: JobId, body: PsiIn, caller: Bureau, services: ServicesDep) -> dict[str, Any]:
    """Relay one chunk of an ECDH-PSI run: the bureau's blinded ids in, the node's
    re-blinding of them out, in order. The first chunk (`offset` 0) starts the run and
    carries the job's receipt; the last has `more` false and the bureau's signature over
    every point of the run, which the node checks before it answers. Then the node's own
    blinded ids come from `POST .../psi/points`. The coordinator sees only blinded points, and
    holds one chunk at a time."""
    jobs = services.training
    row = await jobs.active(job_id, caller, body.node)
    request = training_pb2.PsiAnswerRequest(
        job_id=job_id,
        domain=body.domain.encode("utf-8"),
        blinded=from_base64(body.blinded, "blinded"),
        offset=body.offset,
        more=body.more,
        transcript_signature=from_base64([body.transcript_signature or ""], "transcript_signature")[
            0
        ],
    )
    if body.offset:  # a later chunk continues the run its first chunk started
        reply = await jobs.relay(
            job_id, body.node, lambda stub: stub.PsiAnswer(request, timeout=jobs.deadline)
        )
    else:
        request.public_key.n = PublicKey.from_text(row.public_key).to_bytes()
        request.credentials.CopyFrom(
            await asyncio.to_thread(services.credentials.for_nodes, row.bureau)
        )

        async def call(stub: Any, proof: node_pb2.QueryReceipt, seconds: float) -> Any:
            carrying = training_pb2.PsiAnswerRequest()
            carrying.CopyFrom(request)
            carrying.receipt.CopyFrom(proof)
            return await stub.PsiAnswer(carrying, timeout=seconds)

        reply = await jobs.relay_with_receipt(row, body.node, call)
    return {
        "double_blinded": to_base64(reply.double_blinded),
        "node_set_size": reply.node_set_size,
    }


@router.post("/v1/training-jobs/{job_id}/psi/points")
async def psi_points(
    job_id: JobId, body: PsiPointsIn, caller: Bureau, services: ServicesDep
) -> dict[str, Any]:
    """Relay one page of the node's blinded ids (after the bureau's last chunk), in the
    node's random order; the page with `last` true ends the run, and the job may then be
    opened on that node."""
    jobs = services.training
    await jobs.active(job_id, caller, body.node)
    request = training_pb2.PsiPointsRequest(job_id=job_id, offset=body.offset, limit=body.limit)
    reply = await jobs.relay(
        job_id, body.node, lambda stub: stub.PsiPoints(request, timeout=jobs.deadline)
    )
    if reply.last:
        await asyncio.to_thread(jobs.aligned, job_id, body.node)
    return {
        "node_blinded": to_base64(reply.node_blinded),
        "node_set_size": reply.node_set_size,
        "last": reply.last,
    }


@router.post("/v1/training-jobs/{job_id}/open")
async def open_job(
    job_id: JobId, body: OpenIn, caller: Bureau, services: ServicesDep
) -> dict[str, Any]:
    """Tell a node the intersection it trains on, as the node's own blinded points."""
    jobs = services.training
    row = await jobs.active(job_id, caller, body.node, "open")
    config = jobs.config(row)
    template = training_pb2.OpenJobRequest(
        job_id=job_id,
        public_key=node_pb2.PaillierPublicKey(n=PublicKey.from_text(row.public_key).to_bytes()),
        points=from_base64(body.points, "points"),
        credentials=await asyncio.to_thread(services.credentials.for_nodes, row.bureau),
    )
    if isinstance(config, TreeConfig):  # exactly one of settings and tree_settings
        template.tree_settings.CopyFrom(tree_settings_to_pb(config))
    else:
        template.settings.CopyFrom(settings_to_pb(config))

    async def call(stub: Any, proof: node_pb2.QueryReceipt, seconds: float) -> Any:
        request = training_pb2.OpenJobRequest()
        request.CopyFrom(template)
        request.receipt.CopyFrom(proof)
        return await stub.OpenJob(request, timeout=seconds)

    reply = await jobs.relay_with_receipt(row, body.node, call)
    needed = reply.label_sums_needed
    await jobs.opened(job_id, body.node, reply.rows, list(reply.features), needed)
    return {
        "features": list(reply.features),
        "rows": reply.rows,
        "label_sums_needed": needed,
        "tree_bins": list(reply.tree_bins),
    }


@router.post("/v1/training-jobs/{job_id}/level-sums")
async def level_sums(
    job_id: JobId, body: LevelSumsIn, caller: Bureau, services: ServicesDep
) -> dict[str, Any]:
    """A chunk of the fit rows' Enc(y) in; after the final one, masked per-level label
    sums out (WOE-binned features; once per node, after open and before any computation
    there). One call per node at a time: the step is claimed before it is relayed."""
    jobs = services.training
    await jobs.active(job_id, caller, body.node, "sums")
    if len(body.labels) != len(body.rows):
        raise InvalidInputError("labels must hold one ciphertext per row")
    request = training_pb2.LevelSumsRequest(
        job_id=job_id,
        rows=body.rows,
        labels=from_base64(body.labels, "labels"),
        total=body.total,
        final=body.final,
    )
    reply = await _claimed(
        jobs, job_id, body.node, "sums", lambda s: s.LevelSums(request, timeout=jobs.deadline)
    )
    done: LabelSums = "asked" if body.final else "summing"
    await asyncio.to_thread(jobs.label_sums, job_id, body.node, done)
    return {"ciphertexts": to_base64(reply.ciphertexts)}


async def _claimed(
    jobs: TrainingJobs, job_id: str, node: str, step: Step, call: Callable[[Any], Awaitable[T]]
) -> T:
    """Relay a label-sums call under its claimed step; a refused call (bad input, a busy
    node) gives the step back, so the bureau may correct it and try again."""
    before = await asyncio.to_thread(jobs.claim_label_sums, job_id, node, step)
    try:
        return await jobs.relay(job_id, node, call)
    except BaseException:
        await asyncio.to_thread(jobs.label_sums, job_id, node, before)
        raise


@router.post("/v1/training-jobs/{job_id}/apply-level-sums")
async def apply_level_sums(
    job_id: JobId, body: ApplyLevelSumsIn, caller: Bureau, services: ServicesDep
) -> dict[str, Any]:
    """The bureau's decryptions of the masked sums, with proofs: the node sets its WOE
    tables, and the job may compute there."""
    jobs = services.training
    await jobs.active(job_id, caller, body.node, "apply_sums")
    request = training_pb2.ApplyLevelSumsRequest(
        job_id=job_id, values=body.values, randomness=from_base64(body.randomness, "randomness")
    )
    reply = await _claimed(
        jobs,
        job_id,
        body.node,
        "apply_sums",
        lambda s: s.ApplyLevelSums(request, timeout=jobs.deadline),
    )
    await asyncio.to_thread(jobs.label_sums, job_id, body.node, "set")
    return {"features": list(reply.features)}


@router.post("/v1/training-jobs/{job_id}/forward")
async def forward(
    job_id: JobId, body: RowsIn, caller: Bureau, services: ServicesDep
) -> dict[str, Any]:
    jobs = services.training
    await jobs.active(job_id, caller, body.node, "compute")
    request = training_pb2.ForwardRequest(
        job_id=job_id, rows=body.rows, slot_bits=body.slot_bits, additions=body.additions
    )
    reply = await jobs.relay(job_id, body.node, lambda s: s.Forward(request, timeout=jobs.deadline))
    return {"ciphertexts": to_base64(reply.ciphertexts)}


@router.post("/v1/training-jobs/{job_id}/gradient")
async def gradient(
    job_id: JobId, body: GradientIn, caller: Bureau, services: ServicesDep
) -> dict[str, Any]:
    """Encrypted residuals in, encrypted *masked* gradients out."""
    jobs = services.training
    await jobs.active(job_id, caller, body.node, "compute")
    request = training_pb2.MaskedGradientRequest(
        job_id=job_id, rows=body.rows, residuals=from_base64(body.residuals, "residuals")
    )
    reply = await jobs.relay(
        job_id, body.node, lambda s: s.MaskedGradient(request, timeout=jobs.deadline)
    )
    return {"ciphertexts": to_base64(reply.ciphertexts)}


@router.post("/v1/training-jobs/{job_id}/apply")
async def apply(
    job_id: JobId, body: ApplyIn, caller: Bureau, services: ServicesDep
) -> dict[str, Any]:
    jobs = services.training
    await jobs.active(job_id, caller, body.node, "compute")
    request = training_pb2.ApplyGradientRequest(
        job_id=job_id,
        values=body.values,
        batch_size=body.batch_size,
        rate=body.rate,
        randomness=from_base64(body.randomness, "randomness"),
    )
    await jobs.relay(job_id, body.node, lambda s: s.ApplyGradient(request, timeout=jobs.deadline))
    return {}


@router.post("/v1/training-jobs/{job_id}/progress", response_model=JobOut)
async def progress(
    job_id: JobId, body: ProgressIn, caller: Bureau, services: ServicesDep
) -> JobOut:
    jobs = services.training
    await jobs.active(job_id, caller)
    done = {"epoch": body.epoch, "batch": body.batch, "batches": body.batches}
    point = body.model_dump() if body.validation_loss is not None else None
    return _out(await asyncio.to_thread(jobs.record_progress, job_id, done, point, _MAX_HISTORY))


@router.post("/v1/training-jobs/{job_id}/finish", response_model=JobOut)
async def finish(job_id: JobId, body: FinishIn, caller: Bureau, services: ServicesDep) -> JobOut:
    """Nodes keep their shards under the model id and the model is registered; if any
    step fails, no node keeps a shard and the model id stays free."""
    jobs = services.training
    row = await jobs.active(job_id, caller, step="finish")
    config = jobs.config(row)
    trees = _tree_model(row, config, body)
    # The split seed from the stored config beside what the bureau measured (test_auc,
    # test_ks, test_rows, test_share: from the scores the published shards give).
    metrics = {**body.metrics, "epochs": len(row.history), "seed": config.seed}
    if trees is not None:
        metrics["trees"] = len(trees.trees)
    return _out(await jobs.finish(row, body.intercept, metrics, trees))


def _tree_model(
    row: TrainingJobRow, config: TrainingConfig | TreeConfig, body: FinishIn
) -> TreeModel | None:
    """A tree job's model as the bureau publishes it, checked against the job: its
    splits are owned by the job's nodes only, it has no more trees than configured
    and none deeper, no tree's leaf weights span more than a node scores with (else
    the model could never be queried), and its base score is the intercept sent."""
    if not isinstance(config, TreeConfig):
        if body.tree_model is not None:
            raise InvalidInputError("tree_model: this job trains a logistic model, not trees")
        return None
    if body.tree_model is None:
        raise InvalidInputError("tree_model: a gbdt job finishes with its tree model")
    trees = TreeModel.from_document(body.tree_model)
    strangers = sorted(set(trees.nodes) - set(row.nodes))
    if strangers:
        raise InvalidInputError(
            f"tree_model: splits are owned by node(s) {', '.join(strangers)}, which are not "
            f"part of this job ({', '.join(row.nodes)})"
        )
    if not 1 <= len(trees.trees) <= config.trees:
        raise InvalidInputError(
            f"tree_model: {len(trees.trees)} trees; the job trains 1 to {config.trees}"
        )
    for number, tree in enumerate(trees.trees):
        # A split at heap position p is at depth (p + 1).bit_length() − 1.
        if max(((p + 1).bit_length() for p in tree.internal), default=0) > config.max_depth:
            raise InvalidInputError(
                f"tree_model: tree {number} is deeper than the job's max_depth {config.max_depth}"
            )
    try:
        check_leaf_spans(trees)
    except InvalidInputError as exc:
        raise InvalidInputError(f"tree_model: {exc}") from None
    if trees.base_score != body.intercept:
        raise InvalidInputError("intercept must be the tree model's base_score")
    return trees


@router.post("/v1/training-jobs/{job_id}/fail", response_model=JobOut)
async def fail(job_id: JobId, body: FailIn, caller: Bureau, services: ServicesDep) -> JobOut:
    """Close the job on every node (also after the coordinator failed it) and record why."""
    return _out(await services.training.fail(job_id, caller, body.reason))


@router.post("/v1/training-jobs/{job_id}/cancel", response_model=JobOut)
async def cancel(
    job_id: JobId, caller: CallerDep, services: ServicesDep, body: CancelIn | None = None
) -> JobOut:
    """Cancel a job (its bureau, or an operator): every node drops it and stops its
    workers, and its model id is free again. Cancelling an ended job only drops it again."""
    if caller.role not in (Role.BUREAU, Role.OPERATOR):
        raise PermissionDeniedError("only the job's bureau or an operator may cancel it")
    reason = body.reason if body is not None else ""
    return _out(await services.training.cancel(job_id, caller, reason))
