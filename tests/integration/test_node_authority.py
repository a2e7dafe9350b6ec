"""A node's own checks of signed requests: revocation lists, consent revocations, the
refusal log, and that all of it survives a restart."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING

import grpc
import pytest

from creditshare._canonical import canonical_json
from creditshare.consent import ConsentRevocation
from creditshare.crypto import PrivateKey, SigningKey
from creditshare.departments import DEFAULT_MODEL_ID
from creditshare.ledger import Ledger, LogSigner, MemoryLedgerStorage
from creditshare.node import NodeSettings, build_server, refusal_log_entries
from creditshare.proto import node_pb2, node_pb2_grpc

from .._authority import TestAuthority

if TYPE_CHECKING:
    from creditshare.proto.creditshare.v1.node_pb2_grpc import DataNodeAsyncStub
from .._pki import make_crl
from .conftest import receipt_message, tax_node

LOG = LogSigner.generate()
LEDGER = Ledger(MemoryLedgerStorage(), LOG, lambda: datetime.now(UTC))


@pytest.fixture
def signers(tmp_path: Path) -> TestAuthority:
    return TestAuthority(tmp_path / "authority")


@pytest.fixture
def settings(tmp_path: Path, data_dir: Path, signers: TestAuthority) -> NodeSettings:
    (tmp_path / "node").mkdir()
    node = tax_node(tmp_path / "node", data_dir, LOG)
    return node.model_copy(
        update={"credential_ca": signers.ca_cert, "revocation_max_age_seconds": 3600.0}
    )


class Node:
    def __init__(self, settings: NodeSettings) -> None:
        self.settings = settings
        self.server: grpc.aio.Server | None = None
        self.channel: grpc.aio.Channel | None = None

    async def start(self) -> DataNodeAsyncStub:
        self.server, port = await build_server(self.settings)
        self.channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
        stub: DataNodeAsyncStub = node_pb2_grpc.DataNodeStub(self.channel)
        return stub

    async def stop(self) -> None:
        if self.channel is not None:
            await self.channel.close()
        if self.server is not None:
            await self.server.stop(None)


@pytest.fixture
async def node(settings: NodeSettings) -> AsyncIterator[Node]:
    running = Node(settings)
    yield running
    await running.stop()


def _uscc(data_dir: Path) -> str:
    with (data_dir / "yrd" / "tax.csv").open(encoding="utf-8") as handle:
        next(handle)
        return next(handle).split(",")[0]


async def _ask(
    stub: DataNodeAsyncStub,
    signers: TestAuthority,
    uscc: str,
    key: PrivateKey,
    lists: list[bytes],
    consent: object = None,
) -> tuple[str, grpc.StatusCode, str]:
    record = signers.record(uscc, key.public_key.fingerprint(), consent=consent)  # type: ignore[arg-type]
    receipt = LEDGER.append(record.to_bytes(), uscc)
    trusted = (await stub.Describe(node_pb2.DescribeRequest())).trusted_tree_size
    request = node_pb2.ScoreRequest(
        uscc=uscc,
        model_id=DEFAULT_MODEL_ID,
        public_key=node_pb2.PaillierPublicKey(n=key.public_key.to_bytes()),
        scale=10**6,
        request_id=record.query_id,
        receipt=receipt_message(receipt, trusted, LEDGER),
        credentials=signers.credentials(uscc, revocation_lists=lists),
    )
    try:
        await stub.Score(request)
    except grpc.aio.AioRpcError as exc:
        return record.query_id, exc.code(), exc.details() or ""
    return record.query_id, grpc.StatusCode.OK, ""


async def test_a_node_without_a_fresh_revocation_list_refuses_everything(
    node: Node, signers: TestAuthority, data_dir: Path, bank_key: PrivateKey, tmp_path: Path
) -> None:
    stub = await node.start()
    uscc = _uscc(data_dir)
    query_id, code, detail = await _ask(stub, signers, uscc, bank_key, [])
    assert code == grpc.StatusCode.FAILED_PRECONDITION and "revocation" in detail
    # A list issued two hours ago is older than this node's one-hour bound.
    stale = make_crl(
        signers.ca_dir, tmp_path, now=datetime.now(UTC) - timedelta(hours=2), valid_hours=24
    )
    _, code, detail = await _ask(stub, signers, uscc, bank_key, [stale])
    assert code == grpc.StatusCode.FAILED_PRECONDITION and "revocation" in detail
    refused = refusal_log_entries(node.settings)
    assert any(r.request_id == query_id and r.status == "FAILED_PRECONDITION" for r in refused)
    # The next relayed list is fresh: served, and the list is kept across a restart.
    fresh = make_crl(signers.ca_dir, tmp_path)
    assert (await _ask(stub, signers, uscc, bank_key, [fresh]))[1] == grpc.StatusCode.OK
    await node.stop()
    stub = await node.start()
    assert (await _ask(stub, signers, uscc, bank_key, []))[1] == grpc.StatusCode.OK
    # An older list relayed later changes nothing (no rollback of revocations).
    assert (await _ask(stub, signers, uscc, bank_key, [stale]))[1] == grpc.StatusCode.OK


async def test_a_list_from_another_ca_is_ignored_not_believed(
    node: Node, signers: TestAuthority, data_dir: Path, bank_key: PrivateKey, tmp_path: Path
) -> None:
    stub = await node.start()
    other = TestAuthority(tmp_path / "other")
    _, code, detail = await _ask(stub, signers, _uscc(data_dir), bank_key, [other.crl])
    assert code == grpc.StatusCode.FAILED_PRECONDITION and "revocation" in detail


async def test_an_enterprises_signed_revocation_is_kept_and_enforced(
    node: Node, signers: TestAuthority, data_dir: Path, bank_key: PrivateKey
) -> None:
    stub = await node.start()
    uscc = _uscc(data_dir)
    consent = signers.consent(uscc, valid_until=datetime.now(UTC) + timedelta(days=3))
    assert (await _ask(stub, signers, uscc, bank_key, [signers.crl], consent))[1] == (
        grpc.StatusCode.OK
    )
    enterprise_key, credential = signers.enterprise(uscc)
    now = datetime.now(UTC)

    def revoke(key: SigningKey) -> node_pb2.RevokeConsentRequest:
        revocation = ConsentRevocation.create(consent.grant.consent_id, uscc, now, key)
        return node_pb2.RevokeConsentRequest(
            revocation=canonical_json(revocation.to_json()),
            credentials=node_pb2.Credentials(
                enterprise=[credential], revocation_lists=[signers.crl]
            ),
        )

    with pytest.raises(grpc.aio.AioRpcError) as forged:
        await stub.RevokeConsent(revoke(SigningKey.generate()))
    assert forged.value.code() == grpc.StatusCode.PERMISSION_DENIED
    assert (await _ask(stub, signers, uscc, bank_key, [], consent))[1] == grpc.StatusCode.OK
    first = await stub.RevokeConsent(revoke(enterprise_key))
    again = await stub.RevokeConsent(revoke(enterprise_key))
    assert (first.newly_revoked, again.newly_revoked) == (True, False)
    await node.stop()
    stub = await node.start()
    query_id, code, detail = await _ask(stub, signers, uscc, bank_key, [], consent)
    assert code == grpc.StatusCode.PERMISSION_DENIED and "revoked" in detail
    logged = [r for r in refusal_log_entries(node.settings) if r.request_id == query_id]
    assert [(r.rpc, r.status) for r in logged] == [("Score", "PERMISSION_DENIED")]
    assert "revoked" in logged[0].reason


async def test_garbage_revocations_are_invalid_argument(node: Node) -> None:
    stub = await node.start()
    for body in (b"x" * 5000, b"not json", json.dumps({"document": {}, "signature": ""}).encode()):
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await stub.RevokeConsent(node_pb2.RevokeConsentRequest(revocation=body))
        assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_the_refusal_log_keeps_only_the_newest_rows(tmp_path: Path) -> None:
    """A flood of refused requests (the attacker picks how many) cannot fill the disk."""
    from creditshare.node import make_engine
    from creditshare.node._authority_store import RefusalLog

    engine = make_engine(f"sqlite:///{tmp_path / 'node.db'}")
    log = RefusalLog(engine, lambda: datetime.now(UTC), keep=5)
    for k in range(12):
        log.add("Score", f"q{k}", "PERMISSION_DENIED", "forged")
    assert [r.request_id for r in log.entries()] == [f"q{k}" for k in range(11, 6, -1)]
