"""Fan a query out to the nodes in scope and add their encrypted answers.

The broker holds no private key and never decodes a value: every number it
touches is a ciphertext it validates and multiplies. A node that is slow, down
or answers garbage is named in the coverage, never hidden and never waited on
past its deadline.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import grpc

from creditshare.coordinator._registry import Registry
from creditshare.coordinator._settings import CoordinatorSettings, ModelEntry, NodeEntry
from creditshare.crypto import Ciphertext, FixedPointEncoding, PublicKey
from creditshare.errors import CreditShareError, InvalidInputError
from creditshare.identity import Chain
from creditshare.proto import node_pb2, node_pb2_grpc

if TYPE_CHECKING:
    from creditshare.proto.creditshare.v1.node_pb2_grpc import DataNodeAsyncStub

__all__ = ["NodeAnswer", "NodeFailure", "QueryBroker", "QueryResult"]

log = logging.getLogger("creditshare.coordinator")


@dataclass(frozen=True, slots=True)
class NodeAnswer:
    node: NodeEntry
    partial_score: Ciphertext
    presence: Ciphertext
    indicators: tuple[tuple[str, Ciphertext], ...]


@dataclass(frozen=True, slots=True)
class NodeFailure:
    node: NodeEntry
    reason: str


@dataclass(frozen=True, slots=True)
class QueryResult:
    query_id: str
    model: ModelEntry
    encoding: FixedPointEncoding
    encrypted_score: Ciphertext
    answers: tuple[NodeAnswer, ...]
    failures: tuple[NodeFailure, ...]


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


class QueryBroker:
    def __init__(
        self,
        settings: CoordinatorSettings,
        registry: Registry,
        interceptors: Sequence[grpc.aio.ClientInterceptor] = (),
    ) -> None:
        self._settings = settings
        self._interceptors = list(interceptors)
        self._registry = registry
        self._channels: dict[str, grpc.aio.Channel] = {}
        self._stubs: dict[str, DataNodeAsyncStub] = {}
        self.catalogues: dict[str, NodeCatalogue] = {}

    async def start(self) -> None:
        for node in self._registry.nodes:
            channel = grpc.aio.insecure_channel(node.address, interceptors=self._interceptors)
            self._channels[node.id] = channel
            self._stubs[node.id] = node_pb2_grpc.DataNodeStub(channel)
        await asyncio.gather(*(self.describe(n) for n in self._registry.nodes))

    async def close(self) -> None:
        await asyncio.gather(*(c.close() for c in self._channels.values()))

    async def describe(self, node: NodeEntry) -> NodeCatalogue | None:
        """Fetch and cache a node's catalogue; a node that is down is retried later."""
        try:
            reply = await self._stubs[node.id].Describe(
                node_pb2.DescribeRequest(), timeout=self._settings.node_deadline_seconds
            )
        except grpc.aio.AioRpcError as exc:
            log.warning("describe %s failed: %s", node.id, _reason(exc))
            return None
        catalogue = NodeCatalogue(
            {i.name: (i.description, tuple(i.bands)) for i in reply.indicators}
        )
        self.catalogues[node.id] = catalogue
        return catalogue

    async def query(
        self, uscc: str, model_id: str, key: PublicKey, chains: list[Chain] | None
    ) -> QueryResult:
        model = self._registry.model(model_id)
        nodes = self._registry.scope(chains)
        encoding = FixedPointEncoding(self._settings.scale)
        query_id = uuid.uuid4().hex
        request = node_pb2.ScoreRequest(
            uscc=uscc,
            model_id=model.id,
            public_key=node_pb2.PaillierPublicKey(n=key.to_bytes()),
            scale=encoding.scale,
            request_id=query_id,
        )
        outcomes = await asyncio.gather(*(self._ask(node, request, key) for node in nodes))
        answers = tuple(o for o in outcomes if isinstance(o, NodeAnswer))
        failures = tuple(o for o in outcomes if isinstance(o, NodeFailure))
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

    async def _ask(
        self, node: NodeEntry, request: node_pb2.ScoreRequest, key: PublicKey
    ) -> NodeAnswer | NodeFailure:
        try:
            reply = await self._stubs[node.id].Score(
                request, timeout=self._settings.node_deadline_seconds
            )
        except grpc.aio.AioRpcError as exc:
            return NodeFailure(node, _reason(exc))
        if node.id not in self.catalogues:
            # Best effort: a node that was down at start-up still gets described.
            await self.describe(node)
        try:
            return self._checked(node, reply, key)
        except InvalidInputError as exc:
            log.warning("node %s sent an invalid answer: %s", node.id, exc)
            return NodeFailure(node, f"invalid answer: {exc}")
        except CreditShareError as exc:  # pragma: no cover - defensive
            return NodeFailure(node, f"invalid answer: {exc}")

    @staticmethod
    def _checked(node: NodeEntry, reply: node_pb2.ScoreResponse, key: PublicKey) -> NodeAnswer:
        """Validate every ciphertext a node sent before it is multiplied into anything."""
        if reply.node_id != node.id:
            raise InvalidInputError(f"answer claims to come from node {reply.node_id!r}")
        names = [i.name for i in reply.indicators]
        if len(names) != len(set(names)):
            raise InvalidInputError("duplicate indicator names")
        return NodeAnswer(
            node=node,
            partial_score=Ciphertext.from_bytes(key, reply.partial_score),
            presence=Ciphertext.from_bytes(key, reply.presence),
            indicators=tuple(
                (i.name, Ciphertext.from_bytes(key, i.ciphertext)) for i in reply.indicators
            ),
        )
