"""A tree model's scoring chain through a real coordinator, over hand-written nodes (real
grpc servers, real Paillier): an honest chain's score decrypts to the model's margin,
and any step that answers wrongly or refuses leaves NO score, naming the node."""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager
from pathlib import Path
from typing import Any

import grpc
import pytest
from fastapi.testclient import TestClient

from creditshare.client import Identity, decrypt_profile, sign_query
from creditshare.coordinator import CoordinatorSettings, create_app
from creditshare.coordinator._admin import init_log_key
from creditshare.crypto import (
    Ciphertext,
    FastEncryptor,
    FixedPointEncoding,
    PackedEncoding,
    PrivateKey,
    PublicKey,
    SlotLayout,
)
from creditshare.errors import ScoreUnavailableError
from creditshare.proto import node_pb2, node_pb2_grpc
from creditshare.trees._private import alone, first, weigh
from creditshare.trees._synthetic import random_tree_model

from .._authority import admit_consenting_bank, authority

USCC = "91350100M000100Y43"
ENTERPRISE = f"ent-{USCC.lower()}"
MODEL = "trees-v1"
NODES = ("yrd-a", "yrd-b")
TREES, SHARDS = random_tree_model(
    {"yrd-a": {"x": (0.0, 1.0)}, "yrd-b": {"y": (0.0, 1.0)}}, trees=5, depth=2, seed=3
)
VALUES = {"yrd-a": {"x": 0.3}, "yrd-b": {"y": 0.8}}


class FakeTreeNode(node_pb2_grpc.DataNodeServicer):
    """Honest by default; ``mode`` makes its TreeScore step misbehave one way."""

    def __init__(self, node_id: str) -> None:
        self.node_id = node_id
        self.mode = "honest"

    def Describe(self, request: Any, context: Any) -> node_pb2.DescribeResponse:  # noqa: N802
        return node_pb2.DescribeResponse(
            node_id=self.node_id,
            department="tax",
            chain="yrd",
            indicators=[node_pb2.Indicator(name="grade", bands=["A", "B"])],
        )

    def Score(self, request: Any, context: Any) -> node_pb2.ScoreResponse:  # noqa: N802
        key = PublicKey.from_bytes(request.public_key.n)
        encoding = FixedPointEncoding(request.scale)
        zero = encoding.encrypt(0.0, key).to_bytes()
        if request.HasField("packing"):
            spec = request.packing
            layout = SlotLayout(spec.slot_bits, spec.slots_per_ciphertext, spec.additions)
            values = {0: 0.0, spec.first_slot: 1.0, spec.first_slot + 1: 0.0}
            vectors: dict[int, list[float]] = {}
            for slot, value in values.items():
                index, position = divmod(slot, layout.slots)
                vectors.setdefault(index, [0.0] * layout.slots)[position] = value
            packed = PackedEncoding(layout, encoding)
            return node_pb2.ScoreResponse(
                node_id=self.node_id,
                packed=[
                    node_pb2.PackedCiphertext(index=i, ciphertext=packed.encrypt(v, key).to_bytes())
                    for i, v in sorted(vectors.items())
                ],
            )
        return node_pb2.ScoreResponse(
            node_id=self.node_id,
            partial_score=zero,
            presence=encoding.encrypt(1.0, key).to_bytes(),
            indicators=[node_pb2.EncryptedIndicator(name="grade", ciphertext=zero)],
        )

    def RevokeConsent(self, request: Any, context: Any) -> Any:  # noqa: N802
        raise NotImplementedError

    def AddCheckpoint(self, request: Any, context: Any) -> Any:  # noqa: N802
        raise NotImplementedError

    def TreeScore(  # noqa: N802
        self, request: node_pb2.TreeScoreRequest, context: grpc.ServicerContext
    ) -> node_pb2.TreeScoreResponse:
        if self.mode == "refuse":
            context.abort(grpc.StatusCode.PERMISSION_DENIED, "receipt refused (injected)")
        key = PublicKey.from_bytes(request.public_key.n)
        encryptor = FastEncryptor(key)
        bits = SHARDS[self.node_id].leaf_bits(VALUES[self.node_id])
        weights = list(request.weights)
        node_id = "yrd-spoof" if self.mode == "spoofed" else self.node_id
        if not request.indicators:
            if weights:
                return node_pb2.TreeScoreResponse(
                    node_id=node_id, score=alone(bits, weights, encryptor).to_bytes()
                )
            out = [c.to_bytes() for c in first(bits, encryptor)]
            if self.mode == "short":
                out = out[:-1]
            if self.mode == "garbage":
                out[0] = b"\x00" * len(out[0])
            return node_pb2.TreeScoreResponse(node_id=node_id, indicators=out)
        incoming = [Ciphertext.from_bytes(key, c) for c in request.indicators]
        score = weigh(incoming, bits, weights, encryptor).to_bytes()
        if self.mode == "garbage":
            score = b"\x01\x02"
        return node_pb2.TreeScoreResponse(node_id=node_id, score=score)


@contextmanager
def _serving(servicer: FakeTreeNode) -> Iterator[int]:
    server = grpc.server(ThreadPoolExecutor(max_workers=4))
    node_pb2_grpc.add_DataNodeServicer_to_server(servicer, server)
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        yield port
    finally:
        server.stop(None)


@pytest.fixture(params=[False, True], ids=["plain", "packed"])
def chain(
    request: pytest.FixtureRequest, tmp_path: Path
) -> Iterator[tuple[TestClient, dict[str, FakeTreeNode]]]:
    fakes = {n: FakeTreeNode(n) for n in NODES}
    with ExitStack() as stack:
        ports = {n: stack.enter_context(_serving(f)) for n, f in fakes.items()}
        init_log_key(tmp_path / "log.pem")
        settings = CoordinatorSettings(
            database_url=f"sqlite:///{tmp_path / 'c.db'}",
            log_signing_key_file=tmp_path / "log.pem",
            allow_insecure=True,
            node_deadline_seconds=10,
            pack_profiles=request.param,
            nodes=[
                {"id": n, "chain": "yrd", "department": "tax", "address": f"127.0.0.1:{p}"}
                for n, p in ports.items()
            ],
            models=[{"id": MODEL, "model_type": "gbdt", "tree_model": TREES.to_document()}],
        )
        app = create_app(settings)
        with TestClient(app) as client:
            admit_consenting_bank(client, app.state.services, USCC, ENTERPRISE)
            yield client, fakes


def _query(client: TestClient, key: PrivateKey) -> Any:
    registered = client.post("/v1/paillier-keys", json={"public_key": key.public_key.to_text()})
    assert registered.status_code in (200, 201), registered.text
    body = {
        "uscc": USCC,
        "model_id": MODEL,
        "purpose": "pre_loan_review",
        "consent_id": client.headers["X-Consent"],
        "key_fingerprint": key.public_key.fingerprint(),
    }
    signers = authority()
    identity = Identity.of(signers.bank_key, (signers.bank_credential,))
    return client.post("/v1/queries", json=body | sign_query(identity, body))


def test_an_honest_chain_scores_the_models_margin(
    chain: tuple[TestClient, dict[str, FakeTreeNode]], bank_key: PrivateKey
) -> None:
    client, _ = chain
    response = _query(client, bank_key)
    assert response.status_code == 200, response.text
    profile = decrypt_profile(response.json(), bank_key)
    bits = [SHARDS[n].leaf_bits(VALUES[n]) for n in NODES]
    assert profile.linear_score == pytest.approx(TREES.margin_from_bits(bits), abs=1e-8)


@pytest.mark.parametrize(
    ("node", "mode", "reason"),
    [
        ("yrd-a", "short", "expected one per leaf"),
        ("yrd-a", "garbage", "out of range"),
        ("yrd-a", "spoofed", "claims to come from node 'yrd-spoof'"),
        ("yrd-a", "refuse", "tree score: permission_denied: receipt refused (injected)"),
        ("yrd-b", "garbage", "bytes"),
        ("yrd-b", "spoofed", "claims to come from node 'yrd-spoof'"),
        ("yrd-b", "refuse", "tree score: permission_denied"),
    ],
)
def test_a_failed_step_leaves_no_score_and_names_its_node(
    chain: tuple[TestClient, dict[str, FakeTreeNode]],
    bank_key: PrivateKey,
    node: str,
    mode: str,
    reason: str,
) -> None:
    client, fakes = chain
    fakes[node].mode = mode
    response = _query(client, bank_key)
    assert response.status_code == 200, response.text
    body = response.json()
    missing = body["score_unavailable"]
    assert missing["node"] == node and reason in missing["reason"], missing
    assert body["encrypted_score"] is None
    # Presence and indicators are still answered (Score is not the failed call).
    assert sorted(body["coverage"]["answered"]) == list(NODES)
    with pytest.raises(ScoreUnavailableError, match=node) as caught:
        decrypt_profile(body, bank_key)
    assert {i.node for i in caught.value.indicators} == set(NODES)
    # Counted as a partial answer, and the failed step as its node's failure.
    metrics = client.app.state.metrics  # type: ignore[attr-defined]
    assert metrics.queries.labels("partial")._value.get() == 1
    assert metrics.queries.labels("answered")._value.get() == 0
    failures = metrics.node_failures.collect()[0].samples
    assert any(
        s.labels.get("node") == node and s.name.endswith("_total") and s.value == 1
        for s in failures
    ), failures
