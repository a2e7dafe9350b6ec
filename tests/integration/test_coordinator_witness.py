"""The coordinator publishes only cosignatures that verify: a hand-written node (real gRPC
server) that cosigns garbage, another head, or under another name is named in the round's
failures and never published; the honest answer is."""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import grpc
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from fastapi.testclient import TestClient

from creditshare.coordinator import CoordinatorSettings, create_app
from creditshare.coordinator._admin import init_log_key
from creditshare.ledger import (
    WitnessKey,
    checkpoint_body,
    cosign,
    log_origin,
)
from creditshare.proto import head_from_pb, node_pb2, node_pb2_grpc

from .._fake_nodes import NoTreeModels


class FakeWitness(NoTreeModels, node_pb2_grpc.DataNodeServicer):
    def __init__(self) -> None:
        self.mode = "honest"
        self.key = Ed25519PrivateKey.generate()
        self.origin = ""
        self.calls = 0

    def Describe(self, request: Any, context: Any) -> node_pb2.DescribeResponse:  # noqa: N802
        vkey = WitnessKey.from_public_key("yrd-fake", self.key.public_key()).vkey()
        return node_pb2.DescribeResponse(
            node_id="yrd-fake", department="tax", chain="yrd", witness_vkey=vkey
        )

    def Score(self, request: Any, context: Any) -> node_pb2.ScoreResponse:  # noqa: N802
        context.abort(grpc.StatusCode.UNIMPLEMENTED, "not in this test")
        raise AssertionError("unreachable")

    def RevokeConsent(self, request: Any, context: Any) -> node_pb2.RevokeConsentResponse:  # noqa: N802
        context.abort(grpc.StatusCode.UNIMPLEMENTED, "not in this test")
        raise AssertionError("unreachable")

    def AddCheckpoint(  # noqa: N802
        self, request: Any, context: Any
    ) -> node_pb2.AddCheckpointResponse:
        self.calls += 1
        head = head_from_pb(request.tree_head)
        name, size, timestamp = "yrd-fake", head.size, 1_700_000_000
        if self.mode == "another_head":
            size += 1
        if self.mode == "another_name":
            name = "yrd-other"
        signed = cosign(self.key, name, checkpoint_body(head, self.origin), timestamp)
        signature = bytes(64) if self.mode == "garbage" else signed.signature
        return node_pb2.AddCheckpointResponse(
            witness=name,
            key_id=signed.key_id,
            timestamp=timestamp,
            signature=signature,
            tree_size=size,
            root=head.root,
        )


@pytest.fixture
def fake_node() -> Iterator[tuple[FakeWitness, int]]:
    servicer = FakeWitness()
    server = grpc.server(ThreadPoolExecutor(max_workers=4))
    node_pb2_grpc.add_DataNodeServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    yield servicer, port
    server.stop(None)


@pytest.fixture
def coordinator(tmp_path: Path, fake_node: tuple[FakeWitness, int]) -> Iterator[TestClient]:
    node, port = fake_node
    init_log_key(tmp_path / "log.pem")
    settings = CoordinatorSettings(
        database_url=f"sqlite:///{tmp_path / 'c.db'}",
        log_signing_key_file=tmp_path / "log.pem",
        allow_insecure=True,
        node_deadline_seconds=5,
        witness_interval_seconds=0,
        nodes=[
            {"id": "yrd-fake", "chain": "yrd", "department": "tax", "address": f"127.0.0.1:{port}"}
        ],
    )
    app = create_app(settings)
    with TestClient(app) as client:
        services = app.state.services
        node.origin = log_origin(services.ledger.public_key)
        services.participants.register("bank", "bank", "Bank")
        client.headers["Authorization"] = (
            f"Bearer {services.participants.issue_key('bank').api_key}"
        )
        yield client


def test_empty_log_has_nothing_to_cosign(coordinator: TestClient) -> None:
    response = coordinator.post("/v1/ledger/cosign")
    assert response.status_code == 404
    assert "empty" in response.json()["detail"]


@pytest.mark.parametrize(
    ("mode", "says"),
    [
        ("garbage", "invalid cosignature: cosignature by witness yrd-fake does not verify"),
        ("another_head", "cosigned size 2, not the head of size 1 sent"),
        ("another_name", "invalid cosignature: cosignature names yrd-other"),
    ],
)
def test_an_invalid_cosignature_is_named_and_never_published(
    coordinator: TestClient, fake_node: tuple[FakeWitness, int], mode: str, says: str
) -> None:
    node, _ = fake_node
    services = coordinator.app.state.services  # type: ignore[attr-defined]
    services.ledger.append(b'{"entry": 1}', "91350100M000100Y43")
    node.mode = mode
    round_ = coordinator.post("/v1/ledger/cosign")
    assert round_.status_code == 200, round_.text
    body = round_.json()
    assert body["tree_size"] == 1 and body["heads"] == []
    assert body["failures"] == [{"node": "yrd-fake", "reason": body["failures"][0]["reason"]}]
    assert body["failures"][0]["reason"].startswith(says)
    head = coordinator.get("/v1/ledger/head").json()
    assert head["witnessed_head"] is None and head["cosignatures"] == []
    # The node mends its ways: the next round publishes its cosignature.
    node.mode = "honest"
    body = coordinator.post("/v1/ledger/cosign").json()
    assert body["failures"] == [] and len(body["heads"]) == 1
    head = coordinator.get("/v1/ledger/head").json()
    assert head["witnessed_head"]["size"] == 1
    assert [c["witness"] for c in head["cosignatures"]] == ["yrd-fake"]
    text = coordinator.get("/v1/ledger/checkpoint")
    assert text.headers["content-type"].startswith("text/plain")
    assert text.text.count("\u2014 ") == 2  # the log's line and the witness's
