"""POST/GET/DELETE /v1/subscriptions: every check before anything is written, what is
recorded, and routing to the nodes that raise a chosen signal.

The nodes here are FAKE monitoring nodes (tests/integration/_monitoring.py): these
tests are about the coordinator's side only; real nodes check the same requests again
in the node's and the end-to-end tests.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from creditshare._canonical import canonical_json
from creditshare.consent import Purpose
from creditshare.coordinator.monitoring import _service as monitoring_service
from creditshare.crypto import AlertPrivateKey
from creditshare.identity import Chain
from creditshare.monitoring import SIGNAL_RULES, Signal

from .._authority import authority
from ._monitoring import USCC, FakeNode, Harness, harness


@pytest.fixture
def h(tmp_path: Path) -> Iterator[Harness]:
    court = FakeNode("yrd-court", ["court_judgment", "dishonest_debtor"])
    tax = FakeNode("yrd-tax", ["tax_arrears"])
    with harness(tmp_path, [court, tax]) as running:
        yield running


def _problem(response: Any, status: int) -> str:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    return str(response.json()["detail"])


def test_a_subscription_is_recorded_and_registered_on_the_nodes_raising_its_signals(
    h: Harness,
) -> None:
    consent_id = h.consent()
    before = h.services.ledger.size()
    response = h.subscribe(consent_id, signals=[{"type": "court_judgment", "threshold": 2}])
    assert response.status_code == 201, response.text
    out = response.json()
    sid = out["subscription_id"]
    assert out["status"] == "active" and out["uscc"] == USCC
    assert out["signals"] == [{"type": "court_judgment", "threshold": 2}]
    assert out["chains"] == ["bth", "prd", "yrd"]  # the consent's: the subscription named none
    assert out["alert_key_fingerprint"] == h.alert_key.public_key().fingerprint()
    # Routed by signals: the tax node raises no court_judgment and is not asked.
    assert out["nodes"] == [{"node": "yrd-court", "registered": True}]
    court, tax = h.nodes
    assert [w.receipt.leaf_index for w in court.watch_requests] == [out["ledger_index"]]
    assert tax.watch_requests == []
    # One ledger record, in the enterprise's access log, saying what both signed.
    assert h.services.ledger.size() == before + 1
    subject, record = h.records()[out["ledger_index"]]
    assert subject == USCC
    assert record["kind"] == "subscription" and record["query_id"] == sid
    assert record["requester"] == authority().bank_id and record["requester_role"] == "bank"
    assert record["purpose"] == "post_loan_monitoring" and record["consent_id"] == consent_id
    assert record["key_fingerprint"] == out["alert_key_fingerprint"]
    assert record["chains"] == ["bth", "prd", "yrd"] and record["indicators"] == ["*"]
    assert record["request"]["document"]["subscription_id"] == sid
    assert record["consent"]["document"]["uscc"] == USCC
    assert record["consent"]["document"]["purpose"] == "post_loan_monitoring"
    # What the node was handed is the signed subscription of the record.
    assert court.watch_requests[0].subscription == canonical_json(record["request"])


def test_the_default_threshold_is_filled_in(h: Harness) -> None:
    response = h.subscribe(h.consent(), signals=[{"type": "court_judgment"}])
    assert response.status_code == 201, response.text
    default = SIGNAL_RULES[Signal.COURT_JUDGMENT].threshold
    assert default is not None
    assert response.json()["signals"] == [{"type": "court_judgment", "threshold": default[2]}]


def _refused(h: Harness, response: Any, status: int, *words: str) -> None:
    detail = _problem(response, status)
    for word in words:
        assert word in detail, detail


BAD_SIGNALS = [
    ([{"type": "volcano_eruption"}], "unknown signal type 'volcano_eruption'"),
    ([{"type": "court_judgment", "threshold": 0}], "threshold 0 is outside 1..1000"),
    ([{"type": "headcount_drop", "threshold": 101}], "threshold 101 is outside 1..100"),
    ([{"type": "dishonest_debtor", "threshold": 1}], "dishonest_debtor takes no threshold"),
    ([{"type": "court_judgment"}, {"type": "court_judgment"}], "more than once"),
    # Known, but no node in scope raises it.
    ([{"type": "utility_arrears"}], "signal utility_arrears: no data node"),
]


@pytest.mark.parametrize(("signals", "words"), BAD_SIGNALS)
def test_bad_signals_are_refused_naming_them_and_nothing_is_written(
    h: Harness, signals: list[dict[str, Any]], words: str
) -> None:
    consent_id = h.consent()
    before = h.written()
    _refused(h, h.subscribe(consent_id, signals=signals), 422, words)
    assert h.written() == before
    assert all(n.watch_requests == [] for n in h.nodes)


@pytest.mark.parametrize(
    "signals",
    [[], [{"type": "court_judgment", "threshold": "many"}], [{"kind": "court_judgment"}]],
)
def test_malformed_signal_lists_are_refused(h: Harness, signals: list[Any]) -> None:
    consent_id = h.consent()
    before = h.written()
    body = h.body(consent_id, [{"type": "court_judgment"}]) | {"signals": signals}
    response = h.client.post("/v1/subscriptions", json=body, headers=h.headers())
    assert response.status_code == 422, response.text
    assert h.written() == before


def test_consents_that_do_not_cover_monitoring_are_refused_and_nothing_is_written(
    h: Harness,
) -> None:
    cases = {
        "pre-loan review": (h.consent(purpose=Purpose.PRE_LOAN_REVIEW), "purpose"),
        "another bank's": (h.consent(grantee="bank-2"), "another participant"),
        "unknown": ("0" * 32, "no consent"),
    }
    revoked = h.consent()
    h.services.consents.revoke(revoked, h.services.participants.get("ops"))
    cases["revoked"] = (revoked, "revoked")
    before = h.written()
    for consent_id, words in cases.values():
        _refused(h, h.subscribe(consent_id), 403, words)
    assert h.written() == before
    assert all(n.watch_requests == [] for n in h.nodes)


def test_an_expired_consent_is_refused(tmp_path: Path) -> None:
    with harness(tmp_path) as h:
        consent_id = h.consent(valid_until=h.clock() + timedelta(seconds=2))
        h.clock.offset = timedelta(seconds=5)  # within the signature's allowed skew
        before = h.written()
        _refused(h, h.subscribe(consent_id), 403, "expired")
        assert h.written() == before


def test_a_chain_outside_the_consent_is_refused(h: Harness) -> None:
    consent_id = h.consent(chains=(Chain.YRD,))
    before = h.written()
    _refused(h, h.subscribe(consent_id, chains=["prd"]), 403, "outside the consent")
    _refused(h, h.subscribe(consent_id, chains=["yrd", "bth"]), 403, "bth")
    # Within the consent, but no node is on "prd": nothing to watch there.
    _refused(h, h.subscribe(h.consent(), chains=["prd"]), 422, "no data node")
    assert h.written() == before
    # The consent's own chains when the subscription names none: recorded as such.
    out = h.subscribe(consent_id).json()
    assert out["chains"] == ["yrd"] and h.records()[-1][1]["chains"] == ["yrd"]


def test_a_bad_signature_or_alert_key_is_refused_and_nothing_is_written(h: Harness) -> None:
    consent_id = h.consent()
    before = h.written()
    body = h.body(consent_id)
    tampered = body | {"signals": [{"type": "dishonest_debtor"}]}  # signed other signals
    _refused(h, h.client.post("/v1/subscriptions", json=tampered, headers=h.headers()), 403)
    other_key = AlertPrivateKey.generate().public_key().to_text()
    swapped = body | {"alert_key": other_key}  # signed another key
    _refused(h, h.client.post("/v1/subscriptions", json=swapped, headers=h.headers()), 403)
    bad_key = body | {"alert_key": "not base64!"}
    _refused(h, h.client.post("/v1/subscriptions", json=bad_key, headers=h.headers()), 422)
    assert h.written() == before


def test_only_banks_subscribe(h: Harness) -> None:
    consent_id = h.consent()
    before = h.written()
    response = h.client.post(
        "/v1/subscriptions", json=h.body(consent_id), headers=h.headers(h.operator_key)
    )
    _refused(h, response, 403, "role operator")
    assert h.written() == before


def test_the_same_subscription_id_again_is_a_conflict(h: Harness) -> None:
    consent_id = h.consent()
    first = h.subscribe(consent_id)
    assert first.status_code == 201, first.text
    before = h.written()
    again = h.subscribe(consent_id, subscription_id=first.json()["subscription_id"])
    _refused(h, again, 409, "exists already")
    assert h.written() == before


def test_listing_reading_and_cancelling(h: Harness) -> None:
    consent_id = h.consent()
    a = h.subscribe(consent_id).json()
    b = h.subscribe(consent_id, signals=[{"type": "dishonest_debtor"}]).json()
    listed = h.client.get("/v1/subscriptions", headers=h.headers()).json()
    assert [s["subscription_id"] for s in listed] == [a["subscription_id"], b["subscription_id"]]
    assert h.client.get("/v1/subscriptions", headers=h.headers(h.other_bank_key)).json() == []
    path = f"/v1/subscriptions/{a['subscription_id']}"
    assert h.client.get(path, headers=h.headers()).json() == a
    # Another bank's subscription is as unknown as none, and it cannot end it.
    before = h.written()
    _problem(h.client.get(path, headers=h.headers(h.other_bank_key)), 404)
    _problem(h.client.delete(path, headers=h.headers(h.other_bank_key)), 404)
    _problem(h.client.get("/v1/subscriptions/not-an-id", headers=h.headers()), 404)
    assert h.written() == before
    ended = h.client.delete(path, headers=h.headers())
    assert ended.status_code == 200, ended.text
    out = ended.json()
    assert out["status"] == "ended" and out["ended_reason"] == "cancelled by the bank"
    assert out["ended_at"] is not None
    subject, record = h.records()[-1]
    assert subject == USCC and record["kind"] == "subscription_end"
    assert record["query_id"] == a["subscription_id"]
    assert record["reason"] == "cancelled by the bank" and record["consent_id"] == consent_id
    # Ending it again changes nothing and records nothing.
    size = h.services.ledger.size()
    assert h.client.delete(path, headers=h.headers()).json() == out
    assert h.services.ledger.size() == size
    active = h.client.get("/v1/subscriptions?status=active", headers=h.headers()).json()
    assert [s["subscription_id"] for s in active] == [b["subscription_id"]]
    ended_list = h.client.get("/v1/subscriptions?status=ended", headers=h.headers()).json()
    assert [s["subscription_id"] for s in ended_list] == [a["subscription_id"]]
    _problem(h.client.get("/v1/subscriptions?status=paused", headers=h.headers()), 422)


def test_revoking_the_consent_ends_its_subscriptions(h: Harness) -> None:
    consent_id = h.consent()
    other = h.subscribe(h.consent()).json()
    sid = h.subscribe(consent_id).json()["subscription_id"]
    response = h.client.post(
        f"/v1/consents/{consent_id}/revoke", headers=h.headers(h.enterprise_key)
    )
    assert response.status_code == 200, response.text
    out = h.client.get(f"/v1/subscriptions/{sid}", headers=h.headers()).json()
    assert out["status"] == "ended" and out["ended_reason"] == "consent revoked"
    ends = [r for _, r in h.records() if r["kind"] == "subscription_end"]
    assert [(r["query_id"], r["reason"]) for r in ends] == [(sid, "consent revoked")]
    # The other consent's subscription goes on, and is the only one a cycle serves.
    summary = h.cycle()
    assert summary["nodes"] == [
        {"node": "yrd-court", "batches": 1, "unknown": 0, "ended": 0, "error": None}
    ]
    asked = h.nodes[0].monitor_requests[-1]
    assert [s.subscription_id for s in asked.subscriptions] == [other["subscription_id"]]


def test_an_expired_consent_ends_its_subscriptions_at_the_next_cycle(h: Harness) -> None:
    consent_id = h.consent(valid_until=h.clock() + timedelta(hours=1))
    sid = h.subscribe(consent_id).json()["subscription_id"]
    h.clock.offset = timedelta(hours=2)
    h.cycle()
    out = h.client.get(f"/v1/subscriptions/{sid}", headers=h.headers()).json()
    assert out["status"] == "ended" and out["ended_reason"] == "consent expired"
    assert [r["reason"] for _, r in h.records() if r["kind"] == "subscription_end"] == [
        "consent expired"
    ]
    # Nothing left to serve: the node is asked only to end it (and so stops watching).
    (request,) = h.nodes[0].monitor_requests
    assert list(request.subscriptions) == [] and list(request.ended) == [sid]


def test_subscriptions_of_an_expired_consent_end_between_cycles(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(monitoring_service, "_SWEEP_SECONDS", 0.05)
    with harness(tmp_path) as h:
        consent_id = h.consent(valid_until=h.clock() + timedelta(hours=1))
        sid = h.subscribe(consent_id).json()["subscription_id"]
        path = f"/v1/subscriptions/{sid}"
        assert h.client.get(path, headers=h.headers()).json()["status"] == "active"
        h.clock.offset = timedelta(hours=2)
        deadline = time.monotonic() + 60
        while h.client.get(path, headers=h.headers()).json()["status"] == "active":
            assert time.monotonic() < deadline, "the expired consent's subscription goes on"
            time.sleep(0.02)
        out = h.client.get(path, headers=h.headers()).json()
        assert out["ended_reason"] == "consent expired"
        assert h.client.get("/v1/monitoring/cycles", headers=h.headers(h.operator_key)).json() == []


def test_the_signal_types_say_which_nodes_raise_them(h: Harness) -> None:
    signals = {s["type"]: s for s in h.client.get("/v1/signals", headers=h.headers()).json()}
    assert set(signals) == {s.value for s in Signal}
    court = signals["court_judgment"]
    assert court["nodes"] == ["yrd-court"] and court["chains"] == ["yrd"]
    assert court["threshold"] == {"minimum": 1, "maximum": 1000, "default": 1}
    assert court["severity"] == "high" and court["rule"] == "increase"
    assert signals["dishonest_debtor"]["threshold"] is None
    assert signals["tax_arrears"]["nodes"] == ["yrd-tax"]
    assert signals["utility_arrears"]["nodes"] == []
    assert h.client.get("/v1/signals").status_code == 401
