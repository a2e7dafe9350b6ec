"""Training jobs: the coordinator's record of a bureau's job and its relay to nodes.

The bureau drives the protocol from its own process (its private key never leaves
it); the coordinator authorises each step, forwards it to the node over the same
mutual-TLS channels queries use, and keeps the job's status, progress and curve.
It sees blinded PSI points, ciphertexts and masked integers, nothing else.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable
from datetime import datetime
from typing import Any, TypeVar

import grpc
from sqlalchemy.engine import Engine
from sqlmodel import Session, col, func, select

from creditshare.consent import Purpose
from creditshare.coordinator._broker import QueryBroker
from creditshare.coordinator._db import ModelRow, Participant, TrainingJobRow
from creditshare.coordinator._participants import Role
from creditshare.coordinator._registry import Registry
from creditshare.crypto import PublicKey
from creditshare.errors import (
    ConflictError,
    InvalidInputError,
    LedgerError,
    NodeFailedError,
    NotFoundError,
    PermissionDeniedError,
)
from creditshare.federated import TrainingConfig
from creditshare.ledger import Ledger, QueryRecord
from creditshare.proto import node_pb2

__all__ = ["TrainingJobs"]

T = TypeVar("T")
_RELAY_DEADLINE = 120.0


class TrainingJobs:
    def __init__(
        self,
        engine: Engine,
        registry: Registry,
        broker: QueryBroker,
        ledger: Ledger,
        clock: Callable[[], datetime],
    ) -> None:
        self._engine = engine
        self._registry = registry
        self._broker = broker
        self._ledger = ledger
        self._clock = clock

    def create(
        self,
        bureau: Participant,
        model_id: str,
        nodes: list[str],
        config: dict[str, Any],
        public_key: PublicKey,
        description: str = "",
    ) -> TrainingJobRow:
        if not nodes or len(set(nodes)) != len(nodes):
            raise InvalidInputError("name one or more distinct nodes to train with")
        for node in nodes:
            self._registry.node(node)
        self._check_model_id_free(model_id)
        self._typed(config)
        now = self._clock()
        job_id = uuid.uuid4().hex
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
        )
        receipt = self._ledger.append(record.to_bytes(), f"training:{bureau.id}")
        row = TrainingJobRow(
            id=job_id,
            ledger_index=receipt.index,
            bureau=bureau.id,
            model_id=model_id,
            status="aligning",
            nodes=nodes,
            config={**config, "description": description},
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

    def _check_model_id_free(self, model_id: str, job_id: str | None = None) -> None:
        """A model id names one model: published, trained, or reserved by a live job."""
        try:
            self._registry.model(model_id)
        except NotFoundError:
            pass
        else:
            raise ConflictError(f"model {model_id!r} exists already")
        with Session(self._engine) as session:
            clash = session.exec(
                select(TrainingJobRow).where(
                    TrainingJobRow.model_id == model_id,
                    col(TrainingJobRow.status).in_(("aligning", "training")),
                )
            ).first()
        if clash is not None and clash.id != job_id:
            raise ConflictError(f"model id {model_id!r} is reserved by training job {clash.id}")

    @staticmethod
    def _typed(config: dict[str, Any]) -> TrainingConfig:
        settings = {k: v for k, v in config.items() if k != "description"}
        try:
            return TrainingConfig(**settings)
        except TypeError as exc:
            raise InvalidInputError(f"unknown training setting: {exc}") from None

    def config(self, job: TrainingJobRow) -> TrainingConfig:
        """The job's settings, typed: what every node of the job is opened with."""
        return self._typed(job.config)

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

    def active(self, job_id: str, bureau: Participant, node: str | None = None) -> TrainingJobRow:
        row = self.get(job_id, bureau)
        if row.bureau != bureau.id:
            raise PermissionDeniedError("only the bureau that owns a job may drive it")
        if row.status in ("finished", "failed"):
            raise ConflictError(f"training job {job_id} is {row.status}")
        if node is not None and node not in row.nodes:
            raise InvalidInputError(f"node {node!r} is not part of this job")
        return row

    def update(self, job_id: str, **fields: Any) -> TrainingJobRow:
        with Session(self._engine) as session:
            row = session.get(TrainingJobRow, job_id)
            if row is None:
                raise NotFoundError(f"unknown training job {job_id!r}")
            for name, value in fields.items():
                setattr(row, name, value)
            row.updated_at = self._clock()
            session.add(row)
            session.commit()
            session.refresh(row)
            return row

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
        try:
            return await call(stub)
        except LedgerError as exc:
            self.update(job_id, status="failed", error=f"node {node}: ledger: {exc}")
            raise NodeFailedError(node, f"ledger: {exc}") from None
        except grpc.aio.AioRpcError as exc:
            code = exc.code()
            if code == grpc.StatusCode.INVALID_ARGUMENT:
                raise InvalidInputError(f"node {node}: {exc.details()}") from None
            reason = {
                grpc.StatusCode.UNAVAILABLE: "unavailable",
                grpc.StatusCode.DEADLINE_EXCEEDED: "deadline exceeded",
                grpc.StatusCode.NOT_FOUND: f"lost the job ({exc.details()})",
            }.get(code, f"{code.name.lower()}: {exc.details()}")
            self.update(job_id, status="failed", error=f"node {node}: {reason}")
            raise NodeFailedError(node, reason) from None

    def register_model(
        self,
        job: TrainingJobRow,
        intercept: float,
        metrics: dict[str, Any],
        features: dict[str, list[str]],
    ) -> ModelRow:
        row = ModelRow(
            id=job.model_id,
            description=str(job.config.get("description", "")),
            intercept=intercept,
            trained_by=job.bureau,
            job_id=job.id,
            metrics=metrics,
            features=features,
            created_at=self._clock(),
        )
        with Session(self._engine) as session:
            if session.get(ModelRow, row.id) is not None:
                raise ConflictError(f"model {row.id!r} exists already")
            session.add(row)
            session.commit()
            session.refresh(row)
        return row

    @property
    def deadline(self) -> float:
        return _RELAY_DEADLINE

    def status_counts(self) -> dict[str, int]:
        """How many jobs are in each status (for the metrics gauge)."""
        query = select(TrainingJobRow.status, func.count()).group_by(TrainingJobRow.status)
        with Session(self._engine) as session:
            return {status: int(count) for status, count in session.exec(query)}
