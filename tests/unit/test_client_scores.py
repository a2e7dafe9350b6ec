"""score_change in the SDK against a fake coordinator (httpx.MockTransport) serving real
2048-bit Paillier ciphertexts: the first score of a subscription is its baseline, a move
below the threshold is no alert, one at the threshold is, with the two scores; the last
score survives a restart in the inbox; a client without the Paillier key is told which
row it could not read; subscribing signs the model and the bank's key."""

from __future__ import annotations

import base64
import json
import math
from datetime import date, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from creditshare.client import DEFAULT_MODEL_ID, AlertInbox, Identity
from creditshare.crypto import (
    AlertPrivateKey,
    FixedPointEncoding,
    PrivateKey,
    PublicKey,
    SigningKey,
)
from creditshare.errors import AlertBatchError, ClientError, InvalidInputError
from creditshare.monitoring import Signal, SignalChoice, choices_from_json, event_id
from creditshare.signed import SignedSubscription, subscription_document

from .test_client_alerts import NODE, SUB_A, SUB_B, USCC, FakeCoordinator, _event

SCALE = 10**8
#: The model's published scale, as QueryOut.score_scale carries it (the defaults).
SCORE_SCALE = {
    "base_score": 600.0,
    "base_odds": 50.0,
    "points_to_double_odds": 40.0,
    "minimum": 300.0,
    "maximum": 900.0,
}


def _linear(points: int) -> float:
    """The linear score the default scale maps to exactly ``points``."""
    return (600 - points) * math.log(2) / 40 - math.log(50)


class ScoringCoordinator(FakeCoordinator):
    """The fake coordinator, also storing score rows and registering Paillier keys."""

    def score(
        self, key: PrivateKey, sub: str, cycle: int, points: int, threshold: int = 20
    ) -> dict[str, Any]:
        """A score row: the sum of the nodes' shares and the intercept, encrypted."""
        encrypted = FixedPointEncoding(SCALE).encrypt(_linear(points), key.public_key)
        row = {
            "cursor": str(len(self.rows) + 1),
            "kind": "score",
            "subscription_id": sub,
            "node": "",
            "chain": "",
            "department": "",
            "cycle": cycle,
            "stored_at": f"2026-12-0{cycle}T12:00:00Z",
            "sealed": "",
            "encrypted_score": encrypted.to_text(),
            "scale": SCALE,
            "model_id": DEFAULT_MODEL_ID,
            "score_scale": SCORE_SCALE,
            "threshold": threshold,
        }
        self.rows.append(row)
        return row

    def handler(self, request: httpx.Request) -> httpx.Response:
        if request.url.path == "/v1/paillier-keys" and request.method == "POST":
            self.requests.append(request)
            text = json.loads(request.content)["public_key"]
            fingerprint = PublicKey.from_text(text).fingerprint()
            return httpx.Response(201, json={"fingerprint": fingerprint})
        return super().handler(request)


@pytest.fixture
def coordinator() -> ScoringCoordinator:
    return ScoringCoordinator(AlertPrivateKey.generate())


def test_a_baseline_then_moves_below_and_at_the_threshold(
    coordinator: ScoringCoordinator, bank_key: PrivateKey
) -> None:
    coordinator.score(bank_key, SUB_A, 1, 600)  # the baseline: no alert
    coordinator.add(SUB_A, 1)  # a batch row of the same cycle, padding only
    coordinator.score(bank_key, SUB_B, 1, 700, threshold=1)
    coordinator.score(bank_key, SUB_A, 2, 619)  # 19 points: below 20
    coordinator.score(bank_key, SUB_B, 2, 700, threshold=1)  # unchanged
    coordinator.score(bank_key, SUB_A, 3, 599)  # 20 points down from 619: an alert
    judgment = _event(SUB_A, 1, 5)
    coordinator.add(SUB_A, 3, (judgment,))
    with coordinator.client(private_key=bank_key) as client:
        alerts = list(client.alerts())
    score, event = alerts
    assert event.id == judgment.id
    assert (score.signal, score.severity.value, score.indicator) == (
        Signal.SCORE_CHANGE,
        "medium",
        "score",
    )
    assert (score.before, score.after) == ("619", "599")
    assert score.id == event_id("coordinator", SUB_A, 3, Signal.SCORE_CHANGE)
    assert (score.seq, score.snapshot, score.cycle, score.cursor) == (3, 3, 3, "6")
    assert (score.node, score.chain, score.department) == ("", "", "")
    assert (score.subscription_id, score.uscc) == (SUB_A, USCC[SUB_A])
    assert score.observed_at == date(2026, 12, 3)
    assert score.to_json()["type"] == "score_change"


def test_the_last_score_survives_a_restart_and_resends_raise_nothing(
    coordinator: ScoringCoordinator, bank_key: PrivateKey, tmp_path: Path
) -> None:
    path = tmp_path / "inbox.json"
    coordinator.score(bank_key, SUB_A, 1, 640)
    with coordinator.client(private_key=bank_key) as client:
        assert list(client.alerts(inbox=AlertInbox(path))) == []
    assert AlertInbox(path).last_score(SUB_A) == (1, 640)
    coordinator.score(bank_key, SUB_A, 2, 700)
    with coordinator.client(private_key=bank_key) as client:
        (alert,) = client.alerts(inbox=AlertInbox(path))
        assert (alert.before, alert.after) == ("640", "700")
        # Read again from the start with the same inbox: nothing new.
        assert list(client.alerts(after="0", inbox=AlertInbox(path))) == []
        # The same rows delivered by a webhook, twice: the alert once (already seen here).
        inbox = AlertInbox()
        first = list(client.open_alerts(coordinator.rows, inbox))
        again = list(client.open_alerts(coordinator.rows, inbox))
    assert [(a.before, a.after) for a in first] == [("640", "700")] and again == []
    restored = AlertInbox(path)
    assert restored.last_score(SUB_A) == (2, 700) and restored.gaps == ()


def test_an_alert_not_handled_before_a_crash_comes_again(
    coordinator: ScoringCoordinator, bank_key: PrivateKey, tmp_path: Path
) -> None:
    path = tmp_path / "inbox.json"
    coordinator.score(bank_key, SUB_A, 1, 600)
    coordinator.score(bank_key, SUB_A, 2, 650)
    with coordinator.client(private_key=bank_key) as client:
        reading = client.alerts(inbox=AlertInbox(path))
        assert next(reading).after == "650"
        reading.close()  # stopped while handling it
        (again,) = client.alerts(inbox=AlertInbox(path))
    assert (again.before, again.after) == ("600", "650")


def test_a_score_row_without_a_paillier_key_is_an_error_naming_the_cursor(
    coordinator: ScoringCoordinator, bank_key: PrivateKey
) -> None:
    coordinator.add(SUB_A, 1, (_event(SUB_A, 1, 5),))
    coordinator.score(bank_key, SUB_A, 1, 600)
    with coordinator.client() as client:
        reading = client.alerts()
        assert next(reading).node == NODE  # batches still open
        with pytest.raises(ClientError, match=r"alert at cursor 2: .*Paillier key") as caught:
            next(reading)
    assert isinstance(caught.value, AlertBatchError) and caught.value.cursor == "2"
    # Another Paillier key cannot read it either; it is never skipped.
    with (
        coordinator.client(private_key=PrivateKey.generate(2048)) as client,
        pytest.raises(AlertBatchError, match="alert at cursor 2"),
    ):
        list(client.alerts())


def test_a_malformed_score_row_is_an_error_naming_the_cursor(
    coordinator: ScoringCoordinator, bank_key: PrivateKey
) -> None:
    row = coordinator.score(bank_key, SUB_A, 1, 600)
    del row["threshold"]
    with (
        coordinator.client(private_key=bank_key) as client,
        pytest.raises(AlertBatchError, match=r"alert at cursor 1: .*threshold"),
    ):
        list(client.alerts())


def test_subscribing_to_score_change_signs_the_model_and_the_banks_paillier_key(
    coordinator: ScoringCoordinator, bank_key: PrivateKey
) -> None:
    bank = SigningKey.generate()
    identity = Identity("demo-bank", bank, (b"unused",))
    with coordinator.client(identity=identity, private_key=bank_key) as client:
        client.subscribe(USCC[SUB_A], "cd" * 16, {"score_change": 30, "court_judgment": None})
        client.subscribe(USCC[SUB_B], "ef" * 16, ["score_change"], model_id="other-v2")
        client.subscribe(USCC[SUB_B], "ef" * 16, ["court_judgment"])
        with pytest.raises(InvalidInputError, match="model_id is for score_change"):
            client.subscribe(USCC[SUB_B], "ef" * 16, ["court_judgment"], model_id="x")
    first, second, plain = coordinator.posted
    fingerprint = bank_key.public_key.fingerprint()
    assert (first["model_id"], first["key_fingerprint"]) == (DEFAULT_MODEL_ID, fingerprint)
    assert (second["model_id"], second["key_fingerprint"]) == ("other-v2", fingerprint)
    assert second["signals"] == [SignalChoice.of("score_change").to_json()]
    assert second["signals"][0]["threshold"] == 50
    assert "model_id" not in plain and "key_fingerprint" not in plain
    registered = [r for r in coordinator.requests if r.url.path == "/v1/paillier-keys"]
    assert len(registered) == 1  # once per client
    for body in (first, second, plain):
        document = subscription_document(
            subscription_id=body["subscription_id"],
            requester="demo-bank",
            uscc=body["uscc"],
            consent_id=body["consent_id"],
            chains=body.get("chains", []),
            signals=choices_from_json(body["signals"]),
            alert_key=coordinator.key.public_key(),
            time=datetime.fromisoformat(body["requested_at"]),
            model_id=body.get("model_id", ""),
            key_fingerprint=body.get("key_fingerprint", ""),
        )
        signed = SignedSubscription.from_json(
            {"document": document, "signature": body["signature"]}
        )
        signed.verify(bank.verify_key)
    assert base64.b64decode(first["alert_key"])  # the alert key is still signed in too
