"""A running node refuses every kind of bad requester key, writes nothing, keeps serving.

Each bad ScoreRequest is otherwise perfect (a fresh, correctly signed receipt naming
that key's fingerprint), so the only thing wrong is the key; the node must refuse it
before the receipt is claimed: nothing lands in the enterprise's access log. Last, a
node whose fixed-base table build fails (injected) keeps answering with stock encryption.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections.abc import AsyncIterator, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

import grpc
import pytest

from creditshare.crypto import Ciphertext, FixedPointEncoding, PrivateKey, PublicKey
from creditshare.departments import DEFAULT_MODEL_ID
from creditshare.errors import InvalidKeyError
from creditshare.ledger import Ledger, LogSigner, MemoryLedgerStorage
from creditshare.node import NodeSettings, access_log_entries, build_server
from creditshare.node._encryptors import EncryptorCache, ValueEncryptor
from creditshare.proto import node_pb2, node_pb2_grpc

from .._authority import authority
from .._bad_keys import BAD_MODULI, bad_modulus
from .._databases import fresh_postgres_database
from .conftest import receipt_message, tax_node

if TYPE_CHECKING:
    from creditshare.proto.creditshare.v1.node_pb2_grpc import DataNodeAsyncStub

SCALE = 10**6
LOG = LogSigner.generate()
LEDGER = Ledger(MemoryLedgerStorage(), LOG, lambda: datetime.now(UTC))
USCC = "91350100M000100Y43"


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def settings(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, data_dir: Path
) -> Iterator[NodeSettings]:
    folder = tmp_path_factory.mktemp("node")
    if request.param == "sqlite":
        yield tax_node(folder, data_dir, LOG)
        return
    with fresh_postgres_database() as url:
        yield tax_node(folder, data_dir, LOG, url)


@pytest.fixture
async def stub(settings: NodeSettings) -> AsyncIterator[DataNodeAsyncStub]:
    server, port = await build_server(settings)
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            yield node_pb2_grpc.DataNodeStub(channel)
    finally:
        await server.stop(None)


def _bytes(n: int) -> bytes:
    return n.to_bytes((n.bit_length() + 7) // 8, "big")


async def _request(stub: DataNodeAsyncStub, n: int) -> node_pb2.ScoreRequest:
    """A request as the coordinator would send it for modulus n, receipt and all."""
    record = authority().record(USCC, hashlib.sha256(_bytes(n)).hexdigest()[:16])
    receipt = LEDGER.append(record.to_bytes(), record.uscc)
    trusted = (await stub.Describe(node_pb2.DescribeRequest())).trusted_tree_size
    return node_pb2.ScoreRequest(
        uscc=USCC,
        model_id=DEFAULT_MODEL_ID,
        public_key=node_pb2.PaillierPublicKey(n=_bytes(n)),
        scale=SCALE,
        request_id=record.query_id,
        receipt=receipt_message(receipt, trusted, LEDGER),
        credentials=authority().credentials(USCC),
    )


@pytest.mark.parametrize("name", sorted(BAD_MODULI))
async def test_bad_key_is_invalid_argument_writes_nothing_and_node_serves_on(
    stub: DataNodeAsyncStub, settings: NodeSettings, bank_key: PrivateKey, name: str
) -> None:
    n = bad_modulus(name)
    before = len(access_log_entries(settings))
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await stub.Score(await _request(stub, n), timeout=120)  # a hang fails, not waits
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    details = caught.value.details() or ""
    assert BAD_MODULI[name] in details
    assert str(n)[:40] not in details
    assert len(access_log_entries(settings)) == before

    # The next good request is answered, and it is the only one logged.
    key = bank_key.public_key
    reply = await stub.Score(await _request(stub, key.n), timeout=120)
    encoding = FixedPointEncoding(SCALE)
    presence = encoding.decrypt(Ciphertext.from_bytes(key, reply.presence), bank_key)
    assert presence in (0.0, 1.0)
    assert len(access_log_entries(settings)) == before + 1


async def test_many_bad_keys_in_a_row_leave_the_node_answering(
    stub: DataNodeAsyncStub, bank_key: PrivateKey
) -> None:
    for _ in range(3):
        for name in sorted(BAD_MODULI):
            with pytest.raises(grpc.aio.AioRpcError) as caught:
                await stub.Score(await _request(stub, bad_modulus(name)), timeout=120)
            assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    reply = await stub.Score(await _request(stub, bank_key.public_key.n), timeout=120)
    assert reply.node_id == "yrd-tax"


async def test_node_whose_table_build_fails_answers_with_stock_encryption(
    settings: NodeSettings, bank_key: PrivateKey
) -> None:
    # Injected failure: every table build raises, as one would on a degenerate key.
    attempts: list[PublicKey] = []

    def failing(key: PublicKey) -> ValueEncryptor:
        attempts.append(key)
        raise InvalidKeyError("injected build failure")

    cache = EncryptorCache(build=failing)
    server, port = await build_server(settings, encryptors=cache)
    key = bank_key.public_key
    encoding = FixedPointEncoding(SCALE)
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            stub: DataNodeAsyncStub = node_pb2_grpc.DataNodeStub(channel)

            async def answered() -> None:
                reply = await stub.Score(await _request(stub, key.n), timeout=120)
                presence = encoding.decrypt(Ciphertext.from_bytes(key, reply.presence), bank_key)
                assert presence in (0.0, 1.0)

            await answered()  # asks for a table; the build fails in the background
            deadline = time.monotonic() + 60  # a bound on waiting, not a speed claim
            while not cache.failed(key):
                assert time.monotonic() < deadline, "the build failure was never recorded"
                await asyncio.sleep(0.02)
            for _ in range(3):
                await answered()  # stock encryption, and no new build attempt
    finally:
        await server.stop(None)
        cache.close()
    assert attempts == [key]
