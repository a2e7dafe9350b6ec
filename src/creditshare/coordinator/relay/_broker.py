"""``QueryBroker``: the one object the app, routes, training and witness rounds hold.

It only wires the three parts together (channels, receipt relay, fan-out) and passes
calls through, so callers need not know how the work is split.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, TypeVar

import grpc

from creditshare.coordinator._registry import Registry
from creditshare.coordinator._settings import CoordinatorSettings, ModelEntry, NodeEntry
from creditshare.coordinator.relay._answers import QueryResult
from creditshare.coordinator.relay._channels import NodeCatalogue, NodeChannels
from creditshare.coordinator.relay._fan_out import QueryFanOut
from creditshare.coordinator.relay._receipts import ReceiptRelay
from creditshare.crypto import PublicKey
from creditshare.identity import Chain
from creditshare.ledger import Ledger, Receipt, SignedTreeHead
from creditshare.proto import node_pb2

if TYPE_CHECKING:
    from creditshare.coordinator._metrics import CoordinatorMetrics
    from creditshare.proto.creditshare.v1.node_pb2_grpc import DataNodeAsyncStub
    from creditshare.proto.creditshare.v1.training_pb2_grpc import TrainingAsyncStub

__all__ = ["QueryBroker"]

T = TypeVar("T")
#: How long a node whose Describe failed is left alone by catalogue-only requests.
_DESCRIBE_BACKOFF = 30.0


class QueryBroker:
    def __init__(
        self,
        settings: CoordinatorSettings,
        registry: Registry,
        ledger: Ledger,
        interceptors: Sequence[grpc.aio.ClientInterceptor] = (),
    ) -> None:
        self.relay = ReceiptRelay(ledger)
        self.channels = NodeChannels(settings, registry, self.relay.learn, interceptors)
        self.fan_out = QueryFanOut(settings, registry, self.channels, self.relay)

    @property
    def metrics(self) -> CoordinatorMetrics | None:
        return self.channels.metrics

    @metrics.setter
    def metrics(self, metrics: CoordinatorMetrics | None) -> None:
        """Set before ``start``: node calls and failures are counted here."""
        self.channels.metrics = metrics
        self.fan_out.metrics = metrics

    @property
    def catalogues(self) -> dict[str, NodeCatalogue]:
        return self.channels.catalogues

    @property
    def training(self) -> dict[str, TrainingAsyncStub]:
        """Training stubs on the same mTLS channels, for the training relay."""
        return self.channels.training

    async def start(self) -> None:
        await self.channels.start()

    async def close(self) -> None:
        await self.channels.close()

    def stub(self, node_id: str) -> DataNodeAsyncStub:
        return self.channels.stub(node_id)

    def witness_heads(self) -> dict[str, SignedTreeHead]:
        return self.channels.witness_heads()

    async def describe(self, node: NodeEntry) -> NodeCatalogue | None:
        return await self.channels.describe(node)

    async def published_indicators(
        self, nodes: Sequence[NodeEntry]
    ) -> tuple[dict[str, list[tuple[NodeEntry, str, tuple[str, ...]]]], list[str]]:
        """Per indicator name, the nodes publishing it (with description and bands); and
        the nodes that could not be described (down since start-up), asked again at most
        every ``_DESCRIBE_BACKOFF`` seconds."""
        await self.channels.describe_missing(nodes, _DESCRIBE_BACKOFF)
        catalogues = self.channels.catalogues
        published: dict[str, list[tuple[NodeEntry, str, tuple[str, ...]]]] = {}
        silent = []
        for node in nodes:
            catalogue = catalogues.get(node.id)
            if catalogue is None:
                silent.append(node.id)
                continue
            for name, (description, bands) in catalogue.indicators.items():
                published.setdefault(name, []).append((node, description, bands))
        return published, silent

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
        return await self.fan_out.query(
            query_id, uscc, model, key, chains, receipt, in_scope, credentials
        )

    async def revoke_consent(
        self, nodes: Sequence[NodeEntry], revocation: bytes, credentials: node_pb2.Credentials
    ) -> list[tuple[NodeEntry, str | None]]:
        return await self.fan_out.revoke_consent(nodes, revocation, credentials)

    async def call_with_receipt(
        self,
        node_id: str,
        receipt: Receipt,
        invoke: Callable[[node_pb2.QueryReceipt, float], Awaitable[T]],
        seconds: float,
        *,
        exclusive: bool = True,
    ) -> T:
        return await self.relay.call_with_receipt(
            node_id, receipt, invoke, seconds, exclusive=exclusive
        )
