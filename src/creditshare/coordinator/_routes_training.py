"""Training-job endpoints: the bureau drives each step; the coordinator relays and records.

Every list, string and number a bureau sends is bounded here, before anything is
relayed or written: lists by the largest job a node accepts, strings by the
largest 4096-bit value they can encode, integers by the protobuf field they are
relayed in, and floats are finite (NaN and Infinity are refused, never stored).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
from collections.abc import Awaitable, Callable
from typing import Annotated, Any, TypeVar

from fastapi import APIRouter, Depends, Path, Query, Response
from pydantic import (
    AwareDatetime,
    Discriminator,
    Field,
    StringConstraints,
    Tag,
    field_validator,
    model_validator,
)

from creditshare.coordinator._db import Participant, TrainingJobRow
from creditshare.coordinator._deps import CallerDep, ServicesDep, require_roles
from creditshare.coordinator._listing import (
    DEFAULT_LIMIT,
    Cursor,
    JobStatus,
    PageLimit,
    jobs_for,
    next_page,
)
from creditshare.coordinator._participants import Role
from creditshare.coordinator._schemas import (
    FINGERPRINT_PATTERN,
    ID_PATTERN,
    REQUEST_ID_PATTERN,
    SIGNATURE_PATTERN,
    InputModel,
    JobOut,
    JobSummaryOut,
)
from creditshare.coordinator._services import Services
from creditshare.coordinator._training import TrainingJobs
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
#: The most rows (or PSI points) one call may carry: a node's whole aligned set.
_MAX_ITEMS = 200_000
_UINT32 = 2**32 - 1
#: Base64 of a ciphertext modulo n² for a 4096-bit n (1024 bytes) is 1368 characters.
_MAX_CIPHERTEXT_TEXT = 1400
#: The most fit rows one level-sums call may carry (the bureau sends 4096 at a time):
#: Enc(y) at 4096 bits stays well under the body limit.
_MAX_LEVEL_SUMS_ROWS = 8192
#: |float| bound on any number a bureau reports: far beyond any real loss or metric.
_MAX_MAGNITUDE = 1e12

JobId = Annotated[str, Path(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_-]+$")]
NodeName = Annotated[str, StringConstraints(pattern=ID_PATTERN)]
Point = Annotated[str, StringConstraints(min_length=1, max_length=64)]
CiphertextText = Annotated[str, StringConstraints(min_length=1, max_length=_MAX_CIPHERTEXT_TEXT)]
Row = Annotated[int, Field(ge=0, le=_UINT32)]
Number = Annotated[float, Field(ge=-_MAX_MAGNITUDE, le=_MAX_MAGNITUDE, allow_inf_nan=False)]
MetricName = Annotated[
    str, StringConstraints(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9_.-]+$")
]


#: Unknown fields refused, floats finite, no control characters (NUL cannot be stored).
_Strict = InputModel


def _model_type(document: Any) -> str:
    """Which config a job's document is: a tree document names ``"model_type": "gbdt"``;
    anything else is the logistic document (the default, which has no such field)."""
    if isinstance(document, TreeConfig):
        return "gbdt"
    if isinstance(document, dict) and document.get("model_type") == "gbdt":
        return "gbdt"
    return "logistic"


#: The logistic document (default) or a gradient-boosted-tree one. Problem locations leave
#: these tags out (``_problems._UNION_TAGS``): a caller names ``config.mask_bits``.
ConfigIn = Annotated[
    Annotated[TrainingConfig, Tag("logistic")] | Annotated[TreeConfig, Tag("gbdt")],
    Discriminator(_model_type),
]


class JobIn(_Strict):
    model_id: str = Field(pattern=ID_PATTERN)
    description: str = Field(default="", max_length=500)
    #: A set of nodes: a name given twice counts once.
    nodes: list[NodeName] = Field(min_length=1, max_length=64)
    key_fingerprint: str = Field(
        pattern=FINGERPRINT_PATTERN,
        description="one of the bureau's registered Paillier keys (POST /v1/paillier-keys): "
        "what nodes encrypt under and the bureau decrypts with",
    )
    #: The one training-configuration document (unknown fields and values out of their
    #: bounds are refused here, 422 naming the field); stored with the job as sent. A
    #: document with ``"model_type": "gbdt"`` is a ``TreeConfig`` (gradient-boosted trees).
    config: ConfigIn = Field(default_factory=TrainingConfig)
    job_id: str = Field(
        pattern=REQUEST_ID_PATTERN,
        description="chosen by the bureau (128 random bits, lowercase hex) and signed",
    )
    requested_at: AwareDatetime = Field(description="when the bureau signed the job (UTC)")
    config_sha256: str = Field(
        pattern=r"^[0-9a-f]{64}$",
        description="SHA-256 (lowercase hex) of the canonical JSON of `config` (all of its "
        "fields, defaults included), as signed: every node recomputes it from the settings "
        "it is sent and refuses the job when it differs",
    )
    signature: str = Field(
        pattern=SIGNATURE_PATTERN,
        description="base64 Ed25519 signature, by the key the bureau's credential certifies, "
        "over the signed training-job document (version 2: job id, key fingerprint, nodes, "
        "config_sha256, purpose, time)",
    )

    @field_validator("nodes")
    @classmethod
    def _distinct(cls, nodes: list[str]) -> list[str]:
        return list(dict.fromkeys(nodes))


class PsiIn(_Strict):
    node: NodeName
    domain: str = Field(min_length=1, max_length=256)
    blinded: list[Point] = Field(max_length=_MAX_ITEMS)


class OpenIn(_Strict):
    node: NodeName
    points: list[Point] = Field(min_length=1, max_length=_MAX_ITEMS)


class RowsIn(_Strict):
    node: NodeName
    rows: list[Row] = Field(min_length=1, max_length=_MAX_ITEMS)
    #: Packed evaluation scores (see ForwardRequest); 0 = one ciphertext per row.
    slot_bits: int = Field(default=0, ge=0, le=512)
    additions: int = Field(default=0, ge=0, le=1024)


class GradientIn(_Strict):
    node: NodeName
    rows: list[Row] = Field(min_length=1, max_length=_MAX_ITEMS)
    residuals: list[CiphertextText] = Field(min_length=1, max_length=_MAX_ITEMS)


class LevelSumsIn(_Strict):
    node: NodeName
    #: A chunk of the fit rows (positions), and Enc(y) for each: never validation or
    #: test rows. Only the final call may be empty.
    rows: list[Row] = Field(max_length=_MAX_LEVEL_SUMS_ROWS)
    labels: list[CiphertextText] = Field(max_length=_MAX_LEVEL_SUMS_ROWS)
    #: How many fit rows are sent in all (the same in every call).
    total: int = Field(ge=1, le=_MAX_ITEMS)
    #: The last call: the node masks its sums and answers them.
    final: bool

    @model_validator(mode="after")
    def _rows_or_final(self) -> LevelSumsIn:
        if not self.rows and not self.final:
            raise ValueError("rows may be empty only in the final call")
        return self


class ApplyLevelSumsIn(_Strict):
    node: NodeName
    #: Decrypted masked sums: integers in [0, n) below 2^4096 (1234 digits).
    values: list[Annotated[str, StringConstraints(pattern=r"^[0-9]{1,1300}$")]] = Field(
        min_length=1, max_length=10_000
    )
    randomness: list[CiphertextText] = Field(min_length=1, max_length=10_000)


class ApplyIn(_Strict):
    node: NodeName
    #: Signed decimal integers below 2^4096 (1234 digits).
    values: list[Annotated[str, StringConstraints(pattern=r"^-?[0-9]{1,1300}$")]] = Field(
        min_length=1, max_length=10_000
    )
    randomness: list[CiphertextText] = Field(min_length=1, max_length=10_000)
    batch_size: int = Field(ge=1, le=100_000)
    rate: float = Field(gt=0, le=100)


class ProgressIn(_Strict):
    epoch: int = Field(ge=0, le=100_000)
    batch: int = Field(ge=0, le=_UINT32)
    batches: int = Field(ge=0, le=_UINT32)
    validation_loss: Number | None = None
    validation_auc: float | None = Field(default=None, ge=0, le=1)
    seconds: float | None = Field(default=None, ge=0, le=_MAX_MAGNITUDE)


class FinishIn(_Strict):
    #: A tree job's is its tree model's base score.
    intercept: Number
    metrics: dict[MetricName, Number] = Field(default_factory=dict, max_length=32)
    #: A tree job's published model (``trees.TreeModel`` document: shapes, the node owning
    #: each split, leaf weights, base score); checked against the job when it finishes.
    tree_model: dict[str, Any] | None = None


class FailIn(_Strict):
    reason: str = Field(max_length=2000)


class CancelIn(_Strict):
    reason: str = Field(default="", max_length=500)


#: Entries of a job's validation curve: one per epoch (max_epochs is at most 1000).
_MAX_HISTORY = 1000


def _summary(row: TrainingJobRow) -> JobSummaryOut:
    return JobSummaryOut(
        id=row.id,
        bureau=row.bureau,
        model_id=row.model_id,
        model_type=_model_type(row.config),
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


def _bytes(items: list[str], what: str) -> list[bytes]:
    try:
        return [base64.b64decode(i.encode("ascii"), validate=True) for i in items]
    except (binascii.Error, UnicodeEncodeError):
        raise InvalidInputError(f"{what} must be base64") from None


def _text(items: Any) -> list[str]:
    return [base64.b64encode(bytes(i)).decode("ascii") for i in items]


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


@router.get("/v1/training-jobs", response_model=list[JobSummaryOut])
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
    """Relay one ECDH-PSI round: the coordinator sees only blinded points."""
    jobs = services.training
    row = await jobs.active(job_id, caller, body.node)
    template = training_pb2.PsiAnswerRequest(
        job_id=job_id,
        domain=body.domain.encode("utf-8"),
        blinded=_bytes(body.blinded, "blinded"),
        public_key=node_pb2.PaillierPublicKey(n=PublicKey.from_text(row.public_key).to_bytes()),
        credentials=await asyncio.to_thread(services.credentials.for_nodes, row.bureau),
    )

    async def call(stub: Any, proof: node_pb2.QueryReceipt, seconds: float) -> Any:
        request = training_pb2.PsiAnswerRequest()
        request.CopyFrom(template)
        request.receipt.CopyFrom(proof)
        return await stub.PsiAnswer(request, timeout=seconds)

    reply = await jobs.relay_with_receipt(row, body.node, call)
    await asyncio.to_thread(jobs.aligned, job_id, body.node)
    return {
        "double_blinded": _text(reply.double_blinded),
        "node_blinded": _text(reply.node_blinded),
        "node_set_size": reply.node_set_size,
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
        points=_bytes(body.points, "points"),
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
        labels=_bytes(body.labels, "labels"),
        total=body.total,
        final=body.final,
    )
    reply = await _claimed(
        jobs, job_id, body.node, "sums", lambda s: s.LevelSums(request, timeout=jobs.deadline)
    )
    done: LabelSums = "asked" if body.final else "summing"
    await asyncio.to_thread(jobs.label_sums, job_id, body.node, done)
    return {"ciphertexts": _text(reply.ciphertexts)}


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
        job_id=job_id, values=body.values, randomness=_bytes(body.randomness, "randomness")
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
    return {"ciphertexts": _text(reply.ciphertexts)}


@router.post("/v1/training-jobs/{job_id}/gradient")
async def gradient(
    job_id: JobId, body: GradientIn, caller: Bureau, services: ServicesDep
) -> dict[str, Any]:
    """Encrypted residuals in, encrypted *masked* gradients out."""
    jobs = services.training
    await jobs.active(job_id, caller, body.node, "compute")
    request = training_pb2.MaskedGradientRequest(
        job_id=job_id, rows=body.rows, residuals=_bytes(body.residuals, "residuals")
    )
    reply = await jobs.relay(
        job_id, body.node, lambda s: s.MaskedGradient(request, timeout=jobs.deadline)
    )
    return {"ciphertexts": _text(reply.ciphertexts)}


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
        randomness=_bytes(body.randomness, "randomness"),
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
