"""A node hears that a subscription ended: each cycle lists, to every node that still
has it registered, the subscriptions ended here (cancelled, consent revoked or expired),
and releases the registration once that node's answer is stored; a node with nothing
else to serve is asked anyway while it has ends to take, and a node down keeps them.

The nodes are FAKE monitoring nodes (tests/integration/_monitoring.py): these tests are
about what the coordinator sends and records.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest

from creditshare.monitoring import cycle_digest, node_digest

from ._monitoring import FakeNode, Harness, harness


@pytest.fixture
def h(tmp_path: Path, database_url: str) -> Iterator[Harness]:
    """On each database the coordinator runs on (SQLite, PostgreSQL)."""
    with harness(tmp_path, database_url=database_url) as running:
        yield running


def _cancel(h: Harness, sid: str) -> None:
    response = h.client.delete(f"/v1/subscriptions/{sid}", headers=h.headers())
    assert response.status_code == 200, response.text
    assert response.json()["status"] == "ended"


def _registered(h: Harness, sid: str) -> list[dict[str, object]]:
    nodes: list[dict[str, object]] = h.client.get(
        f"/v1/subscriptions/{sid}", headers=h.headers()
    ).json()["nodes"]
    return nodes


def test_a_cancelled_subscription_is_sent_as_ended_until_stored(h: Harness) -> None:
    consent_id = h.consent()
    cancelled, kept = sorted(h.subscribe(consent_id).json()["subscription_id"] for _ in range(2))
    node = h.nodes[0]
    h.cycle()
    assert list(node.monitor_requests[-1].ended) == []
    _cancel(h, cancelled)
    store = h.services.monitoring.subscriptions.store
    assert store.any_ends_pending(["yrd-fake"])
    assert not store.any_ends_pending(["yrd-other"])  # a node no longer configured
    summary = h.cycle()
    request = node.monitor_requests[-1]
    assert [s.subscription_id for s in request.subscriptions] == [kept]
    assert list(request.ended) == [cancelled]
    assert summary["nodes"][0]["batches"] == 1 and summary["nodes"][0]["error"] is None
    # Stored: released, not told again.
    assert _registered(h, cancelled) == [{"node": "yrd-fake", "registered": False}]
    assert _registered(h, kept) == [{"node": "yrd-fake", "registered": True}]
    assert not store.any_ends_pending(["yrd-fake"])
    h.cycle()
    assert list(node.monitor_requests[-1].ended) == []
    assert [s.subscription_id for s in node.monitor_requests[-1].subscriptions] == [kept]


def test_a_node_with_nothing_else_to_serve_is_asked_for_its_ends(h: Harness) -> None:
    sid = h.subscribe(h.consent()).json()["subscription_id"]
    node = h.nodes[0]
    h.cycle()
    _cancel(h, sid)
    summary = h.cycle()
    assert summary["subscriptions"] == 0
    assert summary["nodes"] == [
        {"node": "yrd-fake", "batches": 0, "unknown": 0, "ended": 0, "error": None}
    ]
    request = node.monitor_requests[-1]
    assert list(request.subscriptions) == [] and list(request.ended) == [sid]
    # The cycle's record names the node, its digest over the empty set.
    _, record = h.records()[summary["ledger_index"]]
    expected = cycle_digest({"yrd-fake": node_digest({})})
    assert record["cycle"] == {"number": 2, "digest": expected, "nodes": ["yrd-fake"]}
    assert [(d.node_id, d.digest) for d in request.node_digests] == [("yrd-fake", node_digest({}))]
    # Taken: the next cycle asks nobody.
    asked = len(node.monitor_requests)
    assert h.cycle()["nodes"] == []
    assert len(node.monitor_requests) == asked


def test_a_node_down_keeps_its_ends_pending_until_it_answers(h: Harness) -> None:
    sid = h.subscribe(h.consent()).json()["subscription_id"]
    node = h.nodes[0]
    h.cycle()
    _cancel(h, sid)
    node.mode = "down"
    failed = h.cycle()
    assert "unavailable" in failed["nodes"][0]["error"]
    assert _registered(h, sid) == [{"node": "yrd-fake", "registered": True}]
    node.mode = "ok"
    h.cycle()
    assert list(node.monitor_requests[-1].ended) == [sid]
    assert _registered(h, sid) == [{"node": "yrd-fake", "registered": False}]


def test_the_end_of_an_expired_consent_reaches_its_nodes(h: Harness) -> None:
    lapsing = h.subscribe(h.consent(valid_until=h.clock() + timedelta(days=1))).json()
    lasting = h.subscribe(h.consent(valid_until=h.clock() + timedelta(days=30))).json()
    node = h.nodes[0]
    h.cycle()
    h.clock.offset += timedelta(days=2)
    h.cycle()  # the cycle's sweep ends it, and the same cycle tells the node
    request = node.monitor_requests[-1]
    assert list(request.ended) == [lapsing["subscription_id"]]
    assert [s.subscription_id for s in request.subscriptions] == [lasting["subscription_id"]]


def test_ends_wait_per_node_within_the_bound(tmp_path: Path, database_url: str) -> None:
    nodes = [FakeNode("yrd-a"), FakeNode("yrd-b")]
    with harness(tmp_path, nodes, database_url=database_url) as h:
        sids = sorted(h.subscribe(h.consent()).json()["subscription_id"] for _ in range(3))
        h.cycle()
        for sid in sids:
            _cancel(h, sid)
        store = h.services.monitoring.subscriptions.store
        assert store.pending_ends(2) == {"yrd-a": sids[:2], "yrd-b": sids[:2]}
        nodes[1].mode = "down"
        h.cycle()
        assert list(nodes[0].monitor_requests[-1].ended) == sids
        assert store.pending_ends(10) == {"yrd-b": sids}


def test_the_background_task_delivers_ends_when_nothing_is_active(tmp_path: Path) -> None:
    """An idle federation runs no cycles, but one whose last subscription was cancelled
    is not idle until its nodes have heard of it."""
    node = FakeNode()
    with harness(tmp_path, [node], monitoring_interval_seconds=0.2) as h:
        sid = h.subscribe(h.consent()).json()["subscription_id"]
        deadline = time.monotonic() + 60
        while not node.monitor_requests:
            assert time.monotonic() < deadline, "no cycle within a minute"
            time.sleep(0.05)
        _cancel(h, sid)
        while not any(list(r.ended) == [sid] for r in node.monitor_requests):
            assert time.monotonic() < deadline, "the end was not sent within a minute"
            time.sleep(0.05)
        while _registered(h, sid)[0]["registered"]:
            assert time.monotonic() < deadline, "the end was not released within a minute"
            time.sleep(0.05)
