"""The coordinator passes on only what a node published: a dishonest node is named, not heard.

A hand-written node (real grpc.aio server, real Paillier) answers with extra,
missing or spoofed indicators; the coordinator must drop it into coverage.failed.
"""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import grpc
import pytest
from fastapi.testclient import TestClient

from creditshare.client import Identity, sign_query
from creditshare.consent import ConsentGrant, Purpose
from creditshare.coordinator import CoordinatorSettings, create_app
from creditshare.coordinator._admin import init_log_key
from creditshare.crypto import FixedPointEncoding, PrivateKey, PublicKey
from creditshare.proto import node_pb2, node_pb2_grpc

from .._authority import authority

USCC = "91350100M000100Y43"


class FakeNode(node_pb2_grpc.DataNodeServicer):
    def __init__(self) -> None:
        self.mode = "honest"
        #: How many indicators Describe lists (a dishonest node lists thousands).
        self.indicators = 1

    def Describe(self, request: Any, context: Any) -> node_pb2.DescribeResponse:  # noqa: N802
        extra = [node_pb2.Indicator(name=f"i{k}", bands=["x"]) for k in range(self.indicators - 1)]
        return node_pb2.DescribeResponse(
            node_id="yrd-fake",
            department="tax",
            chain="yrd",
            indicators=[node_pb2.Indicator(name="grade", bands=["A", "B"]), *extra],
        )

    def Score(self, request: Any, context: Any) -> node_pb2.ScoreResponse:  # noqa: N802
        key = PublicKey.from_bytes(request.public_key.n)
        encoding = FixedPointEncoding(request.scale)

        def enc(value: float) -> bytes:
            return encoding.encrypt(value, key).to_bytes()

        names = {
            "honest": ["grade"],
            "extra": ["grade", "anything_at_all"],
            "spoofed_presence": ["grade", "record_present"],
            "missing": [],
        }[self.mode]
        return node_pb2.ScoreResponse(
            node_id="yrd-fake",
            partial_score=enc(0.5),
            presence=enc(0),
            indicators=[node_pb2.EncryptedIndicator(name=n, ciphertext=enc(1)) for n in names],
        )

    def RevokeConsent(  # noqa: N802 - gRPC method name
        self, request: node_pb2.RevokeConsentRequest, context: grpc.ServicerContext
    ) -> node_pb2.RevokeConsentResponse:
        return node_pb2.RevokeConsentResponse(node_id="yrd-fake", newly_revoked=True)

    def AddCheckpoint(  # noqa: N802
        self, request: Any, context: Any
    ) -> node_pb2.AddCheckpointResponse:
        context.abort(grpc.StatusCode.NOT_FOUND, "this fake node is no witness")
        raise AssertionError("unreachable")


@pytest.fixture
def fake_node() -> Iterator[tuple[FakeNode, int]]:
    """A thread-pool server, so it answers while the test thread waits on HTTP."""
    servicer = FakeNode()
    server = grpc.server(ThreadPoolExecutor(max_workers=4))
    node_pb2_grpc.add_DataNodeServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    yield servicer, port
    server.stop(None)


@contextmanager
def _running_coordinator(tmp_path: Path, port: int, packed: bool) -> Iterator[TestClient]:
    """A coordinator over the fake node, a bank and an enterprise's consent for it; the
    client sends the bank's key (and carries the consent id in ``X-Consent``)."""
    init_log_key(tmp_path / "log.pem")
    settings = CoordinatorSettings(
        database_url=f"sqlite:///{tmp_path / 'c.db'}",
        log_signing_key_file=tmp_path / "log.pem",
        allow_insecure=True,
        node_deadline_seconds=5,
        pack_profiles=packed,
        nodes=[
            {"id": "yrd-fake", "chain": "yrd", "department": "tax", "address": f"127.0.0.1:{port}"}
        ],
        models=[{"id": "sme-scorecard-v1", "intercept": -1.0}],
    )
    app = create_app(settings)
    with TestClient(app) as client:
        services = app.state.services
        signers = authority()
        bank = services.participants.register(signers.bank_id, "bank", "Bank")
        bank_key = services.participants.issue_key(signers.bank_id).api_key
        services.credentials.add(bank, signers.bank_credential, None)
        signing, _ = signers.enterprise(USCC)
        services.participants.register(
            "ent", "enterprise", "Ent", uscc=USCC, signing_key=signing.verify_key.to_text()
        )
        now = datetime.now(UTC)
        grant = ConsentGrant.create(
            USCC,
            signers.bank_id,
            Purpose.PRE_LOAN_REVIEW,
            now - timedelta(minutes=1),
            now + timedelta(days=1),
        )
        services.consents.grant(grant.sign(signing), services.participants.get("ent"))
        client.headers["Authorization"] = f"Bearer {bank_key}"
        client.headers["X-Consent"] = grant.consent_id
        yield client


@pytest.fixture(params=[False])
def coordinator(
    request: pytest.FixtureRequest, tmp_path: Path, fake_node: tuple[FakeNode, int]
) -> Iterator[TestClient]:
    # These tests are about the unpacked path's name checks; packed answers are checked
    # by the ciphertext indices they cover (test below).
    with _running_coordinator(tmp_path, fake_node[1], packed=request.param) as client:
        yield client


def _query(client: TestClient, key: PrivateKey) -> Any:
    registered = client.post("/v1/paillier-keys", json={"public_key": key.public_key.to_text()})
    assert registered.status_code in (200, 201), registered.text
    body = {
        "uscc": USCC,
        "model_id": "sme-scorecard-v1",
        "purpose": "pre_loan_review",
        "consent_id": client.headers["X-Consent"],
        "key_fingerprint": key.public_key.fingerprint(),
    }
    signers = authority()
    identity = Identity.of(signers.bank_key, (signers.bank_credential,))
    return client.post("/v1/queries", json=body | sign_query(identity, body))


def test_honest_node_is_heard(
    coordinator: TestClient, fake_node: tuple[FakeNode, int], bank_key: PrivateKey
) -> None:
    response = _query(coordinator, bank_key)
    assert response.status_code == 200, response.text
    assert response.json()["coverage"]["answered"] == ["yrd-fake"]


@pytest.mark.parametrize("mode", ["extra", "spoofed_presence", "missing"])
def test_node_answering_unpublished_indicators_is_named(
    coordinator: TestClient, fake_node: tuple[FakeNode, int], bank_key: PrivateKey, mode: str
) -> None:
    fake_node[0].mode = mode
    response = _query(coordinator, bank_key)
    assert response.status_code == 503
    (failure,) = response.json()["failed"]
    assert failure["node"] == "yrd-fake"
    assert "differ from the published ones" in failure["reason"]


@pytest.mark.parametrize("coordinator", [True], indirect=True)
def test_unpacked_answer_to_a_packed_request_is_named(
    coordinator: TestClient, fake_node: tuple[FakeNode, int], bank_key: PrivateKey
) -> None:
    response = _query(coordinator, bank_key)
    assert response.status_code == 503
    (failure,) = response.json()["failed"]
    assert failure["node"] == "yrd-fake" and "packed answer covers" in failure["reason"]


def test_a_node_describing_an_oversized_catalogue_is_not_used(
    tmp_path: Path, fake_node: tuple[FakeNode, int], bank_key: PrivateKey
) -> None:
    """Every published indicator becomes a slot of every profile: a node cannot make
    every answer grow by listing thousands of them."""
    servicer, port = fake_node
    servicer.indicators = 5000
    # The fake node answers unpacked.
    with _running_coordinator(tmp_path, port, packed=False) as client:
        assert "yrd-fake" not in client.app.state.services.broker.catalogues  # type: ignore[attr-defined]
        response = _query(client, bank_key)
        assert response.status_code == 503, response.text
        (failure,) = response.json()["failed"]
        assert failure["node"] == "yrd-fake" and "catalogue" in failure["reason"]
        # Once it describes itself within bounds, it is heard again.
        servicer.indicators = 1
        assert _query(client, bank_key).status_code == 200
