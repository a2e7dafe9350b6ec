"""The node's side of federated training: PSI, then a HostParty per job.

Features are this department's model features (the same ones scoring uses). At
OpenJob the node fits a ``Preprocessing`` over its own records (the schema's
``standardised`` features standardised and clipped at ±feature_clip, the others
unchanged) and trains on the transformed rows; at CloseJob it keeps the weights
on those transformed features together with the preprocessing, so a bank is
scored with exactly the model that was evaluated. A department with WOE-binned
features opens its jobs without a host (``_woe.WoePending``): LevelSums and
ApplyLevelSums set the WOE tables and build it; until then the job refuses to
compute (OutOfOrderError: FAILED_PRECONDITION). Job state (PSI answers, open
jobs, capacity, expiry) is in ``_training_jobs.JobStore``; each RPC here reads
validate → load → compute. Dropping a job (CloseJob without a model id) also
discards the shard that job kept, if its model was never registered, so a failed
/finish leaves nothing behind. A job opened with ``tree_settings`` trains
gradient-boosted trees instead: its RPC bodies are in ``_tree_training``.
"""

from __future__ import annotations

import asyncio
import logging
import math
import re
import time
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

import grpc
import numpy as np

from creditshare.crypto import Ciphertext, PooledEncryptor, PublicKey
from creditshare.departments import Department
from creditshare.errors import CreditShareError, InvalidInputError, NotFoundError
from creditshare.federated import (
    MAX_PSI_CHUNK,
    POINT_BYTES,
    HostParty,
    ModelShard,
    NodeRun,
    Preprocessing,
    TrainingConfig,
    id_array,
)
from creditshare.ledger import QueryRecord
from creditshare.node._authority_store import RefusalLog
from creditshare.node._receipts import ReceiptChecker, ReceiptRefusedError
from creditshare.node._scoring import ScoreEngine
from creditshare.node._service import guarded
from creditshare.node._storage import RecordStore, ShardStore
from creditshare.node._training_jobs import JOB_IDLE_SECONDS, Job, JobStore
from creditshare.node._tree_training import TreeTraining
from creditshare.node._trust import AccessLog
from creditshare.node._woe import WoePending, woe_features
from creditshare.proto import (
    settings_from_pb,
    training_pb2,
    training_pb2_grpc,
    tree_settings_from_pb,
)
from creditshare.trees import TreeConfig, TreeShard

__all__ = ["TrainingService"]

log = logging.getLogger("creditshare.node")
T = TypeVar("T")
_MAX_IDS = 2_000_000
#: Bytes of one ciphertext or proof for a 4096-bit key (mod n²), with room to spare.
_MAX_NUMBER_BYTES = 1100
#: PSI points are 32-byte curve encodings.
_MAX_POINT_BYTES = 64
_MAX_GRADIENT_VALUES = 10_000
_MODEL_ID = re.compile(r"[a-z0-9][a-z0-9._-]{0,63}")
#: Packed evaluation: at most this many nodes' vectors summed slot by slot.
_MAX_ADDITIONS = 1024


class TrainingService(training_pb2_grpc.TrainingServicer):
    def __init__(
        self,
        node_id: str,
        department: Department,
        store: RecordStore,
        shards: ShardStore,
        engine: ScoreEngine,
        checker: ReceiptChecker,
        access_log: AccessLog,
        clock: Callable[[], float] = time.monotonic,
        encryption_workers: int = 0,
        job_idle_seconds: float = JOB_IDLE_SECONDS,
        refusal_log: RefusalLog | None = None,
    ) -> None:
        self._refusal_log = refusal_log
        self.jobs = JobStore(node_id, clock, job_idle_seconds)
        self._encryption_workers = encryption_workers
        self._checker = checker
        self._access_log = access_log
        self._node_id = node_id
        self._department = department
        self._store = store
        self._shards = shards
        self._engine = engine
        self._trees = TreeTraining(node_id, department, self.jobs, encryption_workers)

    async def _run(
        self,
        context: grpc.aio.ServicerContext[Any, Any],
        work: Callable[[], T],
        rpc: str = "",
        job_id: str = "",
    ) -> T:
        async def blocking() -> T:
            return await asyncio.to_thread(work)

        refusal_log = self._refusal_log

        def refused(status: str, exc: CreditShareError) -> None:
            if refusal_log is not None:
                refusal_log.add(rpc, job_id, status, str(exc))

        return await guarded(context, blocking, refused if rpc else None)

    def sweep(self) -> int:
        """Drop every job and PSI state idle too long (see JobStore.sweep)."""
        return self.jobs.sweep()

    def _job_receipt(
        self,
        request: training_pb2.PsiAnswerRequest | training_pb2.OpenJobRequest,
        config: TrainingConfig | TreeConfig | None = None,
    ) -> tuple[PublicKey, int, QueryRecord]:
        """The bureau's key, and the job's ledger receipt checked against it (and against
        ``config``, the settings sent to train with: the bureau signed their hash)."""
        _check_job_id(request.job_id)
        if not request.HasField("public_key"):
            raise InvalidInputError("public_key is required")
        key = PublicKey.from_bytes(request.public_key.n)
        receipt = request.receipt if request.HasField("receipt") else None
        index, record = self._checker.check_training(
            receipt,
            request.job_id,
            key,
            request.credentials,
            None if config is None else config.digest(),
        )
        return key, index, record

    def _features(self) -> tuple[list[str], dict[str, list[float]]]:
        """Every record's raw feature values: the preprocessing is fitted over all of the
        node's records, so shards of different jobs stay comparable."""
        features = self._department.features
        names = [f.name for f in features]
        rows = {}
        for uscc, record in self._store.all().items():
            values = self._department.feature_values(record)
            rows[uscc] = [values[n] for n in names]
        return names, rows

    def _fit(self, names: list[str], rows: dict[str, list[float]], clip: float) -> Preprocessing:
        matrix = np.array(list(rows.values()), dtype=float).reshape(-1, len(names))
        flags = [f.clipped for f in self._department.features]
        return Preprocessing.fit(names, matrix, flags, clip)

    async def PsiAnswer(  # noqa: N802 - gRPC method name
        self, request: training_pb2.PsiAnswerRequest, context: Any
    ) -> training_pb2.PsiAnswerResponse:
        """One chunk of the bureau's blinded ids, re-blinded (``federated._psi_stream``).

        The first chunk (offset 0) starts the job's run: it must carry the job's receipt,
        once per job; later chunks continue that run (same domain, next offset)."""

        def work() -> training_pb2.PsiAnswerResponse:
            if not request.domain or len(request.domain) > 256:
                raise InvalidInputError("PSI domain must be 1 to 256 bytes")
            _check_blobs(request.blinded, "blinded", MAX_PSI_CHUNK, _MAX_POINT_BYTES)
            if request.offset == 0:
                _, index, _ = self._job_receipt(request)
                # Once opened here (OpenJob claimed the receipt, durably), a job never
                # aligns again: not after it closed or expired, nor after a restart.
                if self._access_log.seen(index):
                    raise ReceiptRefusedError(f"job {request.job_id!r} was already opened here")
            # Before a run starts: a refused first chunk leaves nothing behind.
            for k, point in enumerate(request.blinded):
                if len(point) != POINT_BYTES:
                    raise InvalidInputError(
                        f"blinded[{request.offset + k}] is not a {POINT_BYTES}-byte value"
                    )
            if request.offset == 0:
                # The slot first: a replayed or concurrent first chunk of this job (the
                # receipt is no secret to the relay) must not make the node read and
                # hold its ids a second time.
                self.jobs.reserve_psi(request.job_id)
                try:
                    # The node's ids (its primary keys: distinct), streamed into a
                    # compact array (bytes, not str objects).
                    run = NodeRun(request.domain, id_array(self._store.ids(), distinct=True))
                except BaseException:
                    self.jobs.release_psi(request.job_id)
                    raise
                self.jobs.start_psi(request.job_id, run)
            else:
                _check_job_id(request.job_id)
                run = self.jobs.psi(request.job_id)
                if run.domain != request.domain:
                    raise InvalidInputError("PSI domain differs from the run's first chunk")
            try:
                double = run.reblind(request.offset, list(request.blinded), request.more)
            except InvalidInputError:
                if request.offset == 0:  # nothing answered: the run may start again
                    self.jobs.drop_psi(request.job_id, run)
                raise
            return training_pb2.PsiAnswerResponse(double_blinded=double, node_set_size=run.size)

        return await self._run(context, work, "PsiAnswer", request.job_id[:64])

    async def PsiPoints(  # noqa: N802 - gRPC method name
        self, request: training_pb2.PsiPointsRequest, context: Any
    ) -> training_pb2.PsiPointsResponse:
        """The next page of this node's blinded ids, after the bureau's last chunk."""

        def work() -> training_pb2.PsiPointsResponse:
            _check_job_id(request.job_id)
            run = self.jobs.psi(request.job_id)
            points, last = run.page(request.offset, request.limit)
            if last:
                log.info("training job %r aligned: %d points paged", request.job_id, run.size)
            return training_pb2.PsiPointsResponse(
                node_blinded=points, node_set_size=run.size, last=last
            )

        return await self._run(context, work, "PsiPoints", request.job_id[:64])

    async def OpenJob(  # noqa: N802 - gRPC method name
        self, request: training_pb2.OpenJobRequest, context: Any
    ) -> training_pb2.OpenJobResponse:
        def work() -> training_pb2.OpenJobResponse:
            trees = request.HasField("tree_settings")
            if trees == request.HasField("settings"):
                raise InvalidInputError("exactly one of settings and tree_settings is required")
            # The same validation as the coordinator's: refuses weak settings (e.g. masks
            # under 80 bits), so a coordinator cannot talk a node into masking thinly.
            config: TrainingConfig | TreeConfig = (
                tree_settings_from_pb(request.tree_settings)
                if trees
                else settings_from_pb(request.settings)
            )
            _check_blobs(request.points, "points", _MAX_IDS, _MAX_POINT_BYTES)
            # ...and exactly the settings the bureau signed (by their hash): a changed
            # value, or a field left out of the message (proto3 reads it as 0), differs.
            key, index, record = self._job_receipt(request, config)
            if not self._access_log.claim(index, record):
                raise ReceiptRefusedError(f"job {request.job_id!r} was already opened here")
            run = self.jobs.points(request.job_id)
            points = list(request.points)
            if not 0 < len(points) <= _MAX_IDS or len(set(points)) != len(points):
                raise InvalidInputError("points must be a non-empty list without duplicates")
            ids = run.ids_of(points)
            names, rows = self._features()
            self.jobs.check_room(request.job_id)
            if isinstance(config, TreeConfig):
                job = self._trees.job(key, config, ids, names, rows)
                try:
                    self.jobs.open(request.job_id, job)
                except BaseException:
                    job.close()
                    raise
                return self._trees.opened(request.job_id, job)
            # Obfuscators made ahead on other cores; a buffer sized to the job, so a small
            # job does not keep a worker busy long after it is done.
            encryptor = (
                PooledEncryptor(
                    key,
                    workers=self._encryption_workers,
                    buffer=max(256, min(4096, 2 * len(ids))),
                )
                if self._encryption_workers
                else None
            )
            woe = bool(woe_features(self._department))
            try:
                if woe:
                    # WOE features: no host until the level sums set their tables.
                    pending = WoePending.of(
                        self._node_id, self._department, rows, ids, key, config, encryptor
                    )
                    job = Job(None, ids, None, encryptor=encryptor, woe=pending)
                else:
                    # (A WOE job fits its preprocessing once its tables are set.)
                    preprocessing = self._fit(names, rows, config.feature_clip)
                    aligned = {i: rows[i] for i in ids}
                    host = HostParty(
                        self._node_id,
                        aligned,
                        names,
                        key,
                        config,
                        encryptor=encryptor,
                        preprocessing=preprocessing,
                    )
                    job = Job(host, ids, preprocessing, encryptor=encryptor)
                self.jobs.open(request.job_id, job)
            except BaseException:
                if encryptor is not None:
                    encryptor.close()
                raise
            log.info("training job %r opened: %d rows", request.job_id, len(ids))
            return training_pb2.OpenJobResponse(
                features=names, rows=len(ids), label_sums_needed=woe
            )

        return await self._run(context, work, "OpenJob", request.job_id[:64])

    async def LevelSums(  # noqa: N802 - gRPC method name
        self, request: training_pb2.LevelSumsRequest, context: Any
    ) -> training_pb2.CiphertextList:
        def work() -> training_pb2.CiphertextList:
            # A chunk of the fit rows; only the final call may be empty (the rows all
            # came before it).
            if request.rows or not request.final:
                _check_rows(request.job_id, request.rows)
            else:
                _check_job_id(request.job_id)
            _check_blobs(request.labels, "labels", _MAX_IDS, _MAX_NUMBER_BYTES)
            if len(request.labels) != len(request.rows):
                raise InvalidInputError("labels must hold one ciphertext per row")
            if not 0 < request.total <= _MAX_IDS:
                raise InvalidInputError(f"total must be within 1..{_MAX_IDS} fit rows")
            pending = self.jobs.get(request.job_id).pending()
            labels = [Ciphertext.from_bytes(pending.key, c) for c in request.labels]
            out = pending.level_sums(list(request.rows), labels, request.total, request.final)
            if request.final:
                log.info("training job %r: level sums masked and answered", request.job_id)
            return training_pb2.CiphertextList(ciphertexts=[c.to_bytes() for c in out])

        return await self._run(context, work, "LevelSums", request.job_id[:64])

    async def ApplyLevelSums(  # noqa: N802 - gRPC method name
        self, request: training_pb2.ApplyLevelSumsRequest, context: Any
    ) -> training_pb2.ApplyLevelSumsResponse:
        def work() -> training_pb2.ApplyLevelSumsResponse:
            _check_job_id(request.job_id)
            if len(request.values) > _MAX_GRADIENT_VALUES:
                raise InvalidInputError(f"at most {_MAX_GRADIENT_VALUES} values")
            _check_blobs(request.randomness, "randomness", _MAX_GRADIENT_VALUES, _MAX_NUMBER_BYTES)
            if any(len(v) > 1300 for v in request.values):
                raise InvalidInputError("values are longer than any 4096-bit number")
            try:
                values = [int(v) for v in request.values]
            except ValueError:
                raise InvalidInputError("values must be decimal integers") from None
            proofs = [int.from_bytes(r, "big") for r in request.randomness]
            job = self.jobs.get(request.job_id)
            pending = job.pending()
            job.host, job.preprocessing = pending.finish(values, proofs)
            log.info("training job %r: WOE tables set", request.job_id)
            return training_pb2.ApplyLevelSumsResponse(features=list(pending.fit.tables or {}))

        return await self._run(context, work, "ApplyLevelSums", request.job_id[:64])

    async def Forward(  # noqa: N802 - gRPC method name
        self, request: training_pb2.ForwardRequest, context: Any
    ) -> training_pb2.CiphertextList:
        def work() -> training_pb2.CiphertextList:
            _check_rows(request.job_id, request.rows)
            job = self.jobs.get(request.job_id)
            host = job.ready()
            rows = job.rows(request.rows)
            if request.slot_bits:
                if not 1 <= request.additions <= _MAX_ADDITIONS:
                    raise InvalidInputError(f"additions must be within 1..{_MAX_ADDITIONS}")
                out = host.forward_packed(rows, request.slot_bits, request.additions)
            else:
                out = host.forward(rows)
            return training_pb2.CiphertextList(ciphertexts=[c.to_bytes() for c in out])

        return await self._run(context, work)

    async def MaskedGradient(  # noqa: N802 - gRPC method name
        self, request: training_pb2.MaskedGradientRequest, context: Any
    ) -> training_pb2.CiphertextList:
        def work() -> training_pb2.CiphertextList:
            _check_rows(request.job_id, request.rows)
            _check_blobs(request.residuals, "residuals", _MAX_IDS, _MAX_NUMBER_BYTES)
            if len(request.residuals) != len(request.rows):
                raise InvalidInputError("residuals must hold one ciphertext per row")
            job = self.jobs.get(request.job_id)
            host = job.ready()
            residuals = [Ciphertext.from_bytes(host.public_key, r) for r in request.residuals]
            out = host.masked_gradient(job.rows(request.rows), residuals)
            return training_pb2.CiphertextList(ciphertexts=[c.to_bytes() for c in out])

        return await self._run(context, work)

    async def ApplyGradient(  # noqa: N802 - gRPC method name
        self, request: training_pb2.ApplyGradientRequest, context: Any
    ) -> training_pb2.ApplyGradientResponse:
        def work() -> training_pb2.ApplyGradientResponse:
            _check_job_id(request.job_id)
            if len(request.values) > _MAX_GRADIENT_VALUES:
                raise InvalidInputError(f"at most {_MAX_GRADIENT_VALUES} gradient values")
            _check_blobs(request.randomness, "randomness", _MAX_GRADIENT_VALUES, _MAX_NUMBER_BYTES)
            if not (math.isfinite(request.rate) and 0 < request.rate <= 100):
                raise InvalidInputError("rate must be a finite number within (0, 100]")
            if request.batch_size < 1:
                raise InvalidInputError("batch_size must be at least 1")
            if any(len(v) > 1300 for v in request.values):
                raise InvalidInputError("gradient values are longer than any 4096-bit number")
            try:
                values = [int(v) for v in request.values]
            except ValueError:
                raise InvalidInputError("gradient values must be decimal integers") from None
            proofs = [int.from_bytes(r, "big") for r in request.randomness]
            host = self.jobs.get(request.job_id).ready()
            host.apply_gradient(values, proofs, request.batch_size, request.rate)
            return training_pb2.ApplyGradientResponse()

        return await self._run(context, work)

    async def CloseJob(  # noqa: N802 - gRPC method name
        self, request: training_pb2.CloseJobRequest, context: Any
    ) -> training_pb2.CloseJobResponse:
        def work() -> training_pb2.CloseJobResponse:
            _check_job_id(request.job_id)
            if request.model_id and not _MODEL_ID.fullmatch(request.model_id):
                raise InvalidInputError("model_id must be 1 to 64 of a-z, 0-9, '.', '_', '-'")
            tree_shard: TreeShard | None = None
            if request.model_id:  # refused before the job is dropped: it may still be finished
                kept = self.jobs.get(request.job_id)
                if kept.tree is not None:
                    tree_shard = self._trees.shard(request.job_id, kept, request.tree_shapes)
                elif request.tree_shapes:
                    raise InvalidInputError("tree_shapes: this job trains a logistic model")
                else:
                    kept.ready()
            job = self.jobs.pop(request.job_id)
            if job is None:
                if request.model_id:
                    raise NotFoundError(f"no open training job {request.job_id!r} to keep")
                self._discard(request.job_id)
                return training_pb2.CloseJobResponse()
            job.close()
            names = job.feature_names
            if request.model_id and tree_shard is not None:
                self._shards.save_tree(
                    request.model_id, tree_shard, job_id=request.job_id, department=self._department
                )
                self._engine.reload()
                log.info("training job %r kept as tree model %r", request.job_id, request.model_id)
            elif request.model_id:
                # The weights on the preprocessed features, with the preprocessing: the
                # model banks are scored with is the one this job evaluated.
                shard = ModelShard(
                    dict(zip(names, map(float, job.ready().weights), strict=True)),
                    0.0,
                    job.preprocessing,
                )
                self._shards.save(
                    request.model_id, shard, job_id=request.job_id, department=self._department
                )
                self._engine.reload()
                log.info("training job %r kept as model %r", request.job_id, request.model_id)
            else:
                self._discard(request.job_id)
            return training_pb2.CloseJobResponse(features=names)

        return await self._run(context, work)

    async def TreeGradients(  # noqa: N802 - gRPC method name
        self, request: training_pb2.TreeGradientsRequest, context: Any
    ) -> training_pb2.TreeGradientsResponse:
        def work() -> training_pb2.TreeGradientsResponse:
            self._trees.gradients(request)
            return training_pb2.TreeGradientsResponse()

        return await self._run(context, work)

    async def TreeHistograms(  # noqa: N802 - gRPC method name
        self, request: training_pb2.TreeHistogramsRequest, context: Any
    ) -> training_pb2.TreeHistogramsResponse:
        return await self._run(context, lambda: self._trees.histograms(request))

    async def TreeSplit(  # noqa: N802 - gRPC method name
        self, request: training_pb2.TreeSplitRequest, context: Any
    ) -> training_pb2.TreeSplitResponse:
        return await self._run(context, lambda: self._trees.split(request))

    def _discard(self, job_id: str) -> None:
        """Discard the shard a dropped job kept (its model was never registered)."""
        discarded = self._shards.discard_job(job_id)
        if discarded:
            self._engine.reload()
            log.info("training job %r dropped: discarded its shard of %s", job_id, discarded)


def _check_job_id(job_id: str) -> None:
    if not 0 < len(job_id) <= 64:
        raise InvalidInputError("job_id must be 1 to 64 characters")


def _check_rows(job_id: str, rows: Sequence[int]) -> None:
    _check_job_id(job_id)
    if not 0 < len(rows) <= _MAX_IDS:
        raise InvalidInputError(f"rows must hold 1 to {_MAX_IDS} row positions")


def _check_blobs(blobs: Sequence[bytes], what: str, most: int, size: int) -> None:
    if len(blobs) > most:
        raise InvalidInputError(f"{what} may hold at most {most} items")
    if any(len(b) > size for b in blobs):
        raise InvalidInputError(f"each of {what} must be at most {size} bytes")
