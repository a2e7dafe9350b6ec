"""Post-loan monitoring end to end: real node processes, a real coordinator, HTTP between.

A bank subscribes to its borrowers under their post_loan_monitoring consents; the court
department imports a new snapshot; the next monitoring cycle brings the bank a sealed
batch it alone opens. Around that path: a bank without such a consent gets nothing, a
revoked consent stops the alerts, a node that was down delivers what it held once it is
back (once, after deduplication), and a failing webhook endpoint is retried until it
takes the delivery.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI, Request, Response

from creditshare.client import AlertInbox, CreditShareClient, verify_webhook
from creditshare.consent import Purpose
from creditshare.crypto import AlertPrivateKey
from creditshare.demo import Federation
from creditshare.errors import ClientError, ProblemError
from creditshare.node._storage import make_engine
from creditshare.node.monitoring import MonitoringStore

from ._monitoring import COURT, WATCH, CourtRecords, cycle, ledger_size, monitoring_consent
from .conftest import Trust, placeholder_signature


def test_judgment_reaches_the_bank_within_one_cycle_for_that_borrower_only(
    monitored: Federation, mtrust: Trust, tmp_path: Path
) -> None:
    court = CourtRecords(monitored, tmp_path)
    judged, quiet = court.clean(2)
    subscriptions = {
        uscc: mtrust.bank.subscribe(uscc, monitoring_consent(mtrust, uscc), signals=WATCH)
        for uscc in (judged, quiet)
    }
    for uscc, sub in subscriptions.items():
        assert sub["status"] == "active" and sub["uscc"] == uscc
        # Registered on the court node: the only node of the chain raising these signals.
        assert [n["node"] for n in sub["nodes"]] == [COURT]
        # Each subscription is in its enterprise's access log.
        enterprise, _ = mtrust.enterprise(uscc)
        logged = enterprise.enterprise_queries(uscc)
        assert any(
            e["record"]["kind"] == "subscription"
            and e["record"]["query_id"] == sub["subscription_id"]
            for e in logged
        ), logged

    inbox = AlertInbox(tmp_path / "inbox.json")
    first = cycle(mtrust)
    assert [n["node"] for n in first["nodes"] if not n.get("error")] == [COURT]
    assert list(mtrust.bank.alerts(inbox=inbox)) == []  # batches arrived, all padding

    court.judgment(judged)
    cycle(mtrust)
    alerts = list(mtrust.bank.alerts(inbox=inbox))
    assert len(alerts) == 1
    alert = alerts[0]
    assert alert.uscc == judged
    assert alert.subscription_id == subscriptions[judged]["subscription_id"]
    assert alert.signal.value == "court_judgment"
    assert alert.severity.value == "high"
    assert alert.node == COURT and alert.department == "court"
    # Before/after are the consent's bands (it covers every indicator), never raw counts.
    # (Its first judgment: the court held no record of it before.)
    assert (alert.indicator, alert.before, alert.after) == ("judgments_band", "", "1")
    assert alert.seq == 1

    # A later cycle repeats nothing: the node had its acknowledgement.
    cycle(mtrust)
    assert list(mtrust.bank.alerts(inbox=inbox)) == []


def test_a_bank_without_a_monitoring_consent_gets_nothing(
    monitored: Federation, mtrust: Trust, tmp_path: Path
) -> None:
    court = CourtRecords(monitored, tmp_path)
    (uscc,) = court.clean(1)
    mtrust.bank.subscribe(uscc, monitoring_consent(mtrust, uscc), signals=WATCH)
    other_key, other_identity = mtrust.participant("other-bank", "bank", "Other Bank")
    pre_loan = mtrust.consent(uscc, grantee="other-bank")  # pre-loan review only
    other = CreditShareClient(
        mtrust.url, api_key=other_key, identity=other_identity, alert_key=AlertPrivateKey.generate()
    )
    size = ledger_size(mtrust)
    with pytest.raises(ProblemError) as refused:
        other.subscribe(uscc, pre_loan, signals=WATCH)
    assert refused.value.status == 403, refused.value
    assert ledger_size(mtrust) == size  # refused before anything was recorded
    assert other.subscriptions() == []

    court.judgment(uscc)
    cycle(mtrust)
    assert list(other.alerts(inbox=AlertInbox(tmp_path / "other.json"))) == []
    mine = list(mtrust.bank.alerts(inbox=AlertInbox(tmp_path / "mine.json")))
    assert [a.uscc for a in mine] == [uscc]
    other.close()


def test_nothing_arrives_after_the_consent_is_revoked(
    monitored: Federation, mtrust: Trust, tmp_path: Path
) -> None:
    court = CourtRecords(monitored, tmp_path)
    (uscc,) = court.clean(1)
    consent = monitoring_consent(mtrust, uscc)
    sub = mtrust.bank.subscribe(uscc, consent, signals=WATCH)
    inbox = AlertInbox(tmp_path / "inbox.json")
    cycle(mtrust)
    assert list(mtrust.bank.alerts(inbox=inbox)) == []

    enterprise, signing = mtrust.enterprise(uscc)
    enterprise.revoke_consent(consent, signing)
    ended = mtrust.bank.subscription(sub["subscription_id"])
    assert ended["status"] == "ended" and "revoked" in ended["ended_reason"]
    logged = enterprise.enterprise_queries(uscc)
    assert any(
        e["record"]["kind"] == "subscription_end"
        and e["record"]["query_id"] == sub["subscription_id"]
        for e in logged
    )

    court.judgment(uscc)
    summary = cycle(mtrust)
    assert summary["subscriptions"] == 0
    raw = mtrust.bank.get(f"/v1/alerts?after={inbox.cursor}")
    assert raw["alerts"] == []  # not even padding: the subscription is over
    assert list(mtrust.bank.alerts(inbox=inbox)) == []


def test_a_node_down_during_a_cycle_delivers_once_it_is_back(
    monitored: Federation, mtrust: Trust, tmp_path: Path
) -> None:
    court = CourtRecords(monitored, tmp_path)
    (uscc,) = court.clean(1)
    mtrust.bank.subscribe(uscc, monitoring_consent(mtrust, uscc), signals=WATCH)
    inbox = AlertInbox(tmp_path / "inbox.json")
    cycle(mtrust)

    court.judgment(uscc)  # the department imports while its node is serving...
    monitored.stop_node(COURT)  # ...then the node goes down before the cycle
    summary = cycle(mtrust)
    failed = [n for n in summary["nodes"] if n.get("error")]
    assert [n["node"] for n in failed] == [COURT]
    assert list(mtrust.bank.alerts(inbox=inbox)) == []

    monitored.start_node(COURT)
    cycle(mtrust)
    cycle(mtrust)
    alerts = list(mtrust.bank.alerts(inbox=inbox))
    assert [(a.uscc, a.signal.value) for a in alerts] == [(uscc, "court_judgment")]
    # A fresh reader from the start sees it once too: repeats (if any) share its id.
    again = list(mtrust.bank.alerts(inbox=AlertInbox(tmp_path / "fresh.json")))
    assert [a.id for a in again] == [alerts[0].id]
    assert not inbox.gaps


def _on_node(monitored: Federation, court: CourtRecords, subscription_id: str) -> Any:
    """The court node's own row for a subscription and its waiting events, read from
    the node's database (what it keeps, not what it says)."""
    url = monitored.layout.node_settings(court.node).database_url
    engine = make_engine(url)
    try:
        store = MonitoringStore(engine, lambda: datetime.now(UTC))
        return store.subscription(subscription_id), store.pending_events(subscription_id)
    finally:
        engine.dispose()


def test_a_cancelled_subscription_ends_on_the_node_and_raises_nothing_more(
    monitored: Federation, mtrust: Trust, tmp_path: Path
) -> None:
    court = CourtRecords(monitored, tmp_path)
    cancelled, kept = court.clean(2)
    subs = {
        uscc: mtrust.bank.subscribe(uscc, monitoring_consent(mtrust, uscc), signals=WATCH)
        for uscc in (cancelled, kept)
    }
    gone = subs[cancelled]["subscription_id"]
    inbox = AlertInbox(tmp_path / "inbox.json")
    cycle(mtrust)
    assert list(mtrust.bank.alerts(inbox=inbox)) == []
    row, _ = _on_node(monitored, court, gone)
    assert row is not None and row["ended_reason"] is None

    ended = mtrust.bank.unsubscribe(gone)
    assert ended["status"] == "ended" and ended["ended_reason"] == "cancelled by the bank"
    summary = cycle(mtrust)  # tells the court node, which has registered it
    assert summary["subscriptions"] == 1
    assert [n["node"] for n in summary["nodes"] if not n.get("error")] == [COURT]
    row, events = _on_node(monitored, court, gone)
    assert row is not None and row["ended_reason"] == "ended by the coordinator"
    assert events == []
    registered = mtrust.bank.subscription(gone)["nodes"]
    assert registered == [{"node": COURT, "registered": False}]

    court.judgment(cancelled)  # the node raises nothing for a subscription it ended...
    court.judgment(kept)  # ...while the other one still works
    _, events = _on_node(monitored, court, gone)
    assert events == []
    _, waiting = _on_node(monitored, court, subs[kept]["subscription_id"])
    assert [e.signal.value for e in waiting] == ["court_judgment"]
    cycle(mtrust)
    alerts = list(mtrust.bank.alerts(inbox=inbox))
    assert [(a.uscc, a.subscription_id) for a in alerts] == [(kept, subs[kept]["subscription_id"])]
    stored = mtrust.bank.get("/v1/alerts")["alerts"]
    last_before_cancel = [a for a in stored if a["subscription_id"] == gone]
    assert {a["cycle"] for a in last_before_cancel} == {1}  # nothing after it ended


class FlakyEndpoint:
    """A bank's webhook receiver that fails its first ``failures`` deliveries."""

    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.attempts: list[tuple[dict[str, str], bytes]] = []
        self.accepted: list[tuple[dict[str, str], bytes]] = []
        self.lock = threading.Lock()
        self.app = FastAPI()
        self.app.post("/hooks")(self.receive)

    async def receive(self, request: Request) -> Response:
        body = await request.body()
        headers = {k.lower(): v for k, v in request.headers.items()}
        with self.lock:
            self.attempts.append((headers, body))
            if len(self.attempts) <= self.failures:
                return Response(status_code=503)
            self.accepted.append((headers, body))
        return Response(status_code=204)


def _wait_for(condition: Callable[[], bool], what: str, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)


def test_webhook_deliveries_are_retried_until_they_arrive(
    monitored: Federation,
    mtrust: Trust,
    tmp_path: Path,
    serve_app: Callable[[FastAPI], AbstractContextManager[str]],
) -> None:
    court = CourtRecords(monitored, tmp_path)
    (uscc,) = court.clean(1)
    mtrust.bank.subscribe(uscc, monitoring_consent(mtrust, uscc), signals=WATCH)
    endpoint = FlakyEndpoint(failures=3)
    with serve_app(endpoint.app) as url:
        hook = mtrust.bank.set_webhook(f"{url}/hooks")
        secret = hook["secret"]
        assert secret.startswith("whsec_")
        court.judgment(uscc)
        cycle(mtrust)
        _wait_for(lambda: bool(endpoint.accepted), "the webhook delivery")
    assert len(endpoint.attempts) >= 4
    headers, body = endpoint.accepted[0]
    # The retries are the same delivery (one id), and its signature checks out.
    assert {h["webhook-id"] for h, _ in endpoint.attempts} == {headers["webhook-id"]}
    payload = verify_webhook(secret, headers, body)
    assert payload["type"] == "alerts.batch"
    delivered = payload["data"]["alerts"]
    # The delivery carries the same sealed batches the stream does: the bank opens them.
    streamed = mtrust.bank.get("/v1/alerts")["alerts"]
    assert [a["cursor"] for a in delivered] == [a["cursor"] for a in streamed]
    alerts = list(mtrust.bank.alerts(inbox=AlertInbox(tmp_path / "inbox.json")))
    assert [(a.uscc, a.signal.value) for a in alerts] == [(uscc, "court_judgment")]
    with pytest.raises(ClientError):
        verify_webhook(secret, headers, body.replace(b"alerts", b"alertz", 1))
    deliveries = mtrust.bank.get("/v1/webhook/deliveries")
    assert any(d["status"] == "delivered" and d["attempts"] >= 4 for d in deliveries), json.dumps(
        deliveries
    )[:500]


def test_bad_requests_are_refused_and_write_nothing(
    monitored: Federation, mtrust: Trust, tmp_path: Path
) -> None:
    court = CourtRecords(monitored, tmp_path)
    (uscc,) = court.clean(1)
    consent = monitoring_consent(mtrust, uscc)
    pre_loan = mtrust.consent(uscc)
    size = ledger_size(mtrust)
    headers = {"Authorization": f"Bearer {mtrust.bank_api_key}"}
    url = mtrust.url

    def status_of(call: Callable[[], Any]) -> int:
        try:
            call()
        except ProblemError as exc:
            return exc.status
        return 200

    alert_key = AlertPrivateKey.generate().public_key().to_text()

    def raw(signals: Any) -> httpx.Response:
        """A body no SDK would build (it checks signals first): the coordinator's answer."""
        body = {
            "uscc": uscc,
            "consent_id": consent,
            "signals": signals,
            "alert_key": alert_key,
        } | placeholder_signature("subscription_id")
        return httpx.post(f"{url}/v1/subscriptions", json=body, headers=headers, timeout=30)

    for signals, named in (
        ([{"type": "weather"}], "weather"),
        ([{"type": "court_judgment", "threshold": 0}], "court_judgment"),
        ([{"type": "headcount_drop", "threshold": 101}], "headcount_drop"),
        ([{"type": "dishonest_debtor", "threshold": 3}], "dishonest_debtor"),
        ([], "signal"),
        ([{"type": "court_judgment"}, {"type": "court_judgment"}], "more than once"),
    ):
        response = raw(signals)
        assert response.status_code == 422, (signals, response.text)
        assert named in response.text, response.text
    assert status_of(lambda: mtrust.bank.subscribe(uscc, pre_loan, signals=WATCH)) == 403
    # Social insurance is not among this chain's departments: nothing could raise it.
    assert (
        status_of(lambda: mtrust.bank.subscribe(uscc, consent, signals={"headcount_drop": 20}))
        == 422
    )
    for cursor in ("999999", "abc", "-1"):
        response = httpx.get(f"{url}/v1/alerts", params={"after": cursor}, headers=headers)
        assert response.status_code in (400, 404, 422), (cursor, response.text)
        assert response.headers["content-type"].startswith("application/problem+json")
    assert ledger_size(mtrust) == size
    assert mtrust.bank.subscriptions() == []


def test_a_score_move_reaches_the_bank_as_the_query_path_scores_it(
    monitored: Federation, mtrust: Trust, tmp_path: Path
) -> None:
    court = CourtRecords(monitored, tmp_path)
    (uscc,) = court.clean(1)
    consent = monitoring_consent(mtrust, uscc)
    sub = mtrust.bank.subscribe(uscc, consent, signals={"score_change": 1})
    assert sub["model_id"] == "sme-scorecard-v1"
    # Every node holding a share of the model serves it (the score is their sum).
    assert sorted(n["node"] for n in sub["nodes"]) == ["yrd-court", "yrd-market", "yrd-tax"]
    inbox = AlertInbox(tmp_path / "inbox.json")
    cycle(mtrust)  # the first score is the baseline: nothing to compare with
    assert list(mtrust.bank.alerts(inbox=inbox)) == []
    before = mtrust.bank.query(uscc, consent, purpose=Purpose.POST_LOAN_MONITORING).score
    cycle(mtrust)  # the score has not moved: no alert
    assert list(mtrust.bank.alerts(inbox=inbox)) == []

    court.judgment(uscc)
    cycle(mtrust)
    alerts = list(mtrust.bank.alerts(inbox=inbox))
    after = mtrust.bank.query(uscc, consent, purpose=Purpose.POST_LOAN_MONITORING).score
    assert after != before  # its first court record moved the score
    assert len(alerts) == 1
    alert = alerts[0]
    assert (alert.signal.value, alert.uscc, alert.indicator) == ("score_change", uscc, "score")
    # The monitored score is the score the bank's own query gets, before and after.
    assert (int(alert.before), int(alert.after)) == (before, after)
