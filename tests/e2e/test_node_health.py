"""Node reachability on a real federation (node processes, mutual TLS, the coordinator
process over HTTP): GET /v1/nodes says which nodes answer and what they run, /readyz
degrades when a whole chain stops answering and recovers when it is back."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

import creditshare
from creditshare.client import CreditShareClient
from creditshare.demo import Federation, FederationLayout
from creditshare.identity import Chain

from .conftest import E2E_DEPARTMENTS

#: Generous: a probe round comes every 0.2 s when the machine is idle; both cores busy
#: with other suites must not fail these tests.
DEADLINE = 120.0
NODES = [f"yrd-{d}" for d in E2E_DEPARTMENTS]


@pytest.fixture
def probed(tmp_path: Path, data_dir: Path) -> Iterator[Federation]:
    """One chain, three nodes, probed every 0.2 s (the default is 10 s)."""
    layout = FederationLayout.write(
        tmp_path,
        data_dir,
        chains=[Chain.YRD],
        departments=E2E_DEPARTMENTS,
        node_deadline_seconds=5.0,
        coordinator_overrides={
            "node_probe_interval_seconds": 0.2,
            "node_probe_timeout_seconds": 5.0,
        },
    )
    with Federation(layout) as running:
        yield running


@pytest.fixture
def operator(probed: Federation) -> Iterator[CreditShareClient]:
    layout = probed.layout
    with CreditShareClient(layout.coordinator_url, api_key=layout.bootstrap_operator()) as client:
        yield client


def poll(what: str, read: Callable[[], Any], check: Callable[[Any], bool]) -> Any:
    """``read()`` once ``check`` holds of it (fails after ``DEADLINE``, showing the last)."""
    deadline = time.monotonic() + DEADLINE
    while True:
        value = read()
        if check(value):
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: never; last seen {value}")
        time.sleep(0.1)


def by_id(operator: CreditShareClient) -> dict[str, dict[str, Any]]:
    return {n["id"]: n for n in operator.nodes()}


def readyz(federation: Federation) -> tuple[int, dict[str, Any]]:
    response = httpx.get(f"{federation.layout.coordinator_url}/readyz", timeout=30)
    return response.status_code, response.json()


def test_reachability_and_readiness_follow_the_nodes(
    probed: Federation, operator: CreditShareClient
) -> None:
    nodes = poll(
        "every node reachable with a version",
        lambda: by_id(operator),
        lambda seen: all(seen[n]["version"] is not None for n in NODES),
    )
    for node_id in NODES:
        entry = nodes[node_id]
        assert entry["reachable"] is True, entry
        # Reported by the node process itself over mTLS (its installed package).
        assert entry["version"] == creditshare.__version__
        assert entry["last_error"] is None
        assert entry["last_latency_ms"] > 0
        assert entry["last_answer_at"] is not None
    assert readyz(probed) == (
        200,
        {"status": "ok", "checks": {"database": "ok", "ledger": "ok"}, "chains": {"yrd": "ok"}},
    )

    # One node down: it is named, the chain still answers.
    probed.stop_node("yrd-tax")
    down = poll(
        "yrd-tax unreachable",
        lambda: by_id(operator)["yrd-tax"],
        lambda entry: entry["reachable"] is False,
    )
    assert down["last_error"].startswith("unavailable"), down
    assert down["version"] == creditshare.__version__  # what it said when it last answered
    assert "BEGIN" not in down["last_error"] and len(down["last_error"]) <= 200
    others = by_id(operator)
    assert all(others[n]["reachable"] is True for n in NODES if n != "yrd-tax")
    assert readyz(probed)[1]["status"] == "ok"

    # Every node of the chain down: degraded (200, the coordinator still serves).
    probed.stop_node("yrd-market")
    probed.stop_node("yrd-court")
    status, body = poll(
        "/readyz degraded",
        lambda: readyz(probed),
        lambda answer: answer[1]["status"] == "degraded",
    )
    assert status == 200
    assert body["chains"] == {"yrd": "unreachable"}
    assert body["checks"] == {"database": "ok", "ledger": "ok"}
    assert all(entry["reachable"] is False for entry in by_id(operator).values())

    # Back: the channels reconnect, the probes see it, readiness is ok again.
    for node_id in NODES:
        probed.start_node(node_id)
    poll(
        "/readyz ok again",
        lambda: readyz(probed),
        lambda answer: (
            answer
            == (
                200,
                {
                    "status": "ok",
                    "checks": {"database": "ok", "ledger": "ok"},
                    "chains": {"yrd": "ok"},
                },
            )
        ),
    )
    back = poll(
        "every node reachable again",
        lambda: by_id(operator),
        lambda seen: all(seen[n]["reachable"] is True for n in NODES),
    )
    assert all(back[n]["last_error"] is None for n in NODES)
    assert back["yrd-tax"]["last_answer_at"] > down["last_answer_at"]
