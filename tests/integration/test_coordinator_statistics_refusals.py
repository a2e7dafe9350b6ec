"""How a node's privacy-budget refusal reaches the coordinator, and how it is recorded.

The node's one status mapping (``node._service.guarded``) runs in a real grpc.aio server;
the coordinator's classifier reads what the client stub receives. A refusal is for the
privacy budget because the node says so in trailing metadata, never because of its
words: a busy node answers the same status code, and may say anything.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import grpc
import pytest

from creditshare.coordinator.statistics._fan_out import is_budget_refusal
from creditshare.coordinator.statistics._refusals import (
    BudgetRefusal,
    parse_refusal_reason,
    refusal_reason,
)
from creditshare.errors import CapacityError, CreditShareError, PrivacyBudgetExceededError
from creditshare.ledger import MAX_REASON
from creditshare.node._service import guarded
from creditshare.proto import statistics_pb2, statistics_pb2_grpc

WORDS = "privacy budget for regulator pboc-sh in 2026-12 would be exceeded: spent 9.5 of 10"


class _Refusing(statistics_pb2_grpc.CohortStatisticsServicer):
    """Refuses every cohort query with the error a test sets, through ``guarded``."""

    def __init__(self) -> None:
        self.error: CreditShareError = PrivacyBudgetExceededError(WORDS)
        self.logged: list[tuple[str, str]] = []

    async def Catalogue(  # noqa: N802 - gRPC method name
        self, request: Any, context: grpc.aio.ServicerContext[Any, Any]
    ) -> statistics_pb2.CatalogueResponse:
        await context.abort(grpc.StatusCode.UNIMPLEMENTED, "not in these tests")
        raise AssertionError("unreachable")

    async def Cohort(  # noqa: N802
        self, request: Any, context: grpc.aio.ServicerContext[Any, Any]
    ) -> statistics_pb2.CohortResponse:
        async def work() -> statistics_pb2.CohortResponse:
            raise self.error

        return await guarded(context, work, lambda code, exc: self.logged.append((code, str(exc))))


@pytest.fixture
async def node() -> AsyncIterator[tuple[_Refusing, Callable[[], Awaitable[Any]]]]:
    servicer = _Refusing()
    server = grpc.aio.server()
    statistics_pb2_grpc.add_CohortStatisticsServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
    stub = statistics_pb2_grpc.CohortStatisticsStub(channel)

    async def ask() -> Any:
        return await stub.Cohort(statistics_pb2.CohortRequest(), timeout=30)

    try:
        yield servicer, ask
    finally:
        await channel.close()
        await server.stop(None)


async def test_a_budget_refusal_says_so_in_metadata(node: Any) -> None:
    servicer, ask = node
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await ask()
    assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert ("creditshare-refusal", "privacy-budget") in tuple(refused.value.trailing_metadata())
    assert is_budget_refusal(refused.value)
    assert servicer.logged == [("RESOURCE_EXHAUSTED", WORDS)]  # on the node's record too


@pytest.mark.parametrize("words", ["node is full", "the budget of this node's threads is spent"])
async def test_a_busy_node_is_not_a_budget_refusal_whatever_it_says(node: Any, words: str) -> None:
    servicer, ask = node
    servicer.error = CapacityError(words)
    with pytest.raises(grpc.aio.AioRpcError) as busy:
        await ask()
    assert busy.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert busy.value.details() == words
    assert not is_budget_refusal(busy.value)


def test_the_refusal_reason_has_one_form_read_back_in_one_place() -> None:
    every = refusal_reason(["bth-tax", "prd-tax"], 2, WORDS)
    assert every == f"privacy budget: 2 of 2 nodes asked refused (bth-tax, prd-tax): {WORDS}"
    assert parse_refusal_reason(every) == BudgetRefusal(2, 2)
    assert parse_refusal_reason(every).by_every_node  # type: ignore[union-attr]
    some = parse_refusal_reason(refusal_reason(["prd-tax"], 3, WORDS))
    assert some == BudgetRefusal(1, 3) and not some.by_every_node


def test_a_refusal_by_the_nodes_rules_has_its_own_prefix_and_the_same_counts() -> None:
    reason = refusal_reason(["bth-tax", "prd-tax"], 2, "epsilon over the cap", budget=False)
    assert reason == "refused: 2 of 2 nodes asked refused (bth-tax, prd-tax): epsilon over the cap"
    assert parse_refusal_reason(reason) == BudgetRefusal(2, 2)


def test_the_counts_survive_truncation_to_the_records_limit() -> None:
    many = [f"node-{i:03d}-of-a-department-with-long-names" for i in range(64)]
    reason = refusal_reason(many, 64, WORDS)
    assert len(reason) == MAX_REASON
    assert parse_refusal_reason(reason) == BudgetRefusal(64, 64)


@pytest.mark.parametrize(
    "reason",
    [
        "",
        "consent does not cover the query",
        "privacy budget exhausted at every node asked (a, b): spent",  # not this form
        "privacy budget: 3 of 2 nodes asked refused (a): x",  # more refused than asked
        "privacy budget: 0 of 2 nodes asked refused (): x",
        "privacy budget: 2 of 2 nodes asked refusedX",
        " privacy budget: 2 of 2 nodes asked refused (a, b): x",
    ],
)
def test_any_other_reason_is_not_a_budget_refusal(reason: str) -> None:
    assert parse_refusal_reason(reason) is None
