"""The loopback federation (demo, tests, benchmarks) survives a port that another
process takes between ``free_port`` and the bind: that process is started again on a
new port, so a busy machine does not fail a run with "address already in use"."""

from __future__ import annotations

import socket
from pathlib import Path

import httpx

from creditshare.demo import Federation, FederationLayout
from creditshare.identity import Chain


def _occupy(port: int) -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.bind(("127.0.0.1", port))
    sock.listen()
    return sock


def test_processes_whose_port_was_taken_move_to_another(tmp_path: Path, data_dir: Path) -> None:
    layout = FederationLayout.write(tmp_path, data_dir, chains=[Chain.YRD], departments=["tax"])
    layout.import_data()
    taken_node, taken_coordinator = layout.nodes[0].port, layout.coordinator_port
    squatters = [_occupy(taken_node), _occupy(taken_coordinator)]
    try:
        with Federation(layout) as running:
            assert running.layout.nodes[0].port != taken_node
            assert running.layout.coordinator_port != taken_coordinator
            url = running.layout.coordinator_url
            assert httpx.get(f"{url}/healthz", timeout=30).status_code == 200
            # The coordinator reaches the node at its new address.
            assert httpx.get(f"{url}/readyz", timeout=30).status_code == 200
            nodes = running.layout.coordinator_settings().nodes
            assert nodes[0].address == running.layout.nodes[0].address
    finally:
        for sock in squatters:
            sock.close()
