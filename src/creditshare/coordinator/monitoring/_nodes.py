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
from creditshare.crypto import MAX_KEY_BITS, SEAL_OVERHEAD
from creditshare.errors import InvalidInputError, LedgerError
from creditshare.ledger import Receipt
from creditshare.monitoring import BATCH_BYTES, Signal
from creditshare.proto import monitoring_pb2, node_pb2

__all__ = ["SEALED_BYTES", "NodeAnswer", "in_scope", "monitor", "scoring", "watch"]

#: The length of every sealed batch: a node answering another length is not heard.
SEALED_BYTES = BATCH_BYTES + SEAL_OVERHEAD
#: A Paillier ciphertext under a key of at most MAX_KEY_BITS (validated when added).
MAX_CIPHERTEXT_BYTES = 2 * MAX_KEY_BITS // 8
SCORE = Signal.SCORE_CHANGE.value
#: Watch calls in flight at once (a cycle re-watching thousands after a node came back).
_WATCHING = 32


def in_scope(
    chains: Collection[str],
    signals: Collection[str],
    nodes: Sequence[NodeEntry],
    catalogues: Mapping[str, NodeCatalogue],
    model_id: str = "",
) -> list[NodeEntry]:
    """The described nodes of ``chains`` raising one of ``signals`` (score_change: holding
    a shard of ``model_id``, whose share of the score they answer every cycle)."""
    wanted = set(signals)
    scored = SCORE in wanted and bool(model_id)
    return [
        n
        for n in nodes
        if n.chain in chains
        and n.id in catalogues
        and (
            bool(catalogues[n.id].signals & wanted)
            or (scored and model_id in catalogues[n.id].models)
        )
    ]


def scoring(node: NodeEntry, catalogues: Mapping[str, NodeCatalogue], model_id: str) -> bool:
    """Whether ``node`` answers a score share for a subscription watching ``model_id``."""
    catalogue = catalogues.get(node.id)
    return bool(model_id) and catalogue is not None and model_id in catalogue.models


async def watch(
    broker: QueryBroker,
    node: NodeEntry,
    signed: dict[str, object],
    receipt: Receipt,
    credentials: node_pb2.Credentials,
    seconds: float,
    paillier_n: bytes = b"",
) -> str | None:
    """Register one subscription on ``node``: None once it holds it, else why not.

    ``paillier_n``: the bank's Paillier modulus, for a subscription watching score_change
    (the node checks it against the fingerprint the bank signed)."""
    stub = broker.channels.monitoring[node.id]
    data = canonical_json(signed)

    async def call(proof: node_pb2.QueryReceipt, left: float) -> monitoring_pb2.WatchResponse:
        request = monitoring_pb2.WatchRequest(
            subscription=data, receipt=proof, credentials=credentials
        )
        if paillier_n:
            request.public_key.n = paillier_n
        return await stub.Watch(request, timeout=left)

    try:
        await broker.call_with_receipt(node.id, receipt, call, seconds)
    except (grpc.aio.AioRpcError, LedgerError) as exc:
        return call_failure(exc).reason
    return None


async def watch_many(
    broker: QueryBroker,
    calls: Sequence[tuple[NodeEntry, dict[str, object], Receipt, node_pb2.Credentials, bytes]],
    seconds: float,
) -> list[str | None]:
    """``watch`` for many (node, subscription) pairs, a bounded number at a time."""
    gate = asyncio.Semaphore(_WATCHING)

    async def one(
        call: tuple[NodeEntry, dict[str, object], Receipt, node_pb2.Credentials, bytes],
    ) -> str | None:
        node, signed, receipt, credentials, paillier_n = call
        async with gate:
            return await watch(broker, node, signed, receipt, credentials, seconds, paillier_n)

    return list(await asyncio.gather(*(one(c) for c in calls)))


@dataclass(frozen=True, slots=True)
class NodeAnswer:
    """A node's checked answer to one cycle."""

    node: NodeEntry
    batches: tuple[tuple[str, bytes], ...]
    unknown: tuple[str, ...]
    ended: tuple[tuple[str, str], ...]
    #: (subscription id, Enc(this node's score share)), validated by the cycle.
    scores: tuple[tuple[str, bytes], ...] = ()


def check_answer(
    node: NodeEntry,
    asked: Sequence[str],
    reply: monitoring_pb2.MonitorResponse,
    scored: Collection[str] = (),
) -> NodeAnswer:
    """Exactly one sealed batch of the fixed length per requested subscription the node
    serves, in request order; every requested one accounted for once; one score share
    per served subscription of ``scored``, in request order."""
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
    expected = [sid for sid in served if sid in scored]
    if [s.subscription_id for s in reply.scores] != expected:
        raise InvalidInputError("score shares do not answer the scored subscriptions once each")
    if any(len(s.partial_score) > MAX_CIPHERTEXT_BYTES for s in reply.scores):
        raise InvalidInputError(f"a score share is over {MAX_CIPHERTEXT_BYTES} bytes")
    return NodeAnswer(
        node,
        tuple((b.subscription_id, bytes(b.sealed)) for b in reply.batches),
        unknown,
        ended,
        tuple((s.subscription_id, bytes(s.partial_score)) for s in reply.scores),
    )


async def monitor(
    broker: QueryBroker,
    node: NodeEntry,
    request: monitoring_pb2.MonitorRequest,
    receipt: Receipt,
    seconds: float,
    scored: Collection[str] = (),
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
        asked = [s.subscription_id for s in request.subscriptions]
        return check_answer(node, asked, reply, scored)
    except InvalidInputError as exc:
        return f"invalid answer: {exc}"
