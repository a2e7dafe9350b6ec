"""One mTLS channel per data node, and what each node said about itself.

Channels are opened once at start-up and shared by every caller (queries, training,
cosigning, revocations). ``Describe`` answers are cached: the node's indicator
catalogue (validated: the coordinator does not trust a node to keep its answers
small), the tree size it trusts (handed to the receipt relay) and the signed head it
last accepted (a witness of this log, checked by the ledger before it is believed).
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import grpc

from creditshare.consent import MAX_INDICATOR_NAME
from creditshare.coordinator._registry import Registry
from creditshare.coordinator._settings import CoordinatorSettings, NodeEntry
from creditshare.coordinator.relay._call_timing import CallListener, NodeCallTimer
from creditshare.coordinator.relay._receipts import call_failure
from creditshare.departments import PRESENCE_INDICATOR
from creditshare.errors import InvalidInputError
from creditshare.ledger import SignedTreeHead
from creditshare.monitoring import Signal
from creditshare.pki import channel_credentials
from creditshare.proto import (
    GRPC_MESSAGE_OPTIONS,
    head_from_pb,
    monitoring_pb2_grpc,
    node_pb2,
    node_pb2_grpc,
    statistics_pb2_grpc,
    training_pb2_grpc,
)

if TYPE_CHECKING:
    from creditshare.coordinator._metrics import CoordinatorMetrics
    from creditshare.proto.creditshare.v1.monitoring_pb2_grpc import MonitoringAsyncStub
    from creditshare.proto.creditshare.v1.node_pb2_grpc import (
        DataNodeAsyncStub,
        NodeInfoAsyncStub,
    )
    from creditshare.proto.creditshare.v1.statistics_pb2_grpc import CohortStatisticsAsyncStub
    from creditshare.proto.creditshare.v1.training_pb2_grpc import TrainingAsyncStub

__all__ = [
    "MAX_CATALOGUE_TEXT",
    "MAX_INDICATOR_BANDS",
    "MAX_NODE_INDICATORS",
    "NodeCatalogue",
    "NodeChannels",
]

log = logging.getLogger("creditshare.coordinator")

#: What a catalogue may hold: a node publishes a few banded indicators, and every one of
#: them becomes a slot in each profile and a line in each answer, so a node (which the
#: coordinator does not trust) cannot make every query's answer grow without bound.
MAX_NODE_INDICATORS = 64
MAX_INDICATOR_BANDS = 32
MAX_CATALOGUE_TEXT = 200


@dataclass(frozen=True, slots=True)
class NodeCatalogue:
    """What a node said about itself in Describe: indicator descriptions and bands, and
    the monitoring signal types its schema raises (subscriptions are routed by them)."""

    indicators: dict[str, tuple[str, tuple[str, ...]]]
    signals: frozenset[str] = frozenset()
    #: The models the node holds a shard of (monitoring asks it for their score shares).
    models: frozenset[str] = frozenset()


#: What a department schema lets an indicator be called (departments/_toml.py): a node
#: naming one otherwise is not running a checked schema.
_INDICATOR_NAME = re.compile(rf"[a-z][a-z0-9_]{{0,{MAX_INDICATOR_NAME - 1}}}")


def _catalogue_problem(reply: node_pb2.DescribeResponse) -> str | None:
    """Why a node's catalogue cannot be used, or None.

    A node is not trusted to keep its catalogue small or well-formed: every indicator
    becomes a slot of every profile, names are what consents list (``*`` means all of
    them, ``record_present`` is the coordinator's own presence slot), and descriptions
    and band labels reach banks' screens.
    """
    if len(reply.indicators) > MAX_NODE_INDICATORS:
        return f"{len(reply.indicators)} indicators (at most {MAX_NODE_INDICATORS})"
    names = [i.name for i in reply.indicators]
    if len(set(names)) != len(names):
        return "indicator names repeat"
    for indicator in reply.indicators:
        shown = repr(indicator.name[:MAX_INDICATOR_NAME])
        texts = [indicator.name, indicator.description, *indicator.bands]
        if (
            not 0 < len(indicator.name) <= MAX_INDICATOR_NAME
            or not 0 < len(indicator.bands) <= MAX_INDICATOR_BANDS
            or any(len(t) > MAX_CATALOGUE_TEXT for t in texts)
        ):
            return f"indicator {shown} is over the size bounds"
        if not _INDICATOR_NAME.fullmatch(indicator.name) or indicator.name == PRESENCE_INDICATOR:
            return f"indicator {shown} is not a name a department schema allows"
        if not all(t.isprintable() for t in texts) or not all(indicator.bands):
            return f"indicator {shown} has an empty band or a control character"
        if len(set(indicator.bands)) != len(indicator.bands):
            return f"indicator {shown} repeats a band label"
    return None


def _signals(node: NodeEntry, reply: node_pb2.DescribeResponse) -> frozenset[str]:
    """The signal types the node raises that this coordinator knows (a newer node's
    other types are ignored, not a reason to stop using the node for queries)."""
    known = {s.value for s in Signal}
    unknown = sorted({s[:40] for s in reply.signals if s not in known})
    if unknown:
        log.warning("describe %s: unknown signal types ignored: %s", node.id, unknown[:8])
    return frozenset(s for s in reply.signals if s in known)


#: gRPC's reconnect backoff grows to 120 s by default: a node back from an outage would
#: then wait up to two minutes before the coordinator tried it again (every query and
#: cycle meanwhile failing it at once). Capped at 5 s, it is reached within a few.
_CHANNEL_OPTIONS = (*GRPC_MESSAGE_OPTIONS, ("grpc.max_reconnect_backoff_ms", 5000))


class NodeChannels:
    """Stubs per node on their channels, and the nodes' cached Describe answers.

    ``trusted`` is told each tree size a node reports (the receipt relay's ``learn``).
    """

    def __init__(
        self,
        settings: CoordinatorSettings,
        registry: Registry,
        trusted: Callable[[str, int], None],
        interceptors: Sequence[grpc.aio.ClientInterceptor] = (),
    ) -> None:
        self._settings = settings
        self._registry = registry
        self._learn_trusted = trusted
        self._interceptors = list(interceptors)
        self._channels: dict[str, grpc.aio.Channel] = {}
        self._stubs: dict[str, DataNodeAsyncStub] = {}
        self._witnessed: dict[str, SignedTreeHead] = {}
        self.catalogues: dict[str, NodeCatalogue] = {}
        #: When each node's last Describe failed (monotonic), for ``describe_missing``.
        self._undescribed_at: dict[str, float] = {}
        #: Training stubs on the same mTLS channels, for the training relay.
        self.training: dict[str, TrainingAsyncStub] = {}
        #: Monitoring stubs on the same channels (post-loan monitoring: Watch, Monitor).
        self.monitoring: dict[str, MonitoringAsyncStub] = {}
        #: NodeInfo stubs on the same channels (the reachability probe).
        self.info: dict[str, NodeInfoAsyncStub] = {}
        #: CohortStatistics stubs on the same channels (a regulator's cohort statistics).
        self.statistics: dict[str, CohortStatisticsAsyncStub] = {}
        #: Set before ``start``: node calls are counted here.
        self.metrics: CoordinatorMetrics | None = None
        #: Added to before ``start``: told of every call on every node's channel (the
        #: node health record: answers, latency, failures), timed once with the metrics.
        self.listeners: list[CallListener] = []

    def _channel(self, node: NodeEntry) -> grpc.aio.Channel:
        listeners = [*([self.metrics] if self.metrics is not None else []), *self.listeners]
        # One interceptor of ours (request id, timing, listeners), then any given ones.
        interceptors = [NodeCallTimer(node.id, listeners), *self._interceptors]
        tls = self._settings.tls.get(node.chain)
        if tls is None:
            return grpc.aio.insecure_channel(
                node.address, options=_CHANNEL_OPTIONS, interceptors=interceptors
            )
        credentials = channel_credentials(tls.ca, tls.cert, tls.key)
        return grpc.aio.secure_channel(
            node.address, credentials, options=_CHANNEL_OPTIONS, interceptors=interceptors
        )

    async def start(self) -> None:
        """Open every node's channel, then describe every node (a node down now is
        described again when a query needs it)."""
        for node in self._registry.nodes:
            channel = self._channel(node)
            self._channels[node.id] = channel
            self._stubs[node.id] = node_pb2_grpc.DataNodeStub(channel)
            self.training[node.id] = training_pb2_grpc.TrainingStub(channel)
            self.monitoring[node.id] = monitoring_pb2_grpc.MonitoringStub(channel)
            self.info[node.id] = node_pb2_grpc.NodeInfoStub(channel)
            self.statistics[node.id] = statistics_pb2_grpc.CohortStatisticsStub(channel)
        await asyncio.gather(*(self.describe(n) for n in self._registry.nodes))

    async def close(self) -> None:
        await asyncio.gather(*(c.close() for c in self._channels.values()))

    def stub(self, node_id: str) -> DataNodeAsyncStub:
        """The node's DataNode stub on its (mTLS) channel; after ``start``."""
        return self._stubs[node_id]

    async def ready(self, node_id: str, seconds: float) -> bool:
        """Whether the node's channel is connected, waiting up to ``seconds`` for it: a
        node that just came back may find its channel in reconnect backoff, where calls
        fail at once; background work (monitoring cycles) waits for it instead."""
        channel = self._channels[node_id]
        if channel.get_state(try_to_connect=True) == grpc.ChannelConnectivity.READY:
            return True
        try:
            async with asyncio.timeout(seconds):
                await channel.channel_ready()
        except TimeoutError:
            return False
        return True

    def witness_heads(self) -> dict[str, SignedTreeHead]:
        """The signed head each node last said it trusts (unverified: the ledger checks
        each signature before it believes one)."""
        return dict(self._witnessed)

    async def describe_missing(self, nodes: Sequence[NodeEntry], backoff: float) -> None:
        """Describe the nodes without a catalogue, except those whose last attempt failed
        less than ``backoff`` seconds ago: a request that only reads catalogues (consent
        grants, GET /v1/indicators) must not wait on a dead node's deadline each time."""
        now = time.monotonic()
        due = [
            n
            for n in nodes
            if n.id not in self.catalogues
            and now - self._undescribed_at.get(n.id, -backoff) >= backoff
        ]
        await asyncio.gather(*(self.describe(n) for n in due))

    async def describe(self, node: NodeEntry) -> NodeCatalogue | None:
        """Fetch and cache a node's catalogue and trusted tree size; retried later if down."""
        try:
            reply = await self._stubs[node.id].Describe(
                node_pb2.DescribeRequest(), timeout=self._settings.node_deadline_seconds
            )
        except grpc.aio.AioRpcError as exc:
            log.warning("describe %s failed: %s", node.id, call_failure(exc).reason)
            self._undescribed_at[node.id] = time.monotonic()
            return None
        problem = _catalogue_problem(reply)
        if problem is not None:
            log.warning("describe %s refused: %s", node.id, problem)
            self._undescribed_at[node.id] = time.monotonic()
            return None
        self._undescribed_at.pop(node.id, None)
        catalogue = NodeCatalogue(
            {i.name: (i.description, tuple(i.bands)) for i in reply.indicators},
            _signals(node, reply),
            frozenset(m.model_id for m in reply.models),
        )
        self.catalogues[node.id] = catalogue
        self._learn_trusted(node.id, reply.trusted_tree_size)
        if reply.HasField("trusted_tree_head"):
            try:
                self._witnessed[node.id] = head_from_pb(reply.trusted_tree_head)
            except InvalidInputError as exc:
                log.warning("describe %s: its trusted head is malformed: %s", node.id, exc)
        return catalogue
