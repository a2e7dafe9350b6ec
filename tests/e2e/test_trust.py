"""Who may ask, under which consent, and what the ledger proves (real servers, mTLS)."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
from collections.abc import Callable
from contextlib import AbstractContextManager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest
from fastapi import FastAPI

from creditshare.consent import Purpose
from creditshare.coordinator import create_app
from creditshare.crypto import PrivateKey, VerifyKey
from creditshare.demo import Federation, read_enterprises
from creditshare.errors import ProblemError
from creditshare.identity import Chain
from creditshare.pki import channel_credentials, init_ca
from creditshare.proto import node_pb2, node_pb2_grpc
from tests._pki import make_tls

from .conftest import Trust


def _usccs(federation: Federation, n: int) -> list[str]:
    rows = read_enterprises(federation.layout.data_dir)
    return [r["uscc"] for r in rows if r["record_chains"] == "yrd"][:n]


@pytest.fixture(scope="module")
def uscc_pool(federation: Federation) -> list[str]:
    return _usccs(federation, 40)


def _take(pool: list[str]) -> str:
    return pool.pop()


def _refusals(trust: Trust, uscc: str) -> list[dict[str, Any]]:
    client, _ = trust.enterprise(uscc)
    return [
        e["record"] for e in client.enterprise_queries(uscc) if e["record"]["kind"] == "refusal"
    ]


def _status(call: Callable[[], object]) -> ProblemError:
    with pytest.raises(ProblemError) as caught:
        call()
    return caught.value


# --- credentials and roles ---------------------------------------------------------------


def test_no_credential_is_401(trust: Trust) -> None:
    response = httpx.post(f"{trust.url}/v1/queries", json={}, timeout=10)
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == "Bearer"
    bad = httpx.get(
        f"{trust.url}/v1/ledger/head",
        timeout=10,
        headers={"Authorization": "Bearer cs_0000000000000000.forged"},
    )
    assert bad.status_code == 401


def test_wrong_role_is_403(trust: Trust, uscc_pool: list[str], bank_key: PrivateKey) -> None:
    uscc = _take(uscc_pool)
    trust.enterprise(uscc)
    # An enterprise may not run credit queries...
    response = httpx.post(
        f"{trust.url}/v1/queries",
        timeout=10,
        headers={"Authorization": f"Bearer {trust.enterprise_api_key(uscc)}"},
        json=trust.signed(
            {
                "uscc": uscc,
                "model_id": "sme-scorecard-v1",
                "purpose": "pre_loan_review",
                "consent_id": "0" * 32,
                "key_fingerprint": bank_key.public_key.fingerprint(),
            }
        ),
    )
    assert response.status_code == 403
    # ...and a bank may not register participants.
    error = _status(lambda: trust.bank.register_participant("rogue", "bank", "Rogue"))
    assert error.status == 403


def test_someone_elses_resources_are_403(trust: Trust, uscc_pool: list[str]) -> None:
    mine, theirs = _take(uscc_pool), _take(uscc_pool)
    consent = trust.consent(theirs)
    me, _ = trust.enterprise(mine)
    assert _status(lambda: me.enterprise_queries(theirs)).status == 403
    assert _status(lambda: me.consent(consent)).status == 403
    assert _status(lambda: me.revoke_consent(consent)).status == 403
    # A bank cannot read an enterprise's access log either.
    assert _status(lambda: trust.bank.enterprise_queries(theirs)).status == 403


# --- consent ----------------------------------------------------------------------------


def test_unknown_consent_is_403_and_recorded(trust: Trust, uscc_pool: list[str]) -> None:
    uscc = _take(uscc_pool)
    error = _status(lambda: trust.bank.query(uscc, "f" * 32))
    assert error.status == 403 and error.body["recorded"] is True
    assert [r["consent_id"] for r in _refusals(trust, uscc)] == ["f" * 32]


def test_expired_consent_is_403_and_recorded(trust: Trust, uscc_pool: list[str]) -> None:
    uscc = _take(uscc_pool)
    past = datetime.now(UTC) - timedelta(days=2)
    consent = trust.consent(uscc, valid_from=past, valid_until=past + timedelta(days=1))
    error = _status(lambda: trust.bank.query(uscc, consent))
    assert error.status == 403 and "expired" in error.detail
    assert "expired" in _refusals(trust, uscc)[0]["reason"]


def test_revoked_consent_is_refused_at_once(trust: Trust, uscc_pool: list[str]) -> None:
    uscc = _take(uscc_pool)
    consent = trust.consent(uscc)
    trust.bank.query(uscc, consent)
    enterprise, _ = trust.enterprise(uscc)
    assert enterprise.revoke_consent(consent)["revoked"] is True
    error = _status(lambda: trust.bank.query(uscc, consent))
    assert error.status == 403 and "revoked" in error.detail
    assert len(_refusals(trust, uscc)) == 1


def test_purpose_outside_consent_is_403(trust: Trust, uscc_pool: list[str]) -> None:
    uscc = _take(uscc_pool)
    consent = trust.consent(uscc, purpose=Purpose.PRE_LOAN_REVIEW)
    error = _status(lambda: trust.bank.query(uscc, consent, purpose=Purpose.POST_LOAN_MONITORING))
    assert error.status == 403 and "purpose" in error.detail
    assert _refusals(trust, uscc)[0]["purpose"] == "post_loan_monitoring"


def test_use_limit_and_chain_scope(trust: Trust, uscc_pool: list[str]) -> None:
    uscc = _take(uscc_pool)
    consent = trust.consent(uscc, max_uses=1, chains=(Chain.YRD,))
    error = _status(lambda: trust.bank.query(uscc, consent, chains=["bth"]))
    assert error.status == 403 and "bth" in error.detail
    profile = trust.bank.query(uscc, consent)  # scope defaults to the consent's chains
    assert {a.split("-")[0] for a in profile.answered} == {"yrd"}
    error = _status(lambda: trust.bank.query(uscc, consent))
    assert error.status == 403 and "use limit" in error.detail


def test_consent_for_another_grantee_is_refused(trust: Trust, uscc_pool: list[str]) -> None:
    uscc = _take(uscc_pool)
    trust.operator.register_participant("other-bank", "bank", "Other Bank")
    consent = trust.consent(uscc, grantee="other-bank")
    error = _status(lambda: trust.bank.query(uscc, consent))
    assert error.status == 403 and "another participant" in error.detail


def test_forged_consent_signature_is_422(trust: Trust, uscc_pool: list[str]) -> None:
    from creditshare.consent import ConsentGrant
    from creditshare.crypto import SigningKey

    uscc = _take(uscc_pool)
    enterprise, _ = trust.enterprise(uscc)
    now = datetime.now(UTC)
    grant = ConsentGrant.create(
        uscc, trust.bank_id, Purpose.PRE_LOAN_REVIEW, now, now + timedelta(days=1)
    )
    error = _status(lambda: enterprise.grant_consent(grant.sign(SigningKey.generate())))
    assert error.status == 422 and "signature" in error.detail


def test_indicators_outside_scope_are_not_returned(trust: Trust, federation: Federation) -> None:
    rows = read_enterprises(federation.layout.data_dir)
    uscc = next(r["uscc"] for r in rows if r["record_chains"] == "prd")
    consent = trust.consent(uscc, indicators=("tax_credit_grade", "dishonest_debtor"))
    profile = trust.bank.query(uscc, consent)
    names = {i.name for i in profile.indicators} - {"record_present"}
    assert names and names <= {"tax_credit_grade", "dishonest_debtor"}
    returned = {i["name"] for i in profile.raw["indicators"]} - {"record_present"}
    assert returned <= {"tax_credit_grade", "dishonest_debtor"}


def test_a_consent_naming_an_unpublished_indicator_is_refused(
    trust: Trust, uscc_pool: list[str]
) -> None:
    """A misspelt indicator is an error at the door, not a profile that comes back empty:
    nothing is stored, and the enterprise can grant the corrected consent at once."""
    from creditshare.consent import ConsentGrant

    uscc = _take(uscc_pool)
    enterprise, signing = trust.enterprise(uscc)
    now = datetime.now(UTC)
    misspelt = ConsentGrant.create(
        uscc,
        trust.bank_id,
        Purpose.PRE_LOAN_REVIEW,
        now - timedelta(minutes=1),
        now + timedelta(days=1),
        indicators=("tax_credit_grade", "tax_grade"),
    )
    error = _status(lambda: enterprise.grant_consent(misspelt.sign(signing)))
    assert error.status == 422
    assert "'tax_grade'" in error.detail and "tax_credit_grade" in error.detail
    assert _status(lambda: enterprise.consent(misspelt.consent_id)).status == 404
    published = {i["name"]: i for i in trust.bank.get("/v1/indicators")}
    assert published["tax_credit_grade"]["bands"] == ["A", "B", "M", "C", "D"]
    assert "tax" in published["tax_credit_grade"]["departments"]
    assert "record_present" not in published and "tax_grade" not in published
    consent = trust.consent(uscc, indicators=("tax_credit_grade",))
    profile = trust.bank.query(uscc, consent)
    assert {i.name for i in profile.indicators} <= {"tax_credit_grade", "record_present"}


# --- the ledger -------------------------------------------------------------------------


def test_enterprise_sees_and_verifies_every_query(trust: Trust, uscc_pool: list[str]) -> None:
    uscc = _take(uscc_pool)
    consent = trust.consent(uscc)
    first = trust.bank.query(uscc, consent)
    second = trust.bank.query(uscc, consent)
    enterprise, _ = trust.enterprise(uscc)
    entries = enterprise.verified_enterprise_queries(uscc, trust.layout.log_key())
    assert [e.index for e in entries] == [first.raw["ledger_index"], second.raw["ledger_index"]]
    assert all(e.verified for e in entries)
    assert {(e.record.requester, e.record.purpose, e.record.consent_id) for e in entries} == {
        (trust.bank_id, "pre_loan_review", consent)
    }


def test_access_log_checked_against_the_wrong_key_fails(trust: Trust, uscc_pool: list[str]) -> None:
    from creditshare.crypto import SigningKey

    uscc = _take(uscc_pool)
    trust.bank.query(uscc, trust.consent(uscc))
    enterprise, _ = trust.enterprise(uscc)
    entries = enterprise.verified_enterprise_queries(uscc, SigningKey.generate().verify_key)
    assert entries and not any(e.verified for e in entries)


def test_consistency_proofs_between_heads(trust: Trust, uscc_pool: list[str]) -> None:
    import base64

    from creditshare.ledger import verify_consistency

    uscc = _take(uscc_pool)
    consent = trust.consent(uscc)
    old = trust.bank.ledger_head()
    trust.bank.query(uscc, consent)
    new = trust.bank.ledger_head()
    proof = httpx.get(
        f"{trust.url}/v1/ledger/proofs/consistency",
        timeout=10,
        params={"first": old["size"], "second": new["size"]},
        headers={"Authorization": f"Bearer {trust.bank_api_key}"},
    ).json()["hashes"]
    verify_consistency(
        old["size"],
        new["size"],
        base64.b64decode(old["root"]),
        base64.b64decode(new["root"]),
        [base64.b64decode(h) for h in proof],
    )


def test_ledger_verify_detects_a_changed_row(
    small_federation: Federation, small_trust: Trust
) -> None:
    uscc = _usccs(small_federation, 1)[0]
    small_trust.bank.query(uscc, small_trust.consent(uscc))
    config = small_federation.layout.coordinator_config
    assert config is not None
    verify = [sys.executable, "-m", "creditshare", "ledger", "verify", "--config", str(config)]
    clean = subprocess.run(verify, capture_output=True, text=True, timeout=60)
    assert clean.returncode == 0, clean.stderr
    db = small_federation.layout.coordinator_settings().database_url.removeprefix("sqlite:///")
    with sqlite3.connect(db) as conn:
        (data,) = conn.execute("SELECT data FROM ledger_leaf WHERE idx = 0").fetchone()
        conn.execute(
            "UPDATE ledger_leaf SET data = ? WHERE idx = 0",
            (bytes(data).replace(b"small-bank", b"other-bank"),),
        )
    tampered = subprocess.run(verify, capture_output=True, text=True, timeout=60)
    assert tampered.returncode == 1
    assert "leaf 0" in tampered.stderr


def test_node_refuses_a_coordinator_with_a_rewritten_log(
    small_federation: Federation,
    small_trust: Trust,
    tmp_path: Path,
    serve_app: Callable[[FastAPI], AbstractContextManager[str]],
) -> None:
    """Same signing key, a fresh database: a second history the nodes must not accept."""
    uscc = _usccs(small_federation, 1)[0]
    small_trust.bank.query(uscc, small_trust.consent(uscc))  # nodes now trust the real log
    settings = small_federation.layout.coordinator_settings()
    rogue_settings = settings.model_copy(
        update={"database_url": f"sqlite:///{tmp_path / 'rewritten.db'}"}
    )
    # Our own coordinator, started on the rewritten log, refuses to sign: the nodes it
    # asks at start hold a signed head that the rewritten entries do not reproduce.
    honest_app = create_app(rogue_settings)
    for _ in range(5):  # longer than the log the nodes trust
        honest_app.state.services.ledger.append(b"padding", "x")
    with serve_app(honest_app) as url:
        ready = httpx.get(f"{url}/readyz", timeout=30)
        assert ready.status_code == 503
        assert "the log was rewritten" in ready.json()["reasons"]["ledger"]
    # A compromised coordinator would skip that check (simulated here by switching it
    # off): the nodes must then refuse the fork themselves.
    rogue_app = create_app(rogue_settings)
    services = rogue_app.state.services
    services.ledger.check_witnesses = lambda heads: None
    with serve_app(rogue_app) as url:
        operator = services.participants
        operator.register("small-bank", "bank", "Small Bank")
        api_key = operator.issue_key("small-bank").api_key
        enterprise_client, signing = small_trust.enterprise(uscc)
        enterprise = operator.register(
            f"ent-{uscc.lower()}",
            "enterprise",
            "E",
            uscc=uscc,
            signing_key=signing.verify_key.to_text(),
        )
        for certificate in enterprise_client.identity.credentials:
            services.credentials.add(enterprise, certificate, signing.verify_key)
        from creditshare.client import CreditShareClient
        from creditshare.consent import ConsentGrant

        now = datetime.now(UTC)
        grant = ConsentGrant.create(
            uscc,
            "small-bank",
            Purpose.PRE_LOAN_REVIEW,
            now - timedelta(minutes=1),
            now + timedelta(days=1),
        )
        with CreditShareClient(
            url,
            api_key=api_key,
            private_key=small_trust.bank.private_key,
            identity=small_trust.bank_identity,
        ) as c:
            c.grant_consent(grant.sign(signing))
            error = _status(lambda: c.query(uscc, grant.consent_id))
    assert error.status == 503
    failed: list[dict[str, str]] = error.body["failed"]  # type: ignore[assignment]
    reasons = {f["reason"] for f in failed}
    # Refused as a fork, not as a stale head that a retry would fix.
    assert all(
        r.startswith("failed_precondition") and "does not extend the trusted head" in r
        for r in reasons
    ), reasons


# --- mutual TLS -------------------------------------------------------------------------


def _health(address: str, credentials: grpc.ChannelCredentials | None) -> grpc.StatusCode:
    channel = (
        grpc.secure_channel(address, credentials) if credentials else grpc.insecure_channel(address)
    )
    with channel:
        try:
            node_pb2_grpc.DataNodeStub(channel).Describe(node_pb2.DescribeRequest(), timeout=5)
        except grpc.RpcError as exc:
            return exc.code()
    return grpc.StatusCode.OK


def test_node_refuses_clients_without_a_chain_certificate(
    federation: Federation, tmp_path: Path
) -> None:
    layout = federation.layout
    node = next(n for n in layout.nodes if n.chain is Chain.YRD)
    tls = layout.coordinator_settings().tls
    yrd, prd = tls[Chain.YRD], tls[Chain.PRD]
    assert (
        _health(node.address, channel_credentials(yrd.ca, yrd.cert, yrd.key)) is grpc.StatusCode.OK
    )
    assert _health(node.address, None) is grpc.StatusCode.UNAVAILABLE
    # A certificate from another chain's CA (trusting the right server CA) is refused.
    assert _health(node.address, channel_credentials(yrd.ca, prd.cert, prd.key)) is (
        grpc.StatusCode.UNAVAILABLE
    )
    # So is one from a CA nobody trusts.
    init_ca("yrd", tmp_path / "rogue-ca")
    rogue = make_tls(tmp_path / "rogue-ca", tmp_path / "rogue", "coordinator-yrd", "coordinator")
    assert _health(node.address, channel_credentials(yrd.ca, rogue.cert, rogue.key)) is (
        grpc.StatusCode.UNAVAILABLE
    )


# --- limits -----------------------------------------------------------------------------


def test_rate_limits_answer_429_with_retry_after(
    federation: Federation,
    trust: Trust,
    uscc_pool: list[str],
    serve_app: Callable[[FastAPI], AbstractContextManager[str]],
) -> None:
    settings = federation.layout.coordinator_settings().model_copy(
        update={"participant_requests_per_minute": 3, "enterprise_queries_per_day": 1}
    )
    uscc = _take(uscc_pool)
    consent = trust.consent(uscc)
    headers = {"Authorization": f"Bearer {trust.bank_api_key}"}
    with serve_app(create_app(settings)) as url:
        body = {
            "uscc": uscc,
            "model_id": "sme-scorecard-v1",
            "purpose": "pre_loan_review",
            "consent_id": consent,
            "key_fingerprint": trust.bank.ensure_paillier_key(),
        }
        first = httpx.post(
            f"{url}/v1/queries", json=trust.signed(body), headers=headers, timeout=30
        )
        assert first.status_code == 200
        second = httpx.post(
            f"{url}/v1/queries", json=trust.signed(body), headers=headers, timeout=30
        )
        assert second.status_code == 429 and "enterprise" in second.json()["detail"]
        assert int(second.headers["retry-after"]) > 0
        third = httpx.get(f"{url}/v1/ledger/head", headers=headers, timeout=30)
        assert third.status_code == 200
        fourth = httpx.get(f"{url}/v1/ledger/head", headers=headers, timeout=30)
        assert fourth.status_code == 429 and "participant" in fourth.json()["detail"]
        assert 0 < int(fourth.headers["retry-after"]) <= 60


def test_operator_revokes_keys_and_disables_participants(trust: Trust) -> None:
    issued = trust.operator.register_participant("short-lived-bank", "bank", "Short Lived")
    first = issued["api_key"]
    second = trust.operator.post("/v1/participants/short-lived-bank/credentials")["api_key"]
    key_id = first.split(".")[0].removeprefix("cs_")
    headers = {"Authorization": f"Bearer {first}"}
    assert httpx.get(f"{trust.url}/v1/nodes", headers=headers, timeout=10).status_code == 200
    revoked = httpx.post(
        f"{trust.url}/v1/participants/short-lived-bank/credentials/{key_id}/revoke",
        headers={"Authorization": f"Bearer {trust.operator_api_key}"},
        timeout=10,
    )
    assert revoked.status_code == 204
    assert httpx.get(f"{trust.url}/v1/nodes", headers=headers, timeout=10).status_code == 401
    other = {"Authorization": f"Bearer {second}"}
    assert httpx.get(f"{trust.url}/v1/nodes", headers=other, timeout=10).status_code == 200
    assert trust.operator.post("/v1/participants/short-lived-bank/disable")["disabled"] is True
    assert httpx.get(f"{trust.url}/v1/nodes", headers=other, timeout=10).status_code == 401
    # Only operators may do either.
    assert _status(lambda: trust.bank.post("/v1/participants/test-bank/disable")).status == 403


def test_an_enterprise_made_with_pki_request_grants_and_revokes_from_the_cli(
    trust: Trust, federation: Federation, uscc_pool: list[str], tmp_path: Path
) -> None:
    """The documented enterprise path, end to end with the CLI: its own key (`pki
    request` prints the public half to register), certified by every chain CA; `grant
    --identity` uploads the credentials the first time; the bank's query is answered;
    `revoke --identity` signs the revocation and every node holds it."""
    uscc = _take(uscc_pool)
    participant = f"cli-{uscc.lower()}"
    folder = tmp_path / "identity"

    def cli(*args: str) -> str:
        done = subprocess.run(
            [sys.executable, "-m", "creditshare", *args],
            capture_output=True,
            text=True,
            timeout=120,
            check=False,
        )
        assert done.returncode == 0, done.stdout + done.stderr
        return done.stdout

    printed = cli(
        "pki",
        "request",
        "--id",
        participant,
        "--role",
        "enterprise",
        "--uscc",
        uscc,
        "--out",
        str(folder),
    )
    public_key = printed.strip().splitlines()[-1]
    for chain in Chain:
        ca_dir = federation.layout.work_dir / "pki" / chain.value / "ca"
        cli(
            "pki",
            "sign",
            "--ca-dir",
            str(ca_dir),
            "--csr",
            str(folder / "signing.csr"),
            "--out",
            str(folder / f"{chain.value}.crt"),
        )
    issued = trust.operator.register_participant(
        participant,
        "enterprise",
        "CLI enterprise",
        uscc=uscc,
        signing_key=VerifyKey.from_text(public_key),
    )
    common = ("--coordinator", trust.url, "--api-key", issued["api_key"], "--identity", str(folder))
    consent = (
        cli("enterprise", "grant", *common, "--uscc", uscc, "--grantee", trust.bank_id)
        .strip()
        .splitlines()[-1]
    )
    assert trust.bank.query(uscc, consent).answered
    revoked = cli("enterprise", "revoke", *common, "--consent", consent)
    nodes = len(federation.layout.nodes)
    assert f"held by {nodes} of {nodes} data nodes" in revoked
    refused = _status(lambda: trust.bank.query(uscc, consent))
    assert refused.status == 403 and "revoked" in refused.detail
