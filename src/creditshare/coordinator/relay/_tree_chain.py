"""A tree model's score: the private chain over the nodes that own its splits.

For a model of ``model_type`` "gbdt" the score is not a sum of per-node partials but
the weight of the leaf every owning node's splits agree on, per tree. The coordinator
asks the owning nodes (``TreeModel.nodes``, sorted) one after the other with
``TreeScore``, under the query's receipt and credentials (each node checks them as
for ``Score``), handing each node's ciphertexts to the next (``trees._private``):

    first: Enc(bit) per leaf → middle: Enc(indicator·bit), fresh → last: Enc(Σ w·indicator)

and adds the public constant base score − Σ shifts to the last node's ciphertext. It
holds no private key: it checks shapes (one ciphertext per leaf, each valid under the
bank's key, the answering node's id) and never sees a value. The chain runs beside the
usual fan-out (presence and indicators from every node in scope).

If any step fails, there is no score: a partial chain's ciphertext would decrypt to a
wrong number, so the result names the node and why (``QueryResult.score_unavailable``)
and the bank's SDK raises ``ScoreUnavailableError`` instead of showing a score.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING

import grpc

from creditshare.coordinator._registry import Registry
from creditshare.coordinator._settings import ModelEntry, NodeEntry
from creditshare.coordinator.relay._answers import (
    NodeFailure,
    PackedProfile,
    QueryResult,
    invalid_answer,
)
from creditshare.coordinator.relay._channels import NodeChannels
from creditshare.coordinator.relay._receipts import ReceiptRelay, call_failure
from creditshare.crypto import Ciphertext, FixedPointEncoding, PublicKey
from creditshare.errors import EncodingOverflowError, InvalidInputError, LedgerError
from creditshare.identity import Chain
from creditshare.ledger import Receipt
from creditshare.proto import node_pb2
from creditshare.trees import TreeModel, shifted_weights

if TYPE_CHECKING:
    from creditshare.coordinator._metrics import CoordinatorMetrics

__all__ = ["TreeChain", "chain_nodes", "with_tree_score"]

log = logging.getLogger("creditshare.coordinator")


def chain_nodes(
    model: ModelEntry, registry: Registry, chains: Sequence[Chain], scale: int
) -> list[NodeEntry]:
    """The nodes a tree model's score needs, in chain order; InvalidInputError (422,
    before anything is spent) naming a node that is unknown here or outside the query's
    chains, since without it there can be no score, or when the model's leaf weights
    do not fit the chain's wire at ``scale`` (cannot happen: ``/finish`` and the
    settings refuse a model over ``trees.MAX_LEAF_SPAN``, within which every scale fits)."""
    trees = model.trees
    if trees is None:
        return []
    try:
        shifted_weights(trees, scale)
    except EncodingOverflowError as exc:
        raise InvalidInputError(f"model {model.id!r} cannot be scored: {exc}") from None
    known = {n.id: n for n in registry.nodes}
    wanted = set(chains) if chains else set(Chain)
    nodes = []
    for node_id in trees.nodes:
        node = known.get(node_id)
        if node is None:
            raise InvalidInputError(
                f"model {model.id!r} needs node {node_id!r}, which is not registered here"
            )
        if node.chain not in wanted:
            asked = ", ".join(sorted(c.value for c in wanted))
            raise InvalidInputError(
                f"model {model.id!r} needs node {node_id!r} on chain {node.chain.value}, "
                f"outside this query's chains ({asked}): include that chain to score with it"
            )
        nodes.append(node)
    return nodes


class TreeChain:
    def __init__(
        self, deadline_seconds: float, channels: NodeChannels, relay: ReceiptRelay
    ) -> None:
        self._deadline = deadline_seconds
        self._channels = channels
        self._relay = relay
        #: Set before use: a failed step is counted here as its node's failure.
        self.metrics: CoordinatorMetrics | None = None

    async def score(
        self,
        query_id: str,
        uscc: str,
        model: ModelEntry,
        trees: TreeModel,
        nodes: Sequence[NodeEntry],
        key: PublicKey,
        encoding: FixedPointEncoding,
        receipt: Receipt,
        credentials: node_pb2.Credentials | None,
    ) -> Ciphertext | NodeFailure:
        """Enc(margin) under ``key`` at ``encoding``'s scale, or the step that failed.

        Each step has the node deadline of a ``Score`` call."""
        weights, constant = shifted_weights(trees, encoding.scale)
        template = node_pb2.TreeScoreRequest(
            uscc=uscc,
            model_id=model.id,
            public_key=node_pb2.PaillierPublicKey(n=key.to_bytes()),
            request_id=query_id,
            credentials=credentials,
        )
        indicators: list[Ciphertext] = []
        score: Ciphertext | None = None
        for k, node in enumerate(nodes):
            last = k == len(nodes) - 1
            request = node_pb2.TreeScoreRequest()
            request.CopyFrom(template)
            request.indicators.extend(c.to_bytes() for c in indicators)
            if last:
                request.weights.extend(weights)
                request.scale = encoding.scale
            reply = await self._step(node, request, receipt)
            if isinstance(reply, NodeFailure):
                return self._failed(query_id, model, reply)
            try:
                if reply.node_id != node.id:
                    raise InvalidInputError(f"answer claims to come from node {reply.node_id!r}")
                if last:
                    if reply.indicators:
                        raise InvalidInputError("the last step answers one score, no indicators")
                    score = Ciphertext.from_bytes(key, reply.score)
                else:
                    if reply.score or len(reply.indicators) != trees.leaf_count:
                        raise InvalidInputError(
                            f"{len(reply.indicators)} indicators, expected one per leaf "
                            f"({trees.leaf_count})"
                        )
                    indicators = [Ciphertext.from_bytes(key, c) for c in reply.indicators]
            except InvalidInputError as exc:
                return self._failed(query_id, model, invalid_answer(node, exc))
        if score is None:  # a model always has at least one owning node
            raise InvalidInputError(f"model {model.id!r} has no node owning a split")
        return score.add_encoded(FixedPointEncoding.encode_integer(constant, key))

    def _failed(self, query_id: str, model: ModelEntry, failure: NodeFailure) -> NodeFailure:
        log.warning(
            "query %s model=%s: no tree score, node %s failed: %s",
            query_id,
            model.id,
            failure.node.id,
            failure.reason,
        )
        if self.metrics is not None:
            self.metrics.node_failed(failure.node.id, failure.kind)
        return failure

    async def _step(
        self, node: NodeEntry, template: node_pb2.TreeScoreRequest, receipt: Receipt
    ) -> node_pb2.TreeScoreResponse | NodeFailure:
        """One TreeScore call with the query's receipt, within the node deadline."""
        stub = self._channels.stub(node.id)

        async def call(proof: node_pb2.QueryReceipt, left: float) -> node_pb2.TreeScoreResponse:
            request = node_pb2.TreeScoreRequest()
            request.CopyFrom(template)
            request.receipt.CopyFrom(proof)
            return await stub.TreeScore(request, timeout=left)

        try:
            return await self._relay.call_with_receipt(node.id, receipt, call, self._deadline)
        except (grpc.aio.AioRpcError, LedgerError) as exc:
            failure = call_failure(exc)
            return NodeFailure(node, f"tree score: {failure.reason}", failure.kind)


def with_tree_score(result: QueryResult, tree: Ciphertext | NodeFailure) -> QueryResult:
    """The fan-out's result with the chain's Enc(margin) where a score goes (packed slot
    0, or ``encrypted_score``), so the bank decrypts it as any score; or, the chain
    having failed, no score and the failed step named."""
    if isinstance(tree, NodeFailure):
        return dataclasses.replace(result, encrypted_score=None, score_unavailable=tree)
    if result.packed is not None:
        first, *rest = result.packed.ciphertexts
        profile = PackedProfile(result.packed.layout, (first + tree, *rest))
        return dataclasses.replace(result, packed=profile)
    if result.encrypted_score is None:
        return dataclasses.replace(result, encrypted_score=tree)
    return dataclasses.replace(result, encrypted_score=result.encrypted_score + tree)
