"""Operations: probes, Prometheus metrics, JSON logs with a request id, graceful shutdown.

Real processes and real HTTP: the federation's nodes and coordinator write their
logs to files (JSON lines by default), and a second coordinator replica runs
in-process under uvicorn where a test needs its metrics registry or its engine.
"""

from __future__ import annotations

import json
import logging
import signal
import threading
import time
import uuid
from collections.abc import Callable
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from prometheus_client.parser import text_string_to_metric_families

from creditshare.client import CreditShareClient
from creditshare.consent import Purpose
from creditshare.coordinator import CoordinatorSettings, create_app
from creditshare.coordinator._admin import init_log_key
from creditshare.crypto import PrivateKey, SigningKey
from creditshare.demo import Federation, read_enterprises
from creditshare.errors import ProblemError

from .conftest import Trust, register_fresh_key, signed_job_body

ServeApp = Callable[[FastAPI], AbstractContextManager[str]]
Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def _uscc(federation: Federation) -> str:
    rows = read_enterprises(federation.layout.data_dir)
    return next(r["uscc"] for r in rows if r["record_chains"] == "yrd")


def _scrape(url: str, **headers: str) -> tuple[str, Samples]:
    response = httpx.get(f"{url}/metrics", headers=headers, timeout=10)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain")
    samples: Samples = {}
    for family in text_string_to_metric_families(response.text):
        for sample in family.samples:
            samples[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return response.text, samples


def _value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def _log_lines(federation: Federation, name: str) -> list[dict[str, Any]]:
    """Every line a process logged, each parsed as JSON (a line that is not fails)."""
    path = federation.layout.work_dir / "logs" / f"{name}.log"
    lines = path.read_text(encoding="utf-8").splitlines()
    docs = [json.loads(line) for line in lines if line.strip()]
    for doc in docs:
        assert {"time", "level", "logger", "message"} <= doc.keys(), doc
    return docs


def _query_body(uscc: str, consent: str, key: PrivateKey) -> dict[str, str]:
    return {
        "uscc": uscc,
        "model_id": "sme-scorecard-v1",
        "purpose": "pre_loan_review",
        "consent_id": consent,
        "key_fingerprint": key.public_key.fingerprint(),
    }


def test_metrics_count_queries_node_calls_ledger_and_training_jobs(
    small_federation: Federation, small_trust: Trust, bank_key: PrivateKey, serve_app: ServeApp
) -> None:
    uscc = _uscc(small_federation)
    consent = small_trust.consent(uscc, max_uses=5)
    bureau_key, _ = small_trust.participant("ops-bureau", "bureau", "Bureau")
    settings = small_federation.layout.coordinator_settings()
    # A replica in this process: its metrics count exactly what this test sends it.
    with (
        serve_app(create_app(settings)) as url,
        CreditShareClient(
            url,
            api_key=small_trust.bank_api_key,
            private_key=bank_key,
            identity=small_trust.bank_identity,
        ) as bank,
        CreditShareClient(
            url,
            api_key=bureau_key,
            identity=small_federation.layout.identity("ops-bureau", "bureau"),
        ) as bureau,
    ):
        text, before = _scrape(url)
        assert all(
            _value(before, "creditshare_queries_total", outcome=o) == 0
            for o in ("answered", "partial", "refused", "unanswered", "error")
        )

        assert sorted(bank.query(uscc, consent).answered) == ["yrd-court", "yrd-market", "yrd-tax"]
        with pytest.raises(ProblemError) as refused:
            bank.query(uscc, consent, purpose=Purpose.POST_LOAN_MONITORING)
        assert refused.value.status == 403
        small_federation.stop_node("yrd-market")
        partial = bank.query(uscc, consent)
        assert sorted(partial.answered) == ["yrd-court", "yrd-tax"]

        job = bureau.post(
            "/v1/training-jobs",
            signed_job_body(
                bureau.identity,
                {
                    "model_id": "ops-model",
                    "nodes": ["yrd-tax"],
                    "key_fingerprint": register_fresh_key(url, bureau_key),
                },
            ),
        )
        ledger_size = bank.ledger_head()["size"]
        text, after = _scrape(url)

        # Queries by outcome, with their latency.
        for outcome, count in (("answered", 1), ("partial", 1), ("refused", 1)):
            assert _value(after, "creditshare_queries_total", outcome=outcome) == count
            assert (
                _value(after, "creditshare_query_duration_seconds_count", outcome=outcome) == count
            )
        for outcome in ("unanswered", "rate_limited", "rejected", "error"):
            assert _value(after, "creditshare_queries_total", outcome=outcome) == 0
        # Node latency for the nodes that answered; the stopped node's failure by reason.
        answered = {"yrd-tax": 2, "yrd-court": 2, "yrd-market": 1}
        for node, count in answered.items():
            ok = _value(after, "creditshare_node_calls_total", node=node, method="Score", code="ok")
            assert ok == count, node
            timed = _value(
                after, "creditshare_node_call_duration_seconds_count", node=node, method="Score"
            )
            assert timed >= count, node
        failures = {
            (dict(labels)["node"], dict(labels)["reason"]): value
            for (name, labels), value in after.items()
            if name == "creditshare_node_failures_total"
        }
        assert failures == {("yrd-market", "unavailable"): 1}
        # Read at scrape time from the database.
        assert _value(after, "creditshare_ledger_size") == ledger_size
        jobs = {"aligning": 1, "training": 0, "finished": 0, "failed": 0}
        for status, count in jobs.items():
            assert _value(after, "creditshare_training_jobs", status=status) == count
        assert (
            _value(
                after,
                "creditshare_http_requests_total",
                method="POST",
                route="/v1/queries",
                status="403",
            )
            == 1
        )
        # Aggregates only: no enterprise appears in a label.
        assert uscc not in text

        bureau.post(f"/v1/training-jobs/{job['id']}/fail", {"reason": "test over"})
        _, later = _scrape(url)
        assert _value(later, "creditshare_training_jobs", status="aligning") == 0
        assert _value(later, "creditshare_training_jobs", status="failed") == 1


def test_request_id_comes_back_and_reaches_every_node_it_called(
    small_federation: Federation, small_trust: Trust, bank_key: PrivateKey
) -> None:
    uscc = _uscc(small_federation)
    consent = small_trust.consent(uscc)
    url = small_federation.layout.coordinator_url
    request_id = f"test-{uuid.uuid4().hex[:12]}"
    response = httpx.post(
        f"{url}/v1/queries",
        json=small_trust.signed(_query_body(uscc, consent, bank_key)),
        headers={"Authorization": f"Bearer {small_trust.bank_api_key}", "X-Request-ID": request_id},
        timeout=30,
    )
    assert response.status_code == 200, response.text
    assert response.headers["x-request-id"] == request_id
    answered = response.json()["coverage"]["answered"]
    assert len(answered) == 3

    coordinator = _log_lines(small_federation, "coordinator")
    access = [line for line in coordinator if line.get("request_id") == request_id]
    assert any(
        line.get("route") == "/v1/queries" and line.get("status") == 200 for line in access
    ), access
    for node in answered:
        lines = _log_lines(small_federation, node)
        calls = [line for line in lines if line.get("request_id") == request_id]
        assert any(c.get("rpc") == "Score" and c.get("code") == "ok" for c in calls), node

    # Secrets never reach a log: API keys, the bank's key, ciphertexts in the answer.
    packed = response.json()["packing"]["ciphertexts"]
    for name in ["coordinator", *(n.node_id for n in small_federation.layout.nodes)]:
        text = (small_federation.layout.work_dir / "logs" / f"{name}.log").read_text()
        assert small_trust.bank_api_key not in text
        assert small_trust.operator_api_key not in text
        assert bank_key.public_key.to_text() not in text
        assert not [c for c in packed if c in text]


def test_an_unusable_request_id_is_replaced(tmp_path: Path, serve_app: ServeApp) -> None:
    with serve_app(create_app(_standalone(tmp_path))) as url:
        for sent in ("has space", "a" * 65, "semi;colon", "-dash-first"):
            response = httpx.get(f"{url}/healthz", headers={"X-Request-ID": sent})
            assert response.status_code == 200
            returned = response.headers["x-request-id"]
            assert returned != sent and len(returned) == 32, sent
        # Without one, each request gets its own; errors carry it too.
        first = httpx.get(f"{url}/healthz").headers["x-request-id"]
        assert httpx.get(f"{url}/healthz").headers["x-request-id"] != first
        unauthorised = httpx.get(f"{url}/v1/nodes", headers={"X-Request-ID": "abc"})
        assert unauthorised.status_code == 401
        assert unauthorised.headers["x-request-id"] == "abc"


def test_training_relays_carry_the_request_id(
    small_federation: Federation, small_trust: Trust, bank_key: PrivateKey
) -> None:
    url = small_federation.layout.coordinator_url
    bureau_key, identity = small_trust.participant("relay-bureau", "bureau", "Bureau")
    headers = {"Authorization": f"Bearer {bureau_key}"}
    job = httpx.post(
        f"{url}/v1/training-jobs",
        json=signed_job_body(
            identity,
            {
                "model_id": "relay-model",
                "nodes": ["yrd-tax", "yrd-court"],
                "key_fingerprint": register_fresh_key(url, bureau_key),
            },
        ),
        headers=headers,
        timeout=30,
    )
    assert job.status_code == 201, job.text
    request_id = f"relay-{uuid.uuid4().hex[:12]}"
    closed = httpx.post(
        f"{url}/v1/training-jobs/{job.json()['id']}/fail",
        json={"reason": "operator test"},
        headers={**headers, "X-Request-ID": request_id},
        timeout=30,
    )
    assert closed.status_code == 200, closed.text
    assert closed.headers["x-request-id"] == request_id
    for node in ("yrd-tax", "yrd-court"):
        lines = _log_lines(small_federation, node)
        assert any(
            line.get("request_id") == request_id and line.get("rpc") == "CloseJob" for line in lines
        ), node


def _standalone(tmp_path: Path, **overrides: Any) -> CoordinatorSettings:
    init_log_key(tmp_path / "log.pem")
    (tmp_path / "db").mkdir()
    return CoordinatorSettings(
        database_url=f"sqlite:///{tmp_path / 'db' / 'coordinator.db'}",
        log_signing_key_file=tmp_path / "log.pem",
        allow_insecure=True,
        **overrides,
    )


def test_healthz_and_readyz_and_a_database_that_goes_away(
    tmp_path: Path, serve_app: ServeApp
) -> None:
    app = create_app(_standalone(tmp_path))
    with serve_app(app) as url:
        assert httpx.get(f"{url}/healthz").json() == {"status": "ok"}
        ready = httpx.get(f"{url}/readyz")
        assert ready.status_code == 200
        assert ready.json() == {
            "status": "ok",
            "checks": {"database": "ok", "ledger": "ok"},
            "chains": {},  # no node registered (tests/e2e/test_node_health.py has them)
        }

        # The database disappears: drop pooled connections, move the file's folder away.
        app.state.services.engine.dispose()
        (tmp_path / "db").rename(tmp_path / "moved")
        down = httpx.get(f"{url}/readyz")
        assert down.status_code == 503
        body = down.json()
        assert body["status"] == "unavailable"
        assert body["checks"] == {"database": "fail", "ledger": "fail"}
        assert set(body["errors"]) == {"database", "ledger"}
        assert "reasons" not in body  # only the ledger's own integrity messages are given
        assert str(tmp_path) not in down.text  # names what failed, not where it lives
        # Liveness does not depend on the database; metrics still answer without it.
        assert httpx.get(f"{url}/healthz").status_code == 200
        text, _ = _scrape(url)
        assert "creditshare_ledger_size" not in text

        (tmp_path / "moved").rename(tmp_path / "db")
        assert httpx.get(f"{url}/readyz").status_code == 200


def test_metrics_can_be_kept_for_the_operator(tmp_path: Path, serve_app: ServeApp) -> None:
    app = create_app(_standalone(tmp_path, metrics_require_operator_key=True))
    participants = app.state.services.participants
    participants.register("operator", "operator", "Operator")
    participants.register("bank", "bank", "Bank")
    operator = participants.issue_key("operator").api_key
    bank = participants.issue_key("bank").api_key
    with serve_app(app) as url:
        assert httpx.get(f"{url}/metrics").status_code == 401
        as_bank = httpx.get(f"{url}/metrics", headers={"Authorization": f"Bearer {bank}"})
        assert as_bank.status_code == 403
        _, samples = _scrape(url, Authorization=f"Bearer {operator}")
        assert _value(samples, "creditshare_ledger_size") == 0
        # Probes stay open: an orchestrator holds no API key.
        assert httpx.get(f"{url}/readyz").status_code == 200


def test_coordinator_finishes_a_query_in_flight_on_sigterm(
    small_federation: Federation, small_trust: Trust, bank_key: PrivateKey
) -> None:
    uscc = _uscc(small_federation)
    consent = small_trust.consent(uscc)
    url = small_federation.layout.coordinator_url
    # A frozen node holds the query for the node deadline (5 s): long enough to SIGTERM
    # the coordinator while the query is in flight.
    small_federation.pause_node("yrd-tax")
    result: dict[str, httpx.Response] = {}

    def ask() -> None:
        result["response"] = httpx.post(
            f"{url}/v1/queries",
            json=small_trust.signed(_query_body(uscc, consent, bank_key)),
            headers={
                "Authorization": f"Bearer {small_trust.bank_api_key}",
                "X-Request-ID": "in-flight-at-sigterm",
            },
            timeout=30,
        )

    thread = threading.Thread(target=ask)
    thread.start()
    deadline = time.monotonic() + 10
    court_log = small_federation.layout.work_dir / "logs" / "yrd-court.log"
    while '"request_id": "in-flight-at-sigterm"' not in court_log.read_text():
        assert time.monotonic() < deadline, "the query never reached the nodes"
        time.sleep(0.02)
    status = small_federation.stop_coordinator()
    thread.join(timeout=30)
    assert not thread.is_alive(), "the in-flight query never returned"
    small_federation.resume_node("yrd-tax")

    # uvicorn re-raises the signal once it has shut down, so the exit says "SIGTERM".
    assert status in (0, -signal.SIGTERM)
    response = result["response"]
    assert response.status_code == 200, response.text
    assert response.json()["coverage"]["failed"] == [
        {"node": "yrd-tax", "chain": "yrd", "reason": "deadline exceeded"}
    ]
    messages = [line["message"] for line in _log_lines(small_federation, "coordinator")]
    assert "Shutting down" in messages and messages[-1].startswith("Finished server process")
    # Nodes stop cleanly on SIGTERM too, within their grace period.
    assert small_federation.stop_node("yrd-court") == 0
    assert _log_lines(small_federation, "yrd-court")[-1]["message"] == "node yrd-court stopped"


def test_an_unexpected_error_is_logged_by_route_not_by_path(
    tmp_path: Path, serve_app: ServeApp, caplog: pytest.LogCaptureFixture
) -> None:
    """Paths carry USCCs (``/v1/enterprises/{uscc}/...``); logs name the route template."""
    uscc = "91310115MA3BJ1XGXC"
    app = create_app(_standalone(tmp_path))
    with serve_app(app) as url:
        services = app.state.services
        services.participants.register(
            "ent-x",
            "enterprise",
            "E",
            uscc=uscc,
            signing_key=SigningKey.generate().verify_key.to_text(),
        )
        api_key = services.participants.issue_key("ent-x").api_key

        def broken(subject: str) -> None:
            raise RuntimeError("storage fell over")

        services.ledger.entries_for = broken
        with caplog.at_level(logging.ERROR, logger="creditshare"):
            response = httpx.get(
                f"{url}/v1/enterprises/{uscc}/queries",
                headers={"Authorization": f"Bearer {api_key}"},
            )
    assert response.status_code == 500
    assert uscc not in response.text
    logged = [r for r in caplog.records if "unhandled error" in r.getMessage()]
    assert logged and "/v1/enterprises/{uscc}/queries" in logged[0].getMessage()
    assert all(uscc not in r.getMessage() for r in caplog.records)
