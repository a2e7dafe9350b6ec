"""The main path over real HTTP and gRPC: query, decrypt, compare with plaintext."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI

from creditshare.client import CreditProfile, CreditShareClient
from creditshare.coordinator import create_app
from creditshare.crypto import PrivateKey
from creditshare.demo import Federation, PlaintextOracle, read_enterprises
from creditshare.synth import unknown_uscc

from .conftest import Trust


@pytest.fixture(scope="module")
def client(trust: Trust) -> CreditShareClient:
    return trust.bank


def _query(trust: Trust, uscc: str, **kwargs: Any) -> CreditProfile:
    return trust.bank.query(uscc, trust.consent(uscc), **kwargs)


def _sample(data_dir: Path) -> list[str]:
    rows = read_enterprises(data_dir)
    home_only = [r["uscc"] for r in rows if ";" not in r["record_chains"]][:4]
    cross = [r["uscc"] for r in rows if ";" in r["record_chains"]][:2]
    return [*home_only, *cross, unknown_uscc(5, {r["uscc"] for r in rows})]


def test_decrypted_profiles_equal_plaintext_recomputation(
    trust: Trust, oracle: PlaintextOracle, data_dir: Path, federation: Federation
) -> None:
    all_nodes = sorted(n.node_id for n in federation.layout.nodes)
    for uscc in _sample(data_dir):
        profile = _query(trust, uscc)
        assert sorted(profile.answered) == all_nodes
        assert profile.failed == []
        check = oracle.verify(profile, int(profile.raw["scale"]))
        assert check.score_ok, (uscc, profile.linear_score, check.expected_linear)
        assert check.presence_ok and check.indicators_ok, uscc


def test_concurrent_queries_all_get_complete_answers(
    trust: Trust, oracle: PlaintextOracle, data_dir: Path, federation: Federation
) -> None:
    """Queries recorded under different heads race to the same nodes: a node that has
    already accepted a newer head must still take an older receipt (proven a prefix)."""
    all_nodes = sorted(n.node_id for n in federation.layout.nodes)
    usccs = _sample(data_dir)[:6]
    consents = {uscc: trust.consent(uscc) for uscc in usccs}
    jobs = [usccs[i % len(usccs)] for i in range(48)]
    with ThreadPoolExecutor(max_workers=8) as pool:
        profiles = list(pool.map(lambda u: (u, trust.bank.query(u, consents[u])), jobs))
    for uscc, profile in profiles:
        assert profile.failed == [], (uscc, profile.failed)
        assert sorted(profile.answered) == all_nodes
        check = oracle.verify(profile, int(profile.raw["scale"]))
        assert check.score_ok and check.presence_ok and check.indicators_ok, uscc


def test_cross_chain_enterprise_shows_both_chains(
    trust: Trust, oracle: PlaintextOracle, data_dir: Path
) -> None:
    rows = read_enterprises(data_dir)
    # An enterprise whose records span two chains among the e2e departments.
    for row in rows:
        if ";" not in row["record_chains"]:
            continue
        profile = _query(trust, row["uscc"])
        if len(profile.chains_with_records) == 2:
            assert set(profile.chains_with_records) == set(row["record_chains"].split(";"))
            assert oracle.verify(profile, int(profile.raw["scale"])).ok
            return
    pytest.fail("no cross-chain enterprise with records in two e2e departments")


def test_unknown_enterprise_scores_the_baseline(
    trust: Trust, data_dir: Path, oracle: PlaintextOracle
) -> None:
    uscc = unknown_uscc(9, {r["uscc"] for r in read_enterprises(data_dir)})
    profile = _query(trust, uscc)
    assert profile.nodes_with_records == []
    assert profile.indicators == []
    assert oracle.verify(profile, int(profile.raw["scale"])).ok


def test_chain_filter_limits_fan_out(trust: Trust, data_dir: Path) -> None:
    uscc = read_enterprises(data_dir)[0]["uscc"]
    profile = _query(trust, uscc, chains=["bth"])
    assert sorted(profile.answered) == ["bth-court", "bth-market", "bth-tax"]


def _post(trust: Trust, body: dict[str, object]) -> httpx.Response:
    return httpx.post(
        f"{trust.url}/v1/queries",
        json=trust.signed(body),
        timeout=30,
        headers={"Authorization": f"Bearer {trust.bank_api_key}"},
    )


def _body(key: PrivateKey, **overrides: object) -> dict[str, object]:
    return {
        "uscc": "91350100M000100Y43",
        "model_id": "sme-scorecard-v1",
        "purpose": "pre_loan_review",
        "consent_id": "0" * 32,
        "key_fingerprint": key.public_key.fingerprint(),
        **overrides,
    }


@pytest.mark.parametrize(
    ("uscc", "position"),
    [("91350100M000100Y44", 18), ("9135I100M000100Y43", 5), ("913501001000100Y43", 17)],
)
def test_bad_uscc_is_422_naming_position(
    trust: Trust, bank_key: PrivateKey, uscc: str, position: int
) -> None:
    response = _post(trust, _body(bank_key, uscc=uscc))
    assert response.status_code == 422
    assert response.headers["content-type"].startswith("application/problem+json")
    problem = response.json()
    assert problem["position"] == position
    assert f"position {position}" in problem["detail"]


def test_short_uscc_is_422_with_length(trust: Trust, bank_key: PrivateKey) -> None:
    response = _post(trust, _body(bank_key, uscc="91350100M000100Y4"))
    assert response.status_code == 422
    assert "18 characters" in response.json()["detail"]


def test_unknown_model_is_404(trust: Trust, bank_key: PrivateKey) -> None:
    response = _post(trust, _body(bank_key, model_id="no-such-model"))
    assert response.status_code == 404
    assert "no-such-model" in response.json()["detail"]


@pytest.mark.parametrize(
    ("overrides", "fragment"),
    [
        ({"chains": ["moon"]}, "chains"),
        ({"key_fingerprint": "not hex"}, "key_fingerprint"),
        ({"extra": 1}, "extra"),
    ],
)
def test_malformed_requests_are_422(
    trust: Trust, bank_key: PrivateKey, overrides: dict[str, object], fragment: str
) -> None:
    response = _post(trust, _body(bank_key, **overrides))
    assert response.status_code == 422
    assert fragment in response.json()["detail"]


def test_missing_field_is_422(trust: Trust) -> None:
    response = _post(trust, {"uscc": "91350100M000100Y43"})
    assert response.status_code == 422
    assert "model_id" in response.json()["detail"]


def test_registry_and_docs(federation: Federation, trust: Trust) -> None:
    base = federation.layout.coordinator_url
    assert httpx.get(f"{base}/v1/nodes").status_code == 401
    nodes = trust.bank.nodes()
    assert len(nodes) == 9 and {n["chain"] for n in nodes} == {"yrd", "prd", "bth"}
    models = trust.bank.models()
    assert models[0]["id"] == "sme-scorecard-v1"
    docs = httpx.get(f"{base}/docs")  # Swagger UI from the package, no CDN (issue 15)
    assert docs.status_code == 200 and "/static/swagger/swagger-ui-bundle.js" in docs.text
    assert "cdn." not in docs.text
    assert "/v1/queries" in httpx.get(f"{base}/openapi.json").json()["paths"]


def test_query_cli_prints_json(
    trust: Trust, tmp_path: Path, data_dir: Path, oracle: PlaintextOracle
) -> None:
    uscc = read_enterprises(data_dir)[1]["uscc"]
    key_file = tmp_path / "key.json"
    args = [
        "--coordinator",
        trust.url,
        "--uscc",
        uscc,
        "--consent",
        trust.consent(uscc),
        "--api-key",
        trust.bank_api_key,
        "--identity",
        str(trust.layout.identity_dir(trust.bank_id, "bank")),
    ]
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "creditshare",
            "query",
            *args,
            "--key-file",
            str(key_file),
            "--json",
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    doc = json.loads(out.stdout)
    assert key_file.stat().st_mode & 0o077 == 0, "private key file must be private"
    expected = oracle.linear(uscc, doc["coverage"]["answered"])
    assert abs(doc["linear_score"] - expected) < 1e-5


def test_packed_and_unpacked_profiles_agree(
    trust: Trust,
    federation: Federation,
    data_dir: Path,
    serve_app: Callable[[FastAPI], AbstractContextManager[str]],
) -> None:
    """Packing changes how many ciphertexts the bank opens, never what it reads."""
    rows = read_enterprises(data_dir)
    uscc = next(r["uscc"] for r in rows if ";" in r["record_chains"])
    consent = trust.consent(uscc, max_uses=2)
    packed = trust.bank.query(uscc, consent)
    assert packed.raw["packing"] is not None and packed.raw["encrypted_score"] is None
    assert len(packed.raw["packing"]["ciphertexts"]) <= 2
    settings = federation.layout.coordinator_settings().model_copy(update={"pack_profiles": False})
    with (
        serve_app(create_app(settings)) as url,
        CreditShareClient(
            url,
            api_key=trust.bank_api_key,
            private_key=trust.bank.private_key,
            identity=trust.bank_identity,
        ) as bank,
    ):
        plain = bank.query(uscc, consent)
    assert plain.raw["packing"] is None
    assert plain.linear_score == pytest.approx(packed.linear_score, abs=1e-6)
    assert [(i.node, i.name, i.label) for i in plain.indicators] == [
        (i.node, i.name, i.label) for i in packed.indicators
    ]
