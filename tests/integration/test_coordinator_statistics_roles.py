"""The regulator is a participant like the others: registered, listed, keyed; and it can
do nothing a bank, bureau or enterprise does (its one door is /v1/statistics)."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from creditshare.coordinator import CoordinatorSettings, create_app
from creditshare.coordinator._admin import init_log_key

from ..e2e.conftest import fresh_modulus


@pytest.fixture
def coordinator(tmp_path: Path) -> Iterator[TestClient]:
    init_log_key(tmp_path / "log.pem")
    settings = CoordinatorSettings(
        database_url=f"sqlite:///{tmp_path / 'c.db'}",
        log_signing_key_file=tmp_path / "log.pem",
        allow_insecure=True,
        nodes=[{"id": "yrd-tax", "chain": "yrd", "department": "tax", "address": "127.0.0.1:9"}],
        node_probe_interval_seconds=0,
    )
    app = create_app(settings)
    with TestClient(app) as client:
        operator = app.state.services.participants.register("op-1", "operator", "Operator")
        key = app.state.services.participants.issue_key(operator.id).api_key
        client.headers["Authorization"] = f"Bearer {key}"
        yield client


def _as(api_key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {api_key}"}


def test_an_operator_registers_and_lists_a_regulator(coordinator: TestClient) -> None:
    made = coordinator.post(
        "/v1/participants", json={"id": "pboc-sh", "role": "regulator", "name": "PBoC Shanghai"}
    )
    assert made.status_code == 201, made.text
    assert made.json()["participant"]["role"] == "regulator"
    listed = coordinator.get("/v1/participants", params={"role": "regulator"})
    assert [p["id"] for p in listed.json()] == ["pboc-sh"]
    # An unknown role is still refused, naming the regulator among the choices.
    wrong = coordinator.post(
        "/v1/participants", json={"id": "x-1", "role": "central-bank", "name": "X"}
    )
    assert wrong.status_code == 422
    assert "regulator" in wrong.json()["detail"]


def test_a_regulator_registers_a_paillier_key_but_runs_no_bank_query(
    coordinator: TestClient,
) -> None:
    made = coordinator.post(
        "/v1/participants", json={"id": "pboc-sh", "role": "regulator", "name": "PBoC Shanghai"}
    )
    regulator = _as(made.json()["api_key"])
    n = fresh_modulus()
    registered = coordinator.post(
        "/v1/paillier-keys",
        json={"public_key": base64.b64encode(n.to_bytes(256, "big")).decode()},
        headers=regulator,
    )
    assert registered.status_code == 201, registered.text
    assert coordinator.get("/v1/paillier-keys", headers=regulator).status_code == 200
    for method, path in (
        ("POST", "/v1/queries"),
        ("GET", "/v1/consents"),
        ("GET", "/v1/training-jobs"),
        ("GET", "/v1/subscriptions"),
    ):
        answer = coordinator.request(method, path, json={}, headers=regulator)
        assert answer.status_code == 403, (path, answer.text)
        assert "regulator" in answer.json()["detail"]
