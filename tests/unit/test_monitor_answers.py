"""What the coordinator accepts from a node's Monitor answer before storing anything."""

from __future__ import annotations

from collections.abc import Sequence

import pytest

from creditshare.coordinator._settings import NodeEntry
from creditshare.coordinator.monitoring._nodes import SEALED_BYTES, check_answer, in_scope
from creditshare.coordinator.relay import NodeCatalogue
from creditshare.errors import InvalidInputError
from creditshare.proto import monitoring_pb2

NODE = NodeEntry(id="yrd-court", chain="yrd", department="court", address="x:1")
A, B, C = "a" * 32, "b" * 32, "c" * 32


def _batch(sid: str, size: int = SEALED_BYTES) -> monitoring_pb2.SealedBatch:
    return monitoring_pb2.SealedBatch(subscription_id=sid, sealed=bytes(size))


def _reply(
    batches: list[str],
    unknown: Sequence[str] = (),
    ended: Sequence[str] = (),
    node: str = "yrd-court",
) -> monitoring_pb2.MonitorResponse:
    return monitoring_pb2.MonitorResponse(
        node_id=node,
        batches=[_batch(s) for s in batches],
        unknown=list(unknown),
        ended=[
            monitoring_pb2.EndedSubscription(subscription_id=s, reason="consent revoked")
            for s in ended
        ],
    )


def test_one_batch_per_served_subscription_in_request_order() -> None:
    answer = check_answer(NODE, [A, B, C], _reply([A, C], unknown=[B]))
    assert [sid for sid, _ in answer.batches] == [A, C]
    assert answer.unknown == (B,) and answer.ended == ()
    answer = check_answer(NODE, [A, B, C], _reply([B], ended=[A, C]))
    assert answer.ended == ((A, "consent revoked"), (C, "consent revoked"))


@pytest.mark.parametrize(
    ("reply", "words"),
    [
        (_reply([A, B], node="yrd-tax"), "claims to come from node"),
        (_reply([B, A]), "once each"),  # out of order
        (_reply([A]), "once each"),  # one missing
        (_reply([A, B, B]), "once each"),  # one twice
        (_reply([A, B], unknown=[C]), "not requested"),
        (_reply([A], unknown=[B, B]), "once each"),
        (_reply([A], unknown=[B], ended=[B]), "once each"),
    ],
)
def test_answers_that_do_not_account_for_each_subscription_once_are_refused(
    reply: monitoring_pb2.MonitorResponse, words: str
) -> None:
    with pytest.raises(InvalidInputError, match=words):
        check_answer(NODE, [A, B], reply)


@pytest.mark.parametrize("size", [0, SEALED_BYTES - 1, SEALED_BYTES + 1])
def test_a_sealed_batch_of_another_size_is_refused(size: int) -> None:
    reply = monitoring_pb2.MonitorResponse(node_id="yrd-court", batches=[_batch(A, size)])
    with pytest.raises(InvalidInputError, match=f"not {SEALED_BYTES}"):
        check_answer(NODE, [A], reply)


def test_subscriptions_go_to_described_nodes_of_their_chains_raising_a_chosen_signal() -> None:
    nodes = [
        NODE,
        NodeEntry(id="yrd-tax", chain="yrd", department="tax", address="x:2"),
        NodeEntry(id="prd-court", chain="prd", department="court", address="x:3"),
        NodeEntry(id="yrd-down", chain="yrd", department="court", address="x:4"),
    ]
    catalogues = {
        "yrd-court": NodeCatalogue({}, frozenset({"court_judgment", "dishonest_debtor"})),
        "yrd-tax": NodeCatalogue({}, frozenset({"tax_arrears"})),
        "prd-court": NodeCatalogue({}, frozenset({"court_judgment"})),
    }
    ids = [n.id for n in in_scope(["yrd"], {"court_judgment"}, nodes, catalogues)]
    assert ids == ["yrd-court"]
    both = in_scope(["prd", "yrd"], {"court_judgment", "tax_arrears"}, nodes, catalogues)
    assert [n.id for n in both] == ["yrd-court", "yrd-tax", "prd-court"]
    assert in_scope(["yrd"], {"utility_arrears"}, nodes, catalogues) == []
