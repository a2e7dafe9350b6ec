"""A real grpc.aio data node on loopback, called through the generated stub."""

from __future__ import annotations

import csv
import dataclasses
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import grpc
import pytest
from phe import paillier

from creditshare.crypto import Ciphertext, FixedPointEncoding, PrivateKey, PublicKey
from creditshare.departments import DEFAULT_MODEL_ID, DEFAULT_WEIGHTS, get_department
from creditshare.federated import ModelShard
from creditshare.ledger import (
    MAX_RECORD_BYTES,
    Ledger,
    LogSigner,
    MemoryLedgerStorage,
    QueryRecord,
    Receipt,
)
from creditshare.node import NodeSettings, build_server
from creditshare.proto import TRUSTED_SIZE_METADATA, head_from_pb, node_pb2, node_pb2_grpc

from .._authority import authority
from .._databases import fresh_postgres_database
from .conftest import receipt_message, tax_node

if TYPE_CHECKING:
    from creditshare.proto.creditshare.v1.node_pb2_grpc import DataNodeAsyncStub

SCALE = 10**6


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def tax_settings(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, data_dir: Path
) -> Iterator[NodeSettings]:
    """The node on each database the production path supports."""
    folder = tmp_path_factory.mktemp("node")
    if request.param == "sqlite":
        yield tax_node(folder, data_dir, LOG)
        return
    with fresh_postgres_database() as url:
        yield tax_node(folder, data_dir, LOG, url)


@pytest.fixture(scope="module")
def tax_rows(data_dir: Path) -> dict[str, dict[str, str]]:
    with (data_dir / "yrd" / "tax.csv").open(encoding="utf-8", newline="") as handle:
        return {row["uscc"]: row for row in csv.DictReader(handle)}


@pytest.fixture
async def stub(tax_settings: NodeSettings) -> AsyncIterator[DataNodeAsyncStub]:
    server, port = await build_server(tax_settings)
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            yield node_pb2_grpc.DataNodeStub(channel)
    finally:
        await server.stop(None)


LOG = LogSigner.generate()
LEDGER = Ledger(MemoryLedgerStorage(), LOG, lambda: datetime.now(UTC))


def record_for(uscc: str, key: PublicKey, **overrides: Any) -> QueryRecord:
    """The bank's signed query under the enterprise's signed consent, as recorded."""
    return authority().record(uscc, key.fingerprint(), **overrides)


def receipt_pb(receipt: Receipt, trusted: int, ledger: Ledger = LEDGER) -> node_pb2.QueryReceipt:
    return receipt_message(receipt, trusted, ledger)


async def trusted_size(stub: DataNodeAsyncStub) -> int:
    return (await stub.Describe(node_pb2.DescribeRequest())).trusted_tree_size


async def _request(
    stub: DataNodeAsyncStub,
    uscc: str,
    key: PublicKey,
    record: QueryRecord | None = None,
    **overrides: object,
) -> node_pb2.ScoreRequest:
    """A request as the coordinator sends it: recorded first, with a fresh receipt."""
    record = record or record_for(uscc, key)
    receipt = LEDGER.append(record.to_bytes(), record.uscc)
    fields: dict[str, object] = {
        "uscc": uscc,
        "model_id": DEFAULT_MODEL_ID,
        "public_key": node_pb2.PaillierPublicKey(n=key.to_bytes()),
        "scale": SCALE,
        "request_id": record.query_id,
        "receipt": receipt_pb(receipt, await trusted_size(stub)),
        "credentials": authority().credentials(record.uscc),
        **overrides,
    }
    return node_pb2.ScoreRequest(**fields)  # type: ignore[arg-type]


async def test_describe_lists_catalogue_without_values(stub: DataNodeAsyncStub) -> None:
    reply = await stub.Describe(node_pb2.DescribeRequest())
    tax = get_department("tax")
    assert (reply.node_id, reply.department, reply.chain) == ("yrd-tax", "tax", "yrd")
    assert [f.name for f in reply.features] == [f.name for f in tax.features]
    assert [i.name for i in reply.indicators] == [i.name for i in tax.indicators]
    assert reply.indicators[0].bands == ["A", "B", "M", "C", "D"]
    assert reply.models[0].model_id == DEFAULT_MODEL_ID
    assert set(reply.models[0].features) == set(DEFAULT_WEIGHTS["tax"])


async def test_score_decrypts_to_plaintext_partial(
    stub: DataNodeAsyncStub, bank_key: PrivateKey, tax_rows: dict[str, dict[str, str]]
) -> None:
    tax = get_department("tax")
    encoding = FixedPointEncoding(SCALE)
    key = bank_key.public_key
    uscc, row = next(iter(tax_rows.items()))
    record = {f.name: f.parse(row[f.name]) for f in tax.fields}
    reply = await stub.Score(await _request(stub, uscc, key))
    partial = encoding.decrypt(Ciphertext.from_bytes(key, reply.partial_score), bank_key)
    expected = ModelShard(DEFAULT_WEIGHTS["tax"]).partial_score(tax.feature_values(record))
    assert abs(partial - expected) <= 0.5 / SCALE
    assert encoding.decrypt(Ciphertext.from_bytes(key, reply.presence), bank_key) == 1.0
    values = {
        i.name: encoding.decrypt(Ciphertext.from_bytes(key, i.ciphertext), bank_key)
        for i in reply.indicators
    }
    assert values == tax.indicator_values(record)


async def test_absent_enterprise_gets_encryptions_of_zero(
    stub: DataNodeAsyncStub, bank_key: PrivateKey, tax_rows: dict[str, dict[str, str]]
) -> None:
    from creditshare.synth import unknown_uscc

    key = bank_key.public_key
    encoding = FixedPointEncoding(SCALE)
    absent = unknown_uscc(3, set(tax_rows))
    present = next(iter(tax_rows))
    empty = await stub.Score(await _request(stub, absent, key))
    full = await stub.Score(await _request(stub, present, key))
    # Same shape and sizes whether or not a record exists: nothing to tell them apart.
    assert len(empty.partial_score) == len(full.partial_score) == key.ciphertext_length
    assert [i.name for i in empty.indicators] == [i.name for i in full.indicators]
    opened = [
        encoding.decrypt(Ciphertext.from_bytes(key, b), bank_key)
        for b in [empty.partial_score, empty.presence, *(i.ciphertext for i in empty.indicators)]
    ]
    assert opened == [0.0] * len(opened)


async def test_offset_is_added_homomorphically(
    stub: DataNodeAsyncStub, bank_key: PrivateKey, tax_rows: dict[str, dict[str, str]]
) -> None:
    key = bank_key.public_key
    encoding = FixedPointEncoding(SCALE)
    uscc = next(iter(tax_rows))
    plain = await stub.Score(await _request(stub, uscc, key))
    offset = encoding.encrypt(-2.5, key)
    shifted = await stub.Score(await _request(stub, uscc, key, partial_offset=offset.to_bytes()))
    a = encoding.decrypt(Ciphertext.from_bytes(key, plain.partial_score), bank_key)
    b = encoding.decrypt(Ciphertext.from_bytes(key, shifted.partial_score), bank_key)
    assert abs((b - a) - (-2.5)) <= 1 / SCALE


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (0, "out of range"),
        (None, "out of range"),  # n² itself
        (-1, "not a unit"),  # a multiple of n
    ],
)
async def test_out_of_range_ciphertext_is_invalid_argument(
    stub: DataNodeAsyncStub,
    bank_key: PrivateKey,
    tax_rows: dict[str, dict[str, str]],
    value: int | None,
    message: str,
) -> None:
    key = bank_key.public_key
    if value is None:
        raw = key.n_squared
    elif value < 0:
        raw = key.n * 12345
    else:
        raw = value
    bad = raw.to_bytes(key.ciphertext_length, "big") if raw < key.n_squared else None
    payload = bad if bad is not None else b"\xff" * key.ciphertext_length
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.Score(await _request(stub, next(iter(tax_rows)), key, partial_offset=payload))
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert message in (caught.value.details() or "")


async def test_wrong_length_ciphertext_is_invalid_argument(
    stub: DataNodeAsyncStub, bank_key: PrivateKey, tax_rows: dict[str, dict[str, str]]
) -> None:
    key = bank_key.public_key
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.Score(
            await _request(stub, next(iter(tax_rows)), key, partial_offset=b"\x01\x02")
        )
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "expected 512" in (caught.value.details() or "")


async def test_small_key_is_invalid_argument(stub: DataNodeAsyncStub) -> None:
    small, _ = paillier.generate_paillier_keypair(n_length=1024)
    n = int(small.n)
    request = node_pb2.ScoreRequest(
        uscc="91350100M000100Y43",
        model_id=DEFAULT_MODEL_ID,
        public_key=node_pb2.PaillierPublicKey(n=n.to_bytes(128, "big")),
        scale=SCALE,
    )
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.Score(request)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "1024 bits" in (caught.value.details() or "")
    assert "2048" in (caught.value.details() or "")


async def test_bad_uscc_is_invalid_argument_naming_position(
    stub: DataNodeAsyncStub, bank_key: PrivateKey
) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.Score(await _request(stub, "91350100M000100Y44", bank_key.public_key))
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "position 18" in (caught.value.details() or "")


async def test_missing_key_and_scale_are_invalid_argument(
    stub: DataNodeAsyncStub, bank_key: PrivateKey
) -> None:
    uscc = "91350100M000100Y43"
    no_key = node_pb2.ScoreRequest(uscc=uscc, model_id=DEFAULT_MODEL_ID, scale=SCALE)
    no_scale = await _request(stub, uscc, bank_key.public_key, scale=0)
    for request, expected in ((no_key, "public_key"), (no_scale, "scale")):
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await stub.Score(request)
        assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert expected in (caught.value.details() or "")


async def test_model_without_a_shard_here_adds_nothing_but_still_answers(
    stub: DataNodeAsyncStub, bank_key: PrivateKey, tax_rows: dict[str, dict[str, str]]
) -> None:
    """A model trained on other nodes: this node's share is zero, its presence still true."""
    uscc = next(iter(tax_rows))
    key = bank_key.public_key
    record = record_for(uscc, key, model_id="trained-elsewhere")
    reply = await stub.Score(await _request(stub, uscc, key, record, model_id="trained-elsewhere"))
    encoding = FixedPointEncoding(SCALE)
    assert encoding.decrypt(Ciphertext.from_bytes(key, reply.partial_score), bank_key) == 0.0
    assert encoding.decrypt(Ciphertext.from_bytes(key, reply.presence), bank_key) == 1.0


async def test_a_request_without_receipt_learns_nothing_about_models(
    stub: DataNodeAsyncStub, bank_key: PrivateKey, tax_rows: dict[str, dict[str, str]]
) -> None:
    request = await _request(stub, next(iter(tax_rows)), bank_key.public_key, model_id="nope")
    request.ClearField("receipt")
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.Score(request)
    assert caught.value.code() == grpc.StatusCode.PERMISSION_DENIED


# --- receipts: a node answers only a query the ledger recorded -------------------------


async def _refused(stub: DataNodeAsyncStub, request: node_pb2.ScoreRequest) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.Score(request)
    return caught.value


async def test_no_receipt_is_permission_denied(
    stub: DataNodeAsyncStub, bank_key: PrivateKey, tax_rows: dict[str, dict[str, str]]
) -> None:
    request = await _request(stub, next(iter(tax_rows)), bank_key.public_key)
    request.ClearField("receipt")
    error = await _refused(stub, request)
    assert error.code() == grpc.StatusCode.PERMISSION_DENIED
    assert "receipt is required" in (error.details() or "")


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("uscc", "91350100M000100Y43", "uscc"),
        ("model_id", "other-model", "model_id"),
        ("chains", ("bth",), "chain"),
        ("query_id", "someone-else", "query id"),
        ("kind", "refusal", "kind"),
    ],
)
async def test_receipt_for_another_query_is_refused(
    stub: DataNodeAsyncStub,
    bank_key: PrivateKey,
    tax_rows: dict[str, dict[str, str]],
    field: str,
    value: object,
    message: str,
) -> None:
    uscc = next(iter(tax_rows))
    key = bank_key.public_key
    record = record_for(uscc, key)
    record = dataclasses.replace(record, **{field: value})  # type: ignore[arg-type]
    request = await _request(stub, uscc, key, record)
    if field == "query_id":
        request.request_id = "the-real-query"
    error = await _refused(stub, request)
    assert error.code() == grpc.StatusCode.PERMISSION_DENIED
    assert message in (error.details() or "")


async def test_receipt_for_another_key_is_refused(
    stub: DataNodeAsyncStub, bank_key: PrivateKey, tax_rows: dict[str, dict[str, str]]
) -> None:
    uscc = next(iter(tax_rows))
    other = PrivateKey.generate().public_key
    request = await _request(stub, uscc, bank_key.public_key, record_for(uscc, other))
    error = await _refused(stub, request)
    assert error.code() == grpc.StatusCode.PERMISSION_DENIED
    assert "public key" in (error.details() or "")


async def test_old_receipt_is_refused(
    stub: DataNodeAsyncStub, bank_key: PrivateKey, tax_rows: dict[str, dict[str, str]]
) -> None:
    uscc = next(iter(tax_rows))
    key = bank_key.public_key
    stale = record_for(uscc, key, time=datetime.now(UTC) - timedelta(hours=1))
    error = await _refused(stub, await _request(stub, uscc, key, stale))
    assert error.code() == grpc.StatusCode.PERMISSION_DENIED
    assert "receipt is too old: its record is dated 3" in (error.details() or "")
    assert "at most 300 s allowed (receipt_max_age_seconds)" in (error.details() or "")


async def test_a_record_dated_far_from_the_signed_time_is_refused_saying_by_how_much(
    stub: DataNodeAsyncStub, bank_key: PrivateKey, tax_rows: dict[str, dict[str, str]]
) -> None:
    """The node allows 60 s between the bank's signed time and the record's; a relay
    whose clock or queue is further off is told the skew and the limit."""
    uscc = next(iter(tax_rows))
    key = bank_key.public_key
    signed_at = datetime.now(UTC).replace(microsecond=0)
    late = record_for(uscc, key, time=signed_at - timedelta(seconds=90))  # still fresh
    error = await _refused(stub, await _request(stub, uscc, key, late))
    assert error.code() == grpc.StatusCode.PERMISSION_DENIED
    assert "time (the record is dated 9" in (error.details() or "")
    assert "s before the signed time; this node allows at most 60 s)" in (error.details() or "")


async def test_head_signed_by_another_key_is_refused(
    stub: DataNodeAsyncStub, bank_key: PrivateKey, tax_rows: dict[str, dict[str, str]]
) -> None:
    uscc = next(iter(tax_rows))
    key = bank_key.public_key
    forger = Ledger(MemoryLedgerStorage(), LogSigner.generate(), lambda: datetime.now(UTC))
    record = record_for(uscc, key)
    receipt = forger.append(record.to_bytes(), uscc)
    request = await _request(stub, uscc, key, record)
    request.receipt.CopyFrom(receipt_pb(receipt, 0, forger))
    error = await _refused(stub, request)
    assert error.code() == grpc.StatusCode.PERMISSION_DENIED


async def test_tampered_leaf_fails_inclusion(
    stub: DataNodeAsyncStub, bank_key: PrivateKey, tax_rows: dict[str, dict[str, str]]
) -> None:
    uscc = next(iter(tax_rows))
    request = await _request(stub, uscc, bank_key.public_key)
    request.receipt.leaf_data = request.receipt.leaf_data.replace(b"bank-1", b"bank-2")
    error = await _refused(stub, request)
    assert error.code() == grpc.StatusCode.PERMISSION_DENIED


async def test_receipt_cannot_be_replayed(
    stub: DataNodeAsyncStub, bank_key: PrivateKey, tax_rows: dict[str, dict[str, str]]
) -> None:
    request = await _request(stub, next(iter(tax_rows)), bank_key.public_key)
    await stub.Score(request)
    replay = node_pb2.ScoreRequest()
    replay.CopyFrom(request)
    replay.receipt.consistency_from = await trusted_size(stub)
    del replay.receipt.consistency_proof[:]
    error = await _refused(stub, replay)
    assert error.code() == grpc.StatusCode.PERMISSION_DENIED
    assert "already used" in (error.details() or "")


async def test_stale_head_says_which_size_the_node_trusts(
    stub: DataNodeAsyncStub, bank_key: PrivateKey, tax_rows: dict[str, dict[str, str]]
) -> None:
    uscc = next(iter(tax_rows))
    key = bank_key.public_key
    older = await _request(stub, uscc, key)  # head n
    newer = await _request(stub, uscc, key)  # head n + 1, node then trusts n + 1
    await stub.Score(newer)
    error = await _refused(stub, older)
    assert error.code() == grpc.StatusCode.FAILED_PRECONDITION
    metadata = dict(error.trailing_metadata() or ())
    assert metadata[TRUSTED_SIZE_METADATA] == str(newer.receipt.tree_head.size)


async def test_forked_log_is_refused_and_the_node_keeps_its_head(
    stub: DataNodeAsyncStub, bank_key: PrivateKey, tax_rows: dict[str, dict[str, str]]
) -> None:
    """The same log key signing a different history (a rewritten log) stops the node."""
    uscc = next(iter(tax_rows))
    key = bank_key.public_key
    await stub.Score(await _request(stub, uscc, key))
    trusted = await trusted_size(stub)
    fork = Ledger(MemoryLedgerStorage(), LOG, lambda: datetime.now(UTC))
    for _ in range(trusted):
        fork.append(b"rewritten history", uscc)
    record = record_for(uscc, key)
    receipt = fork.append(record.to_bytes(), uscc)
    request = await _request(stub, uscc, key, record)
    request.receipt.CopyFrom(receipt_pb(receipt, trusted, fork))
    error = await _refused(stub, request)
    assert error.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "does not extend the trusted head" in (error.details() or "")
    assert await trusted_size(stub) == trusted
    # The genuine log still works.
    await stub.Score(await _request(stub, uscc, key))


async def test_only_indicators_in_the_consent_scope_are_returned(
    stub: DataNodeAsyncStub, bank_key: PrivateKey, tax_rows: dict[str, dict[str, str]]
) -> None:
    uscc = next(iter(tax_rows))
    key = bank_key.public_key
    record = record_for(uscc, key, indicators=("tax_credit_grade", "not_a_tax_indicator"))
    reply = await stub.Score(await _request(stub, uscc, key, record))
    assert [i.name for i in reply.indicators] == ["tax_credit_grade"]


async def test_trusted_head_survives_a_restart(
    tax_settings: NodeSettings, bank_key: PrivateKey, tax_rows: dict[str, dict[str, str]]
) -> None:
    sizes = []
    for _ in range(2):
        server, port = await build_server(tax_settings)
        try:
            async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
                stub: DataNodeAsyncStub = node_pb2_grpc.DataNodeStub(channel)
                await stub.Score(await _request(stub, next(iter(tax_rows)), bank_key.public_key))
                sizes.append(await trusted_size(stub))
                # The node shows the head itself, signed: what makes it a witness.
                described = await stub.Describe(node_pb2.DescribeRequest())
                head = head_from_pb(described.trusted_tree_head)
                assert head.size == sizes[-1]
                head.verify(LOG.public_key)
        finally:
            await server.stop(None)
    assert sizes[1] == sizes[0] + 1 and sizes[0] > 0


def _oversize(request: node_pb2.ScoreRequest, part: str) -> None:
    """Make one part of a genuine request larger (or of another size) than a real one."""
    receipt = request.receipt
    if part == "leaf_data":
        receipt.leaf_data = b"{" + b" " * MAX_RECORD_BYTES + b"}"
    elif part == "inclusion_proof":
        receipt.inclusion_proof.extend([b"\0" * 32] * 200)
    elif part == "short hash":
        receipt.inclusion_proof.append(b"\0" * 31)
    elif part == "consistency_proof":
        receipt.consistency_proof.extend([b"\0" * 32] * 200)
    elif part == "root":
        receipt.tree_head.root = b"\0" * 33
    elif part == "signature":
        receipt.tree_head.signature = b"\0" * 10
    elif part == "leaf_index":
        receipt.leaf_index = receipt.tree_head.size + 5
    elif part == "public_key":
        request.public_key.n = b"\xff" * 600
    elif part == "uscc":
        request.uscc = "9" * 10_000
    else:
        raise AssertionError(part)


@pytest.mark.parametrize(
    ("part", "message"),
    [
        ("leaf_data", "leaf_data"),
        ("inclusion_proof", "inclusion_proof"),
        ("short hash", "inclusion_proof"),
        ("consistency_proof", "consistency_proof"),
        ("root", "root"),
        ("signature", "signature"),
        ("leaf_index", "leaf_index"),
        ("public_key", "4096 bits"),
        ("uscc", "18 characters"),
    ],
)
async def test_oversized_parts_are_invalid_argument_and_nothing_is_written(
    stub: DataNodeAsyncStub,
    tax_settings: NodeSettings,
    bank_key: PrivateKey,
    tax_rows: dict[str, dict[str, str]],
    part: str,
    message: str,
) -> None:
    from creditshare.node import access_log_entries

    key = bank_key.public_key
    uscc = next(iter(tax_rows))
    before = len(access_log_entries(tax_settings))
    head = await trusted_size(stub)
    request = await _request(stub, uscc, key)
    _oversize(request, part)
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await stub.Score(request)
    assert refused.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert message in (refused.value.details() or "")
    assert len(access_log_entries(tax_settings)) == before
    assert await trusted_size(stub) == head
    # The node still serves the next good request.
    reply = await stub.Score(await _request(stub, uscc, key))
    assert len(reply.partial_score) == key.ciphertext_length
