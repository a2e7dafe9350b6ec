"""The coordinator passes on only what a node published: a dishonest node is named, not heard.

A hand-written node (real grpc.aio server, real Paillier) answers with extra,
missing or spoofed indicators; the coordinator must drop it into coverage.failed.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
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

from .._authority import admit_consenting_bank, authority
from .._fake_nodes import NoTreeModels

USCC = "91350100M000100Y43"
#: The id the test authority's credential for USCC names.
ENTERPRISE = f"ent-{USCC.lower()}"


class FakeNode(NoTreeModels, node_pb2_grpc.DataNodeServicer):
    def __init__(self) -> None:
        self.mode = "honest"
        #: How many indicators Describe lists (a dishonest node lists thousands).
        self.indicators = 1
        #: Its first indicator, as Describe lists it (a dishonest node names it anything).
        self.first = node_pb2.Indicator(name="grade", bands=["A", "B"])

    def Describe(self, request: Any, context: Any) -> node_pb2.DescribeResponse:  # noqa: N802
        extra = [node_pb2.Indicator(name=f"i{k}", bands=["x"]) for k in range(self.indicators - 1)]
        return node_pb2.DescribeResponse(
            node_id="yrd-fake",
            department="tax",
            chain="yrd",
            indicators=[self.first, *extra],
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


@contextmanager
def _serving(servicer: FakeNode) -> Iterator[int]:
    """A thread-pool server, so it answers while the test thread waits on HTTP."""
    server = grpc.server(ThreadPoolExecutor(max_workers=4))
    node_pb2_grpc.add_DataNodeServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        yield port
    finally:
        server.stop(None)


@pytest.fixture
def fake_node() -> Iterator[tuple[FakeNode, int]]:
    servicer = FakeNode()
    with _serving(servicer) as port:
        yield servicer, port


@contextmanager
def _running_coordinator(
    tmp_path: Path, port: int, packed: bool, others: Sequence[dict[str, str]] = ()
) -> Iterator[TestClient]:
    """A coordinator over the fake node (and ``others``: more node entries), a bank and
    an enterprise's consent for it; the client sends the bank's key (and carries the
    consent id in ``X-Consent``)."""
    init_log_key(tmp_path / "log.pem")
    settings = CoordinatorSettings(
        database_url=f"sqlite:///{tmp_path / 'c.db'}",
        log_signing_key_file=tmp_path / "log.pem",
        allow_insecure=True,
        node_deadline_seconds=5,
        pack_profiles=packed,
        nodes=[
            {"id": "yrd-fake", "chain": "yrd", "department": "tax", "address": f"127.0.0.1:{port}"},
            *others,
        ],
        models=[{"id": "sme-scorecard-v1", "intercept": -1.0}],
    )
    app = create_app(settings)
    with TestClient(app) as client:
        admit_consenting_bank(client, app.state.services, USCC, ENTERPRISE)
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


@pytest.mark.parametrize(
    ("name", "bands", "description"),
    [
        ("*", ["A", "B"], ""),  # what a consent writes for "every indicator"
        ("record_present", ["no", "yes"], ""),  # the coordinator's own presence slot
        ("Grade", ["A", "B"], ""),
        ("grade;drop", ["A", "B"], ""),
        ("grade", [], ""),
        ("grade", ["A", "A"], ""),
        ("grade", ["A", ""], ""),
        ("grade", ["A", "B\nC"], ""),
        ("grade", ["A", "B"], "line one\rline two"),
    ],
)
def test_a_node_describing_an_ill_formed_catalogue_is_not_used(
    tmp_path: Path,
    fake_node: tuple[FakeNode, int],
    bank_key: PrivateKey,
    name: str,
    bands: list[str],
    description: str,
) -> None:
    """Indicator names are what consents list and band labels reach banks' screens: a
    node (not trusted) cannot publish "*", shadow the presence slot, or send labels a
    schema would refuse."""
    servicer, port = fake_node
    servicer.first = node_pb2.Indicator(name=name, bands=bands, description=description)
    with _running_coordinator(tmp_path, port, packed=False) as client:
        assert "yrd-fake" not in client.app.state.services.broker.catalogues  # type: ignore[attr-defined]
        assert client.get("/v1/indicators").json() == []
        response = _query(client, bank_key)
        assert response.status_code == 503, response.text
        (failure,) = response.json()["failed"]
        assert failure["node"] == "yrd-fake" and "catalogue" in failure["reason"]


def test_one_name_published_with_other_bands_is_listed_once_per_variant(
    tmp_path: Path, fake_node: tuple[FakeNode, int]
) -> None:
    """Two departments (or a wrong node) publishing "grade" with different bands: GET
    /v1/indicators must not show one node's bands as everyone's."""
    _, port = fake_node
    other = FakeNode()
    other.first = node_pb2.Indicator(name="grade", description="court grade", bands=["X", "Y", "Z"])
    same = FakeNode()
    with _serving(other) as other_port, _serving(same) as same_port:
        others = [
            {
                "id": "sh-court",
                "chain": "yrd",
                "department": "court",
                "address": f"127.0.0.1:{other_port}",
            },
            {
                "id": "sh-tax",
                "chain": "yrd",
                "department": "tax",
                "address": f"127.0.0.1:{same_port}",
            },
        ]
        with _running_coordinator(tmp_path, port, packed=False, others=others) as client:
            listed = client.get("/v1/indicators").json()
    grades = sorted((i for i in listed if i["name"] == "grade"), key=lambda i: i["bands"])
    assert [(i["bands"], i["nodes"], i["departments"]) for i in grades] == [
        (["A", "B"], ["yrd-fake", "sh-tax"], ["tax"]),
        (["X", "Y", "Z"], ["sh-court"], ["court"]),
    ]


def test_a_consent_naming_an_unpublished_indicator_gets_a_short_answer(
    tmp_path: Path, fake_node: tuple[FakeNode, int]
) -> None:
    """The refusal lists what is published, but a node publishing 64 indicators (or many
    such nodes) must not make it a page long; "*" and published names pass the check."""
    servicer, port = fake_node
    servicer.indicators = 64
    with _running_coordinator(tmp_path, port, packed=False) as client:
        signing, credential = authority().enterprise(USCC)
        services = client.app.state.services  # type: ignore[attr-defined]
        services.credentials.add(services.participants.get(ENTERPRISE), credential, None)
        now = datetime.now(UTC)

        def grant(*names: str) -> Any:
            consent = ConsentGrant.create(
                USCC,
                authority().bank_id,
                Purpose.PRE_LOAN_REVIEW,
                now - timedelta(minutes=1),
                now + timedelta(days=1),
                indicators=names,
            )
            return client.post("/v1/consents", json=consent.sign(signing).to_json())

        refused = grant("grade", "i7", "grade_typo")
        assert refused.status_code == 422, refused.text
        detail = refused.json()["detail"]
        assert "'grade_typo'" in detail and "(64 in all)" in detail and len(detail) < 600
        for names in (("*",), ("grade", "i62"), ("*", "grade")):
            passed = grant(*names)
            assert passed.status_code == 201, (names, passed.text)
