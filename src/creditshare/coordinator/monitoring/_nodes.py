"""Which nodes serve a subscription, and the two monitoring calls (Watch, Monitor).

A subscription goes to the nodes of its chains whose schema raises one of the signal
types it chose (Describe's ``signals``): a node raising none of them would only
answer padding. Both calls carry a ledger receipt and go through the receipt relay,
which re-proves it when the node's trusted head moved meanwhile.
"""

from __future__ import annotations

import asyncio
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass

import grpc

from creditshare._canonical import canonical_json
from creditshare.coordinator._settings import NodeEntry
from creditshare.coordinator.relay import NodeCatalogue, QueryBroker, call_failure
from creditshare.crypto import SEAL_OVERHEAD
from creditshare.errors import InvalidInputError, LedgerError
from creditshare.ledger import Receipt
from creditshare.monitoring import BATCH_BYTES
from creditshare.proto import monitoring_pb2, node_pb2

__all__ = ["SEALED_BYTES", "NodeAnswer", "in_scope", "monitor", "watch"]

#: The length of every sealed batch: a node answering another length is not heard.
SEALED_BYTES = BATCH_BYTES + SEAL_OVERHEAD
#: Watch calls in flight at once (a cycle re-watching thousands after a node came back).
_WATCHING = 32


def in_scope(
    chains: Collection[str],
    signals: Collection[str],
    nodes: Sequence[NodeEntry],
    catalogues: Mapping[str, NodeCatalogue],
) -> list[NodeEntry]:
    """The described nodes of ``chains`` raising one of ``signals``."""
    wanted = set(signals)
    return [
        n
        for n in nodes
        if n.chain in chains and n.id in catalogues and catalogues[n.id].signals & wanted
    ]


async def watch(
    broker: QueryBroker,
    node: NodeEntry,
    signed: dict[str, object],
    receipt: Receipt,
    credentials: node_pb2.Credentials,
    seconds: float,
) -> str | None:
    """Register one subscription on ``node``: None once it holds it, else why not."""
    stub = broker.channels.monitoring[node.id]
    data = canonical_json(signed)

    async def call(proof: node_pb2.QueryReceipt, left: float) -> monitoring_pb2.WatchResponse:
        request = monitoring_pb2.WatchRequest(
            subscription=data, receipt=proof, credentials=credentials
        )
        return await stub.Watch(request, timeout=left)

    try:
        await broker.call_with_receipt(node.id, receipt, call, seconds)
    except (grpc.aio.AioRpcError, LedgerError) as exc:
        return call_failure(exc).reason
    return None


async def watch_many(
    broker: QueryBroker,
    calls: Sequence[tuple[NodeEntry, dict[str, object], Receipt, node_pb2.Credentials]],
    seconds: float,
) -> list[str | None]:
    """``watch`` for many (node, subscription) pairs, a bounded number at a time."""
    gate = asyncio.Semaphore(_WATCHING)

    async def one(
        call: tuple[NodeEntry, dict[str, object], Receipt, node_pb2.Credentials],
    ) -> str | None:
        async with gate:
            return await watch(broker, *call, seconds)

    return list(await asyncio.gather(*(one(c) for c in calls)))


@dataclass(frozen=True, slots=True)
class NodeAnswer:
    """A node's checked answer to one cycle."""

    node: NodeEntry
    batches: tuple[tuple[str, bytes], ...]
    unknown: tuple[str, ...]
    ended: tuple[tuple[str, str], ...]


def check_answer(
    node: NodeEntry, asked: Sequence[str], reply: monitoring_pb2.MonitorResponse
) -> NodeAnswer:
    """Exactly one sealed batch of the fixed length per requested subscription the node
    serves, in request order; every requested one accounted for once."""
    if reply.node_id != node.id:
        raise InvalidInputError(f"answer claims to come from node {reply.node_id[:64]!r}")
    unknown = tuple(reply.unknown)
    ended = tuple((e.subscription_id, e.reason[:300]) for e in reply.ended)
    not_served = set(unknown) | {sid for sid, _ in ended}
    served = [sid for sid in asked if sid not in not_served]
    got = [b.subscription_id for b in reply.batches]
    if got != served or len(not_served) != len(unknown) + len(ended):
        raise InvalidInputError("batches do not answer the requested subscriptions once each")
    if not not_served <= set(asked):
        raise InvalidInputError("answer names subscriptions that were not requested")
    for batch in reply.batches:
        if len(batch.sealed) != SEALED_BYTES:
            raise InvalidInputError(
                f"a sealed batch is {len(batch.sealed)} bytes, not {SEALED_BYTES}"
            )
    return NodeAnswer(
        node, tuple((b.subscription_id, bytes(b.sealed)) for b in reply.batches), unknown, ended
    )


async def monitor(
    broker: QueryBroker,
    node: NodeEntry,
    request: monitoring_pb2.MonitorRequest,
    receipt: Receipt,
    seconds: float,
) -> NodeAnswer | str:
    """One Monitor call under the cycle's receipt: the checked answer, or why there is none."""
    stub = broker.channels.monitoring[node.id]

    async def call(proof: node_pb2.QueryReceipt, left: float) -> monitoring_pb2.MonitorResponse:
        message = monitoring_pb2.MonitorRequest()
        message.CopyFrom(request)
        message.receipt.CopyFrom(proof)
        # A cycle is not a bank waiting: reach a node that is just coming back (its
        # channel still in reconnect backoff) within the deadline, not fail at once.
        return await stub.Monitor(message, timeout=left, wait_for_ready=True)

    try:
        reply = await broker.call_with_receipt(node.id, receipt, call, seconds)
    except (grpc.aio.AioRpcError, LedgerError) as exc:
        return call_failure(exc).reason
    try:
        return check_answer(node, [s.subscription_id for s in request.subscriptions], reply)
    except InvalidInputError as exc:
        return f"invalid answer: {exc}"
