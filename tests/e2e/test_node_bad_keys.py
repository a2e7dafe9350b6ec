"""A real ``creditshare node serve`` process, attacked with bad requester keys over mTLS.

Every bad request carries a correctly signed receipt for its key (signed with the
federation's own log key), so only the key is wrong. The node must refuse each one,
claim nothing, keep answering, and still stop on SIGTERM: a perfect-square "key"
used to send its table builder into an endless loop that also blocked shutdown.
"""

from __future__ import annotations

import hashlib
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from creditshare.crypto import Ciphertext, FixedPointEncoding, PrivateKey, SigningKey
from creditshare.demo import FederationLayout
from creditshare.departments import DEFAULT_MODEL_ID
from creditshare.identity import Chain
from creditshare.ledger import Ledger, LogSigner, MemoryLedgerStorage
from creditshare.node import access_log_entries
from creditshare.pki import channel_credentials
from creditshare.proto import node_pb2, node_pb2_grpc

from .._authority import TestAuthority
from .._bad_keys import BAD_MODULI, bad_modulus
from ..integration.conftest import receipt_message

#: Bounds on waiting (start-up, one call, exit), not performance claims.
START_TIMEOUT = 120.0
CALL_TIMEOUT = 120.0
EXIT_TIMEOUT = 120.0
SCALE = 10**6
USCC = "91350100M000100Y43"


def _bytes(n: int) -> bytes:
    return n.to_bytes((n.bit_length() + 7) // 8, "big")


class _Node:
    """One node process and an mTLS channel to it as the coordinator."""

    def __init__(self, layout: FederationLayout) -> None:
        self.layout = layout
        self.node = layout.nodes[0]
        self.settings = layout.node_settings(self.node)
        tls = layout.coordinator_settings().tls[self.node.chain]
        self.credentials = channel_credentials(tls.ca, tls.cert, tls.key)
        key_file = layout.work_dir / "coordinator" / "log-signing-key.pem"
        signer = LogSigner(SigningKey.from_pem(key_file.read_bytes()).cryptography_key)
        self.ledger = Ledger(MemoryLedgerStorage(), signer, lambda: datetime.now(UTC))
        chain = self.node.chain
        self.signers = TestAuthority(
            layout.work_dir / "test-signers",
            chain,
            ca_dir=layout.work_dir / "pki" / chain.value / "ca",
        )
        self.log = (layout.work_dir / "node.log").open("ab")
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "creditshare",
                "node",
                "serve",
                "--config",
                str(self.node.config),
            ],
            stdout=self.log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.channel = grpc.secure_channel(self.node.address, self.credentials)
        self.stub = node_pb2_grpc.DataNodeStub(self.channel)

    def wait_serving(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT
        health = health_pb2_grpc.HealthStub(self.channel)
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, "the node exited during start-up"
            try:
                reply = health.Check(  # type: ignore[attr-defined]
                    health_pb2.HealthCheckRequest(service=""), timeout=2.0
                )
                if reply.status == health_pb2.HealthCheckResponse.SERVING:
                    return
            except grpc.RpcError:
                pass
            time.sleep(0.1)
        raise AssertionError("the node never became healthy")

    def request(self, n: int) -> node_pb2.ScoreRequest:
        record = self.signers.record(
            USCC, hashlib.sha256(_bytes(n)).hexdigest()[:16], chains=(self.node.chain.value,)
        )
        receipt = self.ledger.append(record.to_bytes(), record.uscc)
        described = self.stub.Describe(node_pb2.DescribeRequest(), timeout=CALL_TIMEOUT)
        return node_pb2.ScoreRequest(
            uscc=USCC,
            model_id=DEFAULT_MODEL_ID,
            public_key=node_pb2.PaillierPublicKey(n=_bytes(n)),
            scale=SCALE,
            request_id=record.query_id,
            receipt=receipt_message(receipt, described.trusted_tree_size, self.ledger),
            credentials=self.signers.credentials(USCC),
        )

    def close(self) -> None:
        self.channel.close()
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self.log.close()


@pytest.fixture
def node(tmp_path: Path, data_dir: Path) -> Iterator[_Node]:
    layout = FederationLayout.write(tmp_path, data_dir, chains=[Chain.YRD], departments=["tax"])
    layout.import_data()
    running = _Node(layout)
    try:
        running.wait_serving()
        yield running
    finally:
        running.close()


def test_node_process_refuses_bad_keys_keeps_serving_and_stops_on_sigterm(
    node: _Node, bank_key: PrivateKey
) -> None:
    logged = len(access_log_entries(node.settings))
    for name in sorted(BAD_MODULI):
        with pytest.raises(grpc.RpcError) as caught:
            node.stub.Score(node.request(bad_modulus(name)), timeout=CALL_TIMEOUT)
        error: grpc.Call = caught.value  # type: ignore[assignment]
        assert error.code() == grpc.StatusCode.INVALID_ARGUMENT, name
        assert BAD_MODULI[name] in (error.details() or ""), name
    assert len(access_log_entries(node.settings)) == logged

    # The next good request is answered (twice: the second may use the built table).
    key = bank_key.public_key
    encoding = FixedPointEncoding(SCALE)
    for _ in range(2):
        reply = node.stub.Score(node.request(key.n), timeout=CALL_TIMEOUT)
        presence = encoding.decrypt(Ciphertext.from_bytes(key, reply.presence), bank_key)
        assert presence in (0.0, 1.0)
    assert len(access_log_entries(node.settings)) == logged + 2

    node.proc.terminate()  # SIGTERM
    try:
        status = node.proc.wait(timeout=EXIT_TIMEOUT)
    except subprocess.TimeoutExpired:
        pytest.fail("the node did not stop on SIGTERM")
    assert status == 0
