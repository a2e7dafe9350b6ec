"""Every input bounded, against a running coordinator: bodies are limited before they
are read (413), lists and strings have bounds (422), and no ledger entry can exceed a
small fixed size whatever the request held. Each refusal writes nothing, and the
coordinator serves the next good request."""

from __future__ import annotations

import base64
import sqlite3
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import text

from creditshare._database import open_engine
from creditshare.consent import ConsentGrant, Purpose
from creditshare.coordinator import CoordinatorSettings, create_app
from creditshare.coordinator._admin import bootstrap_operator, init_log_key
from creditshare.demo import Federation, read_enterprises

from .conftest import Trust, register_fresh_key, signed_job_body

MIB = 1024 * 1024
ServeApp = Callable[[FastAPI], AbstractContextManager[str]]


def _ledger_size(trust: Trust) -> int:
    response = httpx.get(
        f"{trust.url}/v1/ledger/head",
        headers={"Authorization": f"Bearer {trust.operator_api_key}"},
        timeout=30,
    )
    return 0 if response.status_code == 404 else int(response.json()["size"])


def _query_body(subject: str, consent: str, trust: Trust, **extra: object) -> dict[str, object]:
    body: dict[str, object] = {
        "uscc": subject,
        "model_id": "sme-scorecard-v1",
        "purpose": "pre_loan_review",
        "consent_id": consent,
        "key_fingerprint": trust.bank.ensure_paillier_key(),
    }
    return trust.signed(body | extra)


@pytest.fixture(scope="module")
def uscc(federation: Federation) -> str:
    return str(read_enterprises(federation.layout.data_dir)[11]["uscc"])


@pytest.fixture(scope="module")
def bureau(trust: Trust) -> Iterator[str]:
    api_key, _ = trust.participant("bounds-bureau", "bureau", "Bounds Bureau")
    yield api_key


@pytest.fixture(scope="module")
def bureau_fingerprint(trust: Trust, bureau: str) -> str:
    """One registered key for the bureau's refused jobs (a participant holds few keys)."""
    return register_fresh_key(trust.url, bureau)


def _served(trust: Trust, uscc: str, consent: str) -> None:
    """The next good request: a query answered in full."""
    response = httpx.post(
        f"{trust.url}/v1/queries",
        json=_query_body(uscc, consent, trust),
        headers={"Authorization": f"Bearer {trust.bank_api_key}"},
        timeout=30,
    )
    assert response.status_code == 200, response.text


@pytest.mark.parametrize("authenticated", [False, True])
def test_a_large_body_is_413_before_it_is_read(
    trust: Trust, uscc: str, authenticated: bool
) -> None:
    consent = trust.consent(uscc, max_uses=10)
    size = _ledger_size(trust)
    headers = {"Authorization": f"Bearer {trust.bank_api_key}"} if authenticated else {}
    # A query whose chains list is repeated a million times: ~7 MB of JSON.
    body = _query_body(uscc, consent, trust, chains=["yrd"] * 1_000_000)
    response = httpx.post(f"{trust.url}/v1/queries", json=body, headers=headers, timeout=60)
    assert response.status_code == 413
    assert response.headers["content-type"].startswith("application/problem+json")
    problem = response.json()
    assert problem["limit_bytes"] == 64 * 1024 and "limit" in problem["detail"]
    assert _ledger_size(trust) == size
    _served(trust, uscc, consent)


def test_a_chunked_body_is_cut_off_at_the_limit(trust: Trust, uscc: str) -> None:
    consent = trust.consent(uscc, max_uses=10)
    size = _ledger_size(trust)

    def chunks() -> Iterator[bytes]:  # no Content-Length: the server must count
        yield b'{"uscc": "' + uscc.encode() + b'", "model_id": "'
        for _ in range(200):
            yield b"x" * 1024
        yield b'"}'

    response = httpx.post(
        f"{trust.url}/v1/queries",
        content=chunks(),
        headers={
            "Authorization": f"Bearer {trust.bank_api_key}",
            "Content-Type": "application/json",
        },
        timeout=60,
    )
    assert response.status_code == 413, response.text
    assert _ledger_size(trust) == size
    _served(trust, uscc, consent)


def test_large_training_bodies_need_a_bureau_first(trust: Trust, uscc: str, bureau: str) -> None:
    consent = trust.consent(uscc, max_uses=10)
    url = f"{trust.url}/v1/training-jobs/{'0' * 32}/psi"
    points = [base64.b64encode(bytes(32)).decode()] * 4000  # ~190 kB: above the default
    body = {"node": "yrd-tax", "domain": "d", "blinded": points, "more": True}
    anonymous = httpx.post(url, json=body, timeout=60)
    assert anonymous.status_code == 401  # refused before the body was read
    bank = httpx.post(
        url, json=body, headers={"Authorization": f"Bearer {trust.bank_api_key}"}, timeout=60
    )
    assert bank.status_code == 403
    # A bureau may send it: the body is read, and the unknown job is what is refused.
    bureau_answer = httpx.post(
        url, json=body, headers={"Authorization": f"Bearer {bureau}"}, timeout=60
    )
    assert bureau_answer.status_code == 404, bureau_answer.text
    # ...but not beyond the training limit either.
    huge = httpx.post(
        url,
        content=b"x" * (17 * MIB),
        headers={"Authorization": f"Bearer {bureau}", "Content-Type": "application/json"},
        timeout=60,
    )
    assert huge.status_code == 413
    _served(trust, uscc, consent)


@pytest.mark.parametrize(
    ("extra", "fragment"),
    [
        ({"chains": ["yrd", "prd", "bth", "yrd"]}, "chains"),
        ({"model_id": "m" * 65}, "model_id"),
        ({"uscc": "9" * 65}, "uscc"),
        ({"consent_id": "z" * 32}, "consent_id"),
        ({"purpose": "pre_loan_review\u0000"}, "purpose"),
    ],
)
def test_query_fields_are_bounded(
    trust: Trust, uscc: str, extra: dict[str, object], fragment: str
) -> None:
    consent = trust.consent(uscc, max_uses=10)
    size = _ledger_size(trust)
    response = httpx.post(
        f"{trust.url}/v1/queries",
        json=_query_body(uscc, consent, trust, **extra),
        headers={"Authorization": f"Bearer {trust.bank_api_key}"},
        timeout=30,
    )
    assert response.status_code == 422, response.text
    assert fragment in response.json()["detail"]
    assert _ledger_size(trust) == size
    _served(trust, uscc, consent)


def test_repeated_chains_are_a_set(trust: Trust, uscc: str) -> None:
    consent = trust.consent(uscc, max_uses=10)
    response = httpx.post(
        f"{trust.url}/v1/queries",
        json=_query_body(uscc, consent, trust, chains=["yrd", "yrd", "yrd"]),
        headers={"Authorization": f"Bearer {trust.bank_api_key}"},
        timeout=30,
    )
    assert response.status_code == 200, response.text
    entry = trust.bank.get(f"/v1/ledger/entries/{response.json()['ledger_index']}")
    assert entry["record"]["chains"] == ["yrd"]


@pytest.mark.parametrize(
    ("name", "value"),
    [("NUL", "Bank\u0000Name"), ("escape", "Bank\u001b[31m"), ("long", "B" * 201)],
)
def test_participant_text_is_bounded_and_printable(trust: Trust, name: str, value: str) -> None:
    before = len(trust.operator.get("/v1/participants"))
    response = httpx.post(
        f"{trust.url}/v1/participants",
        json={"id": f"text-{name.lower()}", "role": "bank", "name": value},
        headers={"Authorization": f"Bearer {trust.operator_api_key}"},
        timeout=30,
    )
    assert response.status_code == 422, response.text
    assert "name" in response.json()["detail"]
    assert len(trust.operator.get("/v1/participants")) == before


def test_a_consent_scope_beyond_the_bounds_is_refused(trust: Trust, uscc: str) -> None:
    """More than 32 indicator names, or a name over 48 characters, is refused when the
    consent is granted (the largest scope within the bounds makes a ledger record within
    MAX_RECORD_BYTES: tests/unit/test_ledger_consent_uses.py)."""
    names = [f"{k:02d}" + "i" * 46 for k in range(32)]  # 32 names of 48 characters
    document = ConsentGrant.create(
        uscc,
        trust.bank_id,
        Purpose.PRE_LOAN_REVIEW,
        datetime.now(UTC),
        datetime.now(UTC) + timedelta(days=1),
    ).to_document()
    for indicators in ([*names, "x"], ["i" * 49]):
        response = httpx.post(
            f"{trust.url}/v1/consents",
            json={"document": {**document, "indicators": indicators}, "signature": "AA=="},
            headers={"Authorization": f"Bearer {trust.enterprise_api_key(uscc)}"},
            timeout=30,
        )
        assert response.status_code == 422, response.text
        assert "indicators" in response.json()["detail"]


@pytest.fixture
def standalone(database_url: str, tmp_path: Path, serve_app: ServeApp) -> Iterator[tuple[str, str]]:
    """A coordinator process-in-thread on SQLite and on PostgreSQL (no nodes needed):
    its URL and an operator's API key."""
    init_log_key(tmp_path / "log.pem")
    settings = CoordinatorSettings(
        database_url=database_url, log_signing_key_file=tmp_path / "log.pem", allow_insecure=True
    )
    operator = bootstrap_operator(settings, "operator", "Operator").api_key
    with serve_app(create_app(settings)) as url:
        yield url, operator


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("POST", "/v1/participants/bank%00x/disable"),
        ("GET", "/v1/consents/%00"),
        ("GET", "/v1/enterprises/91350100M000100Y4%00/queries"),
        ("GET", "/v1/ledger/proofs/consistency?first=0%00&second=1"),
        ("POST", "/v1/participants/ok/credentials/%1b[2J/revoke"),
    ],
)
def test_control_characters_in_paths_never_reach_the_database(
    standalone: tuple[str, str], method: str, path: str
) -> None:
    url, operator = standalone
    headers = {"Authorization": f"Bearer {operator}"}
    before = httpx.get(f"{url}/v1/participants", headers=headers, timeout=30).json()
    response = httpx.request(method, f"{url}{path}", headers=headers, timeout=30)
    assert response.status_code == 422, response.text
    assert response.headers["content-type"].startswith("application/problem+json")
    assert "control character" in response.json()["detail"]
    # Nothing changed, and the next good request is served.
    after = httpx.get(f"{url}/v1/participants", headers=headers, timeout=30)
    assert after.status_code == 200 and after.json() == before


def test_nul_in_a_body_is_422_on_every_database(standalone: tuple[str, str]) -> None:
    url, operator = standalone
    headers = {"Authorization": f"Bearer {operator}"}
    response = httpx.post(
        f"{url}/v1/participants",
        json={"id": "nul-bank", "role": "bank", "name": "Nul\u0000Bank"},
        headers=headers,
        timeout=30,
    )
    assert response.status_code == 422, response.text
    good = httpx.post(
        f"{url}/v1/participants",
        json={"id": "nul-bank", "role": "bank", "name": "Bank"},
        headers=headers,
        timeout=30,
    )
    assert good.status_code == 201, good.text


def test_training_steps_out_of_order_are_409_and_fail_nothing(trust: Trust, bureau: str) -> None:
    """A step out of order is the bureau's error: refused before any node is asked, and
    the job stays as it was (a node that lost the job would fail it)."""
    headers = {"Authorization": f"Bearer {bureau}"}
    job = httpx.post(
        f"{trust.url}/v1/training-jobs",
        json=signed_job_body(
            trust.layout.identity("bounds-bureau", "bureau"),
            {
                "model_id": "out-of-order",
                "nodes": ["yrd-tax", "yrd-market"],
                "key_fingerprint": register_fresh_key(trust.url, bureau),
            },
        ),
        headers=headers,
        timeout=30,
    ).json()
    path = f"{trust.url}/v1/training-jobs/{job['id']}"
    point = base64.b64encode(bytes(32)).decode()
    ciphertext = base64.b64encode(bytes(512)).decode()
    for step, body, fragment in (
        ("open", {"node": "yrd-tax", "points": [point]}, "align"),
        ("forward", {"node": "yrd-tax", "rows": [0]}, "open the job"),
        ("gradient", {"node": "yrd-tax", "rows": [0], "residuals": [ciphertext]}, "open the job"),
        ("finish", {"intercept": 0.0}, "not open"),
    ):
        response = httpx.post(f"{path}/{step}", json=body, headers=headers, timeout=30)
        assert response.status_code == 409, (step, response.text)
        assert fragment in response.json()["detail"], step
    after = httpx.get(path, headers=headers, timeout=30).json()
    assert (after["status"], after["error"]) == ("aligning", "")
    cancelled = httpx.post(f"{path}/cancel", json={}, headers=headers, timeout=30)
    assert cancelled.status_code == 200, cancelled.text


@pytest.mark.parametrize(
    ("config", "named"),
    [
        ({"surprise": 1}, "body.config.surprise"),
        ({"mask_bits": 64}, "body.config.mask_bits"),
        ({"feature_clip": -1}, "body.config.feature_clip"),
        ({"test_fraction": 1.5}, "body.config.test_fraction"),
    ],
)
def test_an_unknown_or_out_of_range_training_setting_is_422_naming_it(
    trust: Trust, bureau: str, bureau_fingerprint: str, config: dict[str, object], named: str
) -> None:
    """The coordinator refuses the job before anything is recorded (the nodes validate
    the same document again when the job is opened on them)."""
    size = _ledger_size(trust)
    response = httpx.post(
        f"{trust.url}/v1/training-jobs",
        json=signed_job_body(
            trust.layout.identity("bounds-bureau", "bureau"),
            {
                "model_id": "bad-config",
                "nodes": ["yrd-tax"],
                "key_fingerprint": bureau_fingerprint,
                "config": config,
            },
        ),
        headers={"Authorization": f"Bearer {bureau}"},
        timeout=30,
    )
    assert response.status_code == 422, response.text
    assert named in [e["location"] for e in response.json()["errors"]], response.text
    assert _ledger_size(trust) == size


def test_a_value_the_database_refuses_is_4xx_not_500(
    postgres_url: str, tmp_path: Path, serve_app: ServeApp
) -> None:
    """The backstop behind the bounds: whatever the database still refuses (here, made
    stricter than the schema on purpose) is a 409 or 422, and nothing is written."""
    init_log_key(tmp_path / "log.pem")
    settings = CoordinatorSettings(
        database_url=postgres_url, log_signing_key_file=tmp_path / "log.pem", allow_insecure=True
    )
    operator = bootstrap_operator(settings, "operator", "Operator").api_key
    headers = {"Authorization": f"Bearer {operator}"}
    with serve_app(create_app(settings)) as url:
        engine = open_engine(postgres_url)
        with engine.begin() as conn:
            conn.execute(text("ALTER TABLE participant ALTER COLUMN name TYPE varchar(12)"))
            conn.execute(
                text("ALTER TABLE participant ADD CONSTRAINT no_x CHECK (name NOT LIKE 'X%')")
            )
        engine.dispose()
        before = httpx.get(f"{url}/v1/participants", headers=headers, timeout=30).json()
        for name, status in (("A name longer than twelve", 422), ("Xavier", 409)):
            response = httpx.post(
                f"{url}/v1/participants",
                json={"id": "db-refused", "role": "bank", "name": name},
                headers=headers,
                timeout=30,
            )
            assert response.status_code == status, response.text
            assert response.headers["content-type"].startswith("application/problem+json")
        assert httpx.get(f"{url}/v1/participants", headers=headers, timeout=30).json() == before
        good = httpx.post(
            f"{url}/v1/participants",
            json={"id": "db-refused", "role": "bank", "name": "Bank"},
            headers=headers,
            timeout=30,
        )
        assert good.status_code == 201, good.text


def test_a_bureau_runs_a_bounded_number_of_jobs(trust: Trust) -> None:
    """Each job holds a slot on every node it names and writes a ledger entry: one bureau
    cannot take every node's slots (the default is three jobs at once)."""
    api_key, identity = trust.participant("jobs-bureau", "bureau", "Busy Bureau")
    headers = {"Authorization": f"Bearer {api_key}"}
    fingerprint = register_fresh_key(trust.url, api_key)

    def create(model_id: str) -> httpx.Response:
        body = {"model_id": model_id, "nodes": ["yrd-tax"], "key_fingerprint": fingerprint}
        return httpx.post(
            f"{trust.url}/v1/training-jobs",
            json=signed_job_body(identity, body),
            headers=headers,
            timeout=30,
        )

    jobs = [create(f"busy-{k}").json()["id"] for k in range(3)]
    size = _ledger_size(trust)
    refused = create("busy-3")
    assert refused.status_code == 409 and "at most 3" in refused.json()["detail"]
    assert _ledger_size(trust) == size  # nothing recorded
    for job in jobs[:1]:
        httpx.post(f"{trust.url}/v1/training-jobs/{job}/cancel", json={}, headers=headers)
    jobs.append(create("busy-3").json()["id"])
    for job in jobs[1:]:
        httpx.post(f"{trust.url}/v1/training-jobs/{job}/cancel", json={}, headers=headers)


def test_a_query_that_cannot_be_recorded_spends_nothing(
    federation: Federation, trust: Trust, uscc: str
) -> None:
    """The consent use and the budget are spent just before the query is recorded; if
    the recording fails (here: every ledger insert fails inside the database), both
    come back: a query that was never made costs nothing."""
    consent = trust.consent(uscc, max_uses=1)
    owner, _ = trust.enterprise(uscc)
    url = federation.layout.coordinator_settings().database_url
    database = sqlite3.connect(url.removeprefix("sqlite:///"))
    database.execute(
        "CREATE TRIGGER ledger_insert_fails BEFORE INSERT ON ledger_leaf "
        "BEGIN INSERT INTO vanished_table VALUES (1); END"
    )
    database.commit()
    try:
        failed = httpx.post(
            f"{trust.url}/v1/queries",
            json=_query_body(uscc, consent, trust),
            headers={"Authorization": f"Bearer {trust.bank_api_key}"},
            timeout=30,
        )
    finally:
        database.execute("DROP TRIGGER ledger_insert_fails")
        database.commit()
        database.close()
    assert failed.status_code >= 500
    assert owner.consent(consent)["uses"] == 0
    # The one use the consent allows is still there.
    _served(trust, uscc, consent)
    assert owner.consent(consent)["uses"] == 1
