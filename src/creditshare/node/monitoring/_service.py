"""The node's Monitoring gRPC service: ``Watch`` registers a subscription, ``Monitor``
answers a cycle with one sealed batch per subscription served.

Both check, like queries do, what the coordinator cannot forge: a ledger receipt for
the very subscription or cycle, the bank's signature over the subscription and the
enterprise's consent (``ReceiptChecker``/``RequestAuthority``). Batches are sealed to
the alert key the bank signed, never to one the coordinator supplies, and every batch
is the same length whether or not it carries an event. Database work and sealing run
off the event loop; errors become status codes in ``node._service.guarded``.

A subscription watching score_change also gets, from every node holding a usable shard
of its model, Enc(this node's share of the linear score) under the bank's Paillier key
(the one whose fingerprint the bank signed; Watch refuses any other) each cycle: a
full-width encryption of zero when the node holds no record of the enterprise, so the
coordinator, adding the shares, cannot tell where records are or whether the score moved.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import grpc

from creditshare.crypto import SEAL_OVERHEAD, AlertPublicKey, FixedPointEncoding, PublicKey
from creditshare.departments import Department
from creditshare.errors import (
    CapacityError,
    CreditShareError,
    InvalidInputError,
    PermissionDeniedError,
)
from creditshare.monitoring import BATCH_BYTES, Signal, batch_info
from creditshare.node._authority import RequestAuthority
from creditshare.node._authority_store import RefusalLog
from creditshare.node._receipts import ReceiptChecker
from creditshare.node._scoring import ScoreEngine
from creditshare.node._service import guarded, public_key_of
from creditshare.node.monitoring._store import CyclePlan, MonitoringStore, PlannedScore
from creditshare.proto import monitoring_pb2, monitoring_pb2_grpc
from creditshare.signed import SignedSubscription

__all__ = ["MAX_CYCLE_BATCHES", "MAX_CYCLE_ENDS", "MAX_CYCLE_SUBSCRIPTIONS", "MonitoringService"]

log = logging.getLogger("creditshare.node")
T = TypeVar("T")

#: Subscriptions one Monitor call may name (monitoring.proto).
MAX_CYCLE_SUBSCRIPTIONS = 100_000
#: Batches one Monitor answer can carry: every sealed batch is BATCH_BYTES + SEAL_OVERHEAD
#: (4144) bytes, 4184 with its id and framing, and the answer is one gRPC message of at
#: most 64 MiB (GRPC_MESSAGE_OPTIONS), which 16 039 of them fill. A node asked to serve
#: more in one cycle says so (RESOURCE_EXHAUSTED) instead of failing to send.
MAX_CYCLE_BATCHES = 16_000
#: Ended subscriptions one Monitor call may list (monitoring.proto).
MAX_CYCLE_ENDS = 10_000
#: Nodes a cycle may name: far more than any federation, few enough to hash at once.
MAX_CYCLE_NODES = 10_000
#: A signed subscription's canonical JSON is at most this long (monitoring.proto).
MAX_SIGNED_BYTES = 8192
_HEX32 = re.compile(r"[0-9a-f]{32}")
_HEX64 = re.compile(r"[0-9a-f]{64}")
_NODE_ID = re.compile(r"[a-z0-9][a-z0-9._-]{0,63}")
#: Batches sealed per worker-thread hop: the event loop serves other calls in between.
_SEAL_CHUNK = 1000
#: Score shares encrypted per worker-thread hop (a Paillier encryption costs more).
_SCORE_CHUNK = 100
#: The largest answer one gRPC message may carry (GRPC_MESSAGE_OPTIONS), and what each
#: sealed batch or score share adds besides its bytes (id, tags, lengths), at most.
_MAX_ANSWER_BYTES = 64 * 1024 * 1024
_FRAMING_BYTES = 48


class MonitoringService(monitoring_pb2_grpc.MonitoringServicer):
    def __init__(
        self,
        node_id: str,
        department: Department,
        store: MonitoringStore,
        checker: ReceiptChecker,
        authority: RequestAuthority,
        refusal_log: RefusalLog,
        engine: ScoreEngine,
    ) -> None:
        self._node_id = node_id
        self._raises = {s.signal for s in department.signals}
        #: Score shares are computed with the query path's engine (its shards, its
        #: fixed-base encryptor cache for the bank's long-lived key).
        self._engine = engine
        self._store = store
        self._checker = checker
        self._authority = authority
        self._refusal_log = refusal_log

    async def _guard(
        self,
        context: grpc.aio.ServicerContext[Any, Any],
        work: Callable[[], Awaitable[T]],
        rpc: str,
        request_id: str,
    ) -> T:
        def refused(status: str, exc: CreditShareError) -> None:
            self._refusal_log.add(rpc, request_id, status, str(exc))

        return await guarded(context, work, refused)

    async def Watch(  # noqa: N802 - gRPC method name
        self,
        request: monitoring_pb2.WatchRequest,
        context: grpc.aio.ServicerContext[
            monitoring_pb2.WatchRequest, monitoring_pb2.WatchResponse
        ],
    ) -> monitoring_pb2.WatchResponse:
        async def work() -> monitoring_pb2.WatchResponse:
            return await asyncio.to_thread(self._watch, request)

        return await self._guard(context, work, "Watch", _subscription_id(request.subscription))

    def _watch(self, request: monitoring_pb2.WatchRequest) -> monitoring_pb2.WatchResponse:
        signed = _signed_subscription(request.subscription)
        _, _, grant = self._checker.check_subscription(
            request.receipt if request.HasField("receipt") else None,
            signed,
            request.credentials,
        )
        score_key = self._score_key(request, signed)
        scores_here = score_key is not None and signed.model_id in self._engine.model_ids
        if not scores_here and not any(c.signal in self._raises for c in signed.signals):
            raised = ", ".join(sorted(s.value for s in self._raises)) or "none"
            raise InvalidInputError(
                f"the subscription names no signal node {self._node_id} raises "
                f"(it raises: {raised}; score_change only for models it holds a shard of)"
            )
        registration = self._store.register(signed, self._node_id, grant, score_key)
        log.info(
            "subscription %s registered (new: %s) from snapshot %d",
            signed.subscription_id,
            registration.newly_registered,
            registration.from_snapshot,
        )
        return monitoring_pb2.WatchResponse(
            node_id=self._node_id,
            newly_registered=registration.newly_registered,
            watching_from_snapshot=registration.from_snapshot,
        )

    @staticmethod
    def _score_key(
        request: monitoring_pb2.WatchRequest, signed: SignedSubscription
    ) -> PublicKey | None:
        """The bank's Paillier key for a subscription watching score_change: exactly the
        key whose fingerprint the bank signed (None without score_change: not kept)."""
        if not any(c.signal is Signal.SCORE_CHANGE for c in signed.signals):
            return None
        if not request.HasField("public_key") or not request.public_key.n:
            raise InvalidInputError(
                "public_key is required: the subscription watches score_change, whose "
                "score shares are encrypted under the bank's Paillier key"
            )
        key = public_key_of(request.public_key)
        if key.fingerprint() != signed.key_fingerprint:
            raise PermissionDeniedError(
                f"public_key (fingerprint {key.fingerprint()}) is not the key the bank signed "
                f"for this subscription (key_fingerprint {signed.key_fingerprint})"
            )
        return key

    async def Monitor(  # noqa: N802 - gRPC method name
        self,
        request: monitoring_pb2.MonitorRequest,
        context: grpc.aio.ServicerContext[
            monitoring_pb2.MonitorRequest, monitoring_pb2.MonitorResponse
        ],
    ) -> monitoring_pb2.MonitorResponse:
        async def work() -> monitoring_pb2.MonitorResponse:
            plan = await asyncio.to_thread(self._plan, request)
            sealed: list[monitoring_pb2.SealedBatch] = []
            for start in range(0, len(plan.batches), _SEAL_CHUNK):
                chunk = plan.batches[start : start + _SEAL_CHUNK]
                sealed.extend(await asyncio.to_thread(_seal, chunk))
            scores: list[monitoring_pb2.EncryptedScore] = []
            if plan.scores:
                encoding = FixedPointEncoding(request.scale)  # checked by _plan
                for start in range(0, len(plan.scores), _SCORE_CHUNK):
                    due = plan.scores[start : start + _SCORE_CHUNK]
                    scores.extend(await asyncio.to_thread(self._encrypt_scores, due, encoding))
            log.info(
                "cycle %d answered: %d batch(es), %d score share(s), %d unknown, %d ended",
                request.cycle,
                len(sealed),
                len(scores),
                len(plan.unknown),
                len(plan.ended),
            )
            return monitoring_pb2.MonitorResponse(
                node_id=self._node_id,
                batches=sealed,
                scores=scores,
                unknown=plan.unknown,
                ended=[
                    monitoring_pb2.EndedSubscription(subscription_id=sid, reason=reason)
                    for sid, reason in plan.ended
                ],
            )

        return await self._guard(context, work, "Monitor", f"cycle {request.cycle}")

    def _plan(self, request: monitoring_pb2.MonitorRequest) -> CyclePlan:
        """Validate, check the cycle's receipt, then decide every batch; blocking."""
        requested, node_digests = _cycle_request(request)
        ended_ids = _ended_ids(request)
        self._authority.update_revocations(request.credentials.revocation_lists)
        self._checker.check_cycle(
            request.receipt if request.HasField("receipt") else None,
            request.cycle,
            self._node_id,
            dict(requested),
            node_digests,
        )
        if request.scale:
            FixedPointEncoding(request.scale)  # bounded as a query's scale is
        # Ends first, so a subscription ended here is neither served nor kept: its
        # waiting events go with it (see MonitoringStore.end_listed for why the
        # coordinator's word suffices), and so do those of every lapsed consent.
        ended = self._store.end_listed(ended_ids) + self._store.end_expired()
        if ended:
            log.info("cycle %d: %d subscription(s) ended here", request.cycle, ended)
        return self._store.answer_cycle(
            request.cycle,
            request.acknowledged_cycle,
            requested,
            self._node_id,
            self._authority.is_revoked,
            lambda plan: self._settle_scores(plan, request.scale),
        )

    def _settle_scores(self, plan: CyclePlan, scale: int) -> None:
        """Keep the score shares this node can answer (a usable shard of the model; the
        others' holders answer them) and refuse, before anything is written, a cycle
        without a scale or whose answer could not be sent in one message."""
        if plan.scores and scale == 0:
            raise InvalidInputError(
                "scale is required and must be positive: subscriptions watching "
                "score_change are served"
            )
        held = set(self._engine.model_ids)
        plan.scores = [s for s in plan.scores if s.model_id in held]
        size = len(plan.batches) * (BATCH_BYTES + SEAL_OVERHEAD + _FRAMING_BYTES)
        for due in plan.scores:
            size += PublicKey.from_text(due.score_key).ciphertext_length + _FRAMING_BYTES
        if size > _MAX_ANSWER_BYTES:
            raise CapacityError(
                f"this cycle's answer ({len(plan.batches)} sealed batches, "
                f"{len(plan.scores)} score shares) would not fit one 64 MiB message: ask "
                "this node for fewer subscriptions per cycle"
            )

    def _encrypt_scores(
        self, due: list[PlannedScore], encoding: FixedPointEncoding
    ) -> list[monitoring_pb2.EncryptedScore]:
        """This node's encrypted score shares, in order; blocking (database, Paillier)."""
        return [
            monitoring_pb2.EncryptedScore(
                subscription_id=item.subscription_id,
                partial_score=self._engine.partial_score(
                    item.uscc, item.model_id, PublicKey.from_text(item.score_key), encoding
                ).to_bytes(),
            )
            for item in due
        ]


def _seal(chunk: list[Any]) -> list[monitoring_pb2.SealedBatch]:
    sealed = []
    for planned in chunk:
        batch = planned.batch
        key = AlertPublicKey.from_text(planned.alert_key)
        sealed.append(
            monitoring_pb2.SealedBatch(
                subscription_id=batch.subscription_id,
                sealed=key.seal(
                    batch.to_plaintext(),
                    batch_info(batch.subscription_id, batch.node_id, batch.cycle),
                ),
            )
        )
    return sealed


def _subscription_id(data: bytes) -> str:
    """The id a Watch names, for the refusal log ("" when it names none readably)."""
    match = re.search(rb'"subscription_id":"([0-9a-f]{32})"', data[:MAX_SIGNED_BYTES])
    return match.group(1).decode() if match else ""


def _signed_subscription(data: bytes) -> SignedSubscription:
    if not data:
        raise InvalidInputError("subscription is required")
    if len(data) > MAX_SIGNED_BYTES:
        raise InvalidInputError(f"subscription is over {MAX_SIGNED_BYTES} bytes")
    try:
        body = json.loads(data.decode("utf-8"))
    except (ValueError, UnicodeDecodeError):
        raise InvalidInputError("subscription must be JSON {document, signature}") from None
    return SignedSubscription.from_json(body)


def _cycle_request(
    request: monitoring_pb2.MonitorRequest,
) -> tuple[list[tuple[str, str]], dict[str, str]]:
    """The requested (id, digest) pairs and every node's digest, bounds checked."""
    if request.cycle == 0:
        raise InvalidInputError("cycle must be a positive number")
    if request.acknowledged_cycle >= request.cycle:
        raise InvalidInputError(
            f"acknowledged_cycle {request.acknowledged_cycle} must be below cycle {request.cycle}"
        )
    if len(request.subscriptions) > MAX_CYCLE_SUBSCRIPTIONS:
        raise InvalidInputError(
            f"a cycle names at most {MAX_CYCLE_SUBSCRIPTIONS} subscriptions per node"
        )
    if len(request.subscriptions) > MAX_CYCLE_BATCHES:
        raise CapacityError(
            f"this node answers at most {MAX_CYCLE_BATCHES} subscriptions per cycle: their "
            f"sealed batches ({BATCH_BYTES + SEAL_OVERHEAD} bytes each) must fit one 64 MiB "
            "answer"
        )
    if len(request.node_digests) > MAX_CYCLE_NODES:
        raise InvalidInputError(f"a cycle names at most {MAX_CYCLE_NODES} nodes")
    requested: list[tuple[str, str]] = []
    for k, item in enumerate(request.subscriptions):
        if not _HEX32.fullmatch(item.subscription_id):
            raise InvalidInputError(f"subscriptions[{k}].subscription_id must be 32 hex digits")
        if not _HEX64.fullmatch(item.digest):
            raise InvalidInputError(f"subscriptions[{k}].digest must be 64 hex digits")
        requested.append((item.subscription_id, item.digest))
    ids = [sid for sid, _ in requested]
    if ids != sorted(set(ids)):
        raise InvalidInputError("subscriptions must be sorted by id, each once")
    digests: dict[str, str] = {}
    for k, node in enumerate(request.node_digests):
        if not _NODE_ID.fullmatch(node.node_id) or not _HEX64.fullmatch(node.digest):
            raise InvalidInputError(
                f"node_digests[{k}] must name a node id and a 64-hex-digit digest"
            )
        if node.node_id in digests:
            raise InvalidInputError(f"node_digests names node {node.node_id} twice")
        digests[node.node_id] = node.digest
    return requested, digests


def _ended_ids(request: monitoring_pb2.MonitorRequest) -> list[str]:
    """The subscriptions the coordinator says have ended, bounds checked."""
    if len(request.ended) > MAX_CYCLE_ENDS:
        raise InvalidInputError(f"a cycle lists at most {MAX_CYCLE_ENDS} ended subscriptions")
    ids = list(request.ended)
    for k, sid in enumerate(ids):
        if not _HEX32.fullmatch(sid):
            raise InvalidInputError(f"ended[{k}] must be 32 hex digits")
    if ids != sorted(set(ids)):
        raise InvalidInputError("ended must be sorted by id, each once")
    return ids
