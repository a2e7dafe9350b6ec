"""A real grpc.aio data node as a witness: it cosigns the heads it accepts, and only those."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

import grpc
import pytest

from creditshare.crypto import VerifyKey
from creditshare.departments import DEFAULT_MODEL_ID, DEFAULT_WEIGHTS
from creditshare.ledger import (
    Cosignature,
    Ledger,
    LogSigner,
    MemoryLedgerStorage,
    SignedTreeHead,
    WitnessKey,
    checkpoint_body,
    log_origin,
    verify_cosignature,
)
from creditshare.node import NodeSettings, build_server, generate_witness_key
from creditshare.proto import TRUSTED_SIZE_METADATA, head_to_pb, node_pb2, node_pb2_grpc

from .._authority import authority

if TYPE_CHECKING:
    from creditshare.proto.creditshare.v1.node_pb2_grpc import DataNodeAsyncStub

LOG = LogSigner.generate()
SUBJECT = "91350100M000100Y43"


def _settings(folder: Path, witness: bool) -> NodeSettings:
    key_file = folder / "witness-key.pem"
    if witness and not key_file.exists():
        generate_witness_key(key_file)
    return NodeSettings(
        node_id="yrd-tax",
        department="tax",
        chain="yrd",
        listen="127.0.0.1:0",
        database_url=f"sqlite:///{folder / 'node.db'}",
        models={DEFAULT_MODEL_ID: {"weights": dict(DEFAULT_WEIGHTS["tax"])}},
        log_public_key=VerifyKey.from_cryptography(LOG.public_key).to_text(),
        witness_key_file=key_file if witness else None,
        allow_insecure=True,
        credential_ca=authority().ca_cert,
    )


async def _stub_for(settings: NodeSettings) -> AsyncIterator[DataNodeAsyncStub]:
    server, port = await build_server(settings)
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            yield node_pb2_grpc.DataNodeStub(channel)
    finally:
        await server.stop(None)


@pytest.fixture
async def stub(tmp_path: Path) -> AsyncIterator[DataNodeAsyncStub]:
    async for s in _stub_for(_settings(tmp_path, witness=True)):
        yield s


@pytest.fixture
def ledger() -> Ledger:
    return Ledger(MemoryLedgerStorage(), LOG, lambda: datetime.now(UTC))


def _grow(ledger: Ledger, n: int) -> SignedTreeHead:
    for _ in range(n):
        ledger.append(b'{"entry": true}', SUBJECT)
    return ledger.latest_head()


def _request(head: SignedTreeHead, old_size: int, ledger: Ledger) -> node_pb2.AddCheckpointRequest:
    proof = ledger.consistency_proof(old_size, head.size) if 0 < old_size < head.size else []
    return node_pb2.AddCheckpointRequest(
        old_size=old_size,
        consistency_proof=proof,
        tree_head=head_to_pb(head),
    )


async def _describe(stub: DataNodeAsyncStub) -> node_pb2.DescribeResponse:
    return await stub.Describe(node_pb2.DescribeRequest())


async def _refused(call: object) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call  # type: ignore[misc]
    return caught.value


def _cosignature(reply: node_pb2.AddCheckpointResponse) -> Cosignature:
    return Cosignature(reply.witness, reply.key_id, reply.timestamp, reply.signature)


async def test_node_cosigns_each_head_that_extends_its_own(
    stub: DataNodeAsyncStub, ledger: Ledger
) -> None:
    vkey = (await _describe(stub)).witness_vkey
    witness = WitnessKey.parse(vkey)
    assert witness.name == "yrd-tax"
    origin = log_origin(LOG.public_key)
    old = 0
    for grow in (3, 1, 5):
        head = _grow(ledger, grow)
        reply = await stub.AddCheckpoint(_request(head, old, ledger))
        assert (reply.tree_size, reply.root) == (head.size, head.root)
        verify_cosignature(witness, _cosignature(reply), checkpoint_body(head, origin))
        assert (await _describe(stub)).trusted_tree_size == head.size
        old = head.size
    # The same head again (nothing new in the log) is cosigned again.
    again = await stub.AddCheckpoint(_request(head, head.size, ledger))
    verify_cosignature(witness, _cosignature(again), checkpoint_body(head, origin))


async def test_stale_old_size_or_older_head_names_the_trusted_size(
    stub: DataNodeAsyncStub, ledger: Ledger
) -> None:
    older = _grow(ledger, 2)
    newer = _grow(ledger, 2)
    await stub.AddCheckpoint(_request(older, 0, ledger))
    # A proof from a size the node does not trust: FAILED_PRECONDITION + its size.
    error = await _refused(stub.AddCheckpoint(_request(_grow(ledger, 1), 1, ledger)))
    assert error.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert dict(error.trailing_metadata() or ())[TRUSTED_SIZE_METADATA] == str(older.size)
    await stub.AddCheckpoint(_request(newer, older.size, ledger))
    # The older head is never cosigned once the node trusts a newer one.
    error = await _refused(stub.AddCheckpoint(_request(older, older.size, ledger)))
    assert error.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "older than the trusted size" in (error.details() or "")
    assert dict(error.trailing_metadata() or ())[TRUSTED_SIZE_METADATA] == str(newer.size)
    assert (await _describe(stub)).trusted_tree_size == newer.size


async def test_forked_head_is_refused_logged_and_never_cosigned(
    stub: DataNodeAsyncStub, ledger: Ledger, caplog: pytest.LogCaptureFixture
) -> None:
    head = _grow(ledger, 4)
    await stub.AddCheckpoint(_request(head, 0, ledger))
    fork = Ledger(MemoryLedgerStorage(), LOG, lambda: datetime.now(UTC))
    for _ in range(head.size):
        fork.append(b"rewritten history", SUBJECT)
    # Same size, other root; then a longer rewritten log with a proof from the fork.
    same_size = fork.latest_head()
    longer = _grow(fork, 2)
    with caplog.at_level(logging.INFO, logger="creditshare.node"):
        for forged in (_request(same_size, head.size, fork), _request(longer, head.size, fork)):
            error = await _refused(stub.AddCheckpoint(forged))
            assert error.code() == grpc.StatusCode.FAILED_PRECONDITION
            assert "root" in (error.details() or "") or "does not extend" in (error.details() or "")
    messages = [r.getMessage() for r in caplog.records]
    assert sum("refused to cosign a forked tree head" in m for m in messages) == 2
    assert not any("cosigned tree head" in m for m in messages)
    described = await _describe(stub)
    assert described.trusted_tree_size == head.size
    assert described.trusted_tree_head.root == head.root
    # The genuine log is still served.
    genuine = _grow(ledger, 1)
    await stub.AddCheckpoint(_request(genuine, head.size, ledger))


async def test_head_signed_by_another_key_is_permission_denied(
    stub: DataNodeAsyncStub,
) -> None:
    other = Ledger(MemoryLedgerStorage(), LogSigner.generate(), lambda: datetime.now(UTC))
    head = _grow(other, 2)
    error = await _refused(stub.AddCheckpoint(_request(head, 0, other)))
    assert error.code() == grpc.StatusCode.PERMISSION_DENIED
    assert (await _describe(stub)).trusted_tree_size == 0


async def test_bad_requests_are_invalid_argument_and_change_nothing(
    stub: DataNodeAsyncStub, ledger: Ledger
) -> None:
    head = _grow(ledger, 3)
    too_far = _request(head, 0, ledger)
    too_far.old_size = head.size + 1
    no_head = node_pb2.AddCheckpointRequest(old_size=0)
    huge_proof = _request(head, 0, ledger)
    huge_proof.consistency_proof.extend([bytes(32)] * 129)
    short_root = _request(head, 0, ledger)
    short_root.tree_head.root = b"\x00" * 31
    for bad, says in (
        (too_far, "larger than the tree head's size"),
        (no_head, "tree_head is required"),
        (huge_proof, "at most 128 hashes"),
        (short_root, "32-byte root"),
    ):
        error = await _refused(stub.AddCheckpoint(bad))
        assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert says in (error.details() or "")
    assert (await _describe(stub)).trusted_tree_size == 0
    await stub.AddCheckpoint(_request(head, 0, ledger))


async def test_node_without_witness_key_serves_but_cosigns_nothing(
    tmp_path: Path, ledger: Ledger
) -> None:
    async for stub in _stub_for(_settings(tmp_path, witness=False)):
        described = await _describe(stub)
        assert described.witness_vkey == "" and described.node_id == "yrd-tax"
        error = await _refused(stub.AddCheckpoint(_request(_grow(ledger, 1), 0, ledger)))
        assert error.code() == grpc.StatusCode.NOT_FOUND
        assert "no witness key" in (error.details() or "")
        assert (await _describe(stub)).trusted_tree_size == 0


async def test_witness_key_survives_a_restart(tmp_path: Path, ledger: Ledger) -> None:
    settings = _settings(tmp_path, witness=True)
    vkeys = []
    for _ in range(2):
        async for stub in _stub_for(settings):
            vkeys.append((await _describe(stub)).witness_vkey)
    assert vkeys[0] == vkeys[1] != ""
