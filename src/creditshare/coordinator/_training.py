"""Training jobs: the coordinator's record of a bureau's job and its relay to nodes.

The bureau drives the protocol from its own process (its private key never leaves
it); the coordinator authorises each step, forwards it to the node over the same
mutual-TLS channels queries use, and keeps the job's status, progress and curve.
It sees blinded PSI points, ciphertexts and masked integers, nothing else.

A job that stops making progress (its bureau was killed, lost its network, or
forgot it) fails after ``idle_seconds`` without a relayed call or a progress
report: a reaper in the app's lifespan and every access check for that, and the
job's nodes are told to drop it, so its workers stop and its model id is free.
Activity is written to the shared database at most every few seconds per job,
so two replicas see the same idle time without a write per relayed call.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from functools import partial
from typing import Any, TypeVar

import grpc
from sqlalchemy.engine import Engine
from sqlmodel import Session, col, func, select

from creditshare._database import write_session
from creditshare.consent import Purpose
from creditshare.coordinator._db import Participant, TrainingJobRow
from creditshare.coordinator._participants import Role
from creditshare.coordinator._registry import Registry
from creditshare.coordinator._training_steps import (
    ACTIVE,
    LabelSums,
    Step,
    check_step,
    claim_label_sums,
    record_label_sums,
    register_model,
    tree_shapes,
)
from creditshare.coordinator.relay import QueryBroker, call_failure
from creditshare.crypto import PublicKey
from creditshare.errors import (
    ConflictError,
    CreditShareError,
    InvalidInputError,
    LedgerError,
    NodeFailedError,
    NotFoundError,
    PermissionDeniedError,
)
from creditshare.federated import TrainingConfig
from creditshare.ledger import Ledger, QueryRecord
from creditshare.proto import node_pb2, training_pb2
from creditshare.signed import SignedTrainingJob
from creditshare.trees import TreeConfig, TreeModel

__all__ = ["ACTIVE", "JobConfig", "TrainingJobs"]

log = logging.getLogger("creditshare.coordinator")
T = TypeVar("T")
#: A job trains logistic regression or gradient-boosted trees (``model_type`` "gbdt").
JobConfig = TrainingConfig | TreeConfig
_RELAY_DEADLINE = 120.0
#: How long a node may take to drop a job when the coordinator ends it.
_DROP_DEADLINE = 10.0


def _aware(moment: datetime) -> datetime:
    """SQLite hands datetimes back without their zone; every stored one is UTC."""
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


class TrainingJobs:
    def __init__(
        self,
        engine: Engine,
        registry: Registry,
        broker: QueryBroker,
        ledger: Ledger,
        clock: Callable[[], datetime],
        *,
        idle_seconds: float = 3600.0,
        jobs_per_bureau: int = 3,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._engine = engine
        self._jobs_per_bureau = jobs_per_bureau
        self._registry = registry
        self._broker = broker
        self._ledger = ledger
        self._clock = clock
        self._monotonic = monotonic
        self.idle_seconds = idle_seconds
        #: Per job, when this replica last wrote its activity (throttles the writes).
        self._touched: dict[str, float] = {}
        #: Jobs with a relayed call in flight on this replica (never reaped meanwhile).
        self._busy: dict[str, int] = {}
        self._reaper: asyncio.Task[None] | None = None

    # -- creation and lookup -----------------------------------------------------------

    def create(
        self,
        bureau: Participant,
        model_id: str,
        nodes: list[str],
        config: JobConfig,
        public_key: PublicKey,
        description: str,
        signed: SignedTrainingJob,
    ) -> TrainingJobRow:
        """Record the bureau's signed job in the ledger, then keep it; ``signed`` was checked
        against the bureau's credential (its id is the job id)."""
        nodes = list(dict.fromkeys(nodes))  # a set of nodes: each named once
        if not nodes:
            raise InvalidInputError("name one or more nodes to train with").at("nodes")
        for node in nodes:
            self._registry.node(node)
        self._check_model_id_free(model_id)
        self._check_room(bureau)
        now = self._clock()
        job_id = signed.job_id
        if public_key.fingerprint() != signed.document["key_fingerprint"]:
            raise InvalidInputError("the signed job names another Paillier key")
        if config.digest() != signed.config_sha256:
            raise InvalidInputError("config is not the one the signed job names")
        chains = sorted({self._registry.node(n).chain.value for n in nodes})
        record = QueryRecord(
            kind="training",
            query_id=job_id,
            time=now,
            uscc="",
            requester=bureau.id,
            requester_role=bureau.role,
            purpose=Purpose.MODEL_TRAINING.value,
            consent_id="",
            model_id=model_id,
            key_fingerprint=public_key.fingerprint(),
            chains=tuple(chains),
            indicators=(),
            request=signed.to_json(),
        )
        with Session(self._engine) as session:
            if session.get(TrainingJobRow, job_id) is not None:
                raise ConflictError(f"training job {job_id} exists already: sign a new job id")
        receipt = self._ledger.append(record.to_bytes(), f"training:{bureau.id}")
        row = TrainingJobRow(
            id=job_id,
            ledger_index=receipt.index,
            bureau=bureau.id,
            model_id=model_id,
            status="aligning",
            nodes=nodes,
            config={**config.to_document(), "description": description},
            progress={"epoch": 0, "batch": 0, "batches": 0},
            history=[],
            sizes={},
            public_key=public_key.to_text(),
            created_at=now,
            updated_at=now,
        )
        with Session(self._engine) as session:
            session.add(row)
            session.commit()
            session.refresh(row)
            return row

    def _check_room(self, bureau: Participant) -> None:
        """A bureau runs at most ``jobs_per_bureau`` jobs at once: each holds slots on every
        node it names and writes a ledger entry, so one bureau cannot take them all."""
        with Session(self._engine) as session:
            running = session.exec(
                select(func.count())
                .select_from(TrainingJobRow)
                .where(TrainingJobRow.bureau == bureau.id, col(TrainingJobRow.status).in_(ACTIVE))
            ).one()
        if running >= self._jobs_per_bureau:
            raise ConflictError(
                f"bureau {bureau.id!r} already runs {running} training jobs (at most "
                f"{self._jobs_per_bureau}); finish or cancel one first"
            )

    def _check_model_id_free(self, model_id: str, job_id: str | None = None) -> None:
        """A model id names one model: published, trained, or reserved by a live job."""
        try:
            self._registry.model(model_id)
        except NotFoundError:
            pass
        else:
            raise ConflictError(f"model {model_id!r} exists already").at("model_id")
        with Session(self._engine) as session:
            clashes = session.exec(
                select(TrainingJobRow).where(
                    TrainingJobRow.model_id == model_id,
                    col(TrainingJobRow.status).in_(ACTIVE),
                )
            ).all()
        for clash in clashes:
            if clash.id != job_id and not self._idle(clash):
                raise ConflictError(
                    f"model id {model_id!r} is reserved by training job {clash.id}"
                ).at("model_id")

    @staticmethod
    def config(job: TrainingJobRow) -> JobConfig:
        """The job's settings, typed: what every node of the job is opened with (a job
        stored before a setting existed gets that setting's default); a tree job's
        stored document names its ``model_type``."""
        settings = {k: v for k, v in job.config.items() if k != "description"}
        if settings.get("model_type") == "gbdt":
            return TreeConfig.from_document(settings)
        return TrainingConfig.from_document(settings)

    def check_publishable(self, job: TrainingJobRow) -> None:
        self._check_model_id_free(job.model_id, job.id)

    def get(self, job_id: str, viewer: Participant) -> TrainingJobRow:
        with Session(self._engine) as session:
            row = session.get(TrainingJobRow, job_id)
        if row is None:
            raise NotFoundError(f"unknown training job {job_id!r}")
        if row.bureau != viewer.id and viewer.role != Role.OPERATOR:
            raise PermissionDeniedError("this training job belongs to another bureau")
        return row

    async def view(self, job_id: str, viewer: Participant) -> TrainingJobRow:
        """The job as its bureau or an operator sees it; an idle one is failed first."""
        row = await asyncio.to_thread(self.get, job_id, viewer)
        if row.status in ACTIVE and self._idle(row):
            ended = await self._abandon(row)
            row = ended if ended is not None else await asyncio.to_thread(self.get, job_id, viewer)
        return row

    async def active(
        self,
        job_id: str,
        bureau: Participant,
        node: str | None = None,
        step: Step | None = None,
    ) -> TrainingJobRow:
        """The job, if ``bureau`` owns it and it is still running (and ``node`` is in it).

        ``step`` is checked against what the job has done so far, so a step out of order
        (opening before aligning, computing before opening, finishing before every node
        is open) is the bureau's error, a 409, and is never relayed to a node, where it
        would look like a node that lost the job.
        """
        row = await self.view(job_id, bureau)
        if row.bureau != bureau.id:
            raise PermissionDeniedError("only the bureau that owns a job may drive it")
        if row.status not in ACTIVE:
            reason = f": {row.error}" if row.error else ""
            raise ConflictError(f"training job {job_id} is {row.status}{reason}")
        if node is not None and node not in row.nodes:
            raise InvalidInputError(f"node {node!r} is not part of this job")
        if step is not None:
            check_step(row, step, node)
        return row

    def aligned(self, job_id: str, node: str) -> None:
        """Record that PSI with ``node`` is done (the job may now be opened there)."""
        with write_session(self._engine) as session:
            row = session.exec(
                select(TrainingJobRow).where(TrainingJobRow.id == job_id).with_for_update()
            ).first()
            if row is None or node in row.sizes:
                return
            row.sizes = {**row.sizes, node: {"aligned": True}}
            row.updated_at = self._clock()
            session.add(row)
            session.commit()

    async def opened(
        self, job_id: str, node: str, rows: int, features: list[str], label_sums: bool = False
    ) -> None:
        """Record that ``node`` opened the job, unless the job ended meanwhile (cancelled,
        idle, a node failed: an open can take minutes). Then the node is told to drop it
        again, so no worker outlives the job, and the bureau gets 409."""
        ended = await asyncio.to_thread(
            self._record_open, job_id, node, {"rows": rows, "features": features}, label_sums
        )
        if ended is not None:
            await self.drop_on_nodes(ended)
            raise ConflictError(f"training job {job_id} is {ended.status}: it ended meanwhile")

    def _record_open(
        self, job_id: str, node: str, state: dict[str, Any], label_sums: bool
    ) -> TrainingJobRow | None:
        """Merge the node into ``sizes`` under the row's lock; the row if the job ended."""
        with write_session(self._engine) as session:
            row = session.exec(
                select(TrainingJobRow).where(TrainingJobRow.id == job_id).with_for_update()
            ).one()
            if row.status not in ACTIVE:
                session.expunge(row)
                return row
            if label_sums:  # WOE-binned features: the label-sum round comes first
                state = {**state, "label_sums": "needed"}
            row.sizes = {**row.sizes, node: state}
            row.status = "training"
            row.updated_at = self._clock()
            session.add(row)
            session.commit()
        self._touched[job_id] = self._monotonic()
        return None

    def label_sums(self, job_id: str, node: str, state: LabelSums) -> None:
        record_label_sums(self._engine, self._clock, job_id, node, state)

    def claim_label_sums(self, job_id: str, node: str, step: Step) -> LabelSums:
        return claim_label_sums(self._engine, self._clock, job_id, node, step)

    def record_progress(
        self, job_id: str, done: dict[str, int], point: dict[str, Any] | None, most: int
    ) -> TrainingJobRow:
        """Progress, and one more point of the curve, under the row's lock: concurrent
        reports lose nothing, and a job that ended meanwhile is not written to."""
        with write_session(self._engine) as session:
            row = session.exec(
                select(TrainingJobRow).where(TrainingJobRow.id == job_id).with_for_update()
            ).one()
            if row.status not in ACTIVE:
                raise ConflictError(f"training job {job_id} is {row.status}")
            if point is not None:
                if len(row.history) >= most:
                    raise InvalidInputError(f"a job's curve holds at most {most} epochs")
                row.history = [*row.history, point]
            row.progress = done
            row.updated_at = self._clock()
            session.add(row)
            session.commit()
            session.refresh(row)
        self._touched[job_id] = self._monotonic()
        return row

    def end(self, job_id: str, status: str, error: str) -> TrainingJobRow | None:
        """Move a running job to ``status`` (failed, cancelled); None if it was not running.

        Conditional on the stored status, so a job that finished meanwhile (on another
        replica) is never marked failed, and only one ender drops it on the nodes."""
        with write_session(self._engine) as session:
            row = session.exec(
                select(TrainingJobRow).where(TrainingJobRow.id == job_id).with_for_update()
            ).first()
            if row is None or row.status not in ACTIVE:
                return None
            row.status = status
            row.error = error[:2000]
            row.updated_at = self._clock()
            session.add(row)
            session.commit()
            session.refresh(row)
        self._touched.pop(job_id, None)
        return row

    # -- idleness --------------------------------------------------------------------

    def _idle(self, row: TrainingJobRow) -> bool:
        if row.id in self._busy:
            return False
        quiet = (self._clock() - _aware(row.updated_at)).total_seconds()
        return quiet > self.idle_seconds

    def _touch(self, job_id: str) -> None:
        """Record activity, at most a few times per idle period (replicas share the DB)."""
        now = self._monotonic()
        last = self._touched.get(job_id)
        if last is not None and now - last < self._touch_interval:
            return
        if len(self._touched) > 10_000:  # jobs ended on another replica
            self._touched.clear()
        self._touched[job_id] = now
        with Session(self._engine) as session:
            row = session.get(TrainingJobRow, job_id)
            if row is not None and row.status in ACTIVE:
                row.updated_at = self._clock()
                session.add(row)
                session.commit()

    @property
    def _touch_interval(self) -> float:
        return min(30.0, self.idle_seconds / 5)

    async def _heartbeat(self, job_id: str) -> None:
        """While a long call is in flight, keep the job's activity fresh in the database
        (another replica's reaper cannot see this replica's calls in flight)."""
        while True:
            await asyncio.sleep(self._touch_interval)
            try:
                await asyncio.to_thread(self._touch, job_id)
            except Exception as exc:  # the call itself decides the job's fate, not a heartbeat
                why = type(exc).__name__
                log.warning("training job %s: activity not recorded (%s)", job_id, why)

    async def _abandon(self, row: TrainingJobRow) -> TrainingJobRow | None:
        error = f"no progress for {self.idle_seconds:g} s: the bureau abandoned the job"
        ended = await asyncio.to_thread(self.end, row.id, "failed", error)
        if ended is not None:
            log.info("training job %s failed: idle for %.0f s", row.id, self.idle_seconds)
            await self.drop_on_nodes(ended)
        return ended

    async def reap(self) -> int:
        """Fail every running job idle for longer than the limit; how many it failed."""

        def running() -> list[TrainingJobRow]:
            with Session(self._engine) as session:
                query = select(TrainingJobRow).where(col(TrainingJobRow.status).in_(ACTIVE))
                return list(session.exec(query).all())

        failed = 0
        for row in await asyncio.to_thread(running):
            if self._idle(row) and await self._abandon(row) is not None:
                failed += 1
        return failed

    async def _reap_forever(self) -> None:
        interval = max(0.5, min(60.0, self.idle_seconds / 4))
        while True:
            await asyncio.sleep(interval)
            try:
                await self.reap()
            except Exception as exc:  # a database hiccup must not end the reaper
                log.warning("training job reaper failed (%s); retrying", type(exc).__name__)

    def start(self) -> None:
        """Start the reaper (from the app's lifespan)."""
        if self._reaper is None:
            self._reaper = asyncio.get_running_loop().create_task(self._reap_forever())

    async def stop(self) -> None:
        if self._reaper is not None:
            self._reaper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reaper
            self._reaper = None

    # -- ending a job ----------------------------------------------------------------

    async def drop_on_nodes(self, job: TrainingJobRow) -> list[str]:
        """Tell every node of the job to drop it (state, workers, and any shard it kept
        for it); the nodes that could not be told (they drop it when it idles out)."""
        drop = training_pb2.CloseJobRequest(job_id=job.id)

        async def one(node: str) -> str | None:
            stub = self._broker.training.get(node)
            if stub is None:
                return node
            try:
                await stub.CloseJob(drop, timeout=_DROP_DEADLINE)
            except grpc.aio.AioRpcError as exc:
                log.warning("node %s did not drop job %s: %s", node, job.id, exc.code().name)
                return node
            return None

        missed = await asyncio.gather(*(one(n) for n in job.nodes))
        return [n for n in missed if n is not None]

    async def cancel(self, job_id: str, caller: Participant, reason: str) -> TrainingJobRow:
        """Cancel a job (its bureau, or an operator): nodes drop it, its model id is free."""
        row = await asyncio.to_thread(self.get, job_id, caller)
        if row.status == "finished":
            raise ConflictError(f"training job {job_id} is finished; nothing to cancel")
        why = reason or f"cancelled by {caller.id}"
        ended = await asyncio.to_thread(self.end, job_id, "cancelled", why)
        await self.drop_on_nodes(ended or row)  # again if already ended: dropping is idempotent
        return ended if ended is not None else await asyncio.to_thread(self.get, job_id, caller)

    async def fail(self, job_id: str, caller: Participant, reason: str) -> TrainingJobRow:
        """The bureau gives up: nodes drop the job; a reason already recorded is kept."""
        row = await asyncio.to_thread(self.get, job_id, caller)
        if row.bureau != caller.id:
            raise PermissionDeniedError("only the bureau that owns a job may end it")
        if row.status == "finished":
            raise ConflictError(f"training job {job_id} is finished")
        ended = await asyncio.to_thread(self.end, job_id, "failed", reason)
        await self.drop_on_nodes(ended or row)
        return ended if ended is not None else await asyncio.to_thread(self.get, job_id, caller)

    async def finish(
        self,
        job: TrainingJobRow,
        intercept: float,
        metrics: dict[str, Any],
        trees: TreeModel | None = None,
    ) -> TrainingJobRow:
        """Every node keeps its shard and the model is registered, or none of it stays:
        a node that fails, or a model that cannot be registered, fails the job and the
        shards other nodes kept for it are discarded (so the model id can be used again).
        A tree job's nodes are told the kept trees' shapes and which splits they own."""
        await asyncio.to_thread(self.check_publishable, job)  # before any node keeps a shard
        features: dict[str, list[str]] = {}
        try:
            for node in job.nodes:
                keep = training_pb2.CloseJobRequest(
                    job_id=job.id, model_id=job.model_id, tree_shapes=tree_shapes(trees, node)
                )
                reply = await self.relay(job.id, node, partial(_close, keep, self.deadline))
                features[node] = list(reply.features)
            return await asyncio.to_thread(self._register, job, intercept, metrics, features, trees)
        except BaseException as exc:
            reason = str(exc) if isinstance(exc, CreditShareError) else type(exc).__name__
            ended = await asyncio.to_thread(
                self.end, job.id, "failed", f"finishing failed, no model kept: {reason}"
            )
            await asyncio.shield(self.drop_on_nodes(ended or job))
            raise

    # -- relaying --------------------------------------------------------------------

    async def relay_with_receipt(
        self,
        job: TrainingJobRow,
        node: str,
        call: Callable[[Any, node_pb2.QueryReceipt, float], Awaitable[T]],
    ) -> T:
        """A call that must carry the job's ledger receipt (PSI, opening the job)."""
        receipt = await asyncio.to_thread(self._ledger.receipt, job.ledger_index)

        async def run(stub: Any) -> T:
            # Not exclusive: PSI and opening a job can take minutes, and must not hold up
            # the queries waiting to move this node's head (a race costs only a retry).
            return await self._broker.call_with_receipt(
                node,
                receipt,
                lambda proof, seconds: call(stub, proof, seconds),
                self.deadline,
                exclusive=False,
            )

        return await self.relay(job.id, node, run)

    async def relay(self, job_id: str, node: str, call: Callable[[Any], Awaitable[T]]) -> T:
        """Run one node call; a node that fails fails the job, with its reason."""
        stub = self._broker.training.get(node)
        if stub is None:
            raise NotFoundError(f"unknown node {node!r}")
        self._busy[job_id] = self._busy.get(job_id, 0) + 1
        beat = asyncio.get_running_loop().create_task(self._heartbeat(job_id))
        try:
            await asyncio.to_thread(self._touch, job_id)
            result = await call(stub)
        except (LedgerError, grpc.aio.AioRpcError) as exc:
            # Bad input stays bad input and a busy node stays busy (the job may try
            # again); anything else is the node failing, which fails the job.
            failure = call_failure(exc)
            error = failure.error(node)
            if isinstance(error, NodeFailedError):
                await self._node_failed(job_id, node, failure.reason)
            raise error from None
        finally:
            beat.cancel()
            left = self._busy.get(job_id, 1) - 1
            if left:
                self._busy[job_id] = left
            else:
                self._busy.pop(job_id, None)
        await asyncio.to_thread(self._touch, job_id)
        return result

    async def _node_failed(self, job_id: str, node: str, reason: str) -> None:
        """A node failing fails the job; the other nodes drop it at once."""
        ended = await asyncio.to_thread(self.end, job_id, "failed", f"node {node}: {reason}")
        if ended is not None:
            await self.drop_on_nodes(ended)

    def _register(
        self,
        job: TrainingJobRow,
        intercept: float,
        metrics: dict[str, Any],
        features: dict[str, list[str]],
        trees: TreeModel | None = None,
    ) -> TrainingJobRow:
        """Register the model and finish the job in one transaction, if still running."""
        row = register_model(self._engine, self._clock, job, intercept, metrics, features, trees)
        self._touched.pop(job.id, None)
        return row

    @property
    def deadline(self) -> float:
        return _RELAY_DEADLINE

    def status_counts(self) -> dict[str, int]:
        """How many jobs are in each status (for the metrics gauge)."""
        query = select(TrainingJobRow.status, func.count()).group_by(TrainingJobRow.status)
        with Session(self._engine) as session:
            return {status: int(count) for status, count in session.exec(query)}


async def _close(request: training_pb2.CloseJobRequest, deadline: float, stub: Any) -> Any:
    return await stub.CloseJob(request, timeout=deadline)
