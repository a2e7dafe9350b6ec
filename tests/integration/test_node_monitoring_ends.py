"""A real court node told, in a cycle, that subscriptions ended at the coordinator
(``MonitorRequest.ended``): it ends them, drops their events and detects no more for
them, even when it is asked to serve nothing else; Watch does not bring one back."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path

import grpc
import pytest

from creditshare._canonical import canonical_json
from creditshare.monitoring import node_digest
from creditshare.node import import_into_node
from creditshare.node._storage import make_engine
from creditshare.node.monitoring import MonitoringStore
from creditshare.proto import monitoring_pb2

from .._authority import TestAuthority
from . import test_node_monitoring as base
from .test_node_monitoring import (
    NODE,
    A,
    B,
    Node,
    _csv,
    _cycle_record,
    _opened,
    _receipt,
    _refused,
    _subscription_record,
    _watched,
)

BY_COORDINATOR = "ended by the coordinator"
#: The court node of test_node_monitoring (SQLite and PostgreSQL), its signers.
settings = base.settings
signers = base.signers
node = base.node


async def _monitor(
    node: Node,
    signers: TestAuthority,
    number: int,
    subscriptions: dict[str, str],
    ended: Sequence[str],
    acknowledged: int = 0,
) -> monitoring_pb2.MonitorResponse:
    nodes = {NODE: node_digest(subscriptions)}
    response: monitoring_pb2.MonitorResponse = await node.monitoring.Monitor(
        monitoring_pb2.MonitorRequest(
            cycle=number,
            receipt=await _receipt(node, _cycle_record(number, nodes), "monitoring"),
            subscriptions=[
                monitoring_pb2.CycleSubscription(subscription_id=sid, digest=digest)
                for sid, digest in sorted(subscriptions.items())
            ],
            node_digests=[monitoring_pb2.NodeDigest(node_id=NODE, digest=nodes[NODE])],
            acknowledged_cycle=acknowledged,
            credentials=signers.credentials(),
            ended=list(ended),
        )
    )
    return response


def _store(node: Node) -> MonitoringStore:
    return MonitoringStore(make_engine(node.settings.database_url), lambda: datetime.now(UTC))


async def test_listed_ends_stop_a_subscription_for_good(
    node: Node, signers: TestAuthority, tmp_path: Path
) -> None:
    cancelled, consent = await _watched(node, signers, A)
    kept, _ = await _watched(node, signers, B)
    import_into_node(node.settings, [_csv(tmp_path, "court-2.csv", {A: (1, 0), B: (1, 0)})])
    store = _store(node)
    assert len(store.pending_events(cancelled.subscription_id)) == 1
    # The coordinator ended `cancelled`: no longer asked, listed as ended instead.
    unknown = "e" * 32
    served = {kept.subscription_id: kept.digest()}
    answer = await _monitor(node, signers, 1, served, sorted([cancelled.subscription_id, unknown]))
    assert [b.subscription_id for b in answer.batches] == [kept.subscription_id]
    assert not answer.unknown and not answer.ended
    assert len(_opened(answer.batches[0], 1).events) == 1  # the other one is served as before
    row = store.subscription(cancelled.subscription_id)
    assert row is not None and row["ended_reason"] == BY_COORDINATOR
    assert store.pending_events(cancelled.subscription_id) == []
    # Its enterprise's next judgment raises nothing for it.
    import_into_node(node.settings, [_csv(tmp_path, "court-3.csv", {A: (3, 1), B: (1, 0)})])
    assert store.pending_events(cancelled.subscription_id) == []
    # Told again (the coordinator had not stored the answer): the same answer, no error.
    again = await _monitor(node, signers, 2, served, [cancelled.subscription_id])
    assert [b.subscription_id for b in again.batches] == [kept.subscription_id]
    # A Watch for it does not resurrect it.
    code, detail = await _refused(
        node.monitoring.Watch(
            monitoring_pb2.WatchRequest(
                subscription=canonical_json(cancelled.to_json()),
                receipt=await _receipt(
                    node, _subscription_record(cancelled, consent), cancelled.uscc
                ),
                credentials=signers.credentials(cancelled.uscc),
            )
        )
    )
    assert code == grpc.StatusCode.NOT_FOUND
    assert f"subscription {cancelled.subscription_id} has ended on this node" in detail
    assert store.subscription(cancelled.subscription_id)["ended_reason"] == BY_COORDINATOR  # type: ignore[index]


async def test_a_node_asked_to_serve_nothing_still_takes_its_ends(
    node: Node, signers: TestAuthority
) -> None:
    cancelled, _ = await _watched(node, signers, A)
    answer = await _monitor(node, signers, 1, {}, [cancelled.subscription_id])
    assert not answer.batches and not answer.unknown and not answer.ended
    assert _store(node).subscription(cancelled.subscription_id)["ended_reason"] == BY_COORDINATOR  # type: ignore[index]


@pytest.mark.parametrize(
    ("ended", "reason"),
    [
        (["b" * 32, "a" * 32], "ended must be sorted by id, each once"),
        (["a" * 32, "a" * 32], "ended must be sorted by id, each once"),
        (["A" * 32], "ended[0] must be 32 hex digits"),
        (["a" * 32, "x"], "ended[1] must be 32 hex digits"),
        ([f"{k:032x}" for k in range(10_001)], "at most 10000 ended subscriptions"),
    ],
)
async def test_malformed_end_lists_are_refused(
    node: Node, signers: TestAuthority, ended: list[str], reason: str
) -> None:
    served, _ = await _watched(node, signers, A)
    code, detail = await _refused(
        _monitor(node, signers, 1, {served.subscription_id: served.digest()}, ended)
    )
    assert code == grpc.StatusCode.INVALID_ARGUMENT and reason in detail
    # Nothing was ended or answered.
    store = _store(node)
    assert store.subscription(served.subscription_id)["ended_reason"] is None  # type: ignore[index]
    answer = await _monitor(node, signers, 1, {served.subscription_id: served.digest()}, [])
    assert len(answer.batches) == 1
