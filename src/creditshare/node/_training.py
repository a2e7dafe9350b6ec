"""The node's side of federated training: PSI, then a HostParty per job.

Features are this department's model features (the same ones scoring uses),
standardised on the node over its own records; the learnt shard is folded back
onto the raw features (w/σ and an offset −Σ w·μ/σ) before it is kept, so scoring
needs no extra state. Job state lives in memory: a node that restarts mid-job
answers NOT_FOUND for that job and the bureau's job fails with that reason.

A job nobody touches for ``job_idle_seconds`` is dropped by a background sweep
(not only when another job opens), stopping its worker processes: a bureau that
was killed cannot hold a node's job slots or cores. Dropping a job (CloseJob
without a model id) also discards the shard that job kept, if its model was never
registered, so a failed /finish leaves nothing behind.
"""

from __future__ import annotations

import asyncio
import logging
import math
import re
import secrets
import threading
import time
import weakref
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

import grpc
import numpy as np

from creditshare.crypto import Ciphertext, PooledEncryptor, PublicKey
from creditshare.departments import Department
from creditshare.errors import CapacityError, CreditShareError, InvalidInputError, NotFoundError
from creditshare.federated import HostParty, PsiParty, TrainingConfig
from creditshare.ledger import QueryRecord
from creditshare.node._authority_store import RefusalLog
from creditshare.node._receipts import ReceiptChecker, ReceiptRefusedError
from creditshare.node._scoring import ScoreEngine
from creditshare.node._service import guarded
from creditshare.node._storage import RecordStore, ShardStore
from creditshare.node._trust import AccessLog
from creditshare.proto import training_pb2, training_pb2_grpc

__all__ = ["TrainingService"]

log = logging.getLogger("creditshare.node")
T = TypeVar("T")
_MAX_JOBS = 8
#: A job (or PSI state) untouched this long is dropped, so abandoned jobs cannot
#: hold the node's job slots (the default of NodeSettings.training_job_idle_seconds).
JOB_IDLE_SECONDS = 3600.0
_MAX_IDS = 2_000_000
#: Bytes of one ciphertext or proof for a 4096-bit key (mod n²), with room to spare.
_MAX_NUMBER_BYTES = 1100
#: PSI points are 32-byte curve encodings.
_MAX_POINT_BYTES = 64
_MAX_GRADIENT_VALUES = 10_000
_MODEL_ID = re.compile(r"[a-z0-9][a-z0-9._-]{0,63}")
#: Packed evaluation: at most this many nodes' vectors summed slot by slot.
_MAX_ADDITIONS = 1024


@dataclass(slots=True)
class _Job:
    host: HostParty
    ids: list[str]
    mean: np.ndarray
    std: np.ndarray
    touched: float
    #: Obfuscator workers (daemon processes: they also end with the node's process).
    encryptor: PooledEncryptor | None = None

    def close(self) -> None:
        if self.encryptor is not None:
            self.encryptor.close()

    def rows(self, positions: Sequence[int]) -> list[str]:
        try:
            return [self.ids[p] for p in positions]
        except IndexError:
            raise InvalidInputError(f"row positions must be below {len(self.ids)}") from None


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
        self._idle = job_idle_seconds
        self._sweeper: threading.Thread | None = None
        self._encryption_workers = encryption_workers
        self._checker = checker
        self._access_log = access_log
        self._clock = clock
        self._node_id = node_id
        self._department = department
        self._store = store
        self._shards = shards
        self._engine = engine
        self._jobs: dict[str, _Job] = {}
        #: Per job: this node's blinded point → its own id, from its PSI answer.
        self._psi: dict[str, tuple[float, dict[bytes, str]]] = {}
        self._lock = threading.Lock()

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

    def _sweep_in_background(self) -> None:
        """Start the periodic expiry once there is something to expire (a daemon thread
        that ends with the node, or when this service is gone)."""
        with self._lock:
            if self._sweeper is not None:
                return
            me = weakref.ref(self)
            interval = max(0.2, min(60.0, self._idle / 4))
            self._sweeper = threading.Thread(
                target=_sweep, args=(me, interval), name="training-expiry", daemon=True
            )
            self._sweeper.start()

    def sweep(self) -> int:
        """Drop every job and PSI state idle too long, stopping their workers; how many
        jobs were dropped."""
        with self._lock:
            expired = self._expire()
        for job in expired:
            job.close()
        return len(expired)

    def _job(self, job_id: str) -> _Job:
        with self._lock:
            job = self._jobs.get(job_id)
            if job is not None:
                job.touched = self._clock()
        if job is None:
            raise NotFoundError(f"no open training job {job_id!r} on node {self._node_id}")
        return job

    def _expire(self) -> list[_Job]:
        """Drop idle jobs and PSI state; call with the lock held, and close the jobs it
        returns after releasing it (stopping their workers takes seconds)."""
        cutoff = self._clock() - self._idle
        expired = []
        for job_id in [j for j, job in self._jobs.items() if job.touched < cutoff]:
            expired.append(self._jobs.pop(job_id))
            log.info("training job %r expired after %.0f s idle", job_id, self._idle)
        for job_id in [j for j, (at, _) in self._psi.items() if at < cutoff]:
            del self._psi[job_id]
        return expired

    def _has_room(self, job_id: str) -> bool:
        """Whether ``job_id`` may be opened now; call with the lock held."""
        return len(self._jobs) < _MAX_JOBS or job_id in self._jobs

    def _job_receipt(
        self, request: training_pb2.PsiAnswerRequest | training_pb2.OpenJobRequest
    ) -> tuple[PublicKey, int, QueryRecord]:
        """The bureau's key, and the job's ledger receipt checked against it."""
        _check_job_id(request.job_id)
        if not request.HasField("public_key"):
            raise InvalidInputError("public_key is required")
        key = PublicKey.from_bytes(request.public_key.n)
        receipt = request.receipt if request.HasField("receipt") else None
        index, record = self._checker.check_training(
            receipt, request.job_id, key, request.credentials
        )
        return key, index, record

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
            _check_blobs(request.blinded, "blinded", _MAX_IDS, _MAX_POINT_BYTES)
            self._job_receipt(request)
            with self._lock:
                if request.job_id in self._psi or request.job_id in self._jobs:
                    raise ReceiptRefusedError(f"job {request.job_id!r} was already aligned here")
            ids = sorted(self._store.all())
            party = PsiParty(request.domain)
            double = party.reblind(list(request.blinded))
            points = party.blind_ids(ids)
            shuffled = list(points)
            secrets.SystemRandom().shuffle(shuffled)
            with self._lock:
                expired = self._expire()
                full = len(self._psi) >= _MAX_JOBS and request.job_id not in self._psi
                if not full:
                    self._psi[request.job_id] = (
                        self._clock(),
                        dict(zip(points, ids, strict=True)),
                    )
            for job in expired:
                job.close()
            self._sweep_in_background()
            if full:
                raise CapacityError(f"this node aligns at most {_MAX_JOBS} jobs at once")
            return training_pb2.PsiAnswerResponse(
                double_blinded=double, node_blinded=shuffled, node_set_size=len(ids)
            )

        return await self._run(context, work, "PsiAnswer", request.job_id[:64])

    async def OpenJob(  # noqa: N802 - gRPC method name
        self, request: training_pb2.OpenJobRequest, context: Any
    ) -> training_pb2.OpenJobResponse:
        def work() -> training_pb2.OpenJobResponse:
            for name in ("l2", "feature_clip", "learning_rate"):
                if not math.isfinite(getattr(request, name)):
                    raise InvalidInputError(f"{name} must be a finite number")
            _check_blobs(request.points, "points", _MAX_IDS, _MAX_POINT_BYTES)
            key, index, record = self._job_receipt(request)
            if not self._access_log.claim(index, record):
                raise ReceiptRefusedError(f"job {request.job_id!r} was already opened here")
            with self._lock:
                state = self._psi.get(request.job_id)
            if state is None:
                raise NotFoundError(f"no PSI answer for job {request.job_id!r} on this node")
            mapping = state[1]
            points = list(request.points)
            if not 0 < len(points) <= _MAX_IDS or len(set(points)) != len(points):
                raise InvalidInputError("points must be a non-empty list without duplicates")
            unknown = [k for k, p in enumerate(points) if p not in mapping]
            if unknown:
                raise InvalidInputError(f"point {unknown[0]} is not one this node answered")
            ids = [mapping[p] for p in points]
            # TrainingConfig refuses weak settings (e.g. masks under 80 bits), so a
            # coordinator cannot talk a node into masking its gradients thinly.
            defaults = TrainingConfig()
            config = TrainingConfig(
                learning_rate=request.learning_rate or defaults.learning_rate,
                l2=request.l2,
                feature_clip=request.feature_clip or defaults.feature_clip,
                score_bits=request.score_bits or defaults.score_bits,
                feature_bits=request.feature_bits or defaults.feature_bits,
                mask_bits=request.mask_bits or defaults.mask_bits,
                packing=not request.unpacked,
            )
            names, rows = self._features()

            # Standardise over the node's own records, so shards stay comparable.
            matrix = np.array(list(rows.values()), dtype=float)
            mean, std = matrix.mean(axis=0), matrix.std(axis=0)
            std[std == 0] = 1.0
            standard = {i: list((np.array(rows[i]) - mean) / std) for i in ids}
            with self._lock:
                expired = self._expire()
            for job in expired:
                job.close()
            with self._lock:
                room = self._has_room(request.job_id)
            if not room:
                raise CapacityError(f"this node runs at most {_MAX_JOBS} jobs at once")
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
            try:
                host = HostParty(self._node_id, standard, names, key, config, encryptor=encryptor)
                with self._lock:
                    # Checked again: a concurrent open may have taken the last slot, and a
                    # CloseJob (the job was cancelled) may have dropped its PSI state while
                    # this open computed: then the job must not come back, workers and all.
                    if request.job_id not in self._psi:
                        raise NotFoundError(
                            f"training job {request.job_id!r} was closed while it was opened"
                        )
                    if not self._has_room(request.job_id):
                        raise CapacityError(f"this node runs at most {_MAX_JOBS} jobs at once")
                    previous = self._jobs.get(request.job_id)
                    self._jobs[request.job_id] = _Job(
                        host, ids, mean, std, self._clock(), encryptor
                    )
                    self._psi.pop(request.job_id, None)
            except BaseException:
                if encryptor is not None:
                    encryptor.close()
                raise
            if previous is not None:
                previous.close()
            self._sweep_in_background()
            log.info("training job %r opened: %d rows", request.job_id, len(ids))
            return training_pb2.OpenJobResponse(features=names, rows=len(ids))

        return await self._run(context, work, "OpenJob", request.job_id[:64])

    async def Forward(  # noqa: N802 - gRPC method name
        self, request: training_pb2.ForwardRequest, context: Any
    ) -> training_pb2.CiphertextList:
        def work() -> training_pb2.CiphertextList:
            _check_rows(request.job_id, request.rows)
            job = self._job(request.job_id)
            rows = job.rows(request.rows)
            if request.slot_bits:
                if not 1 <= request.additions <= _MAX_ADDITIONS:
                    raise InvalidInputError(f"additions must be within 1..{_MAX_ADDITIONS}")
                out = job.host.forward_packed(rows, request.slot_bits, request.additions)
            else:
                out = job.host.forward(rows)
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
            job = self._job(request.job_id)
            key = job.host.public_key
            residuals = [Ciphertext.from_bytes(key, r) for r in request.residuals]
            out = job.host.masked_gradient(job.rows(request.rows), residuals)
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
            host = self._job(request.job_id).host
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
            with self._lock:
                job = self._jobs.pop(request.job_id, None)
                self._psi.pop(request.job_id, None)
            if job is None:
                if request.model_id:
                    raise NotFoundError(f"no open training job {request.job_id!r} to keep")
                self._discard(request.job_id)
                return training_pb2.CloseJobResponse()
            job.close()
            names = list(job.host.feature_names)
            if request.model_id:
                weights = job.host.weights / job.std
                bias = float(-(weights * job.mean).sum())
                self._shards.save(
                    request.model_id,
                    dict(zip(names, map(float, weights), strict=True)),
                    bias,
                    job_id=request.job_id,
                )
                self._engine.reload()
                log.info("training job %r kept as model %r", request.job_id, request.model_id)
            else:
                self._discard(request.job_id)
            return training_pb2.CloseJobResponse(features=names)

        return await self._run(context, work)

    def _discard(self, job_id: str) -> None:
        """Discard the shard a dropped job kept (its model was never registered)."""
        discarded = self._shards.discard_job(job_id)
        if discarded:
            self._engine.reload()
            log.info("training job %r dropped: discarded its shard of %s", job_id, discarded)


def _sweep(service: weakref.ref[TrainingService], interval: float) -> None:
    """The expiry loop: runs while the service exists (a weak reference, so a stopped
    test server's service can still be collected)."""
    while True:
        time.sleep(interval)
        current = service()
        if current is None:
            return
        try:
            current.sweep()
        except Exception as exc:  # never let one failed close end the sweeping
            log.warning("training job expiry failed (%s); retrying", type(exc).__name__)
        del current


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
