"""Fan a recorded query out to the nodes in scope and add their encrypted answers.

The fan-out holds no private key and never decodes a value: every number it touches
is a ciphertext the answer form validates and multiplies. A node that is slow, down,
refuses, or answers garbage is named in the coverage, never hidden and never waited
on past its deadline. Plain and packed answers take the same path; only the answer
form (``_answers``) differs. A consent revocation fans out the same way.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, TypeVar

import grpc

from creditshare.coordinator._registry import Registry
from creditshare.coordinator._settings import CoordinatorSettings, ModelEntry, NodeEntry
from creditshare.coordinator.relay._answers import (
    AnswerForm,
    NodeAnswer,
    NodeFailure,
    PackedAnswer,
    PackedForm,
    PlainForm,
    QueryResult,
    invalid_answer,
)
from creditshare.coordinator.relay._channels import NodeChannels
from creditshare.coordinator.relay._receipts import ReceiptRelay, call_failure
from creditshare.coordinator.relay._tree_chain import TreeChain, chain_nodes, with_tree_score
from creditshare.crypto import FixedPointEncoding, PublicKey
from creditshare.errors import InvalidInputError, LedgerError
from creditshare.identity import Chain
from creditshare.ledger import Receipt
from creditshare.proto import node_pb2

if TYPE_CHECKING:
    from creditshare.coordinator._metrics import CoordinatorMetrics

__all__ = ["QueryFanOut"]

log = logging.getLogger("creditshare.coordinator")
A = TypeVar("A", NodeAnswer, PackedAnswer)
_UNDESCRIBED = "unavailable (could not describe its catalogue)"


class QueryFanOut:
    def __init__(
        self,
        settings: CoordinatorSettings,
        registry: Registry,
        channels: NodeChannels,
        relay: ReceiptRelay,
    ) -> None:
        self._settings = settings
        self._registry = registry
        self._channels = channels
        self._relay = relay
        #: A tree model's score: the chain over its owning nodes.
        self.trees = TreeChain(settings.node_deadline_seconds, channels, relay)
        self._metrics: CoordinatorMetrics | None = None

    @property
    def metrics(self) -> CoordinatorMetrics | None:
        return self._metrics

    @metrics.setter
    def metrics(self, metrics: CoordinatorMetrics | None) -> None:
        """Set before use: node failures (tree-chain steps too) are counted here."""
        self._metrics = metrics
        self.trees.metrics = metrics

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
        # the route checked it already
        chain = chain_nodes(model, self._registry, chains, self._settings.scale)
        encoding = FixedPointEncoding(self._settings.scale)
        template = node_pb2.ScoreRequest(
            uscc=uscc,
            model_id=model.id,
            public_key=node_pb2.PaillierPublicKey(n=key.to_bytes()),
            scale=encoding.scale,
            request_id=query_id,
            credentials=credentials,
        )
        trees = model.trees
        if trees is None:
            return await self._answers(
                key, encoding, in_scope, query_id, model, nodes, template, receipt
            )
        # A tree model: its private chain runs beside the fan-out (presence, indicators).
        fanned, tree = await asyncio.gather(
            self._answers(key, encoding, in_scope, query_id, model, nodes, template, receipt),
            self.trees.score(
                query_id, uscc, model, trees, chain, key, encoding, receipt, credentials
            ),
        )
        return with_tree_score(fanned, tree)

    async def _answers(
        self,
        key: PublicKey,
        encoding: FixedPointEncoding,
        in_scope: Callable[[str], bool],
        query_id: str,
        model: ModelEntry,
        nodes: Sequence[NodeEntry],
        template: node_pb2.ScoreRequest,
        receipt: Receipt,
    ) -> QueryResult:
        """Every node in scope's Score answer, in the configured form, added up."""
        if not self._settings.pack_profiles:
            form = PlainForm(key, encoding, in_scope)
            return await self._fan_out(form, query_id, model, nodes, template, receipt)
        # The slot plan needs every catalogue: describe the nodes not yet described.
        catalogues = self._channels.catalogues
        await asyncio.gather(*(self._channels.describe(n) for n in nodes if n.id not in catalogues))
        packed = PackedForm(key, encoding, self._settings.slot_bits, nodes, catalogues, in_scope)
        return await self._fan_out(packed, query_id, model, nodes, template, receipt)

    async def _fan_out(
        self,
        form: AnswerForm[A],
        query_id: str,
        model: ModelEntry,
        nodes: Sequence[NodeEntry],
        template: node_pb2.ScoreRequest,
        receipt: Receipt,
    ) -> QueryResult:
        outcomes = await asyncio.gather(*(self._ask(n, form, template, receipt) for n in nodes))
        answers = [o for o in outcomes if not isinstance(o, NodeFailure)]
        failures = [o for o in outcomes if isinstance(o, NodeFailure)]
        if self.metrics is not None:
            for failure in failures:
                self.metrics.node_failed(failure.node.id, failure.kind)
        result = form.total(query_id, model, answers, failures)
        log.info(
            "query %s model=%s answered=%d failed=%d%s",
            query_id,
            model.id,
            len(answers),
            len(failures),
            "" if result.packed is None else f" packed={len(result.packed.ciphertexts)}",
        )
        return result

    async def _ask(
        self,
        node: NodeEntry,
        form: AnswerForm[A],
        template: node_pb2.ScoreRequest,
        receipt: Receipt,
    ) -> A | NodeFailure:
        started = time.monotonic()
        catalogue = self._channels.catalogues.get(node.id)
        if catalogue is None and form.describes_late:
            # Down at start-up: describe it now, within the same deadline.
            catalogue = await self._channels.describe(node)
        plan = form.plan(node, catalogue)
        if plan is None:
            return NodeFailure(node, _UNDESCRIBED, "unavailable")
        remaining = self._settings.node_deadline_seconds - (time.monotonic() - started)
        reply = await self._score(node, template, receipt, remaining, plan.packing)
        if isinstance(reply, NodeFailure):
            return reply
        try:
            return form.check(node, plan, reply)
        except InvalidInputError as exc:
            return invalid_answer(node, exc)

    async def _score(
        self,
        node: NodeEntry,
        template: node_pb2.ScoreRequest,
        receipt: Receipt,
        seconds: float,
        packing: node_pb2.PackingSpec | None,
    ) -> node_pb2.ScoreResponse | NodeFailure:
        """One Score call with the query's receipt; every way it can fail becomes a reason."""
        stub = self._channels.stub(node.id)

        async def score(proof: node_pb2.QueryReceipt, left: float) -> node_pb2.ScoreResponse:
            request = node_pb2.ScoreRequest()
            request.CopyFrom(template)
            request.receipt.CopyFrom(proof)
            if packing is not None:
                request.packing.CopyFrom(packing)
            return await stub.Score(request, timeout=left)

        try:
            return await self._relay.call_with_receipt(node.id, receipt, score, seconds)
        except (grpc.aio.AioRpcError, LedgerError) as exc:
            failure = call_failure(exc)
            return NodeFailure(node, failure.reason, failure.kind)

    async def revoke_consent(
        self, nodes: Sequence[NodeEntry], revocation: bytes, credentials: node_pb2.Credentials
    ) -> list[tuple[NodeEntry, str | None]]:
        """Hand an enterprise's signed revocation to each of ``nodes``.

        Each node verifies it and keeps it; the answer names every node that did not
        (``None``: it holds the revocation now), so the enterprise sees exactly where its
        withdrawal is enforced by the node itself and not only by this coordinator.
        """
        request = node_pb2.RevokeConsentRequest(revocation=revocation, credentials=credentials)
        seconds = self._settings.node_deadline_seconds

        async def one(node: NodeEntry) -> tuple[NodeEntry, str | None]:
            try:
                await self._channels.stub(node.id).RevokeConsent(request, timeout=seconds)
            except grpc.aio.AioRpcError as exc:
                return node, call_failure(exc).reason
            return node, None

        return list(await asyncio.gather(*(one(n) for n in nodes)))
