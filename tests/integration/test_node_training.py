"""A node's Training service answers only under a recorded "training" ledger entry."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import grpc
import pytest

from creditshare.crypto import PrivateKey, VerifyKey
from creditshare.departments import DEFAULT_MODEL_ID, DEFAULT_WEIGHTS
from creditshare.federated import PsiParty, bureau_request
from creditshare.ledger import Ledger, LogSigner, MemoryLedgerStorage, QueryRecord, Receipt
from creditshare.ledger._records import RecordKind
from creditshare.node import NodeSettings, build_server, import_into_node
from creditshare.proto import node_pb2, training_pb2, training_pb2_grpc

if TYPE_CHECKING:
    from creditshare.proto.creditshare.v1.training_pb2_grpc import TrainingAsyncStub

LOG = LogSigner.generate()
LEDGER = Ledger(MemoryLedgerStorage(), LOG, lambda: datetime.now(UTC))
trusted = {"size": 0}


@pytest.fixture(scope="module")
def settings(tmp_path_factory: pytest.TempPathFactory, data_dir: Path) -> NodeSettings:
    folder = tmp_path_factory.mktemp("training-node")
    node = NodeSettings(
        node_id="yrd-tax",
        department="tax",
        chain="yrd",
        listen="127.0.0.1:0",
        database_url=f"sqlite:///{folder / 'node.db'}",
        models={DEFAULT_MODEL_ID: {"weights": dict(DEFAULT_WEIGHTS["tax"])}},
        log_public_key=VerifyKey.from_cryptography(LOG.public_key).to_text(),
        allow_insecure=True,
    )
    import_into_node(node, [data_dir / "yrd" / "tax.csv"])
    return node


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
    head = receipt.head
    old = trusted["size"]
    consistency = LEDGER.consistency_proof(old, head.size) if 0 < old < head.size else []
    trusted["size"] = head.size
    return node_pb2.QueryReceipt(
        leaf_index=receipt.index,
        leaf_data=receipt.data,
        tree_head=node_pb2.SignedTreeHead(
            size=head.size,
            root=head.root,
            timestamp_ms=head.timestamp_ms,
            signature=head.signature,
            key_id=head.key_id,
        ),
        inclusion_proof=list(receipt.inclusion_proof),
        consistency_from=old,
        consistency_proof=consistency,
    )


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
