"""Ask every node of the query's scope for its part, check each answer, add them up.

Each node gets the statistics record's receipt (proved from the head it trusts, by the
relay every query uses), the regulator's credentials and registered key, and the
number of answers that will be added (its slots' headroom). It answers exactly
``expected`` fixed-width ciphertexts under that key, or refuses. The coordinator checks
the count and every ciphertext (range, no factor shared with the modulus) before it
multiplies anything, and names every node that did not count: ``refused`` when it
refused the query itself, spending nothing — the regulator's privacy budget (its
RESOURCE_EXHAUSTED carries ``creditshare-refusal: privacy-budget`` trailing metadata;
kind ``privacy_budget``) or its own rules (PERMISSION_DENIED or INVALID_ARGUMENT: an ε
over its per-query cap, a regulator it does not serve; kind ``policy``) — and ``failed``
for anything else (down, slow, busy, its own state, an answer that did not check).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

import grpc

from creditshare.coordinator._settings import NodeEntry
from creditshare.coordinator.relay import QueryBroker, call_failure
from creditshare.crypto import Ciphertext, PublicKey
from creditshare.errors import InvalidInputError, LedgerError
from creditshare.ledger import Receipt
from creditshare.proto import is_privacy_budget_refusal, node_pb2, statistics_pb2

if TYPE_CHECKING:
    from creditshare.coordinator._metrics import CoordinatorMetrics
    from creditshare.proto.creditshare.v1.statistics_pb2_grpc import CohortStatisticsAsyncStub

__all__ = [
    "CohortOutcome",
    "CohortResult",
    "check_answer",
    "cohort_fan_out",
    "is_budget_refusal",
    "is_policy_refusal",
]

log = logging.getLogger("creditshare.coordinator")

Status = Literal["ok", "refused", "failed"]


@dataclass(frozen=True, slots=True)
class CohortOutcome:
    node: NodeEntry
    status: Status
    reason: str = ""
    #: The failure's class for metrics (``call_failure`` kinds, ``invalid_answer``,
    #: ``privacy_budget``, ``policy``).
    kind: str = ""


@dataclass(frozen=True, slots=True)
class CohortResult:
    outcomes: tuple[CohortOutcome, ...]
    #: Per index, the product of the answering nodes' ciphertexts (empty: none answered).
    sums: tuple[Ciphertext, ...]

    def of(self, status: Status) -> list[CohortOutcome]:
        return [o for o in self.outcomes if o.status == status]


def is_budget_refusal(exc: grpc.aio.AioRpcError | LedgerError) -> bool:
    """Whether a node refused for the regulator's privacy budget: RESOURCE_EXHAUSTED with
    the refusal's trailing metadata (``proto.privacy_budget_metadata``). The same code
    without it is a node too busy to answer now; the words are never read."""
    return (
        isinstance(exc, grpc.aio.AioRpcError)
        and exc.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        and is_privacy_budget_refusal(exc.trailing_metadata())
    )


def is_policy_refusal(exc: grpc.aio.AioRpcError | LedgerError) -> bool:
    """Whether a node refused the query by its own rules (it spent nothing): the codes a
    node answers for a request it will not serve, as opposed to one it could not serve now
    (UNAVAILABLE, DEADLINE_EXCEEDED, RESOURCE_EXHAUSTED without the budget's metadata,
    FAILED_PRECONDITION for its own state)."""
    return isinstance(exc, grpc.aio.AioRpcError) and exc.code() in (
        grpc.StatusCode.PERMISSION_DENIED,
        grpc.StatusCode.INVALID_ARGUMENT,
    )


def check_answer(
    node: NodeEntry, reply: statistics_pb2.CohortResponse, key: PublicKey, expected: int
) -> list[Ciphertext]:
    """The answer's ciphertexts, or InvalidInputError saying what is wrong with it."""
    if reply.node_id != node.id:
        raise InvalidInputError(f"answer claims to come from node {reply.node_id[:64]!r}")
    if len(reply.ciphertexts) != expected:
        raise InvalidInputError(
            f"{len(reply.ciphertexts)} ciphertexts, but the query's layout has {expected}"
        )
    out = []
    for index, data in enumerate(reply.ciphertexts):
        try:
            out.append(Ciphertext.from_bytes(key, data))
        except InvalidInputError as exc:
            raise InvalidInputError(f"ciphertext {index}: {exc}") from None
    return out


def _sums(answers: Sequence[list[Ciphertext]]) -> tuple[Ciphertext, ...]:
    if not answers:
        return ()
    totals = list(answers[0])
    for answer in answers[1:]:
        totals = [t + c for t, c in zip(totals, answer, strict=True)]
    return tuple(totals)


async def cohort_fan_out(
    broker: QueryBroker,
    stubs: Mapping[str, CohortStatisticsAsyncStub],
    nodes: Sequence[NodeEntry],
    *,
    request_id: str,
    key: PublicKey,
    receipt: Receipt,
    credentials: node_pb2.Credentials,
    expected: int,
    seconds: float,
    metrics: CoordinatorMetrics | None = None,
) -> CohortResult:
    """Every node's answer (or why none), and the sums of those that checked."""
    template = statistics_pb2.CohortRequest(
        request_id=request_id,
        public_key=node_pb2.PaillierPublicKey(n=key.to_bytes()),
        credentials=credentials,
        additions=len(nodes),
    )

    async def ask(node: NodeEntry) -> CohortOutcome | list[Ciphertext]:
        stub = stubs[node.id]

        async def cohort(
            proof: node_pb2.QueryReceipt, left: float
        ) -> statistics_pb2.CohortResponse:
            request = statistics_pb2.CohortRequest()
            request.CopyFrom(template)
            request.receipt.CopyFrom(proof)
            return await stub.Cohort(request, timeout=left)

        try:
            reply = await broker.call_with_receipt(node.id, receipt, cohort, seconds)
        except (grpc.aio.AioRpcError, LedgerError) as exc:
            failure = call_failure(exc)
            if is_budget_refusal(exc):
                return CohortOutcome(node, "refused", failure.details[:300], "privacy_budget")
            if is_policy_refusal(exc):
                return CohortOutcome(node, "refused", failure.details[:300], "policy")
            return CohortOutcome(node, "failed", failure.reason[:300], failure.kind)
        try:
            return await asyncio.to_thread(check_answer, node, reply, key, expected)
        except InvalidInputError as exc:
            log.warning("node %s sent an invalid cohort answer: %s", node.id, exc)
            return CohortOutcome(node, "failed", f"invalid answer: {exc}"[:300], "invalid_answer")

    results = await asyncio.gather(*(ask(n) for n in nodes))
    answers = [r for r in results if isinstance(r, list)]
    outcomes = tuple(
        r if isinstance(r, CohortOutcome) else CohortOutcome(node, "ok")
        for node, r in zip(nodes, results, strict=True)
    )
    if metrics is not None:
        for outcome in outcomes:
            if outcome.status != "ok":  # a refused node is left out too (privacy_budget)
                metrics.node_failed(outcome.node.id, outcome.kind)
    sums = await asyncio.to_thread(_sums, answers)
    log.info(
        "statistics %s answered=%d refused=%d failed=%d ciphertexts=%d",
        request_id,
        len(answers),
        sum(o.status == "refused" for o in outcomes),
        sum(o.status == "failed" for o in outcomes),
        expected,
    )
    return CohortResult(outcomes, sums)
