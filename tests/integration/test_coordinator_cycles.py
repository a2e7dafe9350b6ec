"""Monitoring cycles and GET /v1/alerts: what a cycle commits to, what it stores, the
acknowledgements that make delivery at-least-once, and cursors.

The nodes here are FAKE monitoring nodes (tests/integration/_monitoring.py), which seal
real HPKE batches to the bank's alert key: these tests are about the coordinator's side.
"""

from __future__ import annotations

import base64
import logging
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from creditshare.coordinator._db import make_engine
from creditshare.coordinator.monitoring._cycles import CycleRunner, claim
from creditshare.coordinator.monitoring._nodes import SEALED_BYTES
from creditshare.errors import ConflictError
from creditshare.monitoring import AlertBatch, batch_info, cycle_digest, node_digest

from ._monitoring import USCC, FakeNode, Harness, harness


@pytest.fixture
def h(tmp_path: Path, database_url: str) -> Iterator[Harness]:
    """On each database the coordinator runs on (SQLite, PostgreSQL)."""
    with harness(tmp_path, database_url=database_url) as running:
        yield running


def _alerts(h: Harness, after: str | None = None, key: str | None = None) -> Any:
    query = "" if after is None else f"?after={after}"
    return h.client.get(f"/v1/alerts{query}", headers=h.headers(key))


def _opened(h: Harness, alert: dict[str, Any]) -> AlertBatch:
    info = batch_info(alert["subscription_id"], alert["node"], alert["cycle"])
    sealed = base64.b64decode(alert["sealed"])
    return AlertBatch.from_plaintext(h.alert_key.open(sealed, info))


def test_a_cycle_commits_to_the_subscriptions_and_stores_one_sealed_batch_each(
    h: Harness,
) -> None:
    consent_id = h.consent()
    subs = [h.subscribe(consent_id).json() for _ in range(2)]
    node = h.nodes[0]
    event = node.raise_event(subs[0]["subscription_id"])
    summary = h.cycle()
    assert summary["number"] == 1 and summary["subscriptions"] == 2
    assert summary["nodes"] == [
        {"node": "yrd-fake", "batches": 2, "unknown": 0, "ended": 0, "error": None}
    ]
    # The ledger record commits to the subscription set and nothing else.
    subject, record = h.records()[summary["ledger_index"]]
    assert subject == "monitoring:cycle" and record["kind"] == "monitoring_cycle"
    assert record["uscc"] == "" and record["requester"] == "coordinator"
    digests = {
        s["subscription_id"]: h.services.monitoring.subscriptions.store.get(
            s["subscription_id"]
        ).digest
        for s in subs
    }
    expected = cycle_digest({"yrd-fake": node_digest(digests)})
    assert record["cycle"] == {"number": 1, "digest": expected, "nodes": ["yrd-fake"]}
    (request,) = node.monitor_requests
    assert request.cycle == 1 and request.acknowledged_cycle == 0
    assert [s.subscription_id for s in request.subscriptions] == sorted(digests)
    assert [(d.node_id, d.digest) for d in request.node_digests] == [
        ("yrd-fake", node_digest(digests))
    ]
    # One alert per subscription, each of the same size; only the bank's key opens them.
    page = _alerts(h).json()
    assert [a["cursor"] for a in page["alerts"]] == ["1", "2"] and page["next_cursor"] == "2"
    assert {len(base64.b64decode(a["sealed"])) for a in page["alerts"]} == {SEALED_BYTES}
    opened = {a["subscription_id"]: _opened(h, a) for a in page["alerts"]}
    assert [e.id for e in opened[subs[0]["subscription_id"]].events] == [event]
    assert opened[subs[1]["subscription_id"]].events == ()
    # The other bank sees none of them.
    assert _alerts(h, key=h.other_bank_key).json() == {"alerts": [], "next_cursor": "0"}
    # Next cycle: the node hears that cycle 1 is stored, and the event is not sent again.
    h.cycle()
    assert node.monitor_requests[-1].acknowledged_cycle == 1
    later = _alerts(h, after="2").json()["alerts"]
    assert [a["cycle"] for a in later] == [2, 2]
    assert all(_opened(h, a).events == () for a in later)
    cycles = h.client.get("/v1/monitoring/cycles", headers=h.headers(h.operator_key)).json()
    assert [c["number"] for c in cycles] == [2, 1]


def test_a_node_down_during_a_cycle_is_named_and_its_events_come_later(h: Harness) -> None:
    sid = h.subscribe(h.consent()).json()["subscription_id"]
    node = h.nodes[0]
    h.cycle()
    event = node.raise_event(sid)
    node.mode = "down"
    failed = h.cycle()
    (entry,) = failed["nodes"]
    assert entry["node"] == "yrd-fake" and entry["batches"] == 0
    assert "unavailable" in entry["error"]
    assert len(_alerts(h).json()["alerts"]) == 1  # cycle 1's only
    node.mode = "ok"
    h.cycle()
    # The node was told only cycle 1 is stored: cycle 2's answer never was.
    assert node.monitor_requests[-1].acknowledged_cycle == 1
    alerts = _alerts(h, after="1").json()["alerts"]
    assert [[e.id for e in _opened(h, a).events] for a in alerts] == [[event]]


def test_a_node_that_forgot_a_subscription_gets_it_again(h: Harness) -> None:
    sid = h.subscribe(h.consent()).json()["subscription_id"]
    node = h.nodes[0]
    node.mode = "forget"
    summary = h.cycle()
    assert summary["nodes"][0]["unknown"] == 1 and summary["nodes"][0]["batches"] == 0
    out = h.client.get(f"/v1/subscriptions/{sid}", headers=h.headers()).json()
    assert out["nodes"] == [{"node": "yrd-fake", "registered": False}]
    node.mode = "ok"
    watched = len(node.watch_requests)
    h.cycle()
    assert len(node.watch_requests) == watched + 1  # Watched again before the cycle
    assert h.cycle()["nodes"][0]["batches"] == 1


def test_a_node_down_at_subscription_time_is_registered_by_a_later_cycle(h: Harness) -> None:
    node = h.nodes[0]
    node.mode = "down"
    out = h.subscribe(h.consent()).json()
    assert out["nodes"] == [{"node": "yrd-fake", "registered": False}]
    assert h.cycle()["nodes"] == []  # nobody holds it yet: nobody is asked
    node.mode = "ok"
    summary = h.cycle()
    assert summary["nodes"][0]["batches"] == 1
    assert len(node.watch_requests) == 1


def test_an_answer_of_the_wrong_size_is_not_stored(h: Harness) -> None:
    h.subscribe(h.consent())
    h.nodes[0].mode = "short"
    (entry,) = h.cycle()["nodes"]
    assert "invalid answer" in entry["error"] and str(SEALED_BYTES) in entry["error"]
    assert _alerts(h).json()["alerts"] == []
    h.nodes[0].mode = "ok"
    h.cycle()
    assert h.nodes[0].monitor_requests[-1].acknowledged_cycle == 0


def test_cursors_that_do_not_exist_are_404_and_pruned_ones_410(h: Harness) -> None:
    h.subscribe(h.consent(valid_until=h.clock() + timedelta(days=365)))
    h.cycle()
    h.cycle()
    assert [a["cursor"] for a in _alerts(h).json()["alerts"]] == ["1", "2"]
    assert _alerts(h, after="0").json()["next_cursor"] == "2"
    for bad in ("3", "99999", "-1", "01", "abc", "1e3", "9" * 30):
        response = _alerts(h, after=bad)
        assert response.status_code in (404, 422), (bad, response.text)
        if response.status_code == 404:
            assert "does not exist" in response.json()["detail"]
    # Another bank's cursor is one this bank was never given.
    response = _alerts(h, after="1", key=h.other_bank_key)
    assert response.status_code == 404 and "does not exist" in response.json()["detail"]
    for limit in ("0", "1001", "x"):
        assert h.client.get(f"/v1/alerts?limit={limit}", headers=h.headers()).status_code == 422
    assert [a["cursor"] for a in _alerts(h, after="1").json()["alerts"]] == ["2"]
    page = h.client.get("/v1/alerts?limit=1", headers=h.headers()).json()
    assert [a["cursor"] for a in page["alerts"]] == ["1"] and page["next_cursor"] == "1"
    # Past the retention period, alerts are deleted; their cursors are gone (410).
    h.clock.offset = timedelta(days=91)
    h.cycle()
    assert h.services.monitoring.cycles._alerts.prune(h.clock(), 90) == 2
    gone = _alerts(h, after="1")
    assert gone.status_code == 410, gone.text
    assert "retention" in gone.json()["detail"]
    assert [a["cursor"] for a in _alerts(h).json()["alerts"]] == ["3"]
    assert _alerts(h, after="3").json()["alerts"] == []


def test_webhook_calls_are_deleted_with_the_alerts_they_carry(h: Harness) -> None:
    """A webhook call holds copies of its sealed batches: it must not outlive them (else
    the table grows every cycle for ever and sealed data outstays the retention period)."""
    h.subscribe(h.consent(valid_until=h.clock() + timedelta(days=365)))
    url = "http://127.0.0.1:9/unreachable"
    assert h.client.put("/v1/webhook", json={"url": url}, headers=h.headers()).status_code == 200
    h.cycle()
    h.cycle()
    deliveries = h.client.get("/v1/webhook/deliveries", headers=h.headers()).json()
    assert len(deliveries) == 2
    h.clock.offset = timedelta(days=91)
    h.cycle()
    assert h.services.monitoring.cycles._alerts.prune(h.clock(), 90) == 2
    kept = h.client.get("/v1/webhook/deliveries", headers=h.headers()).json()
    assert [d["alerts"] for d in kept] == [1]
    assert kept[0]["created_at"] > deliveries[0]["created_at"]


def test_only_operators_run_cycles_and_only_banks_read_alerts(h: Harness) -> None:
    assert h.client.post("/v1/monitoring/cycles", headers=h.headers()).status_code == 403
    assert h.client.get("/v1/monitoring/cycles", headers=h.headers()).status_code == 403
    assert h.client.get("/v1/alerts", headers=h.headers(h.operator_key)).status_code == 403
    assert h.client.get("/v1/alerts").status_code == 401


def test_a_cycle_does_not_start_while_another_runs(h: Harness) -> None:
    engine = h.services.engine
    claim(engine, h.clock())  # a replica's cycle, still running
    before = h.services.ledger.size()
    response = h.client.post("/v1/monitoring/cycles", headers=h.headers(h.operator_key))
    assert response.status_code == 409, response.text
    assert h.services.ledger.size() == before
    # A cycle left unfinished by a crashed replica does not block cycles for ever.
    h.clock.offset = timedelta(hours=1)
    assert h.cycle()["number"] == 2


def test_two_replicas_claiming_at_once_run_one_cycle(database_url: str) -> None:
    """The DB guard, on each database the coordinator runs on: of concurrent claims
    (as from replicas), exactly one wins the cycle number."""
    engine = make_engine(database_url)
    now = datetime.now(UTC)
    outcomes: list[int | str] = []
    barrier = threading.Barrier(4)

    def one() -> None:
        barrier.wait()
        try:
            outcomes.append(claim(engine, now)[0])
        except ConflictError:
            outcomes.append("busy")

    threads = [threading.Thread(target=one) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(outcomes, key=str) == [1, "busy", "busy", "busy"]
    engine.dispose()


def test_the_background_task_adds_nothing_while_nobody_subscribes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    rounds: list[int] = []
    original = CycleRunner.prune

    async def counted(self: CycleRunner) -> int:
        rounds.append(1)
        return await original(self)

    monkeypatch.setattr(CycleRunner, "prune", counted)
    node = FakeNode()
    with harness(tmp_path, [node], monitoring_interval_seconds=0.05) as h:
        deadline = time.monotonic() + 60
        while len(rounds) < 3:
            assert time.monotonic() < deadline, "the background task did not go round"
            time.sleep(0.02)
        assert h.services.ledger.size() == 0 and node.monitor_requests == []
        assert h.client.get("/v1/monitoring/cycles", headers=h.headers(h.operator_key)).json() == []


def test_the_background_task_runs_cycles_every_interval(tmp_path: Path) -> None:
    node = FakeNode()
    with harness(tmp_path, [node], monitoring_interval_seconds=0.2) as h:
        h.subscribe(h.consent())
        deadline = time.monotonic() + 60
        while len(node.monitor_requests) < 2:
            assert time.monotonic() < deadline, "no two cycles within a minute"
            time.sleep(0.05)
        numbers = [r.cycle for r in node.monitor_requests[:2]]
        assert numbers[1] > numbers[0]


def test_an_answer_that_cannot_be_stored_is_not_acknowledged(
    h: Harness, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The batches and the acknowledgement commit together: when storing fails, the node
    is told nothing new and sends the same events again next cycle."""
    sid = h.subscribe(h.consent()).json()["subscription_id"]
    event = h.nodes[0].raise_event(sid)
    alerts = h.services.monitoring.alerts
    original = alerts.store_answer

    def failing(*args: Any, **kwargs: Any) -> int:
        raise RuntimeError("disk full")

    monkeypatch.setattr(alerts, "store_answer", failing)
    (entry,) = h.cycle()["nodes"]
    assert entry["error"] == "could not store its answer: RuntimeError"
    monkeypatch.setattr(alerts, "store_answer", original)
    h.cycle()
    assert h.nodes[0].monitor_requests[-1].acknowledged_cycle == 0
    (alert,) = _alerts(h).json()["alerts"]
    assert alert["cycle"] == 2 and [e.id for e in _opened(h, alert).events] == [event]


def test_the_logs_name_no_enterprise_secret_or_sealed_batch(
    h: Harness, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    node = h.nodes[0]
    node.mode = "down"
    sid = h.subscribe(h.consent()).json()["subscription_id"]  # not registered: logged
    h.cycle()
    node.mode = "ok"
    secret = h.client.put(
        "/v1/webhook", json={"url": "http://127.0.0.1:9/unreachable"}, headers=h.headers()
    ).json()["secret"]
    h.cycle()  # registers it, now that the node is up
    node.raise_event(sid)
    h.cycle()
    node.mode = "short"
    h.cycle()
    sealed = _alerts(h).json()["alerts"][0]["sealed"]
    assert "not yet registered" in caplog.text and "failed" in caplog.text
    for secret_text in (USCC, secret, secret.removeprefix("whsec_"), sealed[:40]):
        assert secret_text not in caplog.text


def test_a_node_back_from_an_outage_gets_its_subscriptions_in_the_next_cycle(
    h: Harness,
) -> None:
    """Its channel is still in reconnect backoff when the cycle starts (calls on it fail
    at once): the cycle waits for it, within the deadline, to register what it lacks."""
    node = h.nodes[0]
    node.stop()
    out = h.subscribe(h.consent()).json()  # the node is down: not registered
    assert out["nodes"] == [{"node": "yrd-fake", "registered": False}]
    node.start()
    summary = h.cycle()
    assert summary["nodes"] == [
        {"node": "yrd-fake", "batches": 1, "unknown": 0, "ended": 0, "error": None}
    ]
    got = h.client.get(f"/v1/subscriptions/{out['subscription_id']}", headers=h.headers())
    assert got.json()["nodes"] == [{"node": "yrd-fake", "registered": True}]
