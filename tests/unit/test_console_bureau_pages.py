"""The bureau's pages against a stand-in SDK: what each shows, and where a refusal goes
(the browser test drives them against a real federation)."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from fastapi.testclient import TestClient

from creditshare.console import ConsoleSettings, create_console_app
from creditshare.console._bureau import _refusal_errors
from creditshare.errors import ProblemError


class FakeSdk:
    """What the bureau's pages ask of the SDK, answered from memory."""

    identity = SimpleNamespace(participant_id="bureau-t")
    private_key = None

    def __init__(self) -> None:
        self.status = "training"
        self.cancelled: list[tuple[str, str]] = []

    def nodes(self) -> list[dict[str, Any]]:
        return [{"id": "yrd-tax", "chain": "yrd", "department": "tax", "address": "x"}]

    def models(self) -> list[dict[str, Any]]:
        return [
            {
                "id": "m1",
                "description": "",
                "origin": "trained",
                "trained_by": "bureau-t",
                "metrics": {"test_auc": 0.7125, "test_ks": 0.3},
                "model_type": "logistic",
                "trees": None,
            }
        ]

    def training_job(self, job_id: str) -> dict[str, Any]:
        history = [
            {"epoch": k, "validation_loss": 0.7 - k / 10, "validation_auc": 0.6} for k in (0, 1)
        ]
        return {
            "id": job_id,
            "bureau": "bureau-t",
            "model_id": "m1",
            "status": self.status,
            "nodes": ["yrd-tax"],
            "config": {"max_epochs": 4},
            "progress": {"epoch": 1, "batch": 2, "batches": 2},
            "history": history,
            "sizes": {},
            "error": "",
        }

    def training_jobs(self) -> list[dict[str, Any]]:
        return [self.training_job("a" * 32)]

    def cancel_training_job(self, job_id: str, reason: str = "") -> dict[str, Any]:
        self.cancelled.append((job_id, reason))
        self.status = "cancelled"
        return self.training_job(job_id)

    def close(self) -> None:
        return None


@pytest.fixture
def sdk() -> FakeSdk:
    return FakeSdk()


@pytest.fixture
def browser(sdk: FakeSdk, tmp_path: Path) -> Iterator[TestClient]:
    settings = ConsoleSettings(
        role="bureau",
        coordinator_url="http://coordinator.invalid",
        api_key="key",
        identity=tmp_path,
        key_file=tmp_path / "key.json",
        work_dir=tmp_path / "work",
        language="en",
    )
    app = create_console_app(settings, client=sdk)  # type: ignore[arg-type]
    with TestClient(app, base_url="http://console.test") as client:
        token = app.state.console.sessions.login_token
        assert client.get("/login", params={"token": token}).status_code == 200
        csrf = app.state.console.sessions.csrf_token(client.cookies[app.state.console.cookie])
        client.headers.update({"X-CSRF-Token": csrf, "Origin": "http://console.test"})
        yield client


JOB = "a" * 32


def test_the_job_page_polls_while_the_job_runs_and_stops_when_it_ended(
    browser: TestClient, sdk: FakeSdk
) -> None:
    live = browser.get(f"/bureau/jobs/{JOB}/progress").text
    assert 'hx-trigger="every 2s"' in live and 'data-points="2"' in live
    assert "cancel-section" not in live
    sdk.status = "finished"
    ended = browser.get(f"/bureau/jobs/{JOB}/progress").text
    assert "hx-trigger" not in ended
    # The cancel form, outside the polled part, is removed out of band.
    assert '<div id="cancel-section" hx-swap-oob="true"></div>' in ended
    assert 'id="test-auc">0.7125<' in ended


def test_cancel_goes_to_the_coordinator_with_its_reason(browser: TestClient, sdk: FakeSdk) -> None:
    page = browser.post(f"/bureau/jobs/{JOB}/cancel", data={"reason": "wrong labels"})
    assert page.status_code == 200
    assert sdk.cancelled == [(JOB, "wrong labels")]
    assert 'data-status="cancelled"' in page.text


def test_a_path_that_is_no_job_id_never_reaches_the_coordinator(browser: TestClient) -> None:
    assert browser.get("/bureau/jobs/..%2Fnodes").status_code in (404, 422)
    assert browser.get("/bureau/jobs/a.b/progress").status_code == 422


def test_the_start_form_says_what_is_missing_by_field(browser: TestClient) -> None:
    page = browser.post(
        "/bureau/jobs/new",
        data={"model_id": "", "model_type": "logistic", "max_epochs": "0"},
        files={"labels": ("", b"", "application/octet-stream")},
    )
    assert page.status_code == 422
    errors = dict(
        re.findall(r'<p class="error" id="e-([a-z_]+)" role="alert">([^<]*)</p>', page.text)
    )
    assert set(errors) == {"model_id", "nodes", "labels", "max_epochs"}
    assert errors["labels"] == "Choose the labels file."


def test_jobs_and_models_are_listed(browser: TestClient) -> None:
    jobs = browser.get("/bureau/jobs").text
    assert f'<tr data-job="{JOB}">' in jobs and "2 / 4" in jobs
    models = browser.get("/bureau/models").text
    assert '<tr data-model="m1">' in models and "0.7125" in models


def test_a_conflict_naming_the_model_id_goes_to_its_field() -> None:
    exists = ProblemError(409, "Conflict", "model 'm1' exists already", {})
    assert _refusal_errors(exists, "m1").fields == {"model_id": "model 'm1' exists already"}
    busy = ProblemError(409, "Conflict", "bureau 'b' already runs 2 training jobs", {})
    assert _refusal_errors(busy, "m1").form == [busy.detail]
    bad = ProblemError(
        422,
        "Invalid input",
        "x",
        {"errors": [{"location": "body.config.max_epochs", "message": "too big"}]},
    )
    assert _refusal_errors(bad, "m1").fields == {"max_epochs": "too big"}
