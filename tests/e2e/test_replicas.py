"""Two coordinator processes on one PostgreSQL database: one ledger, nothing lost.

Real processes on loopback: three YRD nodes (mutual TLS), coordinator A started by the
federation and coordinator B started here with the same configuration on another port,
both on one PostgreSQL database. A few hundred queries go to both at once; then the
whole ledger is audited with ``creditshare ledger verify`` and every answered query
must be in it exactly once.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
from sqlalchemy import create_engine, text

from creditshare.client import CreditProfile, CreditShareClient
from creditshare.crypto import PrivateKey
from creditshare.demo import Federation, FederationLayout, free_port, read_enterprises
from creditshare.errors import ProblemError
from creditshare.identity import Chain
from creditshare.ledger import parse_record

from .conftest import E2E_DEPARTMENTS, Trust

QUERIES = 240


def _wait_ready(url: str, process: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"coordinator B exited: {log.read_text()[-2000:]}")
        try:
            if httpx.get(url + "/readyz", timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise AssertionError(f"coordinator B never became ready: {log.read_text()[-2000:]}")


def test_two_coordinators_on_one_postgres_keep_one_ledger(
    tmp_path: Path, data_dir: Path, bank_key: PrivateKey, postgres_url: str
) -> None:
    layout = FederationLayout.write(
        tmp_path,
        data_dir,
        chains=[Chain.YRD],
        departments=E2E_DEPARTMENTS,
        coordinator_overrides={
            "database_url": postgres_url,
            "participant_requests_per_minute": 100_000,
            "enterprise_queries_per_day": 100_000,
            "rate_limit_store": "database",  # one count for both replicas
            # What this test checks is the one ledger, not latency: with both cores busy
            # a query waits its turn to move a node's head (per node, per replica) for
            # longer than the default 3 s, and all its nodes fail "deadline exceeded".
            "node_deadline_seconds": 30,
        },
    )
    layout.import_data()
    nodes = sorted(n.node_id for n in layout.nodes)
    port_b = free_port()
    url_b = f"http://127.0.0.1:{port_b}"
    log_b = tmp_path / "coordinator-b.log"
    with Federation(layout) as federation, log_b.open("wb") as log:
        replica = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "creditshare",
                "coordinator",
                "serve",
                "--config",
                str(layout.coordinator_config),
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**os.environ, "CREDITSHARE_COORDINATOR_PORT": str(port_b)},
        )
        try:
            _wait_ready(url_b, replica, log_b)
            trust = Trust(federation, bank_key, "replica-bank")  # registered through A
            usccs = [r["uscc"] for r in read_enterprises(data_dir) if "yrd" in r["record_chains"]][
                :8
            ]
            consents = {u: trust.consent(u) for u in usccs}
            banks = [
                trust.bank,
                CreditShareClient(
                    url_b,
                    api_key=trust.bank_api_key,
                    private_key=bank_key,
                    identity=trust.bank_identity,
                ),
            ]

            def ask(i: int) -> CreditProfile:
                uscc = usccs[i % len(usccs)]
                try:
                    return banks[i % 2].query(uscc, consents[uscc])
                except ProblemError as exc:  # say why each node failed, not just "none"
                    replica = "AB"[i % 2]
                    raise AssertionError(f"query {i} via {replica}: {exc} {exc.body}") from exc

            with ThreadPoolExecutor(max_workers=12) as pool:
                profiles = list(pool.map(ask, range(QUERIES)))
            banks[1].close()
            trust.close()
        finally:
            replica.terminate()
            replica.wait(timeout=30)

    for profile in profiles:
        assert profile.failed == [], profile.failed
        assert sorted(profile.answered) == nodes
    indices = [int(p.raw["ledger_index"]) for p in profiles]
    assert len(set(indices)) == QUERIES  # no two queries got the same leaf

    audit = subprocess.run(
        [
            sys.executable,
            "-m",
            "creditshare",
            "ledger",
            "verify",
            "--config",
            str(layout.coordinator_config),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert audit.returncode == 0, audit.stdout + audit.stderr
    assert "ledger verified" in audit.stdout

    engine = create_engine(postgres_url)
    with engine.connect() as conn:
        rows = conn.execute(text("SELECT idx, data FROM ledger_leaf ORDER BY idx")).all()
        heads = conn.execute(text("SELECT size FROM ledger_head ORDER BY size")).scalars().all()
        # Both replicas counted into one shared rate limit: every query once per enterprise.
        counted = conn.execute(
            text("SELECT SUM(hits) FROM rate_limit_bucket WHERE scope = 'enterprise'")
        ).scalar()
    engine.dispose()
    assert counted == QUERIES
    assert [r[0] for r in rows] == list(range(len(rows)))  # no gap, no duplicate index
    # Group commit: one signed head per batch of concurrent appends in a replica, so
    # sizes ascend without repeats and the last head covers every entry.
    assert heads == sorted(set(heads)) and heads[-1] == len(rows) and heads[0] >= 1
    recorded = Counter(
        record.query_id
        for record in (parse_record(bytes(r[1])) for r in rows)
        if record.kind == "query"
    )
    answered = {p.query_id for p in profiles}
    assert set(recorded) == answered
    assert all(count == 1 for count in recorded.values())
    for profile in profiles:
        assert parse_record(bytes(rows[int(profile.raw["ledger_index"])][1])).query_id == (
            profile.query_id
        )
