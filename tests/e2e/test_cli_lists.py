"""Every list command of the CLI, run as its user runs it, against the session federation.

The coordinator decides who sees what (``GET /v1/training-jobs``, ``GET /v1/consents``):
a bureau sees its own jobs and not another's, a bank the consents granted to it and
not those granted to another bank, an enterprise the consents it granted, an operator
everything, and the roles with nothing to list get 403. Each listing is driven through
the real CLI (``--json``: one JSON document on stdout, nothing else) and its table
(headers) is checked once too. Node-local lists (imports, refusals, access log) are
read from a running node's own database.

Participants registered here have ids of their own (``cli-...``): the federation is
shared with every other e2e test.
"""

from __future__ import annotations

import json
import secrets
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from typer.testing import CliRunner

from creditshare.cli import app
from creditshare.client import CreditShareClient, Identity
from creditshare.consent import Purpose
from creditshare.crypto import AlertPrivateKey
from creditshare.demo import Federation, read_enterprises
from creditshare.errors import ProblemError

from .conftest import Trust, register_fresh_key, signed_job_body

runner = CliRunner()


def cli(*args: str) -> str:
    """Run ``creditshare *args`` in-process; its stdout (the command must succeed)."""
    result = runner.invoke(app, list(args))
    assert result.exit_code == 0, (args, result.stdout, result.stderr, result.exception)
    return result.stdout


def cli_json(*args: str) -> Any:
    """``creditshare *args --json``: stdout must be one JSON document and nothing else."""
    return json.loads(cli(*args, "--json"))


@dataclass
class Bureau:
    id: str
    api_key: str
    identity: Identity
    fingerprint: str


@dataclass
class People:
    """Who lists: two banks, two bureaus, an enterprise, a department, the operator."""

    url: str
    operator: str
    #: API keys of the two banks, and their ids.
    bank_a: str
    bank_b: str
    bank_a_id: str
    bank_b_id: str
    bureau_a: Bureau
    bureau_b: Bureau
    enterprise: str
    department: str
    uscc: str
    #: Consent ids granted to bank A, to bank B (by the enterprise ``uscc``).
    for_a: list[str]
    for_b: list[str]


@pytest.fixture(scope="module")
def people(trust: Trust, federation: Federation) -> Iterator[People]:
    tag = secrets.token_hex(3)
    url = trust.url
    bank_a_id, bank_b_id = f"cli-bank-a-{tag}", f"cli-bank-b-{tag}"
    bank_a, _ = trust.participant(bank_a_id, "bank", "CLI Bank A")
    bank_b, _ = trust.participant(bank_b_id, "bank", "CLI Bank B")
    bureaus = []
    for letter in "ab":
        bureau_id = f"cli-bureau-{letter}-{tag}"
        key, identity = trust.participant(bureau_id, "bureau", f"CLI Bureau {letter}")
        bureaus.append(Bureau(bureau_id, key, identity, register_fresh_key(url, key)))
    department = trust.operator.register_participant(
        f"cli-dept-{tag}", "department", "CLI Department"
    )["api_key"]
    uscc = read_enterprises(federation.layout.data_dir)[-3]["uscc"]
    for_a = [
        trust.consent(uscc, grantee=bank_a_id),
        trust.consent(uscc, grantee=bank_a_id, purpose=Purpose.POST_LOAN_MONITORING, max_uses=5),
    ]
    for_b = [trust.consent(uscc, grantee=bank_b_id)]
    yield People(
        url=url,
        operator=trust.operator_api_key,
        bank_a=bank_a,
        bank_b=bank_b,
        bank_a_id=bank_a_id,
        bank_b_id=bank_b_id,
        bureau_a=bureaus[0],
        bureau_b=bureaus[1],
        enterprise=trust.enterprise_api_key(uscc),
        department=department,
        uscc=uscc,
        for_a=for_a,
        for_b=for_b,
    )


def _as(people: People, api_key: str) -> list[str]:
    return ["--coordinator", people.url, "--api-key", api_key]


def _status(people: People, path: str, api_key: str) -> int:
    headers = {"Authorization": f"Bearer {api_key}"}
    return httpx.get(f"{people.url}{path}", headers=headers, timeout=30).status_code


def _start_job(people: People, bureau: Bureau, nodes: list[str]) -> str:
    body = {
        "model_id": f"cli-model-{secrets.token_hex(4)}",
        "nodes": nodes,
        "key_fingerprint": bureau.fingerprint,
    }
    response = httpx.post(
        f"{people.url}/v1/training-jobs",
        headers={"Authorization": f"Bearer {bureau.api_key}"},
        json=signed_job_body(bureau.identity, body),
        timeout=60,
    )
    assert response.status_code == 201, response.text
    return str(response.json()["id"])


# -- consents ----------------------------------------------------------------------------


def test_each_party_lists_only_its_own_consents(people: People) -> None:
    held_a = cli_json("consents", *_as(people, people.bank_a))
    assert [c["consent_id"] for c in held_a] == people.for_a[::-1]  # newest first
    assert {c["grantee"] for c in held_a} == {people.bank_a_id}
    first = held_a[-1]
    assert first["uscc"] == people.uscc and first["purpose"] == "pre_loan_review"
    assert first["revoked"] is False and first["created_at"]
    assert held_a[0]["max_uses"] == 5 and held_a[0]["uses"] == 0

    held_b = cli_json("consents", *_as(people, people.bank_b))
    assert [c["consent_id"] for c in held_b] == people.for_b

    # The enterprise lists what it granted (both banks'), and only its own.
    granted = cli_json("enterprise", "consents", *_as(people, people.enterprise))
    ids = [c["consent_id"] for c in granted]
    assert set(people.for_a + people.for_b) <= set(ids)
    assert {c["uscc"] for c in granted} == {people.uscc}
    with CreditShareClient(people.url, api_key=people.enterprise) as client:
        assert {c["consent_id"] for c in client.enterprise_consents(people.uscc)} == set(ids)

    # The operator sees every consent; a department has none to list.
    everyone = cli_json("consents", *_as(people, people.operator), "--uscc", people.uscc)
    assert set(people.for_a + people.for_b) <= {c["consent_id"] for c in everyone}
    assert _status(people, "/v1/consents", people.department) == 403

    # The table has its headers.
    table = cli("consents", *_as(people, people.bank_a))
    assert all(h in table for h in ("consent", "uscc", "grantee", "purpose", "uses", "state"))
    assert people.for_a[0] in table


def test_consents_come_a_page_at_a_time(people: People) -> None:
    newest, older = people.for_a[::-1]
    page = cli_json("consents", *_as(people, people.bank_a), "--limit", "1")
    assert [c["consent_id"] for c in page] == [newest]
    headers = {"Authorization": f"Bearer {people.bank_a}"}
    response = httpx.get(
        f"{people.url}/v1/consents", params={"limit": 1}, headers=headers, timeout=30
    )
    assert (
        f"before={newest}" in response.headers["link"] and 'rel="next"' in response.headers["link"]
    )
    rest = cli_json("consents", *_as(people, people.bank_a), "--before", newest)
    assert [c["consent_id"] for c in rest] == [older]
    # Another bank's consent id is no cursor for this bank: refused, naming `before`.
    other = httpx.get(
        f"{people.url}/v1/consents",
        params={"before": people.for_b[0]},
        headers=headers,
        timeout=30,
    )
    assert other.status_code == 422 and other.json()["field"] == "before"
    bad = httpx.get(
        f"{people.url}/v1/consents", params={"uscc": "91310115MA3BJ1XGX0"}, headers=headers
    )
    assert bad.status_code == 422 and bad.json()["field"] == "uscc"


# -- training jobs -----------------------------------------------------------------------


def test_a_bureau_lists_its_own_jobs_and_an_operator_all(
    people: People, federation: Federation
) -> None:
    nodes = [federation.layout.nodes[0].node_id]
    a, b = people.bureau_a, people.bureau_b
    first = _start_job(people, a, nodes)
    second = _start_job(people, a, nodes)
    theirs = _start_job(people, b, nodes)
    try:
        mine = cli_json("bureau", "jobs", *_as(people, a.api_key))
        assert [j["id"] for j in mine] == [second, first]  # newest first, only A's
        job = mine[0]
        assert job["bureau"] == a.id and job["status"] == "aligning"
        assert job["model_type"] == "logistic" and job["nodes"] == nodes
        assert job["created_at"] and job["updated_at"] and "history" not in job
        assert [j["id"] for j in cli_json("bureau", "jobs", *_as(people, b.api_key))] == [theirs]
        every = {j["id"] for j in cli_json("bureau", "jobs", *_as(people, people.operator))}
        assert {first, second, theirs} <= every
        for role_key in (people.bank_a, people.enterprise, people.department):
            assert _status(people, "/v1/training-jobs", role_key) == 403
        # B cannot page through A's jobs by naming one as the cursor.
        headers = {"Authorization": f"Bearer {b.api_key}"}
        other = httpx.get(
            f"{people.url}/v1/training-jobs", params={"before": first}, headers=headers
        )
        assert other.status_code == 422 and other.json()["field"] == "before"
        odd = httpx.get(
            f"{people.url}/v1/training-jobs", params={"status": "sleeping"}, headers=headers
        )
        assert odd.status_code == 422

        # Cancelled through the CLI; the status filter then finds it, and only it.
        out = cli("bureau", "cancel", *_as(people, a.api_key), "--id", first, "--reason", "test")
        assert f"training job {first} is cancelled" in out
        cancelled = cli_json(
            "bureau", "jobs", *_as(people, a.api_key), "--status", "cancelled", "--limit", "5"
        )
        assert [j["id"] for j in cancelled] == [first]
        aligning = cli_json("bureau", "jobs", *_as(people, a.api_key), "--status", "aligning")
        assert [j["id"] for j in aligning] == [second]
        table = cli("bureau", "jobs", *_as(people, a.api_key))
        assert all(h in table for h in ("job", "model", "status", "progress", "created", "error"))
    finally:
        for bureau, job_id in ((a, first), (a, second), (b, theirs)):
            with CreditShareClient(people.url, api_key=bureau.api_key) as client:
                assert client.cancel_training_job(job_id)["status"] in ("cancelled", "failed")


# -- participants, registry --------------------------------------------------------------


def test_admin_list_shows_participants_and_filters_by_role(people: People) -> None:
    everyone = cli_json("admin", "list", *_as(people, people.operator))
    ids = {p["id"] for p in everyone}
    assert {people.bureau_a.id, people.bureau_b.id} <= ids
    bureaus = cli_json("admin", "list", *_as(people, people.operator), "--role", "bureau")
    assert {p["role"] for p in bureaus} == {"bureau"}
    assert {people.bureau_a.id, people.bureau_b.id} <= {p["id"] for p in bureaus}
    assert all(p["created_at"] for p in bureaus)
    table = cli("admin", "list", *_as(people, people.operator), "--role", "bureau")
    assert all(h in table for h in ("id", "role", "name", "uscc", "disabled", "created"))
    assert people.bureau_a.id in table
    refused = runner.invoke(app, ["admin", "list", *_as(people, people.bank_a)])
    assert refused.exit_code != 0


def test_admin_disable_and_enable_say_what_happened(people: People) -> None:
    bank = people.bank_b_id
    out = cli("admin", "disable", *_as(people, people.operator), "--id", bank)
    assert f"{bank} (bank): disabled" in out
    assert _status(people, "/v1/consents", people.bank_b) == 401
    out = cli("admin", "enable", *_as(people, people.operator), "--id", bank)
    assert f"{bank} (bank): enabled" in out
    assert _status(people, "/v1/consents", people.bank_b) == 200

    # A further key, printed once on a line of its own; revoked by its key id, it stops,
    # and the bank's first key keeps working.
    out = cli("admin", "issue-key", *_as(people, people.operator), "--id", bank)
    second = out.strip().splitlines()[-1]
    assert _status(people, "/v1/consents", second) == 200
    key_id = second.removeprefix("cs_").split(".", 1)[0]
    out = cli(
        "admin", "revoke-key", *_as(people, people.operator), "--id", bank, "--key-id", key_id
    )
    assert f"key {key_id} of {bank} revoked" in out
    assert _status(people, "/v1/consents", second) == 401
    assert _status(people, "/v1/consents", people.bank_b) == 200


def test_models_nodes_and_indicators(people: People, federation: Federation) -> None:
    models = cli_json("models", *_as(people, people.bank_a))
    assert "sme-scorecard-v1" in {m["id"] for m in models}
    nodes = cli_json("nodes", *_as(people, people.bank_a))
    assert {n["id"] for n in nodes} == {n.node_id for n in federation.layout.nodes}
    assert all({"chain", "department", "address"} <= set(n) for n in nodes)
    indicators = cli_json("indicators", *_as(people, people.bank_a))
    assert indicators and all(i["name"] and i["nodes"] for i in indicators)
    assert all(
        {"reachable", "last_answer_at", "last_latency_ms", "version"} <= set(n) for n in nodes
    )
    table = cli("nodes", *_as(people, people.bank_a))
    headers = ("id", "chain", "department", "address", "reachable", "last answer", "version")
    assert all(h in table for h in headers)
    table = cli("models", *_as(people, people.bank_a))
    assert all(h in table for h in ("id", "type", "trained by", "test AUC", "test KS"))


def test_credentials_revocation_lists_and_signals(people: People, trust: Trust) -> None:
    held = cli_json("credentials", *_as(people, people.bank_a))
    assert {c["participant_id"] for c in held} == {people.bank_a_id}
    assert len(held) == len(trust.layout.identity(people.bank_a_id, "bank").credentials)
    assert all(c["fingerprint"] and c["serial"] and c["not_after"] for c in held)
    lists = cli_json("admin", "revocation-lists", *_as(people, people.operator))
    assert len({r["issuer"] for r in lists}) == 3  # one per chain CA
    assert all(r["number"] >= 1 and r["next_update"] > r["this_update"] for r in lists)
    signals = {s["type"]: s for s in cli_json("alerts", "signals", *_as(people, people.bank_a))}
    court = [n.node_id for n in trust.layout.nodes if n.node_id.endswith("-court")]
    assert set(court) <= set(signals["court_judgment"]["nodes"])
    table = cli("alerts", "signals", *_as(people, people.bank_a))
    assert "court_judgment" in table and "severity" in table


def test_keys_list(people: People) -> None:
    keys = cli_json("keys", "list", *_as(people, people.bureau_a.api_key))
    assert [k["fingerprint"] for k in keys] == [people.bureau_a.fingerprint]
    assert keys[0]["active"] is True and keys[0]["bits"] == 2048
    table = cli("keys", "list", *_as(people, people.bureau_a.api_key))
    assert "fingerprint" in table and people.bureau_a.fingerprint in table


# -- an enterprise's access log, monitoring ----------------------------------------------


def test_enterprise_queries_json(people: People, tmp_path: Path) -> None:
    with CreditShareClient(people.url, api_key=people.bank_a) as bank:
        log_key = bank.log_public_key().to_text()
    doc = cli_json(
        "enterprise",
        "queries",
        *_as(people, people.enterprise),
        "--uscc",
        people.uscc,
        "--log-key",
        log_key,
        "--heads-file",
        str(tmp_path / "heads.json"),
    )
    assert doc["witnessed"] is False
    assert all(e["verified"] for e in doc["entries"])
    assert all({"index", "time", "kind", "requester", "purpose"} <= set(e) for e in doc["entries"])


def test_subscriptions_alerts_and_cycles(people: People, trust: Trust, tmp_path: Path) -> None:
    with CreditShareClient(
        people.url,
        api_key=people.bank_a,
        identity=trust.layout.identity(people.bank_a_id, "bank"),
        alert_key=AlertPrivateKey.generate(),
    ) as bank:
        sub = bank.subscribe(people.uscc, people.for_a[1], ["court_judgment"])
    listed = cli_json("alerts", "subscriptions", *_as(people, people.bank_a))
    assert [s["subscription_id"] for s in listed] == [sub["subscription_id"]]
    assert listed[0]["uscc"] == people.uscc
    active = cli_json("alerts", "subscriptions", *_as(people, people.bank_a), "--status", "ended")
    assert active == []
    alerts = cli_json(
        "alerts",
        "list",
        *_as(people, people.bank_a),
        "--alert-key-file",
        str(tmp_path / "alert-key.txt"),
    )
    assert alerts["alerts"] == [] and alerts["gaps"] == []
    cycle = _run_cycle(people)
    cycles = cli_json("monitoring", "cycles", *_as(people, people.operator), "--limit", "3")
    assert cycles[0]["number"] == cycle["number"]
    table = cli("monitoring", "cycles", *_as(people, people.operator), "--limit", "3")
    assert "cycle" in table and "subscriptions" in table


def _run_cycle(people: People) -> Any:
    """``monitoring cycle --json``; while another cycle runs (409), again until it ended."""
    deadline = time.monotonic() + 300
    while True:
        result = runner.invoke(
            app, ["monitoring", "cycle", *_as(people, people.operator), "--json"]
        )
        busy = isinstance(result.exception, ProblemError) and result.exception.status == 409
        if not busy or time.monotonic() > deadline:
            assert result.exit_code == 0, (result.stdout, result.stderr, result.exception)
            return json.loads(result.stdout)
        time.sleep(1)


# -- node-local lists --------------------------------------------------------------------


def test_node_lists_read_the_nodes_own_database(
    people: People, trust: Trust, federation: Federation
) -> None:
    consent = trust.consent(people.uscc)
    profile = trust.bank.query(people.uscc, consent)
    answered = set(profile.answered)
    assert answered
    nodes = {n.node_id: n for n in federation.layout.nodes}
    for node_id in answered:
        config = str(nodes[node_id].config)
        log = cli_json("node", "access-log", "--config", config, "--limit", "1000")
        assert consent in {e["consent_id"] for e in log}, node_id
        entry = next(e for e in log if e["consent_id"] == consent)
        assert entry["uscc"] == people.uscc and entry["requester"] == trust.bank_id
        imports = cli_json("node", "imports", "--config", config)
        assert imports and imports[0]["rows"] > 0 and imports[0]["sha256"]
        refusals = cli_json("node", "refusals", "--config", config)
        assert isinstance(refusals, list)
        assert all({"refused_at", "rpc", "status", "reason"} <= set(r) for r in refusals)
    config = str(nodes[sorted(answered)[0]].config)
    assert "ledger index" in cli("node", "access-log", "--config", config)
    assert "snapshot" in cli("node", "imports", "--config", config)
