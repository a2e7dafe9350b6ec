"""A real data node's TreeScore (private tree scoring) over gRPC: each step of the chain
decrypts to what the node's own split rules say, and it is refused exactly as Score is."""

from __future__ import annotations

import csv
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

import grpc
import pytest

from creditshare.crypto import Ciphertext, FastEncryptor, FixedPointEncoding, PrivateKey, PublicKey
from creditshare.departments import get_department
from creditshare.ledger import Ledger, LogSigner, MemoryLedgerStorage, QueryRecord
from creditshare.node import NodeSettings, build_server
from creditshare.node._storage import ShardStore, make_engine
from creditshare.node._trust import AccessLog
from creditshare.proto import node_pb2, node_pb2_grpc
from creditshare.trees import TreeModel, TreeShard
from creditshare.trees._private import shifted_weights
from creditshare.trees._synthetic import random_tree_model

from .._authority import authority
from .._databases import fresh_postgres_database
from .conftest import receipt_message, tax_node

if TYPE_CHECKING:
    from creditshare.proto.creditshare.v1.node_pb2_grpc import DataNodeAsyncStub

MODEL = "trees-v1"
SCALE = 10**9
LOG = LogSigner.generate()
LEDGER = Ledger(MemoryLedgerStorage(), LOG, lambda: datetime.now(UTC))
#: The tax node owns some splits, a market node (not running here) the others.
FEATURES = {
    "yrd-tax": {"tax_paid_log10": (3.0, 7.0), "tax_arrears_months": (0.0, 6.0)},
    "yrd-market": {"years_operating": (0.0, 30.0)},
}
TREE_MODEL, SHARDS = random_tree_model(FEATURES, trees=12, depth=3, seed=5)
SHARD: TreeShard = SHARDS["yrd-tax"]


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def settings(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, data_dir: Path
) -> Iterator[NodeSettings]:
    folder = tmp_path_factory.mktemp("tree-node")

    def saved(settings: NodeSettings) -> NodeSettings:
        store = ShardStore(make_engine(settings.database_url))
        store.save_tree(MODEL, SHARD, "job-trees", settings.department_schema)
        return settings

    if request.param == "sqlite":
        yield saved(tax_node(folder, data_dir, LOG))
        return
    with fresh_postgres_database() as url:
        yield saved(tax_node(folder, data_dir, LOG, url))


@pytest.fixture(scope="module")
def rows(data_dir: Path) -> dict[str, dict[str, str]]:
    with (data_dir / "yrd" / "tax.csv").open(encoding="utf-8", newline="") as handle:
        return {row["uscc"]: row for row in csv.DictReader(handle)}


@pytest.fixture
async def stub(settings: NodeSettings) -> AsyncIterator[DataNodeAsyncStub]:
    server, port = await build_server(settings)
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            yield node_pb2_grpc.DataNodeStub(channel)
    finally:
        await server.stop(None)


@pytest.fixture(scope="module")
def encryptor(bank_key: PrivateKey) -> FastEncryptor:
    return FastEncryptor(bank_key.public_key)


def _bits_of(uscc: str, rows: dict[str, dict[str, str]]) -> list[int]:
    """The node's leaf bits in plaintext: its record's feature values, or none."""
    row = rows.get(uscc)
    if row is None:
        return SHARD.leaf_bits(None)
    tax = get_department("tax")
    record = {f.name: f.parse(row[f.name]) for f in tax.fields}
    return SHARD.leaf_bits(tax.feature_values(record))


async def _request(
    stub: DataNodeAsyncStub,
    uscc: str,
    key: PublicKey,
    record: QueryRecord | None = None,
    **fields: object,
) -> node_pb2.TreeScoreRequest:
    record = record or authority().record(uscc, key.fingerprint(), model_id=MODEL)
    receipt = LEDGER.append(record.to_bytes(), record.uscc)
    trusted = (await stub.Describe(node_pb2.DescribeRequest())).trusted_tree_size
    base: dict[str, object] = {
        "uscc": uscc,
        "model_id": MODEL,
        "public_key": node_pb2.PaillierPublicKey(n=key.to_bytes()),
        "request_id": record.query_id,
        "receipt": receipt_message(receipt, trusted, LEDGER),
        "credentials": authority().credentials(record.uscc),
    }
    return node_pb2.TreeScoreRequest(**(base | fields))  # type: ignore[arg-type]


def _open(blob: bytes, key: PrivateKey) -> int:
    ciphertext = Ciphertext.from_bytes(key.public_key, blob)
    return FixedPointEncoding.decode_integer(key.raw_decrypt(ciphertext.value), key.public_key)


async def _refused(
    stub: DataNodeAsyncStub, request: node_pb2.TreeScoreRequest
) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.TreeScore(request)
    return caught.value


async def test_describe_lists_the_tree_model_with_its_split_features(
    stub: DataNodeAsyncStub,
) -> None:
    reply = await stub.Describe(node_pb2.DescribeRequest())
    models = {m.model_id: list(m.features) for m in reply.models}
    assert models[MODEL] == list(SHARD.features)
    assert set(SHARD.features) <= set(FEATURES["yrd-tax"])


async def test_the_first_step_encrypts_the_nodes_own_leaf_bits(
    stub: DataNodeAsyncStub, bank_key: PrivateKey, rows: dict[str, dict[str, str]]
) -> None:
    key = bank_key.public_key
    known = list(rows)[:3]
    unknown = "91350100M000100Y43"
    assert unknown not in rows
    for uscc in [*known, unknown]:
        reply = await stub.TreeScore(await _request(stub, uscc, key))
        assert reply.node_id == "yrd-tax" and not reply.score
        assert len(reply.indicators) == TREE_MODEL.leaf_count
        assert [_open(c, bank_key) for c in reply.indicators] == _bits_of(uscc, rows)


async def test_a_middle_step_multiplies_by_its_bits_and_hands_on_fresh_ciphertexts(
    stub: DataNodeAsyncStub,
    bank_key: PrivateKey,
    encryptor: FastEncryptor,
    rows: dict[str, dict[str, str]],
) -> None:
    uscc = next(iter(rows))
    incoming = [encryptor.encrypt_encoded(k % 2) for k in range(TREE_MODEL.leaf_count)]
    request = await _request(
        stub, uscc, bank_key.public_key, indicators=[c.to_bytes() for c in incoming]
    )
    reply = await stub.TreeScore(request)
    bits = _bits_of(uscc, rows)
    assert [_open(c, bank_key) for c in reply.indicators] == [
        (k % 2) * b for k, b in enumerate(bits)
    ]
    sent = {c.to_bytes() for c in incoming}
    assert not sent & set(reply.indicators)
    assert len(set(reply.indicators)) == len(reply.indicators)


async def test_the_last_step_weighs_the_consistent_leaves(
    stub: DataNodeAsyncStub,
    bank_key: PrivateKey,
    encryptor: FastEncryptor,
    rows: dict[str, dict[str, str]],
) -> None:
    weights, _ = shifted_weights(TREE_MODEL, SCALE)
    uscc = list(rows)[1]
    indicator_bits = [1 if k % 3 else 0 for k in range(TREE_MODEL.leaf_count)]
    incoming = [encryptor.encrypt_encoded(b) for b in indicator_bits]
    request = await _request(
        stub,
        uscc,
        bank_key.public_key,
        indicators=[c.to_bytes() for c in incoming],
        weights=weights,
        scale=SCALE,
    )
    reply = await stub.TreeScore(request)
    assert not reply.indicators
    bits = _bits_of(uscc, rows)
    expected = sum(w * i * b for w, i, b in zip(weights, indicator_bits, bits, strict=True))
    assert _open(reply.score, bank_key) == expected


async def test_score_and_tree_score_share_a_receipt_but_neither_replays(
    stub: DataNodeAsyncStub, bank_key: PrivateKey, settings: NodeSettings
) -> None:
    uscc = "91350100M000100Y43"
    key = bank_key.public_key
    request = await _request(stub, uscc, key)
    score = node_pb2.ScoreRequest(
        uscc=uscc,
        model_id=MODEL,
        public_key=request.public_key,
        scale=SCALE,
        request_id=request.request_id,
        receipt=request.receipt,
        credentials=request.credentials,
    )
    # Both RPCs of one query are answered under its one receipt...
    reply = await stub.Score(score)
    encoding = FixedPointEncoding(SCALE)
    # ...a tree model has no linear share: the Score partial is Enc(0).
    assert encoding.decrypt(Ciphertext.from_bytes(key, reply.partial_score), bank_key) == 0.0
    await stub.TreeScore(request)
    # ...and neither a second time.
    with pytest.raises(grpc.aio.AioRpcError) as tree_again:
        await stub.TreeScore(request)
    with pytest.raises(grpc.aio.AioRpcError) as score_again:
        await stub.Score(score)
    for caught in (tree_again, score_again):
        assert caught.value.code() == grpc.StatusCode.PERMISSION_DENIED
        assert "already used" in (caught.value.details() or "")
    entries = AccessLog(make_engine(settings.database_url), lambda: datetime.now(UTC)).entries()
    mine = [e for e in entries if e.query_id.endswith(request.request_id)]
    assert sorted(e.query_id for e in mine) == [request.request_id, f"tree:{request.request_id}"]


async def test_no_receipt_is_permission_denied(
    stub: DataNodeAsyncStub, bank_key: PrivateKey
) -> None:
    request = await _request(stub, "91350100M000100Y43", bank_key.public_key)
    request.ClearField("receipt")
    error = await _refused(stub, request)
    assert error.code() == grpc.StatusCode.PERMISSION_DENIED
    assert "receipt is required" in (error.details() or "")


async def test_a_receipt_for_another_key_is_refused(
    stub: DataNodeAsyncStub, bank_key: PrivateKey
) -> None:
    uscc = "91350100M000100Y43"
    other = PrivateKey.generate().public_key
    record = authority().record(uscc, other.fingerprint(), model_id=MODEL)
    error = await _refused(stub, await _request(stub, uscc, bank_key.public_key, record))
    assert error.code() == grpc.StatusCode.PERMISSION_DENIED
    assert "public key" in (error.details() or "")


async def test_a_receipt_for_another_model_is_refused(
    stub: DataNodeAsyncStub, bank_key: PrivateKey
) -> None:
    uscc = "91350100M000100Y43"
    key = bank_key.public_key
    record = authority().record(uscc, key.fingerprint(), model_id="other-model")
    error = await _refused(stub, await _request(stub, uscc, key, record))
    assert error.code() == grpc.StatusCode.PERMISSION_DENIED
    assert "model_id" in (error.details() or "")


async def test_a_model_without_a_tree_shard_here_is_not_found(
    stub: DataNodeAsyncStub, bank_key: PrivateKey
) -> None:
    uscc = "91350100M000100Y43"
    key = bank_key.public_key
    record = authority().record(uscc, key.fingerprint(), model_id="sme-scorecard-v1")
    request = await _request(stub, uscc, key, record, model_id="sme-scorecard-v1")
    error = await _refused(stub, request)
    assert error.code() == grpc.StatusCode.NOT_FOUND
    assert "no tree shard" in (error.details() or "")


async def test_malformed_steps_are_invalid_argument(
    stub: DataNodeAsyncStub, bank_key: PrivateKey, encryptor: FastEncryptor
) -> None:
    uscc = "91350100M000100Y43"
    key = bank_key.public_key
    leaves = TREE_MODEL.leaf_count
    good = [encryptor.zero().to_bytes() for _ in range(leaves)]
    weights, _ = shifted_weights(TREE_MODEL, SCALE)
    cases: list[tuple[dict[str, object], str]] = [
        ({"indicators": good[:-1]}, f"{leaves - 1} indicators"),
        ({"indicators": [*good[:-1], b"\x00" * len(good[0])]}, "out of range"),
        ({"indicators": [*good[:-1], b"\x01\x02"]}, "bytes"),
        ({"weights": weights[:-1], "scale": SCALE}, f"{leaves - 1} weights"),
        ({"indicators": good, "weights": weights}, "scale is required"),
        (
            {"indicators": good, "weights": [*weights[:-1], 2000 * SCALE], "scale": SCALE},
            "exceeds",
        ),
    ]
    for fields, message in cases:
        error = await _refused(stub, await _request(stub, uscc, key, None, **fields))
        assert error.code() == grpc.StatusCode.INVALID_ARGUMENT, fields.keys()
        assert message in (error.details() or ""), (message, error.details())


def test_the_model_is_well_formed() -> None:
    """The module's model really spans both nodes (so the tax node is one of a chain)."""
    assert TREE_MODEL.nodes == ("yrd-market", "yrd-tax")
    assert isinstance(TREE_MODEL, TreeModel)
