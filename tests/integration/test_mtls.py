"""Mutual TLS on a real grpc.aio server: who gets through the handshake and who does not.

The server is a stand-in node (the standard health service behind
``server_credentials``) so these tests exercise only the transport: a caller
that fails here never reaches a servicer.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_health.v1.health import aio as health_aio

from creditshare.pki import (
    TlsSettings,
    channel_credentials,
    init_ca,
    server_credentials,
)
from tests._pki import TlsFiles, make_tls

SERVING = health_pb2.HealthCheckResponse.SERVING


@dataclass(frozen=True)
class Pki:
    node: TlsFiles  # yrd node: what the server presents
    coordinator: TlsFiles  # yrd coordinator: the legitimate client
    foreign: TlsFiles  # prd coordinator: right role, wrong chain
    remote_node: TlsFiles  # yrd node certificate issued for a DNS name only


@pytest.fixture
def pki(tmp_path: Path) -> Pki:
    yrd = init_ca("yrd", tmp_path / "yrd-ca")
    prd = init_ca("prd", tmp_path / "prd-ca")
    return Pki(
        node=make_tls(yrd.directory, tmp_path / "node", "yrd-tax", "node"),
        coordinator=make_tls(yrd.directory, tmp_path / "coord", "coordinator", "coordinator"),
        foreign=make_tls(prd.directory, tmp_path / "prd-coord", "coordinator", "coordinator"),
        remote_node=make_tls(
            yrd.directory, tmp_path / "remote", "yrd-court", "node", hosts=["court.yrd.example"]
        ),
    )


async def _serve(identity: TlsFiles) -> tuple[grpc.aio.Server, int]:
    server = grpc.aio.server()
    health = health_aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health, server)
    port = server.add_secure_port(
        "127.0.0.1:0", server_credentials(identity.cert, identity.key, identity.ca)
    )
    await server.start()
    await health.set("", SERVING)
    return server, port


@pytest.fixture
async def node_port(pki: Pki) -> AsyncIterator[int]:
    server, port = await _serve(pki.node)
    try:
        yield port
    finally:
        await server.stop(None)


async def _check(
    target: str,
    credentials: grpc.ChannelCredentials | None,
    options: list[tuple[str, str]] | None = None,
) -> int:
    """One health Check over a fresh channel; ``None`` credentials means plaintext."""
    if credentials is None:
        channel = grpc.aio.insecure_channel(target)
    else:
        channel = grpc.aio.secure_channel(target, credentials, options=options)
    async with channel:
        stub = health_pb2_grpc.HealthStub(channel)
        reply = await stub.Check(health_pb2.HealthCheckRequest(), timeout=5)  # type: ignore[attr-defined]
        status: int = reply.status
        return status


async def _refused(
    target: str,
    credentials: grpc.ChannelCredentials | None,
    options: list[tuple[str, str]] | None = None,
) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await _check(target, credentials, options)
    return caught.value


async def _still_serves(pki: Pki, port: int) -> None:
    """A refusal proves nothing if the server was down: the legitimate client still works.

    When the *server* rejects the handshake the client only sees "Socket closed"
    (the reason is in the server's log), so this is what ties the refusal to
    the credentials rather than to the server.
    """
    c = pki.coordinator
    assert await _check(f"127.0.0.1:{port}", channel_credentials(c.ca, c.cert, c.key)) == SERVING


@pytest.mark.parametrize("host", ["127.0.0.1", "localhost"])
async def test_coordinator_of_same_chain_is_served(pki: Pki, node_port: int, host: str) -> None:
    coordinator = pki.coordinator
    credentials = channel_credentials(coordinator.ca, coordinator.cert, coordinator.key)
    assert await _check(f"{host}:{node_port}", credentials) == SERVING


async def test_tls_settings_build_working_credentials(pki: Pki, node_port: int) -> None:
    c = pki.coordinator
    settings = TlsSettings(ca=c.ca, cert=c.cert, key=c.key)
    assert await _check(f"127.0.0.1:{node_port}", settings.channel_credentials()) == SERVING


async def test_client_without_certificate_is_refused(pki: Pki, node_port: int) -> None:
    root_only = grpc.ssl_channel_credentials(root_certificates=pki.node.ca.read_bytes())
    error = await _refused(f"127.0.0.1:{node_port}", root_only)
    assert error.code() == grpc.StatusCode.UNAVAILABLE
    await _still_serves(pki, node_port)


async def test_client_certified_by_another_chain_is_refused(pki: Pki, node_port: int) -> None:
    # The client trusts the yrd root (so it accepts the node) but presents a prd identity.
    foreign = pki.foreign
    credentials = channel_credentials(pki.coordinator.ca, foreign.cert, foreign.key)
    error = await _refused(f"127.0.0.1:{node_port}", credentials)
    assert error.code() == grpc.StatusCode.UNAVAILABLE
    await _still_serves(pki, node_port)


async def test_client_that_trusts_another_chain_refuses_the_node(pki: Pki, node_port: int) -> None:
    foreign = pki.foreign
    credentials = channel_credentials(foreign.ca, foreign.cert, foreign.key)
    error = await _refused(f"127.0.0.1:{node_port}", credentials)
    assert error.code() == grpc.StatusCode.UNAVAILABLE
    assert "CERTIFICATE_VERIFY_FAILED" in (error.details() or "")


async def test_node_certificate_cannot_act_as_a_client(pki: Pki, node_port: int) -> None:
    # Same chain, but a node certificate carries serverAuth only: the server's
    # purpose check (TLS client) rejects it, so a stolen node key cannot query peers.
    node = pki.node
    credentials = channel_credentials(node.ca, node.cert, node.key)
    error = await _refused(f"127.0.0.1:{node_port}", credentials)
    assert error.code() == grpc.StatusCode.UNAVAILABLE
    await _still_serves(pki, node_port)


async def test_plaintext_client_is_refused(pki: Pki, node_port: int) -> None:
    error = await _refused(f"127.0.0.1:{node_port}", None)
    assert error.code() == grpc.StatusCode.UNAVAILABLE
    await _still_serves(pki, node_port)


async def test_target_name_must_be_in_the_server_sans(pki: Pki) -> None:
    """gRPC checks the dialled host against the node's SANs; override only for tests."""
    server, port = await _serve(pki.remote_node)
    c = pki.coordinator
    try:
        credentials = channel_credentials(c.ca, c.cert, c.key)
        error = await _refused(f"127.0.0.1:{port}", credentials)
        assert error.code() == grpc.StatusCode.UNAVAILABLE
        assert "Hostname Verification" in (error.details() or "")
        override = [("grpc.ssl_target_name_override", "court.yrd.example")]
        assert await _check(f"127.0.0.1:{port}", credentials, override) == SERVING
    finally:
        await server.stop(None)
