"""The ledger after tampering: a coordinator never signs over a log that does not
extend its last signed head.

Against running servers: a federation's coordinator process is stopped, its SQLite
database tampered with, and restarted. It must then say why on /readyz (503), answer
queries, refusals and training jobs with a 503 problem that writes nothing, log the
reason, and ``creditshare ledger verify`` must name the problem. Restarted on the
untampered database it is ready again and serves the next query. On PostgreSQL an
in-process replica (real uvicorn, real HTTP) is restarted on a tampered database and,
while running, has its database replaced underneath.
"""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import Engine, text

from creditshare.consent import Purpose
from creditshare.coordinator import CoordinatorSettings, create_app
from creditshare.coordinator._admin import init_log_key
from creditshare.crypto import PrivateKey
from creditshare.demo import Federation, read_enterprises
from creditshare.errors import ProblemError
from creditshare.ledger import leaf_hash

from .._databases import fresh_postgres_database, migrated_engine
from .conftest import Trust, placeholder_signature, register_fresh_key

ServeApp = Callable[[FastAPI], AbstractContextManager[str]]
VERIFY_HINT = "creditshare ledger verify --config FILE"
#: Tables a refused request must leave exactly as they were.
WATCHED = ("ledger_leaf", "ledger_head", "consent", "training_job", "rate_limit_bucket")

#: name -> (SQL, what /readyz and the 503 detail say, what `ledger verify` says).
TAMPERING: dict[str, tuple[str, str, str]] = {
    "a leaf's data changed": (
        "UPDATE ledger_leaf SET data = :forged WHERE idx = 1",
        "entry 1's stored data does not match its stored hash",
        "leaf 1: stored hash does not match the stored data",
    ),
    "a leaf and its stored hash replaced": (
        "UPDATE ledger_leaf SET data = :forged, leaf_hash = :forged_hash WHERE idx = 1",
        "stored entries do not reproduce the root of the latest signed head",
        "root does not match the stored leaves",
    ),
    "the last leaf deleted": (
        "DELETE FROM ledger_leaf WHERE idx = (SELECT MAX(idx) FROM ledger_leaf)",
        "entries but the database holds",
        "covers more leaves than the log holds",
    ),
    "the last head deleted": (
        "DELETE FROM ledger_head WHERE size = (SELECT MAX(size) FROM ledger_head)",
        "are under no signed head",
        "are not covered by any signed head",
    ),
    "the last leaf deleted with its head": (
        "DELETE FROM ledger_leaf WHERE idx = (SELECT MAX(idx) FROM ledger_leaf); "
        "DELETE FROM ledger_head WHERE size = (SELECT MAX(size) FROM ledger_head)",
        "holds a signed head of size",
        "",  # a consistent shorter log: only a witness (a data node) can tell
    ),
    "a middle leaf deleted": (
        "DELETE FROM ledger_leaf WHERE idx = 1",
        "entry 1 is missing",
        "leaves 1..1 are missing",
    ),
}


def _uscc(federation: Federation) -> str:
    rows = read_enterprises(federation.layout.data_dir)
    return next(r["uscc"] for r in rows if r["record_chains"] == "yrd")


def _rows(db: Path) -> dict[str, list[tuple[Any, ...]]]:
    with sqlite3.connect(db) as conn:
        return {t: conn.execute(f"SELECT * FROM {t} ORDER BY 1").fetchall() for t in WATCHED}  # noqa: S608


def _copy(source: Path, target: Path) -> None:
    """A consistent copy through SQLite's backup API (no stale journal left behind)."""
    for suffix in ("-journal", "-wal", "-shm"):
        Path(f"{target}{suffix}").unlink(missing_ok=True)
    with sqlite3.connect(source) as src, sqlite3.connect(target) as dst:
        src.backup(dst)


def _verify(config: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "creditshare", "ledger", "verify", "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def _log_messages(federation: Federation) -> list[str]:
    path = federation.layout.work_dir / "logs" / "coordinator.log"
    lines = path.read_text(encoding="utf-8").splitlines()
    return [json.loads(line)["message"] for line in lines if line.strip()]


def test_a_coordinator_restarted_on_a_tampered_ledger_refuses_to_sign(
    small_federation: Federation, small_trust: Trust, bank_key: PrivateKey
) -> None:
    federation, layout = small_federation, small_federation.layout
    assert layout.coordinator_config is not None
    url = layout.coordinator_url
    uscc = _uscc(federation)
    consent = small_trust.consent(uscc)
    bureau_key = small_trust.operator.register_participant("tamper-bureau", "bureau", "B")[
        "api_key"
    ]
    bureau_fingerprint = register_fresh_key(url, bureau_key)
    bank = small_trust.bank
    for _ in range(3):
        bank.query(uscc, consent)
    size = bank.ledger_head()["size"]
    assert size >= 3
    db = layout.work_dir / "coordinator" / "coordinator.db"
    pristine = layout.work_dir / "pristine.db"
    assert federation.stop_coordinator() is not None
    _copy(db, pristine)
    assert _verify(layout.coordinator_config).returncode == 0

    for case, (sql, reason, problem) in TAMPERING.items():
        _copy(pristine, db)
        with sqlite3.connect(db) as conn:
            params = {"forged": b"forged", "forged_hash": leaf_hash(b"forged")}
            for statement in sql.split("; "):
                conn.execute(statement, {k: v for k, v in params.items() if f":{k}" in statement})
        before = _rows(db)
        federation.start_coordinator()
        try:
            ready = httpx.get(f"{url}/readyz", timeout=10)
            assert ready.status_code == 503, (case, ready.text)
            body = ready.json()
            assert body["checks"] == {"database": "ok", "ledger": "fail"}, case
            assert body["errors"] == {"ledger": "LedgerIntegrityError"}, case
            assert reason in body["reasons"]["ledger"], (case, body)
            assert VERIFY_HINT in body["reasons"]["ledger"], case

            with pytest.raises(ProblemError) as query:
                bank.query(uscc, consent)
            assert query.value.status == 503, case
            assert query.value.title == "Ledger refuses to sign"
            assert reason in query.value.detail and VERIFY_HINT in query.value.detail
            with pytest.raises(ProblemError) as refusal:  # would be a recorded 403
                bank.query(uscc, consent, purpose=Purpose.POST_LOAN_MONITORING)
            assert refusal.value.status == 503, case
            job = httpx.post(
                f"{url}/v1/training-jobs",
                json={
                    "model_id": "tamper-model",
                    "nodes": ["yrd-tax"],
                    "key_fingerprint": bureau_fingerprint,
                    **placeholder_signature("job_id"),
                },
                headers={"Authorization": f"Bearer {bureau_key}"},
                timeout=30,
            )
            assert job.status_code == 503, (case, job.text)
            assert job.headers["content-type"] == "application/problem+json"
            # Reads still answer: the operator can look at what is stored.
            assert httpx.get(f"{url}/healthz", timeout=10).status_code == 200
        finally:
            federation.stop_coordinator()
        assert _rows(db) == before, f"{case}: a refused request wrote to the database"
        assert any(
            m.startswith("ledger integrity check failed") and reason in m
            for m in _log_messages(federation)
        ), case
        if problem:
            audit = _verify(layout.coordinator_config)
            assert audit.returncode != 0, case
            assert "PROBLEM: " in audit.stderr and problem in audit.stderr, (case, audit.stderr)

    # The untampered database: ready again, and the next good query is served.
    _copy(pristine, db)
    federation.start_coordinator()
    ready = httpx.get(f"{url}/readyz", timeout=10)
    assert ready.status_code == 200, ready.text
    assert ready.json()["checks"] == {"database": "ok", "ledger": "ok"}
    answered = bank.query(uscc, consent)
    assert sorted(answered.answered) == ["yrd-court", "yrd-market", "yrd-tax"]
    assert bank.ledger_head()["size"] == size + 1
    assert _verify(layout.coordinator_config).returncode == 0


# --- PostgreSQL: an in-process replica over real HTTP ---


@pytest.fixture
def postgres_settings(tmp_path: Path) -> Iterator[tuple[CoordinatorSettings, Engine]]:
    init_log_key(tmp_path / "log.pem")
    with fresh_postgres_database() as url:
        engine = migrated_engine(url)
        settings = CoordinatorSettings(
            database_url=url, log_signing_key_file=tmp_path / "log.pem", allow_insecure=True
        )
        yield settings, engine
        engine.dispose()


def _query(url: str, api_key: str, key: PrivateKey) -> httpx.Response:
    return httpx.post(
        f"{url}/v1/queries",
        json={
            "uscc": "91350100M000100Y43",
            "model_id": "sme-scorecard-v1",
            "purpose": "pre_loan_review",
            "consent_id": "0" * 32,
            "key_fingerprint": key.public_key.fingerprint(),
            **placeholder_signature(),
        },
        headers={"Authorization": f"Bearer {api_key}"},
        timeout=30,
    )


def test_postgres_restart_on_a_tampered_ledger_and_a_database_replaced_underneath(
    postgres_settings: tuple[CoordinatorSettings, Engine],
    serve_app: ServeApp,
    bank_key: PrivateKey,
) -> None:
    settings, engine = postgres_settings
    first = create_app(settings)
    services = first.state.services
    services.participants.register("pg-bank", "bank", "Bank")
    api_key = services.participants.issue_key("pg-bank").api_key
    for i in range(4):
        services.ledger.append(b"record %d" % i, "91350100M000100Y43")

    with serve_app(first) as url:
        assert httpx.get(f"{url}/readyz", timeout=10).status_code == 200
        # Replaced underneath the running replica: its last head is gone.
        with engine.begin() as conn:
            conn.execute(text("DELETE FROM ledger_head WHERE size = 4"))
            conn.execute(text("DELETE FROM ledger_leaf WHERE idx = 3"))
        ready = httpx.get(f"{url}/readyz", timeout=10)
        assert ready.status_code == 503
        assert "has no signed head of size 4" in ready.json()["reasons"]["ledger"]
        refused = _query(url, api_key, bank_key)
        assert refused.status_code == 503, refused.text
        assert VERIFY_HINT in refused.json()["detail"]
    assert services.ledger_storage.size() == 3  # nothing signed over the shorter log

    # Restarted on a database whose leaf 1 was replaced together with its hash.
    with engine.begin() as conn:
        conn.execute(
            text("UPDATE ledger_leaf SET data = :d, leaf_hash = :h WHERE idx = 1"),
            {"d": b"forged", "h": leaf_hash(b"forged")},
        )
    with serve_app(create_app(settings)) as url:
        ready = httpx.get(f"{url}/readyz", timeout=10)
        assert ready.status_code == 503
        reason = ready.json()["reasons"]["ledger"]
        assert "do not reproduce the root of the latest signed head (size 3)" in reason
        refused = _query(url, api_key, bank_key)
        assert refused.status_code == 503, refused.text
    with engine.connect() as conn:
        assert conn.execute(text("SELECT COUNT(*) FROM ledger_head")).scalar() == 3
