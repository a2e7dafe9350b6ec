"""The node's side of federated training: PSI, then a HostParty per job.

Features are this department's model features (the same ones scoring uses),
standardised on the node over its own records; the learnt shard is folded back
onto the raw features (w/σ and an offset −Σ w·μ/σ) before it is kept, so scoring
needs no extra state. Job state lives in memory: a node that restarts mid-job
answers NOT_FOUND for that job and the bureau's job fails with that reason.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import grpc
import numpy as np

from creditshare.crypto import Ciphertext, PublicKey
from creditshare.departments import Department
from creditshare.errors import CreditShareError, InvalidInputError, NotFoundError
from creditshare.federated import HostParty, PsiParty, PsiRequest, TrainingConfig, node_answer
from creditshare.node._scoring import ScoreEngine
from creditshare.node._service import status_for
from creditshare.node._storage import RecordStore, ShardStore
from creditshare.proto import training_pb2, training_pb2_grpc

__all__ = ["TrainingService"]

log = logging.getLogger("creditshare.node")
T = TypeVar("T")
_MAX_JOBS = 8
_MAX_IDS = 2_000_000


@dataclass(slots=True)
class _Job:
    host: HostParty
    mean: np.ndarray
    std: np.ndarray


class TrainingService(training_pb2_grpc.TrainingServicer):
    def __init__(
        self,
        node_id: str,
        department: Department,
        store: RecordStore,
        shards: ShardStore,
        engine: ScoreEngine,
    ) -> None:
        self._node_id = node_id
        self._department = department
        self._store = store
        self._shards = shards
        self._engine = engine
        self._jobs: dict[str, _Job] = {}
        self._lock = threading.Lock()

    async def _run(self, context: grpc.aio.ServicerContext[Any, Any], work: Callable[[], T]) -> T:
        try:
            return await asyncio.to_thread(work)
        except CreditShareError as exc:
            await context.abort(status_for(exc), str(exc))
            raise AssertionError("unreachable") from exc
        except Exception as exc:
            log.exception("training request failed")
            await context.abort(grpc.StatusCode.INTERNAL, "internal error")
            raise AssertionError("unreachable") from exc

    def _job(self, job_id: str) -> _Job:
        with self._lock:
            job = self._jobs.get(job_id)
        if job is None:
            raise NotFoundError(f"no open training job {job_id!r} on node {self._node_id}")
        return job

    def _features(self) -> tuple[list[str], dict[str, list[float]]]:
        names = [f.name for f in self._department.features]
        rows = {
            uscc: [self._department.feature_values(r)[n] for n in names]
            for uscc, r in self._store.all().items()
        }
        return names, rows

    async def PsiAnswer(  # noqa: N802 - gRPC method name
        self, request: training_pb2.PsiAnswerRequest, context: Any
    ) -> training_pb2.PsiAnswerResponse:
        def work() -> training_pb2.PsiAnswerResponse:
            if not request.domain or len(request.domain) > 256:
                raise InvalidInputError("PSI domain must be 1 to 256 bytes")
            ids = sorted(self._store.all())
            answer = node_answer(PsiParty(request.domain), ids, PsiRequest(tuple(request.blinded)))
            return training_pb2.PsiAnswerResponse(
                double_blinded=list(answer.double_blinded),
                node_blinded=list(answer.node_blinded),
                node_set_size=len(ids),
            )

        return await self._run(context, work)

    async def OpenJob(  # noqa: N802 - gRPC method name
        self, request: training_pb2.OpenJobRequest, context: Any
    ) -> training_pb2.OpenJobResponse:
        def work() -> training_pb2.OpenJobResponse:
            if not request.job_id or len(request.job_id) > 64:
                raise InvalidInputError("job_id must be 1 to 64 characters")
            if not 0 < len(request.ids) <= _MAX_IDS or len(set(request.ids)) != len(request.ids):
                raise InvalidInputError("ids must be a non-empty list without duplicates")
            key = PublicKey.from_bytes(request.public_key.n)
            config = TrainingConfig(
                l2=request.l2,
                feature_clip=request.feature_clip or 2.0,
                score_bits=request.score_bits or 20,
                feature_bits=request.feature_bits or 12,
                mask_bits=request.mask_bits or 80,
            )
            names, rows = self._features()
            missing = [i for i in request.ids if i not in rows]
            if missing:
                raise InvalidInputError(f"{len(missing)} id(s) are not held by this node")
            # Standardise over the node's own records, so shards stay comparable.
            matrix = np.array(list(rows.values()), dtype=float)
            mean, std = matrix.mean(axis=0), matrix.std(axis=0)
            std[std == 0] = 1.0
            standard = {i: list((np.array(rows[i]) - mean) / std) for i in request.ids}
            host = HostParty(self._node_id, standard, names, key, config)
            with self._lock:
                if len(self._jobs) >= _MAX_JOBS and request.job_id not in self._jobs:
                    raise InvalidInputError(f"this node runs at most {_MAX_JOBS} jobs at once")
                self._jobs[request.job_id] = _Job(host, mean, std)
            log.info("training job %r opened: %d rows", request.job_id, len(request.ids))
            return training_pb2.OpenJobResponse(features=names, rows=len(request.ids))

        return await self._run(context, work)

    async def Forward(  # noqa: N802 - gRPC method name
        self, request: training_pb2.ForwardRequest, context: Any
    ) -> training_pb2.CiphertextList:
        def work() -> training_pb2.CiphertextList:
            out = self._job(request.job_id).host.forward(list(request.ids))
            return training_pb2.CiphertextList(ciphertexts=[c.to_bytes() for c in out])

        return await self._run(context, work)

    async def MaskedGradient(  # noqa: N802 - gRPC method name
        self, request: training_pb2.MaskedGradientRequest, context: Any
    ) -> training_pb2.CiphertextList:
        def work() -> training_pb2.CiphertextList:
            job = self._job(request.job_id)
            key = job.host.public_key
            residuals = [Ciphertext.from_bytes(key, r) for r in request.residuals]
            out = job.host.masked_gradient(list(request.ids), residuals)
            return training_pb2.CiphertextList(ciphertexts=[c.to_bytes() for c in out])

        return await self._run(context, work)

    async def ApplyGradient(  # noqa: N802 - gRPC method name
        self, request: training_pb2.ApplyGradientRequest, context: Any
    ) -> training_pb2.ApplyGradientResponse:
        def work() -> training_pb2.ApplyGradientResponse:
            try:
                values = [int(v) for v in request.values]
            except ValueError:
                raise InvalidInputError("gradient values must be decimal integers") from None
            if request.batch_size == 0 or not 0 < request.rate < 100:
                raise InvalidInputError("batch_size must be positive and rate within (0, 100)")
            self._job(request.job_id).host.apply_gradient(values, request.batch_size, request.rate)
            return training_pb2.ApplyGradientResponse()

        return await self._run(context, work)

    async def CloseJob(  # noqa: N802 - gRPC method name
        self, request: training_pb2.CloseJobRequest, context: Any
    ) -> training_pb2.CloseJobResponse:
        def work() -> training_pb2.CloseJobResponse:
            job = self._job(request.job_id)
            with self._lock:
                self._jobs.pop(request.job_id, None)
            names = list(job.host.feature_names)
            if request.model_id:
                weights = job.host.weights / job.std
                bias = float(-(weights * job.mean).sum())
                self._shards.save(
                    request.model_id, dict(zip(names, map(float, weights), strict=True)), bias
                )
                self._engine.reload()
                log.info("training job %r kept as model %r", request.job_id, request.model_id)
            return training_pb2.CloseJobResponse(features=names)

        return await self._run(context, work)
