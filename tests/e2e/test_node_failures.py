"""A slow or dead node never hangs a query; it is named in the coverage."""

from __future__ import annotations

import httpx

from creditshare.crypto import PrivateKey
from creditshare.demo import Federation, PlaintextOracle, read_enterprises
from creditshare.departments import DEFAULT_INTERCEPT

from .conftest import Trust


def _uscc_with_records(federation: Federation) -> str:
    rows = read_enterprises(federation.layout.data_dir)
    return next(r["uscc"] for r in rows if r["record_chains"] == "yrd")


def test_stopped_node_is_named_and_the_rest_still_verify(
    small_federation: Federation, small_trust: Trust
) -> None:
    uscc = _uscc_with_records(small_federation)
    consent = small_trust.consent(uscc)
    small_federation.stop_node("yrd-market")
    profile = small_trust.bank.query(uscc, consent)
    assert sorted(profile.answered) == ["yrd-court", "yrd-tax"]
    assert profile.failed == [{"node": "yrd-market", "chain": "yrd", "reason": "unavailable"}]
    oracle = PlaintextOracle(small_federation.layout, DEFAULT_INTERCEPT)
    assert oracle.verify(profile, int(profile.raw["scale"])).ok


def test_frozen_node_costs_at_most_its_deadline(
    small_federation: Federation, small_trust: Trust
) -> None:
    uscc = _uscc_with_records(small_federation)
    consent = small_trust.consent(uscc)
    small_federation.pause_node("yrd-tax")  # accepts connections, never answers
    profile = small_trust.bank.query(uscc, consent)
    # Named as out of time by the node deadline: the query did not wait on the node.
    assert profile.failed == [{"node": "yrd-tax", "chain": "yrd", "reason": "deadline exceeded"}]
    assert sorted(profile.answered) == ["yrd-court", "yrd-market"]


def test_no_node_answering_is_503_naming_each(
    small_federation: Federation, small_trust: Trust, bank_key: PrivateKey
) -> None:
    uscc = _uscc_with_records(small_federation)
    consent = small_trust.consent(uscc)
    for node in small_federation.layout.nodes:
        small_federation.stop_node(node.node_id)
    response = httpx.post(
        f"{small_federation.layout.coordinator_url}/v1/queries",
        json=small_trust.signed(
            {
                "uscc": uscc,
                "model_id": "sme-scorecard-v1",
                "purpose": "pre_loan_review",
                "consent_id": consent,
                "key_fingerprint": small_trust.bank.ensure_paillier_key(),
            }
        ),
        headers={"Authorization": f"Bearer {small_trust.bank_api_key}"},
        timeout=30,
    )
    assert response.status_code == 503
    failed = {f["node"]: f["reason"] for f in response.json()["failed"]}
    assert failed == {
        "yrd-tax": "unavailable",
        "yrd-market": "unavailable",
        "yrd-court": "unavailable",
    }
