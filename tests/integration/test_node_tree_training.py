"""A node's tree-training RPCs: opened with tree_settings, bounded, refusing the other
kind of job's RPCs, keeping exactly its own split rules at CloseJob."""

from __future__ import annotations

import logging
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import grpc
import pytest

from creditshare.crypto import PrivateKey
from creditshare.departments import get_department
from creditshare.federated import PsiParty, TrainingConfig, bureau_request
from creditshare.ledger import Ledger, LogSigner, MemoryLedgerStorage, Receipt
from creditshare.node import NodeSettings, build_server
from creditshare.node._storage import ShardStore, make_engine
from creditshare.proto import (
    node_pb2,
    settings_to_pb,
    training_pb2,
    training_pb2_grpc,
    tree_settings_to_pb,
)
from creditshare.trees import TreeConfig

from .._authority import authority
from .._psi_pages import node_points
from .conftest import receipt_message, tax_node

if TYPE_CHECKING:
    from creditshare.proto.creditshare.v1.training_pb2_grpc import TrainingAsyncStub

CONFIG = TreeConfig(trees=2, max_depth=2, max_bins=8)
LOG = LogSigner.generate()
LEDGER = Ledger(MemoryLedgerStorage(), LOG, lambda: datetime.now(UTC))
trusted = {"size": 0}
ROWS = 40


@pytest.fixture(scope="module")
def settings(tmp_path_factory: pytest.TempPathFactory, data_dir: Path) -> NodeSettings:
    return tax_node(tmp_path_factory.mktemp("tree-training-node"), data_dir, LOG)


@pytest.fixture
async def stub(settings: NodeSettings) -> AsyncIterator[TrainingAsyncStub]:
    server, port = await build_server(settings)
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            yield training_pb2_grpc.TrainingStub(channel)
    finally:
        await server.stop(None)


def _receipt(job_id: str, key: PrivateKey, config: TreeConfig | TrainingConfig) -> Any:
    record = authority().training_record(job_id, key.public_key.fingerprint(), ("yrd-tax",), config)
    receipt: Receipt = LEDGER.append(record.to_bytes(), "training")
    old = trusted["size"]
    trusted["size"] = receipt.head.size
    return receipt_message(receipt, old, LEDGER)


async def _opening(
    stub: TrainingAsyncStub,
    key: PrivateKey,
    signed: TreeConfig | TrainingConfig = CONFIG,
) -> training_pb2.OpenJobRequest:
    """A job aligned on the node (PSI), and its OpenJob over ROWS records (no settings
    yet: the caller sets settings or tree_settings)."""
    job = uuid.uuid4().hex
    receipt = _receipt(job, key, signed)
    party = PsiParty(b"test-domain")
    psi = training_pb2.PsiAnswerRequest(
        credentials=authority().training_credentials(),
        job_id=job,
        domain=b"test-domain",
        blinded=list(bureau_request(party, ["91350100M000100Y43"]).blinded),
        public_key=node_pb2.PaillierPublicKey(n=key.public_key.to_bytes()),
        receipt=receipt,
    )
    await stub.PsiAnswer(authority().sign_psi(psi))
    node_blinded = await node_points(stub, job)
    again = node_pb2.QueryReceipt()
    again.CopyFrom(receipt)
    again.consistency_from = trusted["size"]
    del again.consistency_proof[:]
    return training_pb2.OpenJobRequest(
        credentials=authority().training_credentials(),
        job_id=job,
        public_key=node_pb2.PaillierPublicKey(n=key.public_key.to_bytes()),
        points=node_blinded[:ROWS],
        receipt=again,
    )


async def _open_tree(stub: TrainingAsyncStub, key: PrivateKey) -> tuple[str, list[int]]:
    opening = await _opening(stub, key)
    opening.tree_settings.CopyFrom(tree_settings_to_pb(CONFIG))
    reply = await stub.OpenJob(opening)
    assert reply.rows == ROWS
    return opening.job_id, list(reply.tree_bins)


async def _code(call: Any) -> tuple[grpc.StatusCode, str]:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await call
    return caught.value.code(), caught.value.details() or ""


def _gradients(job: str, key: PrivateKey, rows: list[int], tree: int = 0) -> Any:
    """Some encrypted plaintexts per row (the node sums whatever it is sent)."""
    return training_pb2.TreeGradientsRequest(
        job_id=job,
        tree=tree,
        rows=rows,
        gradients=[
            key.public_key.raw_encrypt(r + 1).to_bytes(key.public_key.ciphertext_length, "big")
            for r in rows
        ],
        total=len(rows),
        final=True,
    )


async def test_a_tree_job_opens_with_bins_and_no_feature_names(
    stub: TrainingAsyncStub, bank_key: PrivateKey
) -> None:
    opening = await _opening(stub, bank_key)
    opening.tree_settings.CopyFrom(tree_settings_to_pb(CONFIG))
    reply = await stub.OpenJob(opening)
    features = get_department("tax").features
    assert reply.rows == ROWS and not reply.features and not reply.label_sums_needed
    assert len(reply.tree_bins) == len(features)
    assert all(1 <= b <= CONFIG.max_bins for b in reply.tree_bins)


async def test_settings_must_be_one_kind_and_the_signed_one(
    stub: TrainingAsyncStub, bank_key: PrivateKey
) -> None:
    both = await _opening(stub, bank_key)
    both.tree_settings.CopyFrom(tree_settings_to_pb(CONFIG))
    both.settings.CopyFrom(settings_to_pb(TrainingConfig()))
    code, details = await _code(stub.OpenJob(both))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "exactly one" in details
    # Tree settings other than the signed ones (one value changed): refused.
    other = await _opening(stub, bank_key)
    other.tree_settings.CopyFrom(tree_settings_to_pb(CONFIG.replace(max_depth=3)))
    code, _ = await _code(stub.OpenJob(other))
    assert code == grpc.StatusCode.PERMISSION_DENIED
    # A weak privacy floor is refused by the node itself, whoever signed it.
    weak = await _opening(stub, bank_key)
    weak.tree_settings.CopyFrom(tree_settings_to_pb(CONFIG))
    weak.tree_settings.min_child_rows = 1
    code, details = await _code(stub.OpenJob(weak))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "min_child_rows" in details


async def test_each_kind_of_job_refuses_the_other_kinds_rpcs(
    stub: TrainingAsyncStub, bank_key: PrivateKey
) -> None:
    tree_job, _ = await _open_tree(stub, bank_key)
    forward = training_pb2.ForwardRequest(job_id=tree_job, rows=[0])
    code, details = await _code(stub.Forward(forward))
    assert code == grpc.StatusCode.FAILED_PRECONDITION and "gradient-boosted trees" in details
    logistic = await _opening(stub, bank_key, TrainingConfig())
    logistic.settings.CopyFrom(settings_to_pb(TrainingConfig()))
    await stub.OpenJob(logistic)
    code, details = await _code(stub.TreeGradients(_gradients(logistic.job_id, bank_key, [0])))
    assert code == grpc.StatusCode.FAILED_PRECONDITION and "logistic model" in details
    split = training_pb2.TreeSplitRequest(job_id=logistic.job_id, rows=list(range(8)))
    code, _ = await _code(stub.TreeSplit(split))
    assert code == grpc.StatusCode.FAILED_PRECONDITION
    keep = training_pb2.CloseJobRequest(
        job_id=logistic.job_id, model_id="never", tree_shapes=[training_pb2.TreeShape()]
    )
    code, details = await _code(stub.CloseJob(keep))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "logistic" in details
    for job in (tree_job, logistic.job_id):
        await stub.CloseJob(training_pb2.CloseJobRequest(job_id=job))


async def test_bounds_are_checked_before_anything_is_computed(
    stub: TrainingAsyncStub, bank_key: PrivateKey
) -> None:
    job, _ = await _open_tree(stub, bank_key)
    oversized = _gradients(job, bank_key, [0])
    oversized.gradients[0] = b"\x01" * 2000
    code, _ = await _code(stub.TreeGradients(oversized))
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    mismatched = _gradients(job, bank_key, [0, 1])
    del mismatched.gradients[1]
    code, details = await _code(stub.TreeGradients(mismatched))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "one ciphertext per row" in details
    too_many = training_pb2.TreeHistogramsRequest(
        job_id=job,
        tree=0,
        nodes=[training_pb2.TreeNodeRows(position=p, rows=[0]) for p in range(300)],
    )
    code, _ = await _code(stub.TreeHistograms(too_many))
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    code, _ = await _code(stub.TreeSplit(training_pb2.TreeSplitRequest(job_id=job, tree=0)))
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    code, _ = await _code(stub.TreeHistograms(training_pb2.TreeHistogramsRequest(job_id="")))
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    await stub.CloseJob(training_pb2.CloseJobRequest(job_id=job))


async def test_histograms_splits_and_keeping_exactly_the_recorded_rules(
    stub: TrainingAsyncStub,
    bank_key: PrivateKey,
    settings: NodeSettings,
    caplog: pytest.LogCaptureFixture,
) -> None:
    job, bins = await _open_tree(stub, bank_key)
    fit = list(range(30))
    others = list(range(30, ROWS))
    await stub.TreeGradients(_gradients(job, bank_key, fit))
    histograms = await stub.TreeHistograms(
        training_pb2.TreeHistogramsRequest(
            job_id=job, tree=0, nodes=[training_pb2.TreeNodeRows(position=0, rows=fit)]
        )
    )
    assert [h.position for h in histograms.histograms] == [0]
    assert histograms.histograms[0].ciphertexts
    # Fewer than min_child_rows rows: refused (the bureau would try its next candidate).
    small = training_pb2.TreeHistogramsRequest(
        job_id=job, tree=0, nodes=[training_pb2.TreeNodeRows(position=1, rows=fit[:3])]
    )
    code, _ = await _code(stub.TreeHistograms(small))
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    # The first split the floor allows: one bit per row, then per other row.
    left = None
    for feature, count in enumerate(bins):
        for b in range(count - 1):
            request = training_pb2.TreeSplitRequest(
                job_id=job, tree=0, position=0, feature=feature, bin=b, rows=fit, other_rows=others
            )
            try:
                left = (await stub.TreeSplit(request)).left
            except grpc.aio.AioRpcError as exc:
                assert exc.code() == grpc.StatusCode.INVALID_ARGUMENT
                continue
            break
        if left is not None:
            break
    assert left is not None, "no split of 30 rows leaves 4 in each child"
    assert len(left) == (ROWS + 7) // 8
    goes_left = [bool(left[k >> 3] >> (k & 7) & 1) for k in range(ROWS)]
    assert CONFIG.min_child_rows <= sum(goes_left[:30]) <= 30 - CONFIG.min_child_rows
    # Keeping a model whose shapes disagree with the recorded rules is refused, and the
    # job stays open; the right shapes keep a tree shard.
    wrong = training_pb2.CloseJobRequest(
        job_id=job,
        model_id="tree-node-test",
        tree_shapes=[training_pb2.TreeShape(internal=[0], owned=[])],
    )
    code, _ = await _code(stub.CloseJob(wrong))
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    keep = training_pb2.CloseJobRequest(
        job_id=job,
        model_id="tree-node-test",
        tree_shapes=[training_pb2.TreeShape(internal=[0], owned=[0])],
    )
    with caplog.at_level(logging.INFO, logger="creditshare.node"):
        assert not (await stub.CloseJob(keep)).features  # no feature names either
    # The node logs splits recorded vs kept (counts, no rows).
    assert "1 splits recorded here, 1 kept in 1 trees" in caplog.text
    shards, _ = ShardStore(make_engine(settings.database_url)).usable_trees(get_department("tax"))
    shard = shards["tree-node-test"]
    assert shard.shapes == (frozenset({0}),) and [r.position for r in shard.rules] == [0]
    # Dropping the job afterwards (a failed /finish) discards the shard.
    await stub.CloseJob(training_pb2.CloseJobRequest(job_id=job))
    shards, _ = ShardStore(make_engine(settings.database_url)).usable_trees(None)
    assert "tree-node-test" not in shards
