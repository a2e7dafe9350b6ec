"""The department's and operator's console pages without a browser: a node database read
as imported, a node's port checked by the standard health check, and the operator's
forms sending what they should (never a pasted key's secret) and placing refusals."""

from __future__ import annotations

import re
import socket
import threading
from collections.abc import Iterator
from concurrent import futures
from pathlib import Path
from typing import Any

import grpc
import pytest
from fastapi.testclient import TestClient
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from creditshare._settings import load_settings
from creditshare.console import ConsoleSettings, create_console_app
from creditshare.console._department import _probe_port
from creditshare.crypto import SigningKey
from creditshare.demo._pki import chain_ca, node_identity
from creditshare.demo._toml import dumps
from creditshare.errors import ProblemError
from creditshare.identity import Chain
from creditshare.node import SERVICE_NAME, NodeSettings, import_into_node
from creditshare.pki import server_credentials
from creditshare.synth import generate


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _logged_in(client: TestClient) -> str:
    """Log ``client`` in; the page's CSRF token."""
    token = client.app.state.console.sessions.login_token  # type: ignore[attr-defined]
    client.get(f"/login?token={token}")
    page = client.get("/")
    match = re.search(r'"X-CSRF-Token": "([^"]+)"', page.text)
    assert match, page.text
    return match.group(1)


@pytest.fixture
def node_config(tmp_path: Path) -> Path:
    """A market node's settings (no TLS) on a database with one imported snapshot."""
    ca = tmp_path / "ca.pem"
    ca.write_text("unused here", encoding="utf-8")
    config = tmp_path / "node.toml"
    config.write_text(
        dumps(
            {
                "node_id": "yrd-market",
                "department": "market",
                "chain": "yrd",
                "listen": f"127.0.0.1:{_free_port()}",
                "database_url": f"sqlite:///{tmp_path / 'node.db'}",
                "log_public_key": SigningKey.generate().verify_key.to_text(),
                "allow_insecure": True,
                "credential_ca": str(ca),
            }
        ),
        encoding="utf-8",
    )
    return config


def _department(config: Path, tmp_path: Path) -> TestClient:
    settings = ConsoleSettings(
        role="department", node_config=config, work_dir=tmp_path / "c", language="en"
    )
    return TestClient(create_console_app(settings))


def test_department_pages_read_the_node_database_and_check_its_port(
    node_config: Path, tmp_path: Path
) -> None:
    settings = load_settings(NodeSettings, node_config)
    data = generate(30, 3, tmp_path / "synth").out_dir / "yrd" / "market.csv"
    summary = import_into_node(settings, [data])
    with _department(node_config, tmp_path) as client:
        _logged_in(client)
        imports = client.get("/department/imports")
        assert imports.status_code == 200
        row = re.search(rf'<tr data-snapshot="{summary.batch_id}">(.*?)</tr>', imports.text, re.S)
        assert row and f'data-count="added">{summary.added}<' in row.group(1)
        assert f'id="records-held">{summary.rows}<' in imports.text
        assert "This node has answered no query yet." in client.get("/department/access-log").text
        assert "This node has refused no request." in client.get("/department/refusals").text
        # Nothing listens on the node's port: the page says so, the database is fine.
        down = client.get("/department/health").text
        assert re.search(r'data-check="port" data-ok="false"', down)
        assert re.search(r'data-check="database" data-ok="true"', down)
        assert f"{summary.rows} records" in down
        # A node serving the standard health check: the port answers.
        server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
        servicer = health.HealthServicer()
        servicer.set(SERVICE_NAME, health_pb2.HealthCheckResponse.SERVING)
        health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
        server.add_insecure_port(settings.listen)
        server.start()
        try:
            up = client.get("/department/health").text
        finally:
            server.stop(None)
        assert re.search(r'data-check="port" data-ok="true"', up)
        assert "SERVING" in up


def test_a_department_database_never_migrated_is_refused_with_what_to_run(
    node_config: Path, tmp_path: Path
) -> None:
    (tmp_path / "node.db").touch()  # a file, but no schema: never migrated
    with _department(node_config, tmp_path) as client:
        _logged_in(client)
        page = client.get("/department/imports").text
        assert 'id="node-problem"' in page and "creditshare db upgrade node" in page
        health_page = client.get("/department/health").text
        assert re.search(r'data-check="database" data-ok="false"', health_page)


class FakeSdk:
    """The SDK calls the operator's pages make, recorded; refusals on demand."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, Any]] = []
        self.refusal: ProblemError | None = None
        self.listed: list[str | None] = []

    def _answer(self, name: str, *args: Any) -> Any:
        self.calls.append((name, args))
        if self.refusal is not None:
            raise self.refusal
        return None

    def participants(self, role: str | None = None) -> list[dict[str, Any]]:
        self.listed.append(role)
        return [{"id": "bank-1", "role": "bank", "name": "Bank", "uscc": None, "disabled": False}]

    def post(self, path: str, payload: dict[str, Any]) -> Any:
        self._answer("post", path, payload)
        return {"participant": {"id": payload["id"]}, "api_key": "cs_00112233aabbccdd." + "x" * 43}

    def issue_credential(self, participant_id: str) -> Any:
        return self._answer("issue", participant_id)

    def revoke_credential(self, participant_id: str, key_id: str) -> Any:
        return self._answer("revoke", participant_id, key_id)

    def disable_participant(self, participant_id: str) -> Any:
        return self._answer("disable", participant_id)

    def readiness(self) -> dict[str, Any]:
        if self.refusal is not None:
            raise self.refusal
        return {
            "status": "degraded",
            "checks": {"database": "ok"},
            "chains": {"yrd": "unreachable"},
        }

    def metrics_text(self) -> str:
        return "# TYPE creditshare_queries_total counter\ncreditshare_queries_total 7\n"

    def nodes(self) -> list[dict[str, Any]]:
        base = {"chain": "yrd", "department": "tax", "address": "127.0.0.1:1"}
        return [
            {"id": "n-old", **base},  # a coordinator without reachability fields
            {"id": "n-new", **base, "reachable": None, "last_answer_at": None},
            {
                **base,
                "id": "n-up",
                "reachable": True,
                "last_answer_at": "2026-11-30T19:21:03.5+00:00",
                "last_latency_ms": 12.34,
                "version": "0.1.0",
                "last_error": None,
            },
            {**base, "id": "n-down", "reachable": False, "last_error": "UNAVAILABLE"},
        ]

    def close(self) -> None:
        pass


@pytest.fixture
def operator(tmp_path: Path) -> Iterator[tuple[TestClient, FakeSdk, str]]:
    sdk = FakeSdk()
    settings = ConsoleSettings(
        role="operator", coordinator_url="http://127.0.0.1:1", api_key="k", work_dir=tmp_path
    )
    with TestClient(create_console_app(settings, client=sdk)) as client:  # type: ignore[arg-type]
        yield client, sdk, _logged_in(client)


def test_a_pasted_whole_key_is_revoked_by_its_id_and_its_secret_never_sent_or_shown(
    operator: tuple[TestClient, FakeSdk, str],
) -> None:
    client, sdk, csrf = operator
    secret = "S" * 43
    answer = client.post(
        "/operator/participants/revoke-key",
        data={"owner": "bank-1", "key_id": f"cs_0123456789abcdef.{secret}"},
        headers={"X-CSRF-Token": csrf, "Sec-Fetch-Site": "same-origin"},
    )
    assert answer.status_code == 200
    assert sdk.calls == [("revoke", ("bank-1", "0123456789abcdef"))]
    assert secret not in answer.text
    # Not a key id at all: refused here, next to the field, nothing sent.
    bad = client.post(
        "/operator/participants/revoke-key",
        data={"owner": "bank-1", "key_id": "not-a-key"},
        headers={"X-CSRF-Token": csrf, "Sec-Fetch-Site": "same-origin"},
    )
    assert bad.status_code == 422 and 'id="e-key_id"' in bad.text
    assert len(sdk.calls) == 1


def test_refusals_without_a_field_land_on_the_field_the_form_knows_they_concern(
    operator: tuple[TestClient, FakeSdk, str],
) -> None:
    client, sdk, csrf = operator
    headers = {"X-CSRF-Token": csrf, "Sec-Fetch-Site": "same-origin"}
    sdk.refusal = ProblemError(409, "Conflict", "participant 'bank-1' already exists", {})
    taken = client.post(
        "/operator/participants/register",
        data={"id": "bank-1", "role": "bank", "name": "Again"},
        headers=headers,
    )
    assert taken.status_code == 422
    assert re.search(r'id="e-id"[^>]*>participant &#39;bank-1&#39; already exists', taken.text)
    sdk.refusal = ProblemError(404, "Not found", "unknown participant 'nobody'", {})
    unknown = client.post(
        "/operator/participants/issue-key", data={"participant_id": "nobody"}, headers=headers
    )
    assert unknown.status_code == 422 and 'id="e-participant_id"' in unknown.text
    # An enterprise's USCC is checked here first: nothing is sent.
    sent = len(sdk.calls)
    typo = client.post(
        "/operator/participants/register",
        data={"id": "ent-1", "role": "enterprise", "name": "E", "uscc": "91350100M000100Y40"},
        headers=headers,
    )
    assert typo.status_code == 422 and 'id="e-uscc"' in typo.text
    assert 'id="e-signing_key"' in typo.text
    assert len(sdk.calls) == sent


def test_nodes_show_reachability_when_reported_and_not_probed_when_null(
    operator: tuple[TestClient, FakeSdk, str],
) -> None:
    client, _, _ = operator
    page = client.get("/operator/nodes?lang=en").text

    def row(node: str) -> str:
        found = re.search(rf'<tr data-node="{node}" data-reachable="(\w+)">(.*?)</tr>', page, re.S)
        assert found, node
        return f"{found.group(1)} {found.group(2)}"

    assert row("n-old").startswith("unknown") and "not probed" in row("n-old")
    assert row("n-new").startswith("unknown")
    up = row("n-up")
    assert up.startswith("true") and "12.3 ms" in up and "0.1.0" in up
    assert "2026-11-30 19:21:03 UTC" in up
    down = row("n-down")
    assert down.startswith("false") and "UNAVAILABLE" in down
    # /readyz as the SDK's readiness() gave it: degraded, a chain unreachable.
    assert re.search(
        r'data-check="status"><th scope="row">Status</th><td class="status-bad">degraded', page
    )
    assert re.search(r'<td class="status-bad">unreachable', page)


def test_readiness_the_sdk_cannot_get_is_said_and_metrics_come_from_the_sdk(
    operator: tuple[TestClient, FakeSdk, str],
) -> None:
    client, sdk, _ = operator
    sdk.refusal = ProblemError(500, "Internal Server Error", "boom", {})
    page = client.get("/operator/nodes?lang=en").text
    assert re.search(
        r'data-check="status"><th scope="row">Status</th><td class="status-bad">unreachable', page
    )
    metrics = client.get("/operator/metrics?lang=en").text
    assert "creditshare_queries_total 7" in metrics


def test_the_role_filter_asks_the_coordinator_for_that_role_only(
    operator: tuple[TestClient, FakeSdk, str],
) -> None:
    client, sdk, _ = operator
    client.get("/operator/participants?role=bank")
    client.get("/operator/participants?role=nonsense")  # not a role: all of them
    client.get("/operator/participants")
    assert sdk.listed[-3:] == ["bank", None, None]


def test_a_refused_disable_is_shown_in_the_participants_row(
    operator: tuple[TestClient, FakeSdk, str],
) -> None:
    client, sdk, csrf = operator
    sdk.refusal = ProblemError(409, "Conflict", "the last operator cannot be disabled", {})
    answer = client.post(
        "/operator/participants/bank-1/disable",
        headers={"X-CSRF-Token": csrf, "Sec-Fetch-Site": "same-origin"},
    )
    assert answer.status_code == 422
    row = re.search(r'<tr data-participant="bank-1"[^>]*>(.*?)</tr>', answer.text, re.S)
    assert row and "the last operator cannot be disabled" in row.group(1)
    assert sdk.calls == [("disable", ("bank-1",))]


# the TLS port probe ------------------------------------------------------------------------


@pytest.fixture
def tls_node(tmp_path: Path) -> tuple[NodeSettings, Any]:
    """A TLS node's settings (its certificate from a fresh chain CA) and its TLS block."""
    ca_dir, _ = chain_ca(tmp_path, Chain.YRD)
    identity = node_identity(ca_dir, tmp_path / "node", "yrd-market")
    settings = NodeSettings(
        node_id="yrd-market",
        department="market",
        chain="yrd",
        listen=f"127.0.0.1:{_free_port()}",
        database_url=f"sqlite:///{tmp_path / 'node.db'}",
        log_public_key=SigningKey.generate().verify_key.to_text(),
        tls=identity.tls,
    )
    return settings, identity.tls


def test_a_tls_node_that_verifies_then_asks_for_a_client_certificate_is_healthy(
    tls_node: tuple[NodeSettings, Any],
) -> None:
    settings, tls = tls_node
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    health_pb2_grpc.add_HealthServicer_to_server(health.HealthServicer(), server)
    credentials = server_credentials(Path(tls["cert"]), Path(tls["key"]), Path(tls["ca"]))
    server.add_secure_port(settings.listen, credentials)
    server.start()
    try:
        check = _probe_port(settings)
    finally:
        server.stop(None)
    assert check.ok, check.detail


def test_a_plaintext_listener_on_a_tls_nodes_port_is_not_healthy(
    tls_node: tuple[NodeSettings, Any],
) -> None:
    settings, _ = tls_node
    host, port = settings.listen.rsplit(":", 1)
    with socket.socket() as listener:
        listener.bind((host, int(port)))
        listener.listen()

        def answer_in_plain_text() -> None:
            connection, _ = listener.accept()
            with connection:
                connection.recv(4096)
                connection.sendall(b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\n\r\n")

        worker = threading.Thread(target=answer_in_plain_text, daemon=True)
        worker.start()
        check = _probe_port(settings)
        worker.join(timeout=30)
    assert not check.ok
    assert "TLS" in check.detail


@pytest.mark.parametrize(
    ("path", "data", "field"),
    [
        (
            "/operator/participants/issue-key?lang=en",
            {"participant_id": "bank-1/disable?x="},
            "participant_id",
        ),
        (
            "/operator/participants/register?lang=en",
            {"id": "Bank 1", "role": "bank", "name": "B"},
            "id",
        ),
        (
            "/operator/participants/revoke-key?lang=en",
            {"owner": "../bank-1", "key_id": "0123456789abcdef"},
            "owner",
        ),
    ],
)
def test_a_typed_participant_id_is_checked_here_and_nothing_is_sent(
    operator: tuple[TestClient, FakeSdk, str], path: str, data: dict[str, str], field: str
) -> None:
    client, sdk, csrf = operator
    answer = client.post(
        path, data=data, headers={"X-CSRF-Token": csrf, "Sec-Fetch-Site": "same-origin"}
    )
    assert answer.status_code == 422
    assert re.search(rf'id="e-{field}"[^>]*>A participant id is 1 to 64', answer.text)
    assert sdk.calls == []


def test_a_disable_of_a_malformed_id_is_refused_in_its_row_and_not_sent(
    operator: tuple[TestClient, FakeSdk, str],
) -> None:
    client, sdk, csrf = operator
    answer = client.post(
        "/operator/participants/bank-1%3Fx/disable?lang=en",
        headers={"X-CSRF-Token": csrf, "Sec-Fetch-Site": "same-origin"},
    )
    assert answer.status_code == 422 and "A participant id is 1 to 64" in answer.text
    assert sdk.calls == []
