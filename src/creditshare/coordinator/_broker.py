"""Fan a recorded query out to the nodes in scope and add their encrypted answers.

The broker holds no private key and never decodes a value: every number it
touches is a ciphertext it validates and multiplies. A node that is slow, down,
refuses, or answers garbage is named in the coverage, never hidden and never
waited on past its deadline.

Each node call carries the query's ledger receipt and a consistency proof from
the tree head that node last accepted. Another query (or replica) may have moved
a node's trusted head on meanwhile; the node then says so, with its trusted size,
and the broker re-proves the same leaf against the latest head and retries.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import defaultdict
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, TypeVar

import grpc

from creditshare.consent import MAX_INDICATOR_NAME
from creditshare.coordinator._registry import Registry
from creditshare.coordinator._settings import CoordinatorSettings, ModelEntry, NodeEntry
from creditshare.crypto import Ciphertext, FixedPointEncoding, PublicKey, SlotLayout
from creditshare.errors import InvalidInputError, LedgerError
from creditshare.identity import Chain
from creditshare.ledger import Ledger, Receipt, SignedTreeHead
from creditshare.pki import channel_credentials
from creditshare.proto import (
    GRPC_MESSAGE_OPTIONS,
    head_from_pb,
    node_pb2,
    node_pb2_grpc,
    receipt_to_pb,
    training_pb2_grpc,
    trusted_size_from,
)

if TYPE_CHECKING:
    from creditshare.coordinator._metrics import CoordinatorMetrics
    from creditshare.proto.creditshare.v1.node_pb2_grpc import DataNodeAsyncStub
    from creditshare.proto.creditshare.v1.training_pb2_grpc import TrainingAsyncStub

__all__ = ["NodeAnswer", "NodeCatalogue", "NodeFailure", "QueryBroker", "QueryResult"]

log = logging.getLogger("creditshare.coordinator")

T = TypeVar("T")
_MAX_ATTEMPTS = 5


@dataclass(frozen=True, slots=True)
class NodeAnswer:
    node: NodeEntry
    partial_score: Ciphertext
    presence: Ciphertext
    indicators: tuple[tuple[str, Ciphertext], ...]


class HeadKeptMovingError(LedgerError):
    """Every retry met a node that had meanwhile accepted a newer head (or time ran out)."""

    kind = "head_moving"


class _OutOfTimeError(HeadKeptMovingError):
    kind = "deadline_exceeded"


@dataclass(frozen=True, slots=True)
class NodeFailure:
    node: NodeEntry
    reason: str
    #: The reason's class, for metrics: ``unavailable``, ``deadline_exceeded``,
    #: ``invalid_answer``, ``ledger``, ``head_moving`` or a gRPC status code name.
    kind: str = "error"


@dataclass(frozen=True, slots=True)
class PackedAnswer:
    node: NodeEntry
    packed: dict[int, Ciphertext]
    first_slot: int
    indicators: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class PackedProfile:
    """The whole profile in a few ciphertexts; slot 0 is the score."""

    layout: SlotLayout
    ciphertexts: tuple[Ciphertext, ...]


@dataclass(frozen=True, slots=True)
class QueryResult:
    query_id: str
    model: ModelEntry
    encoding: FixedPointEncoding
    encrypted_score: Ciphertext | None
    answers: tuple[NodeAnswer | PackedAnswer, ...]
    failures: tuple[NodeFailure, ...]
    packed: PackedProfile | None = None


@dataclass(frozen=True, slots=True)
class NodeCatalogue:
    """What a node said about itself in Describe: indicator descriptions and bands."""

    indicators: dict[str, tuple[str, tuple[str, ...]]]


def _reason(exc: grpc.aio.AioRpcError) -> str:
    code = exc.code()
    if code == grpc.StatusCode.DEADLINE_EXCEEDED:
        return "deadline exceeded"
    if code == grpc.StatusCode.UNAVAILABLE:
        return "unavailable"
    return f"{code.name.lower()}: {exc.details() or ''}".rstrip(": ")


def _invalid(node: NodeEntry, exc: InvalidInputError) -> NodeFailure:
    log.warning("node %s sent an invalid answer: %s", node.id, exc)
    return NodeFailure(node, f"invalid answer: {exc}", "invalid_answer")


def _trusted_size(exc: grpc.aio.AioRpcError) -> int | None:
    if exc.code() != grpc.StatusCode.FAILED_PRECONDITION:
        return None
    return trusted_size_from(exc.trailing_metadata())


#: What a catalogue may hold: a node publishes a few banded indicators, and every one of
#: them becomes a slot in each profile and a line in each answer, so a node (which the
#: coordinator does not trust) cannot make every query's answer grow without bound.
MAX_NODE_INDICATORS = 64
MAX_INDICATOR_BANDS = 32
MAX_CATALOGUE_TEXT = 200


def _catalogue_problem(reply: node_pb2.DescribeResponse) -> str | None:
    """Why a node's catalogue cannot be used, or None."""
    if len(reply.indicators) > MAX_NODE_INDICATORS:
        return f"{len(reply.indicators)} indicators (at most {MAX_NODE_INDICATORS})"
    names = [i.name for i in reply.indicators]
    if len(set(names)) != len(names):
        return "indicator names repeat"
    for indicator in reply.indicators:
        texts = [indicator.name, indicator.description, *indicator.bands]
        if (
            not 0 < len(indicator.name) <= MAX_INDICATOR_NAME
            or len(indicator.bands) > MAX_INDICATOR_BANDS
            or any(len(t) > MAX_CATALOGUE_TEXT for t in texts)
        ):
            return f"indicator {indicator.name[:MAX_INDICATOR_NAME]!r} is over the size bounds"
    return None


class QueryBroker:
    def __init__(
        self,
        settings: CoordinatorSettings,
        registry: Registry,
        ledger: Ledger,
        interceptors: Sequence[grpc.aio.ClientInterceptor] = (),
    ) -> None:
        self._settings = settings
        self._registry = registry
        self._ledger = ledger
        self._interceptors = list(interceptors)
        self._channels: dict[str, grpc.aio.Channel] = {}
        self._stubs: dict[str, DataNodeAsyncStub] = {}
        self._trusted: dict[str, int] = {}
        self._witnessed: dict[str, SignedTreeHead] = {}
        self._receipts: dict[tuple[int, int], Receipt] = {}
        self._advancing: defaultdict[str, asyncio.Lock] = defaultdict(asyncio.Lock)
        self._proofs: dict[tuple[int, int], list[bytes]] = {}
        self.catalogues: dict[str, NodeCatalogue] = {}
        #: Training stubs on the same mTLS channels, for the training relay.
        self.training: dict[str, TrainingAsyncStub] = {}
        #: Set before ``start``: node calls and failures are counted here.
        self.metrics: CoordinatorMetrics | None = None

    def _channel(self, node: NodeEntry) -> grpc.aio.Channel:
        interceptors = list(self._interceptors)
        if self.metrics is not None:
            interceptors.insert(0, self.metrics.node_interceptor(node.id))
        tls = self._settings.tls.get(node.chain)
        if tls is None:
            return grpc.aio.insecure_channel(
                node.address, options=GRPC_MESSAGE_OPTIONS, interceptors=interceptors
            )
        credentials = channel_credentials(tls.ca, tls.cert, tls.key)
        return grpc.aio.secure_channel(
            node.address, credentials, options=GRPC_MESSAGE_OPTIONS, interceptors=interceptors
        )

    def _count_failures(self, failures: Sequence[NodeFailure]) -> None:
        if self.metrics is not None:
            for failure in failures:
                self.metrics.node_failed(failure.node.id, failure.kind)

    async def start(self) -> None:
        for node in self._registry.nodes:
            channel = self._channel(node)
            self._channels[node.id] = channel
            self._stubs[node.id] = node_pb2_grpc.DataNodeStub(channel)
            self.training[node.id] = training_pb2_grpc.TrainingStub(channel)
        await asyncio.gather(*(self.describe(n) for n in self._registry.nodes))

    async def close(self) -> None:
        await asyncio.gather(*(c.close() for c in self._channels.values()))

    def stub(self, node_id: str) -> DataNodeAsyncStub:
        """The node's DataNode stub on its (mTLS) channel; after ``start``."""
        return self._stubs[node_id]

    def witness_heads(self) -> dict[str, SignedTreeHead]:
        """The signed head each node last said it trusts (unverified: the ledger checks
        each signature before it believes one)."""
        return dict(self._witnessed)

    async def describe(self, node: NodeEntry) -> NodeCatalogue | None:
        """Fetch and cache a node's catalogue and trusted tree size; retried later if down."""
        try:
            reply = await self._stubs[node.id].Describe(
                node_pb2.DescribeRequest(), timeout=self._settings.node_deadline_seconds
            )
        except grpc.aio.AioRpcError as exc:
            log.warning("describe %s failed: %s", node.id, _reason(exc))
            return None
        problem = _catalogue_problem(reply)
        if problem is not None:
            log.warning("describe %s refused: %s", node.id, problem)
            return None
        catalogue = NodeCatalogue(
            {i.name: (i.description, tuple(i.bands)) for i in reply.indicators}
        )
        self.catalogues[node.id] = catalogue
        # What the node says now is the truth, even if lower (a node restored from backup).
        self._trusted[node.id] = reply.trusted_tree_size
        if reply.HasField("trusted_tree_head"):
            try:
                self._witnessed[node.id] = head_from_pb(reply.trusted_tree_head)
            except InvalidInputError as exc:
                log.warning("describe %s: its trusted head is malformed: %s", node.id, exc)
        return catalogue

    async def query(
        self,
        query_id: str,
        uscc: str,
        model: ModelEntry,
        key: PublicKey,
        chains: Sequence[Chain],
        receipt: Receipt,
        in_scope: Callable[[str], bool],
        credentials: node_pb2.Credentials | None = None,
    ) -> QueryResult:
        """``in_scope`` says which indicators the consent covers: exactly those must come back.

        ``credentials`` travel to every node, which checks the signed request and consent
        in the receipt's record against them itself.
        """
        nodes = self._registry.scope(chains)
        encoding = FixedPointEncoding(self._settings.scale)
        template = node_pb2.ScoreRequest(
            uscc=uscc,
            model_id=model.id,
            public_key=node_pb2.PaillierPublicKey(n=key.to_bytes()),
            scale=encoding.scale,
            request_id=query_id,
            credentials=credentials,
        )
        if self._settings.pack_profiles:
            return await self._query_packed(
                query_id, model, key, nodes, template, receipt, in_scope, encoding
            )
        outcomes = await asyncio.gather(
            *(self._ask(n, template, key, receipt, in_scope) for n in nodes)
        )
        answers = tuple(o for o in outcomes if isinstance(o, NodeAnswer))
        failures = tuple(o for o in outcomes if isinstance(o, NodeFailure))
        self._count_failures(failures)
        # Start from Enc(0)·g^intercept: the intercept is public, so adding it needs no
        # fresh obfuscator; the nodes' randomised partials re-randomise the sum.
        total = Ciphertext(key, 1).add_encoded(encoding.encode(model.intercept, key))
        for answer in answers:
            total = total + answer.partial_score
        log.info(
            "query %s model=%s answered=%d failed=%d",
            query_id,
            model.id,
            len(answers),
            len(failures),
        )
        return QueryResult(query_id, model, encoding, total, answers, failures)

    async def _query_packed(
        self,
        query_id: str,
        model: ModelEntry,
        key: PublicKey,
        nodes: list[NodeEntry],
        template: node_pb2.ScoreRequest,
        receipt: Receipt,
        in_scope: Callable[[str], bool],
        encoding: FixedPointEncoding,
    ) -> QueryResult:
        """Slots: 0 = score (every node adds its partial), then per node presence + indicators."""
        await asyncio.gather(*(self.describe(n) for n in nodes if n.id not in self.catalogues))
        layout = SlotLayout.for_key(key, self._settings.slot_bits, additions=len(nodes) + 1)
        plan: dict[str, tuple[int, tuple[str, ...]]] = {}
        slot = 1
        for node in nodes:
            catalogue = self.catalogues.get(node.id)
            names = tuple(n for n in catalogue.indicators if in_scope(n)) if catalogue else ()
            plan[node.id] = (slot, names)
            slot += 1 + len(names)
        outcomes = await asyncio.gather(
            *(self._ask_packed(n, template, key, receipt, layout, *plan[n.id]) for n in nodes)
        )
        answers = tuple(o for o in outcomes if isinstance(o, PackedAnswer))
        failures = tuple(o for o in outcomes if isinstance(o, NodeFailure))
        self._count_failures(failures)
        count = (slot + layout.slots - 1) // layout.slots
        intercept = FixedPointEncoding.encode_integer(encoding.to_integer(model.intercept), key)
        totals = [Ciphertext(key, 1) for _ in range(count)]
        totals[0] = totals[0].add_encoded(intercept)
        for answer in answers:
            for index, ciphertext in answer.packed.items():
                totals[index] = totals[index] + ciphertext
        log.info(
            "query %s model=%s answered=%d failed=%d packed=%d",
            query_id,
            model.id,
            len(answers),
            len(failures),
            count,
        )
        return QueryResult(
            query_id, model, encoding, None, answers, failures, PackedProfile(layout, tuple(totals))
        )

    async def _ask_packed(
        self,
        node: NodeEntry,
        template: node_pb2.ScoreRequest,
        key: PublicKey,
        receipt: Receipt,
        layout: SlotLayout,
        first_slot: int,
        names: tuple[str, ...],
    ) -> PackedAnswer | NodeFailure:
        if node.id not in self.catalogues:
            return NodeFailure(
                node, "unavailable (could not describe its catalogue)", "unavailable"
            )
        spec = node_pb2.PackingSpec(
            slot_bits=layout.slot_bits,
            slots_per_ciphertext=layout.slots,
            additions=layout.additions,
            first_slot=first_slot,
        )
        reply = await self._score(
            node, template, receipt, self._settings.node_deadline_seconds, spec
        )
        if isinstance(reply, NodeFailure):
            return reply
        expected = {0} | {s // layout.slots for s in range(first_slot, first_slot + 1 + len(names))}
        try:
            if reply.node_id != node.id:
                raise InvalidInputError(f"answer claims to come from node {reply.node_id!r}")
            indices = [p.index for p in reply.packed]
            if sorted(indices) != sorted(expected) or reply.indicators or reply.partial_score:
                raise InvalidInputError(
                    f"packed answer covers ciphertexts {sorted(indices)}, "
                    f"expected {sorted(expected)}"
                )
            packed = {p.index: Ciphertext.from_bytes(key, p.ciphertext) for p in reply.packed}
        except InvalidInputError as exc:
            return _invalid(node, exc)
        return PackedAnswer(node, packed, first_slot, names)

    async def _score(
        self,
        node: NodeEntry,
        template: node_pb2.ScoreRequest,
        receipt: Receipt,
        seconds: float,
        packing: node_pb2.PackingSpec | None = None,
    ) -> node_pb2.ScoreResponse | NodeFailure:
        """One Score call with the query's receipt; every way it can fail becomes a reason."""
        stub = self._stubs[node.id]

        async def score(proof: node_pb2.QueryReceipt, left: float) -> node_pb2.ScoreResponse:
            request = node_pb2.ScoreRequest()
            request.CopyFrom(template)
            request.receipt.CopyFrom(proof)
            if packing is not None:
                request.packing.CopyFrom(packing)
            return await stub.Score(request, timeout=left)

        try:
            return await self.call_with_receipt(node.id, receipt, score, seconds)
        except grpc.aio.AioRpcError as exc:
            return NodeFailure(node, _reason(exc), exc.code().name.lower())
        except HeadKeptMovingError as exc:
            return NodeFailure(node, str(exc), exc.kind)
        except LedgerError as exc:
            return NodeFailure(node, f"ledger: {exc}", "ledger")

    async def revoke_consent(
        self, chains: Sequence[Chain], revocation: bytes, credentials: node_pb2.Credentials
    ) -> list[tuple[NodeEntry, str | None]]:
        """Hand an enterprise's signed revocation to every node of the consent's chains.

        Each node verifies it and keeps it; the answer names every node that did not
        (``None``: it holds the revocation now), so the enterprise sees exactly where its
        withdrawal is enforced by the node itself and not only by this coordinator.
        """
        request = node_pb2.RevokeConsentRequest(revocation=revocation, credentials=credentials)
        seconds = self._settings.node_deadline_seconds

        async def one(node: NodeEntry) -> tuple[NodeEntry, str | None]:
            try:
                await self._stubs[node.id].RevokeConsent(request, timeout=seconds)
            except grpc.aio.AioRpcError as exc:
                return node, _reason(exc)
            return node, None

        return list(await asyncio.gather(*(one(n) for n in self._registry.scope(chains))))

    async def prove(self, node_id: str, receipt: Receipt) -> tuple[node_pb2.QueryReceipt, Receipt]:
        """The receipt as this node needs it: consistency with the head it last accepted.

        Forward (trusted → receipt head) when the receipt's head is newer; backward
        (receipt head → trusted) when a concurrent query's newer head got there first,
        so the receipt stays the same and no new head is needed (see TrustedHeadTracker).
        """
        trusted = self._trusted.get(node_id, 0)
        if receipt.index < trusted < receipt.head.size:
            # The node already trusts a head that holds this leaf (a concurrent query's
            # head got there first): prove the leaf under that very head. The node keeps
            # it among the heads it accepted, so no later move of its own head can make
            # this proof stale, as a forward proof from its current size could be.
            receipt = await self._receipt_under(receipt.index, trusted)
        size = receipt.head.size
        consistency: list[bytes] = []
        if 0 < trusted < size:
            consistency = await self._consistency(trusted, size)
        elif trusted > size:
            try:
                consistency = await self._consistency(size, trusted)
            except InvalidInputError as exc:
                raise LedgerError(
                    f"node trusts a tree of size {trusted}, larger than this log: {exc}"
                ) from exc
        return receipt_to_pb(receipt, trusted, consistency), receipt

    async def _receipt_under(self, index: int, size: int) -> Receipt:
        """Leaf ``index`` proven under the stored head of ``size``; shared by the nodes
        of a query, which usually trust the same size."""
        cached = self._receipts.get((index, size))
        if cached is None:
            cached = await asyncio.to_thread(self._ledger.receipt_at, index, size)
            self._receipts[(index, size)] = cached
            while len(self._receipts) > 256:
                self._receipts.pop(next(iter(self._receipts)))
        return cached

    async def _consistency(self, old: int, new: int) -> list[bytes]:
        """Consistency proofs never change (the log is append-only), and the nodes of one
        query usually trust the same size: compute each (old, new) proof once."""
        cached = self._proofs.get((old, new))
        if cached is None:
            cached = await asyncio.to_thread(self._ledger.consistency_proof, old, new)
            self._proofs[(old, new)] = cached
            while len(self._proofs) > 256:
                self._proofs.pop(next(iter(self._proofs)))
        return cached

    async def call_with_receipt(
        self,
        node_id: str,
        receipt: Receipt,
        invoke: Callable[[node_pb2.QueryReceipt, float], Awaitable[T]],
        seconds: float,
        *,
        exclusive: bool = True,
    ) -> T:
        """Call a node with a receipt, re-proving against a newer head if it asks to.

        A call that must move the node's head forward needs a proof from the exact
        size the node trusts, and concurrent calls moving it too would make each
        other's proofs stale. So this broker moves a node's head one call at a time
        (``exclusive``; long training calls opt out and rely on retries), and to the
        newest head, so calls queued behind find their leaves covered and go
        concurrently. The lock is this process's: replicas can still race, and retry.

        gRPC errors other than a stale head propagate; ledger problems raise
        LedgerError; a head that keeps moving past every retry raises HeadKeptMovingError.
        """
        deadline = time.monotonic() + seconds
        for _attempt in range(_MAX_ATTEMPTS):
            if not exclusive or receipt.index < self._trusted.get(node_id, 0):
                # The node's head already holds the leaf: nothing can make this stale.
                outcome = await self._attempt(node_id, receipt, invoke, deadline)
            else:
                outcome = await self._advance(node_id, receipt, invoke, deadline)
            if outcome is not None:
                return outcome[0]
        raise HeadKeptMovingError("failed_precondition: tree head kept moving; gave up")

    async def _advance(
        self,
        node_id: str,
        receipt: Receipt,
        invoke: Callable[[node_pb2.QueryReceipt, float], Awaitable[T]],
        deadline: float,
    ) -> tuple[T] | None:
        """One call that moves the node's head to the newest one, under the node's lock."""
        lock = self._advancing[node_id]
        try:
            async with asyncio.timeout(max(0.0, deadline - time.monotonic())):
                await lock.acquire()
        except TimeoutError:
            raise _OutOfTimeError("deadline exceeded") from None
        try:
            if receipt.index >= self._trusted.get(node_id, 0):
                receipt = await asyncio.to_thread(self._ledger.receipt, receipt.index)
            return await self._attempt(node_id, receipt, invoke, deadline)
        finally:
            lock.release()

    async def _attempt(
        self,
        node_id: str,
        receipt: Receipt,
        invoke: Callable[[node_pb2.QueryReceipt, float], Awaitable[T]],
        deadline: float,
    ) -> tuple[T] | None:
        """One call; None when the node said its head moved (it is then known here)."""
        proof, receipt = await self.prove(node_id, receipt)
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise _OutOfTimeError("deadline exceeded")
        try:
            result = await invoke(proof, remaining)
        except grpc.aio.AioRpcError as exc:
            trusted = _trusted_size(exc)
            if trusted is None:
                raise
            # The node's answer is the truth about the size we proved from, even when it
            # is lower (a node restored from backup): else every retry repeats this proof.
            # Answers to other, concurrent calls may arrive late: those only raise it.
            known = self._trusted.get(node_id, 0)
            self._trusted[node_id] = (
                trusted if known == proof.consistency_from else max(known, trusted)
            )
            return None
        self._trusted[node_id] = max(self._trusted.get(node_id, 0), receipt.head.size)
        return (result,)

    async def _ask(
        self,
        node: NodeEntry,
        template: node_pb2.ScoreRequest,
        key: PublicKey,
        receipt: Receipt,
        in_scope: Callable[[str], bool],
    ) -> NodeAnswer | NodeFailure:
        started = time.monotonic()
        catalogue = self.catalogues.get(node.id)
        if catalogue is None:  # down at start-up: describe it now, within the same deadline
            catalogue = await self.describe(node)
            if catalogue is None:
                return NodeFailure(
                    node, "unavailable (could not describe its catalogue)", "unavailable"
                )
        expected = [name for name in catalogue.indicators if in_scope(name)]
        remaining = self._settings.node_deadline_seconds - (time.monotonic() - started)
        reply = await self._score(node, template, receipt, remaining)
        if isinstance(reply, NodeFailure):
            return reply
        try:
            return self._checked(node, reply, key, expected)
        except InvalidInputError as exc:
            return _invalid(node, exc)

    @staticmethod
    def _checked(
        node: NodeEntry, reply: node_pb2.ScoreResponse, key: PublicKey, expected: list[str]
    ) -> NodeAnswer:
        """Validate an answer before anything in it is multiplied or passed on.

        The indicators must be exactly the published ones within the consent's scope,
        in catalogue order: a node cannot slip an unpublished value to the bank.
        """
        if reply.node_id != node.id:
            raise InvalidInputError(f"answer claims to come from node {reply.node_id!r}")
        names = [i.name for i in reply.indicators]
        if names != expected:
            raise InvalidInputError(
                f"indicators {names} differ from the published ones in scope {expected}"
            )
        return NodeAnswer(
            node=node,
            partial_score=Ciphertext.from_bytes(key, reply.partial_score),
            presence=Ciphertext.from_bytes(key, reply.presence),
            indicators=tuple(
                (i.name, Ciphertext.from_bytes(key, i.ciphertext)) for i in reply.indicators
            ),
        )
