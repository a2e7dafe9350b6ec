"""GET /v1/nodes and /readyz report whether each node answers, from probes and real calls:
hand-written nodes (real gRPC servers) that answer, stop, freeze, answer as another node
or predate the Info call; the report never waits on a node."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import pytest
from fastapi.testclient import TestClient

import creditshare
from creditshare.coordinator import CoordinatorSettings, create_app
from creditshare.coordinator._admin import init_log_key
from creditshare.ledger import LogSigner
from creditshare.node import build_server
from creditshare.proto import node_pb2, node_pb2_grpc

from .._fake_nodes import NoTreeModels
from .conftest import node_log_lines, tax_node

#: Generous: the conditions polled for come within a probe interval or two when the
#: machine is idle; a busy one may take far longer, and that must not fail a test.
DEADLINE = 60.0


class FakeDataNode(NoTreeModels, node_pb2_grpc.DataNodeServicer):
    def __init__(self, node_id: str) -> None:
        self.node_id = node_id

    def Describe(self, request: Any, context: Any) -> node_pb2.DescribeResponse:  # noqa: N802
        return node_pb2.DescribeResponse(node_id=self.node_id, department="tax", chain="yrd")

    def Score(self, request: Any, context: Any) -> node_pb2.ScoreResponse:  # noqa: N802
        context.abort(grpc.StatusCode.UNIMPLEMENTED, "not in this test")
        raise AssertionError("unreachable")

    def RevokeConsent(self, request: Any, context: Any) -> node_pb2.RevokeConsentResponse:  # noqa: N802
        context.abort(grpc.StatusCode.UNIMPLEMENTED, "not in this test")
        raise AssertionError("unreachable")

    def AddCheckpoint(self, request: Any, context: Any) -> node_pb2.AddCheckpointResponse:  # noqa: N802
        context.abort(grpc.StatusCode.UNIMPLEMENTED, "not in this test")
        raise AssertionError("unreachable")


@dataclass
class FakeInfo(node_pb2_grpc.NodeInfoServicer):
    """Answers as ``answer_as`` with ``version``; while ``hold`` is clear, it does not
    answer at all (a frozen node)."""

    answer_as: str
    version: str = "9.9.9-fake"
    hold: threading.Event = field(default_factory=threading.Event)
    calls: int = 0

    def __post_init__(self) -> None:
        self.hold.set()

    def Info(self, request: Any, context: Any) -> node_pb2.InfoResponse:  # noqa: N802
        self.calls += 1
        self.hold.wait(DEADLINE)
        return node_pb2.InfoResponse(node_id=self.answer_as, version=self.version)


@dataclass
class Node:
    node_id: str
    info: FakeInfo | None
    server: grpc.Server
    port: int


@pytest.fixture
def start_node() -> Iterator[Callable[..., Node]]:
    servers: list[grpc.Server] = []

    def start(node_id: str, *, info: bool = True, answer_as: str | None = None) -> Node:
        server = grpc.server(ThreadPoolExecutor(max_workers=8))
        node_pb2_grpc.add_DataNodeServicer_to_server(FakeDataNode(node_id), server)
        servicer = FakeInfo(answer_as or node_id) if info else None
        if servicer is not None:
            node_pb2_grpc.add_NodeInfoServicer_to_server(servicer, server)
        port = server.add_insecure_port("127.0.0.1:0")
        server.start()
        servers.append(server)
        return Node(node_id, servicer, server, port)

    yield start
    for server in servers:
        server.stop(None)


def coordinator(tmp_path: Path, nodes: list[tuple[str, str, int]], **overrides: Any) -> TestClient:
    """A coordinator (not started) over ``(id, chain, port)`` nodes, probing every 50 ms."""
    init_log_key(tmp_path / "log.pem")
    settings = CoordinatorSettings(
        database_url=f"sqlite:///{tmp_path / 'c.db'}",
        log_signing_key_file=tmp_path / "log.pem",
        allow_insecure=True,
        node_deadline_seconds=5,
        witness_interval_seconds=0,
        revocation_relay_interval_seconds=0,
        monitoring_interval_seconds=0,
        node_probe_interval_seconds=overrides.pop("node_probe_interval_seconds", 0.05),
        node_probe_timeout_seconds=overrides.pop("node_probe_timeout_seconds", 5),
        nodes=[
            {"id": i, "chain": chain, "department": "tax", "address": f"127.0.0.1:{port}"}
            for i, chain, port in nodes
        ],
        **overrides,
    )
    return TestClient(create_app(settings))


def key_of(client: TestClient, participant_id: str, role: str) -> str:
    participants = client.app.state.services.participants  # type: ignore[attr-defined]
    participants.register(participant_id, role, participant_id.title())
    return str(participants.issue_key(participant_id).api_key)


def authorise(client: TestClient) -> None:
    """Call as an operator: only an operator sees a node's version, error and latency."""
    client.headers["Authorization"] = f"Bearer {key_of(client, 'operator', 'operator')}"


def nodes_by_id(client: TestClient) -> dict[str, dict[str, Any]]:
    response = client.get("/v1/nodes")
    assert response.status_code == 200, response.text
    return {n["id"]: n for n in response.json()}


def wait_for(
    client: TestClient, node_id: str, check: Callable[[dict[str, Any]], bool]
) -> dict[str, Any]:
    """The node's entry once ``check`` holds (polled; fails after ``DEADLINE``)."""
    deadline = time.monotonic() + DEADLINE
    while True:
        entry = nodes_by_id(client)[node_id]
        if check(entry):
            return entry
        if time.monotonic() > deadline:
            raise AssertionError(f"{node_id} never got there; last: {entry}")
        time.sleep(0.05)


def test_a_node_that_answers_is_reachable_with_its_own_version(
    tmp_path: Path, start_node: Callable[..., Node]
) -> None:
    node = start_node("yrd-tax")
    with coordinator(tmp_path, [("yrd-tax", "yrd", node.port)]) as client:
        authorise(client)
        entry = wait_for(client, "yrd-tax", lambda n: n["version"] is not None)
        assert entry["reachable"] is True
        assert entry["version"] == "9.9.9-fake"  # the node's word, not the coordinator's
        assert entry["last_error"] is None
        assert entry["last_latency_ms"] > 0
        assert entry["last_answer_at"] is not None
        assert {k: entry[k] for k in ("chain", "department", "address")} == {
            "chain": "yrd",
            "department": "tax",
            "address": f"127.0.0.1:{node.port}",
        }
        ready = client.get("/readyz")
        assert ready.status_code == 200
        assert ready.json()["status"] == "ok"
        assert ready.json()["chains"] == {"yrd": "ok"}


def test_only_an_operator_sees_what_a_node_runs_and_why_it_fails(
    tmp_path: Path, start_node: Callable[..., Node]
) -> None:
    """A node's version, last error and latency would point anyone at the outdated or
    failing nodes: a bank or an enterprise sees whether each node answers, with null
    for those (the same schema)."""
    yrd, prd = start_node("yrd-tax"), start_node("prd-tax")
    nodes = [("yrd-tax", "yrd", yrd.port), ("prd-tax", "prd", prd.port)]
    with coordinator(tmp_path, nodes) as client:
        authorise(client)
        wait_for(client, "yrd-tax", lambda n: n["version"] is not None)
        wait_for(client, "prd-tax", lambda n: n["version"] is not None)
        prd.server.stop(None)
        wait_for(client, "prd-tax", lambda n: n["last_error"] is not None)
        operator_view = nodes_by_id(client)
        for participant_id, role in (("bank", "bank"), ("bureau", "bureau")):
            key = key_of(client, participant_id, role)
            response = client.get("/v1/nodes", headers={"Authorization": f"Bearer {key}"})
            assert response.status_code == 200, response.text
            for entry in response.json():
                seen = operator_view[entry["id"]]
                assert (entry["version"], entry["last_error"], entry["last_latency_ms"]) == (
                    None,
                    None,
                    None,
                ), entry
                hidden = ("version", "last_error", "last_latency_ms", "last_answer_at")
                assert {k: v for k, v in entry.items() if k not in hidden} == {
                    k: v for k, v in seen.items() if k not in hidden
                }
        assert operator_view["yrd-tax"]["reachable"] is True
        assert operator_view["prd-tax"]["reachable"] is False


def test_a_stopped_node_is_unreachable_and_its_chain_degraded(
    tmp_path: Path, start_node: Callable[..., Node]
) -> None:
    yrd, prd = start_node("yrd-tax"), start_node("prd-tax")
    nodes = [("yrd-tax", "yrd", yrd.port), ("prd-tax", "prd", prd.port)]
    with coordinator(tmp_path, nodes) as client:
        authorise(client)
        answered = wait_for(client, "yrd-tax", lambda n: n["reachable"] is True)
        yrd.server.stop(None)
        entry = wait_for(client, "yrd-tax", lambda n: n["reachable"] is False)
        assert entry["last_error"].startswith("unavailable")
        assert str(yrd.port) not in entry["last_error"]  # a fixed phrase, not gRPC's text
        assert entry["version"] == "9.9.9-fake"  # what it said when it last answered
        assert entry["last_answer_at"] >= answered["last_answer_at"]
        assert nodes_by_id(client)["prd-tax"]["reachable"] is True
        ready = client.get("/readyz")
        assert ready.status_code == 200  # degraded, not unavailable: prd is served
        assert ready.json()["status"] == "degraded"
        assert ready.json()["chains"] == {"prd": "ok", "yrd": "unreachable"}
        assert ready.json()["checks"] == {"database": "ok", "ledger": "ok"}


def test_a_frozen_node_misses_the_probe_timeout_and_the_report_does_not_wait(
    tmp_path: Path, start_node: Callable[..., Node]
) -> None:
    node = start_node("yrd-tax")
    assert node.info is not None
    with coordinator(
        tmp_path, [("yrd-tax", "yrd", node.port)], node_probe_timeout_seconds=0.5
    ) as client:
        authorise(client)
        wait_for(client, "yrd-tax", lambda n: n["reachable"] is True)
        node.info.hold.clear()  # every Info from now on hangs until the test ends
        try:
            entry = wait_for(client, "yrd-tax", lambda n: n["reachable"] is False)
            assert entry["last_error"] == "deadline exceeded"
            # Probes are hanging on the node right now; the report and /readyz answer
            # anyway (they would block until ``hold`` is set if they called the node).
            assert client.get("/readyz").json()["status"] == "degraded"
            assert nodes_by_id(client)["yrd-tax"]["reachable"] is False
            assert not node.info.hold.is_set()
        finally:
            node.info.hold.set()
        wait_for(client, "yrd-tax", lambda n: n["reachable"] is True)
        assert client.get("/readyz").json()["status"] == "ok"


def test_a_node_answering_as_another_is_unreachable_and_says_which(
    tmp_path: Path, start_node: Callable[..., Node]
) -> None:
    node = start_node("yrd-tax", answer_as="yrd-court")  # two addresses swapped
    with coordinator(tmp_path, [("yrd-tax", "yrd", node.port)]) as client:
        authorise(client)
        entry = wait_for(client, "yrd-tax", lambda n: n["reachable"] is False)
        assert entry["last_error"] == "answers as node 'yrd-court'"
        # Its Describe at start-up answered; that must not make it look reachable.
        assert client.get("/readyz").json()["chains"] == {"yrd": "unreachable"}


def test_a_node_without_info_is_reachable_without_a_version(
    tmp_path: Path, start_node: Callable[..., Node]
) -> None:
    node = start_node("yrd-tax", info=False)  # a node older than NodeInfo
    with coordinator(tmp_path, [("yrd-tax", "yrd", node.port)]) as client:
        authorise(client)
        entry = wait_for(client, "yrd-tax", lambda n: n["last_latency_ms"] is not None)
        assert entry["reachable"] is True
        assert entry["version"] is None
        assert entry["last_error"] is None


def test_real_calls_update_the_record_without_probes(
    tmp_path: Path, start_node: Callable[..., Node]
) -> None:
    up = start_node("yrd-tax")
    down = start_node("yrd-court")
    down.server.stop(None)
    nodes = [("yrd-tax", "yrd", up.port), ("yrd-court", "yrd", down.port)]
    with coordinator(tmp_path, nodes, node_probe_interval_seconds=0) as client:
        authorise(client)
        # No probe ran: what is known comes from the start-up Describe calls.
        assert up.info is not None and up.info.calls == 0
        seen = nodes_by_id(client)
        assert seen["yrd-tax"]["reachable"] is True
        assert seen["yrd-tax"]["version"] is None  # only a probe asks it
        assert seen["yrd-tax"]["last_latency_ms"] > 0
        assert seen["yrd-court"]["reachable"] is False
        assert seen["yrd-court"]["last_error"].startswith("unavailable")
        assert seen["yrd-court"]["last_answer_at"] is None
        assert client.get("/readyz").json()["chains"] == {"yrd": "ok"}  # one answers


def test_not_probed_yet_is_null_and_counts_as_answering(tmp_path: Path) -> None:
    client = coordinator(tmp_path, [("yrd-tax", "yrd", 1)], node_probe_interval_seconds=0)
    services = client.app.state.services  # type: ignore[attr-defined]
    # Not started: nothing tried yet.
    assert services.health.status("yrd-tax").reachable is None
    assert services.health.chains() == {"yrd": "ok"}


async def test_a_real_node_says_who_it_is_and_does_not_log_the_probe(
    tmp_path: Path, data_dir: Path
) -> None:
    settings = tax_node(tmp_path, data_dir, LogSigner.generate())
    with node_log_lines() as lines:
        server, port = await build_server(settings)
        try:
            async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
                info = node_pb2_grpc.NodeInfoStub(channel)
                for _ in range(3):
                    reply = await info.Info(node_pb2.InfoRequest(), timeout=30)
                    assert (reply.node_id, reply.version) == ("yrd-tax", creditshare.__version__)
                await node_pb2_grpc.DataNodeStub(channel).Describe(node_pb2.DescribeRequest())
        finally:
            await server.stop(None)
    # Describe is logged as every call is; the probes, every few seconds, are not.
    assert [line["rpc"] for line in lines if line["logger"] == "creditshare.node.rpc"] == [
        "Describe"
    ]
