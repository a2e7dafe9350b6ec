"""A real grpc.aio data node on loopback, called through the generated stub."""

from __future__ import annotations

import csv
from collections.abc import AsyncIterator
from pathlib import Path
from typing import TYPE_CHECKING

import grpc
import pytest
from phe import paillier

from creditshare.crypto import Ciphertext, FixedPointEncoding, PrivateKey, PublicKey
from creditshare.departments import DEFAULT_MODEL_ID, DEFAULT_WEIGHTS, get_department
from creditshare.node import NodeSettings, build_server, import_into_node
from creditshare.proto import node_pb2, node_pb2_grpc

if TYPE_CHECKING:
    from creditshare.proto.creditshare.v1.node_pb2_grpc import DataNodeAsyncStub

SCALE = 10**6


@pytest.fixture(scope="module")
def tax_settings(tmp_path_factory: pytest.TempPathFactory, data_dir: Path) -> NodeSettings:
    folder = tmp_path_factory.mktemp("node")
    settings = NodeSettings(
        node_id="yrd-tax",
        department="tax",
        chain="yrd",
        listen="127.0.0.1:0",
        database_url=f"sqlite:///{folder / 'node.db'}",
        models={DEFAULT_MODEL_ID: {"weights": dict(DEFAULT_WEIGHTS["tax"])}},
    )
    import_into_node(settings, [data_dir / "yrd" / "tax.csv"])
    return settings


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


def _request(uscc: str, key: PublicKey, **overrides: object) -> node_pb2.ScoreRequest:
    fields: dict[str, object] = {
        "uscc": uscc,
        "model_id": DEFAULT_MODEL_ID,
        "public_key": node_pb2.PaillierPublicKey(n=key.to_bytes()),
        "scale": SCALE,
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
    reply = await stub.Score(_request(uscc, key))
    partial = encoding.decrypt(Ciphertext.from_bytes(key, reply.partial_score), bank_key)
    expected = tax.partial_score(record, DEFAULT_WEIGHTS["tax"])
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
    empty = await stub.Score(_request(absent, key))
    full = await stub.Score(_request(present, key))
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
    plain = await stub.Score(_request(uscc, key))
    offset = encoding.encrypt(-2.5, key)
    shifted = await stub.Score(_request(uscc, key, partial_offset=offset.to_bytes()))
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
        await stub.Score(_request(next(iter(tax_rows)), key, partial_offset=payload))
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert message in (caught.value.details() or "")


async def test_wrong_length_ciphertext_is_invalid_argument(
    stub: DataNodeAsyncStub, bank_key: PrivateKey, tax_rows: dict[str, dict[str, str]]
) -> None:
    key = bank_key.public_key
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.Score(_request(next(iter(tax_rows)), key, partial_offset=b"\x01\x02"))
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
        await stub.Score(_request("91350100M000100Y44", bank_key.public_key))
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "position 18" in (caught.value.details() or "")


async def test_missing_key_and_scale_are_invalid_argument(
    stub: DataNodeAsyncStub, bank_key: PrivateKey
) -> None:
    uscc = "91350100M000100Y43"
    no_key = node_pb2.ScoreRequest(uscc=uscc, model_id=DEFAULT_MODEL_ID, scale=SCALE)
    no_scale = _request(uscc, bank_key.public_key, scale=0)
    for request, expected in ((no_key, "public_key"), (no_scale, "scale")):
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await stub.Score(request)
        assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert expected in (caught.value.details() or "")


async def test_unknown_model_is_not_found(stub: DataNodeAsyncStub, bank_key: PrivateKey) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.Score(_request("91350100M000100Y43", bank_key.public_key, model_id="nope"))
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND
    assert "nope" in (caught.value.details() or "")
