"""The node's gRPC edge: validate → load → compute → status code.

Errors are mapped to gRPC status codes here and nowhere else. Messages name the
offending field but never echo key material or values.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import grpc

from creditshare import __version__
from creditshare.consent import ConsentRevocation
from creditshare.crypto import (
    MAX_KEY_BITS,
    MAX_SCALE,
    Ciphertext,
    FixedPointEncoding,
    PublicKey,
    SlotLayout,
)
from creditshare.errors import (
    CapacityError,
    ConflictError,
    CreditShareError,
    InconsistentTreeHeadError,
    InvalidCiphertextError,
    InvalidInputError,
    InvalidProofError,
    InvalidSignatureError,
    NotFoundError,
    OutOfOrderError,
    PermissionDeniedError,
    PrivacyBudgetExceededError,
    RevocationStaleError,
    StaleRecordError,
    StaleShardError,
    StatisticsUnavailableError,
)
from creditshare.identity import Uscc
from creditshare.ledger import QueryRecord, StaleTreeHeadError, TrustedHeadTracker
from creditshare.node._authority import RequestAuthority
from creditshare.node._authority_store import RefusalLog
from creditshare.node._receipts import ReceiptChecker, ReceiptRefusedError
from creditshare.node._scoring import EncryptedShare, ScoreEngine
from creditshare.node._settings import NodeSettings
from creditshare.node._trust import AccessLog
from creditshare.node._witness import NodeWitness
from creditshare.proto import (
    head_to_pb,
    node_pb2,
    node_pb2_grpc,
    privacy_budget_metadata,
    trusted_size_metadata,
)
from creditshare.trees import MAX_DEPTH, MAX_LEAF_SPAN, MAX_TREES, max_shifted_weight

__all__ = [
    "DataNodeService",
    "NodeInfoService",
    "guarded",
    "public_key_of",
    "status_for",
]

log = logging.getLogger("creditshare.node")
T = TypeVar("T")


def status_for(exc: CreditShareError) -> grpc.StatusCode:
    if isinstance(exc, InvalidInputError):
        return grpc.StatusCode.INVALID_ARGUMENT
    if isinstance(exc, NotFoundError):
        return grpc.StatusCode.NOT_FOUND
    if isinstance(
        exc,
        StaleTreeHeadError
        | InconsistentTreeHeadError
        | RevocationStaleError
        | OutOfOrderError
        | StaleRecordError
        | StaleShardError
        | StatisticsUnavailableError,
    ):
        return grpc.StatusCode.FAILED_PRECONDITION
    if isinstance(exc, ConflictError):
        return grpc.StatusCode.ALREADY_EXISTS
    if isinstance(exc, PrivacyBudgetExceededError):  # a permission the next period renews
        return grpc.StatusCode.RESOURCE_EXHAUSTED
    if isinstance(exc, PermissionDeniedError | InvalidSignatureError | InvalidProofError):
        return grpc.StatusCode.PERMISSION_DENIED
    if isinstance(exc, CapacityError):
        return grpc.StatusCode.RESOURCE_EXHAUSTED
    return grpc.StatusCode.INTERNAL


#: Refusals worth a row in the node's refusal log: attempts, not races or bad syntax.
_LOGGED_REFUSALS = (grpc.StatusCode.PERMISSION_DENIED, grpc.StatusCode.FAILED_PRECONDITION)
Refusals = Callable[[str, CreditShareError], None]


async def guarded(
    context: grpc.aio.ServicerContext[Any, Any],
    work: Callable[[], Awaitable[T]],
    refusals: Refusals | None = None,
) -> T:
    """Run one RPC's work; errors become status codes here, once, for every node service.

    ``refusals`` records each refused attempt (a forged consent, a swapped key, a revoked
    credential...) in the node's own database, where its operator can see it.
    """
    try:
        return await work()
    except CreditShareError as exc:
        status = status_for(exc)
        if isinstance(exc, StaleTreeHeadError):
            context.set_trailing_metadata(trusted_size_metadata(exc.trusted_size))
        elif refusals is not None and (
            (
                status in _LOGGED_REFUSALS
                # This node's own state (records or a shard to redo), not someone's attempt.
                and not isinstance(
                    exc, StaleRecordError | StaleShardError | StatisticsUnavailableError
                )
            )
            # A regulator's query past its privacy budget: refused, and on record.
            or isinstance(exc, PrivacyBudgetExceededError)
        ):
            await asyncio.to_thread(refusals, status.name, exc)
        if isinstance(exc, PrivacyBudgetExceededError):
            # Said structurally: a busy node answers RESOURCE_EXHAUSTED too.
            context.set_trailing_metadata(privacy_budget_metadata())
        log.info("refused: %s", exc)
        await context.abort(status, str(exc))
        raise AssertionError("unreachable") from exc  # abort always raises
    except Exception as exc:
        # Never hand an unexpected exception's text (which may quote data) to the caller.
        log.exception("internal error while serving a request")
        await context.abort(grpc.StatusCode.INTERNAL, "internal error")
        raise AssertionError("unreachable") from exc


#: A signed revocation is a few hundred bytes; anything much larger is not one.
_MAX_REVOCATION_BYTES = 2048
#: Bytes of the largest modulus accepted (4096 bits).
_MAX_KEY_BYTES = MAX_KEY_BITS // 8


def public_key_of(pb: node_pb2.PaillierPublicKey) -> PublicKey:
    """The requester's key from the wire, its size bounded before it becomes a number."""
    if len(pb.n) > _MAX_KEY_BYTES + 1:
        raise InvalidInputError(f"public_key is over {MAX_KEY_BITS} bits")
    return PublicKey.from_bytes(pb.n)


#: Most leaves a tree model can have (MAX_TREES full trees of MAX_DEPTH).
MAX_TREE_LEAVES = MAX_TREES * 2**MAX_DEPTH

#: A profile never needs more slots than this (nodes x indicators); bounds the work.
MAX_PACKED_SLOTS = 4096


def _layout(request: node_pb2.ScoreRequest, key: PublicKey) -> SlotLayout:
    spec = request.packing
    if not 16 <= spec.slot_bits <= 128 or spec.slots_per_ciphertext == 0:
        raise InvalidInputError("packing needs slot_bits within 16..128 and at least one slot")
    if spec.first_slot == 0 or spec.first_slot >= MAX_PACKED_SLOTS:
        raise InvalidInputError(f"packing first_slot must be within 1..{MAX_PACKED_SLOTS - 1}")
    layout = SlotLayout(spec.slot_bits, spec.slots_per_ciphertext, max(1, spec.additions))
    if not layout.fits(key):
        raise InvalidInputError("packing layout does not fit the key's plaintext")
    return layout


class DataNodeService(node_pb2_grpc.DataNodeServicer):
    def __init__(
        self,
        settings: NodeSettings,
        engine: ScoreEngine,
        checker: ReceiptChecker,
        access_log: AccessLog,
        tracker: TrustedHeadTracker,
        authority: RequestAuthority,
        refusal_log: RefusalLog,
        witness: NodeWitness | None = None,
    ) -> None:
        self._authority = authority
        self._refusal_log = refusal_log
        self._settings = settings
        self._witness = witness
        self._department = settings.department_schema
        self._engine = engine
        self._checker = checker
        self._access_log = access_log
        self._tracker = tracker
        self._slots = asyncio.Semaphore(settings.max_concurrent_requests)

    async def _guard(
        self,
        context: grpc.aio.ServicerContext[Any, Any],
        work: Callable[[], Awaitable[T]],
        rpc: str = "",
        request_id: str = "",
    ) -> T:
        def refused(status: str, exc: CreditShareError) -> None:
            self._refusal_log.add(rpc, request_id, status, str(exc))

        return await guarded(context, work, refused if rpc else None)

    async def Describe(  # noqa: N802 - gRPC method name
        self,
        request: node_pb2.DescribeRequest,
        context: grpc.aio.ServicerContext[node_pb2.DescribeRequest, node_pb2.DescribeResponse],
    ) -> node_pb2.DescribeResponse:
        dept = self._department
        head = self._tracker.head
        return node_pb2.DescribeResponse(
            node_id=self._settings.node_id,
            department=dept.id,
            chain=self._settings.chain.value,
            display_name=self._settings.display_name or dept.display_name,
            features=[
                node_pb2.Feature(name=f.name, kind=f.kind, description=f.description, unit=f.unit)
                for f in dept.features
            ],
            indicators=[
                node_pb2.Indicator(name=i.name, description=i.description, bands=list(i.bands))
                for i in dept.indicators
            ],
            models=[
                node_pb2.ModelShardInfo(model_id=m, features=list(self._engine.model_features(m)))
                for m in self._engine.model_ids
            ],
            trusted_tree_size=self._tracker.trusted_size,
            trusted_tree_head=None if head is None else head_to_pb(head),
            witness_vkey=self._witness.vkey if self._witness is not None else "",
            signals=[s.signal.value for s in dept.signals],
        )

    async def AddCheckpoint(  # noqa: N802 - gRPC method name
        self,
        request: node_pb2.AddCheckpointRequest,
        context: grpc.aio.ServicerContext[
            node_pb2.AddCheckpointRequest, node_pb2.AddCheckpointResponse
        ],
    ) -> node_pb2.AddCheckpointResponse:
        """Cosign a head this node accepts (see ``node._witness``)."""

        async def work() -> node_pb2.AddCheckpointResponse:
            if self._witness is None:
                raise NotFoundError(f"node {self._settings.node_id} cosigns no tree head")
            async with self._slots:  # shares the node's bound on concurrent work
                return await asyncio.to_thread(self._witness.add_checkpoint, request)

        return await self._guard(context, work)

    async def TreeScore(  # noqa: N802 - gRPC method name
        self,
        request: node_pb2.TreeScoreRequest,
        context: grpc.aio.ServicerContext[node_pb2.TreeScoreRequest, node_pb2.TreeScoreResponse],
    ) -> node_pb2.TreeScoreResponse:
        """One step of private tree scoring (``trees._private``), checked exactly as Score."""

        async def work() -> node_pb2.TreeScoreResponse:
            async with self._slots:
                key, step = await asyncio.to_thread(self._tree_answer, request)
            log.info(
                "answered tree step query=%r model=%r key=%s",
                request.request_id,
                request.model_id,
                key.fingerprint(),
            )
            if isinstance(step, list):
                return node_pb2.TreeScoreResponse(
                    node_id=self._settings.node_id, indicators=[c.to_bytes() for c in step]
                )
            return node_pb2.TreeScoreResponse(node_id=self._settings.node_id, score=step.to_bytes())

        return await self._guard(context, work, "TreeScore", request.request_id)

    async def Score(  # noqa: N802 - gRPC method name
        self,
        request: node_pb2.ScoreRequest,
        context: grpc.aio.ServicerContext[node_pb2.ScoreRequest, node_pb2.ScoreResponse],
    ) -> node_pb2.ScoreResponse:
        async def work() -> node_pb2.ScoreResponse:
            # Validation included (a key's first check costs milliseconds), all of it
            # runs off the event loop, which keeps serving other calls meanwhile.
            async with self._slots:
                key, share = await asyncio.to_thread(self._answer, request)
            log.info(
                "answered query=%r model=%r key=%s",
                request.request_id,
                request.model_id,
                key.fingerprint(),
            )
            if isinstance(share, list):
                return node_pb2.ScoreResponse(
                    node_id=self._settings.node_id,
                    packed=[
                        node_pb2.PackedCiphertext(index=i, ciphertext=c.to_bytes())
                        for i, c in share
                    ],
                )
            return node_pb2.ScoreResponse(
                node_id=self._settings.node_id,
                partial_score=share.partial_score.to_bytes(),
                presence=share.presence.to_bytes(),
                indicators=[
                    node_pb2.EncryptedIndicator(name=name, ciphertext=ct.to_bytes())
                    for name, ct in share.indicators
                ],
            )

        return await self._guard(context, work, "Score", request.request_id)

    async def RevokeConsent(  # noqa: N802 - gRPC method name
        self,
        request: node_pb2.RevokeConsentRequest,
        context: grpc.aio.ServicerContext[
            node_pb2.RevokeConsentRequest, node_pb2.RevokeConsentResponse
        ],
    ) -> node_pb2.RevokeConsentResponse:
        def revoke() -> bool:
            if len(request.revocation) > _MAX_REVOCATION_BYTES:
                raise InvalidInputError(f"revocation is over {_MAX_REVOCATION_BYTES} bytes")
            try:
                body = json.loads(request.revocation.decode("utf-8"))
            except (ValueError, UnicodeDecodeError):
                raise InvalidInputError("revocation must be JSON {document, signature}") from None
            revocation = ConsentRevocation.from_json(body)
            self._authority.update_revocations(request.credentials.revocation_lists)
            return self._authority.revoke(revocation, request.credentials.enterprise)

        async def work() -> node_pb2.RevokeConsentResponse:
            newly = await asyncio.to_thread(revoke)
            log.info("consent revoked by its enterprise (new: %s)", newly)
            return node_pb2.RevokeConsentResponse(
                node_id=self._settings.node_id, newly_revoked=newly
            )

        return await self._guard(context, work, "RevokeConsent")

    def _requested(
        self, request: node_pb2.ScoreRequest | node_pb2.TreeScoreRequest
    ) -> tuple[str, PublicKey]:
        """The enterprise and the requester's key, bounded before anything is checked."""
        if len(request.uscc) > 64:
            raise InvalidInputError("uscc must be 18 characters")
        uscc = str(Uscc.parse(request.uscc))
        if not request.HasField("public_key"):
            raise InvalidInputError("public_key is required")
        key = public_key_of(request.public_key)
        if not 0 < len(request.model_id) <= 64 or not 0 < len(request.request_id) <= 64:
            raise InvalidInputError("model_id and request_id must be 1 to 64 characters")
        return uscc, key

    def _admitted(
        self,
        request: node_pb2.ScoreRequest | node_pb2.TreeScoreRequest,
        uscc: str,
        key: PublicKey,
        validate: Callable[[], object] | None = None,
    ) -> QueryRecord:
        """The receipt, the signed request (its key = ``key``), the consent and the
        credentials, then this RPC's claim on the receipt in the access log.

        Score and TreeScore each claim a receipt once (``AccessLog.claim``'s ``rpc``):
        one query asks a node for both, and neither may be answered twice. ``validate``
        runs between the checks and the claim: input refused there loses nothing, and a
        caller without a valid receipt learns nothing from it.
        """
        rpc = "TreeScore" if isinstance(request, node_pb2.TreeScoreRequest) else "Score"
        # A head the check accepts is stored with the claim: one commit (``_trust``).
        with self._access_log.deferring_heads():
            index, record = self._checker.check(request, uscc, key)
            if validate is not None:
                validate()
            claimed = self._access_log.claim(index, record, rpc)
        if not claimed:
            raise ReceiptRefusedError(f"receipt for ledger entry {index} was already used")
        return record

    def _answer(
        self, request: node_pb2.ScoreRequest
    ) -> tuple[PublicKey, EncryptedShare | list[tuple[int, Ciphertext]]]:
        """Validate, check the receipt and replays, then compute; blocking."""
        uscc, key = self._requested(request)
        if request.scale == 0:
            raise InvalidInputError("scale is required and must be positive")
        encoding = FixedPointEncoding(request.scale)
        offset = None
        if request.partial_offset:
            offset = Ciphertext.from_bytes(key, request.partial_offset)
        layout = _layout(request, key) if request.HasField("packing") else None
        record = self._admitted(request, uscc, key)
        if layout is not None:
            if offset is not None:
                raise InvalidInputError("partial_offset cannot be combined with packing")
            packed = self._engine.score_packed(
                uscc,
                request.model_id,
                key,
                encoding,
                layout,
                request.packing.first_slot,
                in_scope=record.covers_indicator,
            )
            return key, packed
        return key, self._engine.score(
            uscc, request.model_id, key, encoding, offset, in_scope=record.covers_indicator
        )

    def _tree_answer(
        self, request: node_pb2.TreeScoreRequest
    ) -> tuple[PublicKey, list[Ciphertext] | Ciphertext]:
        """Validate (every incoming ciphertext under the key, the weights' bounds), check
        as Score does, then compute this node's step; blocking."""
        uscc, key = self._requested(request)
        if len(request.indicators) > MAX_TREE_LEAVES or len(request.weights) > MAX_TREE_LEAVES:
            raise InvalidInputError(f"a tree model has at most {MAX_TREE_LEAVES} leaves")
        indicators = []
        for k, blob in enumerate(request.indicators):
            try:
                indicators.append(Ciphertext.from_bytes(key, blob))
            except InvalidInputError as exc:
                raise InvalidCiphertextError(f"indicator {k}: {exc}") from None
        weights = list(request.weights)
        if weights:
            if not 0 < request.scale <= MAX_SCALE:
                raise InvalidInputError("scale is required with weights and must be positive")
            # creditshare.trees.MAX_LEAF_SPAN: the coordinator publishes no model over it.
            if max(weights) > max_shifted_weight(request.scale):
                raise InvalidInputError(
                    f"a shifted leaf weight exceeds {MAX_LEAF_SPAN} at scale {request.scale}"
                )
        model_id = request.model_id
        self._admitted(
            request,
            uscc,
            key,
            lambda: self._engine.tree_shard(model_id, len(indicators), len(weights)),
        )
        step = self._engine.tree_score(uscc, request.model_id, key, indicators, weights)
        return key, step


class NodeInfoService(node_pb2_grpc.NodeInfoServicer):
    """The coordinator's reachability probe: who answers here, and which release."""

    def __init__(self, node_id: str) -> None:
        self._node_id = node_id

    async def Info(  # noqa: N802 - gRPC method name
        self,
        request: node_pb2.InfoRequest,
        context: grpc.aio.ServicerContext[node_pb2.InfoRequest, node_pb2.InfoResponse],
    ) -> node_pb2.InfoResponse:
        """From memory: it must answer promptly even while the node is busy scoring."""
        return node_pb2.InfoResponse(node_id=self._node_id, version=__version__)
