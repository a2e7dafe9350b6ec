"""A query to 45 nodes (3 chains x 15 departments): one ledger entry, one answer.

Hand-written nodes (real grpc servers on loopback, real 2048-bit Paillier under the
bank's key) answer every Score plainly or packed, as asked; the coordinator is the
real app. Whatever the number of nodes, a query is recorded once and the relay reads
its receipt from the ledger at most once, and a packed answer decrypts to the same
profile as the unpacked one.
"""

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
    FixedPointEncoding,
    PackedEncoding,
    PrivateKey,
    PublicKey,
    SlotLayout,
)
from creditshare.identity import Chain
from creditshare.proto import node_pb2, node_pb2_grpc

from .._authority import admit_consenting_bank, authority
from .._fake_nodes import NoTreeModels

USCC = "91350100M000100Y43"
ENTERPRISE = f"ent-{USCC.lower()}"
DEPARTMENTS = 15
BANDS = ["low", "mid", "high"]


class PlannedNode(NoTreeModels, node_pb2_grpc.DataNodeServicer):
    """Answers what its plan says: a partial score, a presence flag, two indicators."""

    def __init__(self, node_id: str, chain: Chain, k: int) -> None:
        self.node_id, self.chain = node_id, chain
        self.partial = 0.125 * (k % 5) - 0.25
        self.present = k % 3 != 0
        self.values = {"grade": float(k % 3), "arrears": float((k + 1) % 3)}

    def Describe(self, request: Any, context: Any) -> node_pb2.DescribeResponse:  # noqa: N802
        return node_pb2.DescribeResponse(
            node_id=self.node_id,
            department="tax",
            chain=self.chain.value,
            indicators=[node_pb2.Indicator(name=n, bands=BANDS) for n in self.values],
        )

    def RevokeConsent(self, request: Any, context: Any) -> Any:  # noqa: N802
        context.abort(grpc.StatusCode.UNIMPLEMENTED, "not asked of this fake node")

    def AddCheckpoint(self, request: Any, context: Any) -> Any:  # noqa: N802
        context.abort(grpc.StatusCode.NOT_FOUND, "this fake node is no witness")

    def Score(self, request: Any, context: Any) -> node_pb2.ScoreResponse:  # noqa: N802
        key = PublicKey.from_bytes(request.public_key.n)
        encoding = FixedPointEncoding(request.scale)
        present = 1.0 if self.present else 0.0
        values = [v if self.present else 0.0 for v in self.values.values()]
        partial = self.partial if self.present else 0.0
        if not request.HasField("packing"):
            return node_pb2.ScoreResponse(
                node_id=self.node_id,
                partial_score=encoding.encrypt(partial, key).to_bytes(),
                presence=encoding.encrypt(present, key).to_bytes(),
                indicators=[
                    node_pb2.EncryptedIndicator(
                        name=name, ciphertext=encoding.encrypt(value, key).to_bytes()
                    )
                    for name, value in zip(self.values, values, strict=True)
                ],
            )
        spec = request.packing
        layout = SlotLayout(spec.slot_bits, spec.slots_per_ciphertext, spec.additions)
        slots = {0: partial, spec.first_slot: present}
        slots |= {spec.first_slot + 1 + i: v for i, v in enumerate(values)}
        vectors: dict[int, list[float]] = {}
        for slot, value in slots.items():
            index, position = divmod(slot, layout.slots)
            vectors.setdefault(index, [0.0] * layout.slots)[position] = value
        packed = PackedEncoding(layout, encoding)
        return node_pb2.ScoreResponse(
            node_id=self.node_id,
            packed=[
                node_pb2.PackedCiphertext(
                    index=index,
                    ciphertext=Ciphertext(
                        key, key.raw_encrypt(packed.encode(vector, key))
                    ).to_bytes(),
                )
                for index, vector in sorted(vectors.items())
            ],
        )


@pytest.fixture(scope="module")
def nodes() -> Iterator[list[dict[str, str]]]:
    """45 nodes, each its own grpc server: the coordinator's node entries."""
    entries: list[dict[str, str]] = []
    with ExitStack() as stack:
        for chain in (Chain.YRD, Chain.PRD, Chain.BTH):
            for k in range(DEPARTMENTS):
                node_id = f"{chain.value}-d{k}"
                server = grpc.server(ThreadPoolExecutor(max_workers=2))
                node_pb2_grpc.add_DataNodeServicer_to_server(
                    PlannedNode(node_id, chain, len(entries)), server
                )
                port = server.add_insecure_port("127.0.0.1:0")
                server.start()
                stack.callback(server.stop, None)
                entries.append(
                    {
                        "id": node_id,
                        "chain": chain.value,
                        "department": f"d{k}",
                        "address": f"127.0.0.1:{port}",
                    }
                )
        yield entries


@contextmanager
def _coordinator(tmp_path: Path, nodes: list[dict[str, str]], packed: bool) -> Iterator[TestClient]:
    init_log_key(tmp_path / "log.pem")
    settings = CoordinatorSettings(
        database_url=f"sqlite:///{tmp_path / 'c.db'}",
        log_signing_key_file=tmp_path / "log.pem",
        allow_insecure=True,
        node_deadline_seconds=30,  # a bound on a loaded machine, not a speed claim
        pack_profiles=packed,
        nodes=nodes,
        models=[{"id": "sme-scorecard-v1", "intercept": -1.0}],
    )
    app = create_app(settings)
    with TestClient(app) as client:
        admit_consenting_bank(client, app.state.services, USCC, ENTERPRISE)
        yield client


def _query(client: TestClient, key: PrivateKey) -> dict[str, Any]:
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
    response = client.post("/v1/queries", json=body | sign_query(identity, body))
    assert response.status_code == 200, response.text
    answer: dict[str, Any] = response.json()
    return answer


def _outcome(body: dict[str, Any], key: PrivateKey) -> tuple[Any, ...]:
    profile = decrypt_profile(body, key)
    return (
        round(profile.linear_score, 6),
        profile.nodes_with_records,
        [(i.node, i.name, round(i.value, 6), i.label) for i in profile.indicators],
        sorted(profile.answered),
        profile.failed,
    )


def test_a_query_to_45_nodes_is_one_ledger_entry_and_one_receipt_read(
    tmp_path: Path,
    nodes: list[dict[str, str]],
    bank_key: PrivateKey,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    with _coordinator(tmp_path, nodes, packed=True) as client:
        services = client.app.state.services  # type: ignore[attr-defined]
        reads: list[int] = []
        receipt = services.ledger.receipt

        def counted(index: int, *args: Any) -> Any:
            reads.append(index)
            return receipt(index, *args)

        monkeypatch.setattr(services.ledger, "receipt", counted)
        for _ in range(2):  # the second query moves every node's head once more
            before = services.ledger.size()
            body = _query(client, bank_key)
            assert services.ledger.size() == before + 1
            assert sorted(body["coverage"]["answered"]) == sorted(n["id"] for n in nodes)
            assert body["packing"] and len(body["packing"]["ciphertexts"]) > 1
        assert len(reads) <= 2  # at most one re-proof per query, not one per node


def test_packed_answers_decrypt_to_the_unpacked_profile(
    tmp_path: Path, nodes: list[dict[str, str]], bank_key: PrivateKey
) -> None:
    outcomes = []
    for packed in (False, True):
        with _coordinator(tmp_path / str(packed), nodes, packed) as client:
            outcomes.append(_outcome(_query(client, bank_key), bank_key))
    plain, packed_outcome = outcomes
    assert packed_outcome == plain
    linear, present, indicators, answered, failed = plain
    assert len(answered) == 3 * DEPARTMENTS and not failed
    assert len(present) == 30  # nodes whose plan holds a record (k % 3 != 0)
    assert len(indicators) == 3 * len(present)  # presence and two indicators each
    expected = -1.0 + sum(0.125 * (k % 5) - 0.25 for k in range(45) if k % 3)
    assert linear == pytest.approx(expected, abs=1e-5)
