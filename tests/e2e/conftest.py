"""Real federations on loopback: node processes, a coordinator process, HTTP in between."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path

import pytest
import uvicorn
from fastapi import FastAPI

from creditshare.demo import Federation, FederationLayout, PlaintextOracle, free_port
from creditshare.departments import DEFAULT_INTERCEPT
from creditshare.identity import Chain

E2E_DEPARTMENTS = ("tax", "market", "court")


@pytest.fixture(scope="session")
def federation(tmp_path_factory: pytest.TempPathFactory, data_dir: Path) -> Iterator[Federation]:
    """Three chains × three departments = nine node processes plus the coordinator."""
    layout = FederationLayout.write(
        tmp_path_factory.mktemp("federation"), data_dir, departments=E2E_DEPARTMENTS
    )
    layout.import_data()
    with Federation(layout) as running:
        yield running


@pytest.fixture(scope="session")
def oracle(federation: Federation) -> PlaintextOracle:
    return PlaintextOracle(federation.layout, DEFAULT_INTERCEPT)


@pytest.fixture
def small_federation(tmp_path: Path, data_dir: Path) -> Iterator[Federation]:
    """One chain, three nodes, a short deadline: for tests that break nodes."""
    layout = FederationLayout.write(
        tmp_path,
        data_dir,
        chains=[Chain.YRD],
        departments=E2E_DEPARTMENTS,
        node_deadline_seconds=1.0,
    )
    layout.import_data()
    with Federation(layout) as running:
        yield running


ServeApp = Callable[[FastAPI], AbstractContextManager[str]]


@pytest.fixture
def serve_app() -> ServeApp:
    return serve_in_thread


@contextmanager
def serve_in_thread(app: FastAPI) -> Iterator[str]:
    """Run an app under a real uvicorn server on loopback; yields its base URL."""
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("uvicorn did not start")
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)
