"""Abandoned, cancelled and half-finished training jobs, against a running federation.

A real ``creditshare bureau train`` process is interrupted (SIGINT, SIGTERM) or
killed (SIGKILL) mid-training; the job must end ("cancelled", or "failed" after the
coordinator's idle time), every worker process of the bureau and of the nodes must
go, and the model id must be free again. Worker processes are found by scanning
/proc for the children of the bureau and node processes (``spawn_main`` is how
multiprocessing's spawned workers start).
"""

from __future__ import annotations

import csv
import functools
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import text
from sqlalchemy.engine import Engine

from creditshare._database import open_engine
from creditshare.client import CreditShareClient, train_model
from creditshare.crypto import PrivateKey
from creditshare.demo import Federation, FederationLayout
from creditshare.errors import ClientError, ProblemError
from creditshare.federated import TrainingConfig
from creditshare.identity import Chain
from creditshare.synth import generate

from .._databases import POSTGRES_ENV, fresh_postgres_database
from .conftest import Trust, signed_job_body

DEPARTMENTS = ("tax", "market")
NODES = [f"yrd-{d}" for d in DEPARTMENTS]
#: Short, so an abandoned job fails within the test; long enough for a busy machine
#: never to see a live bureau as idle (its calls are seconds apart at most).
COORDINATOR_IDLE_SECONDS = 30
TIMEOUT = 300.0


@pytest.fixture(scope="module")
def coordinator_database(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """PostgreSQL, as production runs it, when the test server is there; else SQLite."""
    if os.environ.get(POSTGRES_ENV):
        with fresh_postgres_database() as url:
            yield url
    else:
        yield f"sqlite:///{tmp_path_factory.mktemp('coordinator-db') / 'coordinator.db'}"


@pytest.fixture(scope="module")
def federation(
    tmp_path_factory: pytest.TempPathFactory, coordinator_database: str
) -> Iterator[Federation]:
    root = tmp_path_factory.mktemp("training-lifecycle")
    generate(700, 5, root / "data")
    # Nodes keep the default hour: when jobs vanish from them here, the coordinator
    # told them to drop the job.
    layout = FederationLayout.write(
        root / "fed",
        root / "data",
        chains=[Chain.YRD],
        departments=DEPARTMENTS,
        coordinator_overrides={
            "database_url": coordinator_database,
            "training_job_idle_seconds": COORDINATOR_IDLE_SECONDS,
        },
    )
    layout.import_data()
    with Federation(layout) as running:
        yield running


@pytest.fixture(scope="module")
def trust(federation: Federation, bank_key: PrivateKey) -> Iterator[Trust]:
    trust = Trust(federation, bank_key, "lifecycle-bank")
    trust.participant("bureau-x", "bureau", "Bureau X")
    yield trust
    trust.close()


@pytest.fixture(scope="module")
def bureau(trust: Trust) -> Iterator[CreditShareClient]:
    with CreditShareClient(
        trust.url,
        api_key=trust.api_keys["bureau-x"],
        private_key=PrivateKey.generate(),
        identity=trust.layout.identity("bureau-x", "bureau"),
    ) as client:
        yield client


# -- processes ------------------------------------------------------------------------


def _stat(pid: int) -> tuple[str, int] | None:
    """(state, ppid) of a process, or None if it is gone."""
    try:
        with open(f"/proc/{pid}/stat", encoding="utf-8", errors="replace") as handle:
            fields = handle.read().rsplit(")", 1)[1].split()
    except (FileNotFoundError, ProcessLookupError):
        return None
    return fields[0], int(fields[1])


def _alive(pid: int) -> bool:
    stat = _stat(pid)
    return stat is not None and stat[0] != "Z"


def _cmdline(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as handle:
            return handle.read().replace(b"\0", b" ").decode(errors="replace")
    except (FileNotFoundError, ProcessLookupError):
        return ""


def _pids() -> list[int]:
    return [int(p) for p in os.listdir("/proc") if p.isdigit()]


def _workers(parent: int) -> set[int]:
    """Live worker processes (multiprocessing spawn children) of ``parent``."""
    return {
        pid
        for pid in _pids()
        if (stat := _stat(pid)) is not None
        and stat[1] == parent
        and stat[0] != "Z"
        and "spawn_main" in _cmdline(pid)
    }


def _node_pids(federation: Federation) -> dict[str, int]:
    """Each node's server process, found by the config file it was started with."""
    found: dict[str, int] = {}
    for node in federation.layout.nodes:
        marker = f"node serve --config {node.config}"
        found[node.node_id] = next(p for p in _pids() if marker in _cmdline(p))
    return found


def _wait(condition: Callable[[], Any], what: str, timeout: float = TIMEOUT) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.2)


# -- the coordinator's record ---------------------------------------------------------


def _coordinator(federation: Federation) -> Engine:
    return open_engine(federation.layout.coordinator_settings().database_url)


def _jobs(federation: Federation, model_id: str) -> list[tuple[str, str, str]]:
    """(id, status, error) of every job for ``model_id``, read from the coordinator's DB."""
    engine = _coordinator(federation)
    try:
        with engine.connect() as conn:
            rows = conn.execute(
                text(
                    "SELECT id, status, error FROM training_job WHERE model_id = :m "
                    "ORDER BY created_at"
                ),
                {"m": model_id},
            )
            return [(r[0], r[1], r[2]) for r in rows]
    finally:
        engine.dispose()


def _job_count(federation: Federation) -> int:
    engine = _coordinator(federation)
    try:
        with engine.connect() as conn:
            return int(conn.execute(text("SELECT count(*) FROM training_job")).scalar_one())
    finally:
        engine.dispose()


def _node_db(federation: Federation, node_id: str) -> str:
    node = next(n for n in federation.layout.nodes if n.node_id == node_id)
    return federation.layout.node_settings(node).database_url.removeprefix("sqlite:///")


def _shards(federation: Federation, node_id: str, model_id: str) -> list[str | None]:
    """The job ids of the node's shards of ``model_id``."""
    with sqlite3.connect(_node_db(federation, node_id)) as conn:
        rows = conn.execute("SELECT job_id FROM model_shard WHERE model_id = ?", (model_id,))
        return [r[0] for r in rows]


def _job_body(bureau: CreditShareClient, model_id: str, **extra: Any) -> dict[str, Any]:
    body = {
        "model_id": model_id,
        "nodes": NODES,
        "key_fingerprint": bureau.ensure_paillier_key(),
        **extra,
    }
    return signed_job_body(bureau.identity, body)


def _reusable(trust: Trust, bureau: CreditShareClient, model_id: str) -> None:
    """The model id can be taken by a new job (which is then cancelled with the CLI)."""
    job = bureau.post("/v1/training-jobs", _job_body(bureau, model_id))
    assert job["status"] == "aligning"
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "creditshare",
            "bureau",
            "cancel",
            "--coordinator",
            bureau.base_url,
            "--api-key",
            trust.api_keys["bureau-x"],
            "--id",
            job["id"],
        ],
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
    )
    assert done.returncode == 0, done.stderr
    assert "cancelled" in done.stdout
    assert bureau.training_job(job["id"])["status"] == "cancelled"


# -- a real `creditshare bureau train` ------------------------------------------------


def _start_training(
    federation: Federation, trust: Trust, tmp_path: Path, model_id: str
) -> subprocess.Popen[str]:
    labels = federation.layout.data_dir / "bureau" / "labels.csv"
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "creditshare",
            "bureau",
            "train",
            "--coordinator",
            trust.url,
            "--api-key",
            trust.api_keys["bureau-x"],
            "--labels",
            str(labels),
            *[arg for node in NODES for arg in ("--node", node)],
            "--model-id",
            model_id,
            "--epochs",
            "500",
            # Never stops early: the job is still training when the signal lands, however
            # slow or fast the machine.
            "--early-stopping-rounds",
            "1000",
            "--batch-size",
            "32",
            "--key-file",
            str(tmp_path / "bureau-key.json"),
            "--identity",
            str(trust.layout.identity_dir("bureau-x", "bureau")),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )


def _mid_training(
    federation: Federation, bureau: subprocess.Popen[str], model_id: str
) -> tuple[str, set[int], set[int]]:
    """Wait until the job trains with workers everywhere; (job id, the bureau's workers,
    the nodes' job workers)."""

    def training() -> str | None:
        assert bureau.poll() is None, bureau.communicate()
        jobs = _jobs(federation, model_id)
        return jobs[-1][0] if jobs and jobs[-1][1] == "training" else None

    job_id: str = _wait(training, "the job to start training")
    own: set[int] = _wait(lambda: _workers(bureau.pid), "the bureau's workers")
    nodes = _node_pids(federation)
    theirs: set[int] = set()
    for node_id, pid in nodes.items():
        theirs |= _wait(functools.partial(_workers, pid), f"{node_id}'s job workers")
    # Still training after the workers were seen: the signal lands mid-job.
    assert bureau.poll() is None and _jobs(federation, model_id)[-1][1] == "training"
    return job_id, own, theirs


def _no_workers_left(federation: Federation, pids: set[int]) -> None:
    _wait(lambda: not [p for p in pids if _alive(p)], f"workers {sorted(pids)} to exit")
    nodes = _node_pids(federation)
    _wait(lambda: not any(_workers(pid) for pid in nodes.values()), "no node job workers")


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
def test_interrupting_bureau_train_cancels_the_job_and_stops_every_worker(
    federation: Federation,
    trust: Trust,
    bureau: CreditShareClient,
    tmp_path: Path,
    sig: signal.Signals,
) -> None:
    model_id = f"interrupted-{sig.name.lower()}"
    process = _start_training(federation, trust, tmp_path, model_id)
    try:
        job_id, own, theirs = _mid_training(federation, process, model_id)
        process.send_signal(sig)
        stdout, stderr = process.communicate(timeout=TIMEOUT)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    assert process.returncode == 128 + sig.value, stderr
    assert f"interrupted by {sig.name}" in stderr and f"job {job_id} cancelled" in stderr
    # The job id was printed when the job started, so another terminal could follow it.
    assert f"training job {job_id} started; follow it with" in stdout
    job = bureau.training_job(job_id)
    assert job["status"] == "cancelled" and "interrupted" in job["error"]
    _no_workers_left(federation, own | theirs)
    _reusable(trust, bureau, model_id)


def test_a_killed_bureau_leaves_no_worker_and_its_job_fails_when_idle(
    federation: Federation, trust: Trust, bureau: CreditShareClient, tmp_path: Path
) -> None:
    model_id = "killed-bureau"
    process = _start_training(federation, trust, tmp_path, model_id)
    try:
        job_id, own, theirs = _mid_training(federation, process, model_id)
        process.kill()  # no handler runs: nothing is cancelled by the bureau
        process.communicate(timeout=TIMEOUT)
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
    # The bureau's workers notice their parent is gone.
    _wait(lambda: not [p for p in own if _alive(p)], "the bureau's workers to exit")
    # The coordinator's reaper fails the job (read from its database: no request
    # touches the job) and tells the nodes to drop it, whose idle time is an hour.
    _wait(lambda: _jobs(federation, model_id)[-1][1] == "failed", "the job to fail")
    assert "no progress" in _jobs(federation, model_id)[-1][2]
    _no_workers_left(federation, theirs)
    assert bureau.training_job(job_id)["status"] == "failed"
    _reusable(trust, bureau, model_id)


def test_a_finish_where_one_node_fails_leaves_no_shard(
    federation: Federation, bureau: CreditShareClient
) -> None:
    """yrd-market already holds a stray shard under the model id (from an old crash), so
    it refuses to keep a second; yrd-tax kept its shard first and must discard it."""
    model_id = "half-finished"
    with sqlite3.connect(_node_db(federation, "yrd-market")) as conn:
        conn.execute(
            'INSERT INTO model_shard (model_id, weights, "offset", created_at, job_id) '
            "VALUES (?, '{}', 0.0, '2026-01-01 00:00:00', 'an-older-job')",
            (model_id,),
        )
    labels = _labels(federation)
    config = TrainingConfig(batch_size=128, max_epochs=1, early_stopping_rounds=1)
    with pytest.raises(ClientError, match="yrd-market"):
        train_model(bureau, labels, NODES, model_id, config)
    (job_id, status, error) = _jobs(federation, model_id)[-1]
    assert status == "failed" and "yrd-market" in error
    assert _shards(federation, "yrd-tax", model_id) == []
    assert _shards(federation, "yrd-market", model_id) == ["an-older-job"]  # not this job's
    assert model_id not in {m["id"] for m in bureau.models()}
    # Nothing half-done blocks the id: with the stray shard cleared, training succeeds.
    with sqlite3.connect(_node_db(federation, "yrd-market")) as conn:
        conn.execute("DELETE FROM model_shard WHERE model_id = ?", (model_id,))
    model = train_model(bureau, labels, NODES, model_id, config)
    assert model.job_id != job_id
    assert _shards(federation, "yrd-tax", model_id) == [model.job_id]
    assert model_id in {m["id"] for m in bureau.models()}


def _labels(federation: Federation) -> dict[str, int]:
    with (federation.layout.data_dir / "bureau" / "labels.csv").open() as handle:
        return {r["uscc"]: int(r["default"]) for r in csv.DictReader(handle)}


# -- bounded, finite inputs -----------------------------------------------------------


def _raw(trust: Trust, path: str, body: str) -> httpx.Response:
    """A POST with a hand-written JSON body (NaN and Infinity are not valid JSON, but
    careless clients send them)."""
    headers = {
        "Authorization": f"Bearer {trust.api_keys['bureau-x']}",
        "Content-Type": "application/json",
    }
    return httpx.post(f"{trust.url}{path}", content=body.encode(), headers=headers, timeout=60)


def test_bad_training_inputs_are_refused_and_nothing_is_written(
    federation: Federation, trust: Trust, bureau: CreditShareClient
) -> None:
    key = json.dumps(bureau.ensure_paillier_key())
    job = bureau.post("/v1/training-jobs", _job_body(bureau, "bounded-inputs"))
    path = f"/v1/training-jobs/{job['id']}"
    jobs_before = _job_count(federation)
    create = "/v1/training-jobs"
    base = f'"model_id": "never-made", "nodes": ["yrd-tax"], "key_fingerprint": {key}'
    bad: list[tuple[str, str, str]] = [
        (create, f'{{{base}, "config": {{"learning_rate": NaN}}}}', "learning_rate"),
        (create, f'{{{base}, "config": {{"l2": Infinity}}}}', "l2"),
        (create, f'{{{base}, "config": {{"surprise": 1}}}}', "surprise"),
        (create, f'{{{base}, "config": {{"batch_size": 4294967296}}}}', "batch_size"),
        (create, f'{{{base}, "config": {{"seed": -1}}}}', "seed"),
        (create, json.dumps({**_job_body(bureau, "x"), "nodes": ["n"] * 65}), "nodes"),
        (create, json.dumps({**_job_body(bureau, "x"), "nodes": ["Bad Node!"]}), "nodes"),
        (create, json.dumps({**_job_body(bureau, "x"), "model_id": "m" * 65}), "model_id"),
        (f"{path}/forward", json.dumps({"node": "yrd-tax", "rows": [2**32]}), "rows"),
        (f"{path}/forward", json.dumps({"node": "yrd-tax", "rows": [-1]}), "rows"),
        (f"{path}/forward", json.dumps({"node": "yrd-tax", "rows": [0] * 200_001}), "rows"),
        (
            f"{path}/psi",
            json.dumps({"node": "yrd-tax", "domain": "d", "blinded": ["A" * 65]}),
            "blinded",
        ),
        (
            f"{path}/psi",
            json.dumps({"node": "yrd-tax", "domain": "d", "blinded": ["AAAA"] * 65_537}),
            "blinded",
        ),
        (
            f"{path}/psi",
            json.dumps({"node": "yrd-tax", "domain": "d", "blinded": [], "offset": -1}),
            "offset",
        ),
        (f"{path}/psi/points", json.dumps({"node": "yrd-tax", "limit": 0}), "limit"),
        (f"{path}/psi/points", json.dumps({"node": "yrd-tax", "limit": 65_537}), "limit"),
        (f"{path}/psi/points", json.dumps({"node": "yrd-tax", "offset": -1}), "offset"),
        (
            f"{path}/progress",
            '{"epoch": 0, "batch": 1, "batches": 2, "validation_loss": NaN}',
            "validation_loss",
        ),
        (
            f"{path}/progress",
            '{"epoch": 0, "batch": 1, "batches": 2, "seconds": Infinity}',
            "seconds",
        ),
        (f"{path}/progress", '{"epoch": 0, "batch": 4294967296, "batches": 2}', "batch"),
        (f"{path}/finish", '{"intercept": NaN}', "intercept"),
        (f"{path}/finish", '{"intercept": 0, "metrics": {"auc": -Infinity}}', "metrics"),
        (
            f"{path}/finish",
            json.dumps({"intercept": 0, "metrics": {f"m{i}": 0.5 for i in range(33)}}),
            "metrics",
        ),
        (
            f"{path}/apply",
            json.dumps(
                {
                    "node": "yrd-tax",
                    "values": ["1e5"],
                    "randomness": ["AA=="],
                    "batch_size": 1,
                    "rate": 0.1,
                }
            ),
            "values",
        ),
        (f"{path}/cancel", json.dumps({"reason": "x" * 501}), "reason"),
        (f"{path}/cancel", json.dumps({"reason": "a\u0000b"}), "reason"),
        (f"{path}/fail", json.dumps({"reason": "a\u0000b"}), "reason"),
        (create, json.dumps({**_job_body(bureau, "x"), "description": "\u0000"}), "description"),
    ]
    for k, (url, body, field) in enumerate(bad):
        response = _raw(trust, url, body)
        assert response.status_code == 422, (url, body[:80], response.text)
        assert response.headers["content-type"].startswith("application/problem+json")
        assert field in response.text, (url, response.text)
        # Nothing written: no job made, the job's record holds only what the good
        # requests wrote, and the next good request is served.
        assert _job_count(federation) == jobs_before
        done = bureau.post(f"{path}/progress", {"epoch": 0, "batch": k, "batches": 99})
        assert done["progress"] == {"epoch": 0, "batch": k, "batches": 99}
        assert done["status"] == "aligning" and done["history"] == []
    # A node named twice is one node.
    twice = bureau.post(
        "/v1/training-jobs",
        _job_body(bureau, "named-twice", nodes=["yrd-tax", "yrd-tax", "yrd-market"]),
    )
    assert twice["nodes"] == ["yrd-tax", "yrd-market"]
    # A bank may not cancel a bureau's job; an operator may, and so may the bureau.
    with pytest.raises(ProblemError) as caught:
        trust.bank.post(f"/v1/training-jobs/{twice['id']}/cancel")
    assert caught.value.status == 403
    assert bureau.training_job(twice["id"])["status"] == "aligning"
    by_operator = trust.operator.post(
        f"/v1/training-jobs/{twice['id']}/cancel", {"reason": "maintenance"}
    )
    assert by_operator["status"] == "cancelled" and by_operator["error"] == "maintenance"
    assert bureau.post(f"{path}/cancel")["status"] == "cancelled"
    with pytest.raises(ProblemError) as caught:  # a cancelled job cannot be driven
        bureau.post(f"{path}/progress", {"epoch": 0, "batch": 2, "batches": 2})
    assert caught.value.status == 409 and "cancelled" in caught.value.detail
