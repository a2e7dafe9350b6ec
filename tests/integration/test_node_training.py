"""A node's Training service answers only under a recorded "training" ledger entry."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import grpc
import pytest

from creditshare.crypto import PrivateKey
from creditshare.federated import PsiParty, bureau_request
from creditshare.ledger import Ledger, LogSigner, MemoryLedgerStorage, QueryRecord, Receipt
from creditshare.ledger._records import RecordKind
from creditshare.node import NodeSettings, build_server
from creditshare.proto import node_pb2, training_pb2, training_pb2_grpc

from .conftest import receipt_message, tax_node

if TYPE_CHECKING:
    from creditshare.proto.creditshare.v1.training_pb2_grpc import TrainingAsyncStub

LOG = LogSigner.generate()
LEDGER = Ledger(MemoryLedgerStorage(), LOG, lambda: datetime.now(UTC))
trusted = {"size": 0}


@pytest.fixture(scope="module")
def settings(tmp_path_factory: pytest.TempPathFactory, data_dir: Path) -> NodeSettings:
    return tax_node(tmp_path_factory.mktemp("training-node"), data_dir, LOG)


@pytest.fixture
async def stub(settings: NodeSettings) -> AsyncIterator[TrainingAsyncStub]:
    server, port = await build_server(settings)
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            yield training_pb2_grpc.TrainingStub(channel)
    finally:
        await server.stop(None)


def _receipt(job_id: str, key: PrivateKey, kind: RecordKind = "training") -> node_pb2.QueryReceipt:
    record = QueryRecord(
        kind=kind,
        query_id=job_id,
        time=datetime.now(UTC),
        uscc="",
        requester="bureau",
        requester_role="bureau",
        purpose="model_training",
        consent_id="",
        model_id="m",
        key_fingerprint=key.public_key.fingerprint(),
        chains=("yrd",),
        indicators=(),
    )
    receipt: Receipt = LEDGER.append(record.to_bytes(), "training")
    old = trusted["size"]
    trusted["size"] = receipt.head.size
    return receipt_message(receipt, old, LEDGER)


def _psi(job_id: str, key: PrivateKey, receipt: node_pb2.QueryReceipt | None) -> Any:
    party = PsiParty(b"test-domain")
    request = training_pb2.PsiAnswerRequest(
        job_id=job_id,
        domain=b"test-domain",
        blinded=list(bureau_request(party, ["91350100M000100Y43"]).blinded),
        public_key=node_pb2.PaillierPublicKey(n=key.public_key.to_bytes()),
    )
    if receipt is not None:
        request.receipt.CopyFrom(receipt)
    return request


async def _code(call: Any) -> grpc.StatusCode:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call
    return caught.value.code()


async def test_psi_needs_a_training_receipt(stub: TrainingAsyncStub, bank_key: PrivateKey) -> None:
    job = uuid.uuid4().hex
    assert await _code(stub.PsiAnswer(_psi(job, bank_key, None))) == (
        grpc.StatusCode.PERMISSION_DENIED
    )
    # A query's receipt is not a training job's.
    query = _receipt(job, bank_key, kind="query")
    assert await _code(stub.PsiAnswer(_psi(job, bank_key, query))) == (
        grpc.StatusCode.PERMISSION_DENIED
    )
    # Another job's receipt neither.
    other = _receipt(uuid.uuid4().hex, bank_key)
    assert await _code(stub.PsiAnswer(_psi(job, bank_key, other))) == (
        grpc.StatusCode.PERMISSION_DENIED
    )


async def test_psi_answers_once_per_job_and_open_claims_the_receipt(
    stub: TrainingAsyncStub, bank_key: PrivateKey
) -> None:
    job = uuid.uuid4().hex
    receipt = _receipt(job, bank_key)
    reply = await stub.PsiAnswer(_psi(job, bank_key, receipt))
    assert reply.node_set_size > 0 and len(reply.double_blinded) == 1
    again = node_pb2.QueryReceipt()
    again.CopyFrom(receipt)
    again.consistency_from = trusted["size"]
    del again.consistency_proof[:]
    assert await _code(stub.PsiAnswer(_psi(job, bank_key, again))) == (
        grpc.StatusCode.PERMISSION_DENIED
    )
    points = list(reply.node_blinded[:40])
    opened = training_pb2.OpenJobRequest(
        job_id=job,
        public_key=node_pb2.PaillierPublicKey(n=bank_key.public_key.to_bytes()),
        points=points,
        receipt=again,
    )
    assert (await stub.OpenJob(opened)).rows == 40
    assert await _code(stub.OpenJob(opened)) == grpc.StatusCode.PERMISSION_DENIED
    # Opened with a key other than the one recorded: refused.
    other_key = PrivateKey.generate()
    job2 = uuid.uuid4().hex
    receipt2 = _receipt(job2, bank_key)
    await stub.PsiAnswer(_psi(job2, bank_key, receipt2))
    swapped = training_pb2.OpenJobRequest(
        job_id=job2,
        public_key=node_pb2.PaillierPublicKey(n=other_key.public_key.to_bytes()),
        points=points,
        receipt=receipt2,
    )
    swapped.receipt.consistency_from = trusted["size"]
    del swapped.receipt.consistency_proof[:]
    assert await _code(stub.OpenJob(swapped)) == grpc.StatusCode.PERMISSION_DENIED
