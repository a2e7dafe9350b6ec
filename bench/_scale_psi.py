"""Section ``psi`` of ``bench/scale.py``: streamed ECDH-PSI at provincial scale.

A bureau's n labelled ids against a node's m (full: 10^6 against 10^7; ``--quick``:
10^4 against 10^5), half of the bureau's held by the node, over the real path: the
coordinator under uvicorn and the node as a gRPC server (``creditshare.demo.Federation``,
mutual TLS, the job signed and recorded in the ledger), and the bureau's SDK
(``client._psi.psi_with_node``) in a process of its own, so that each party's peak
resident memory (VmHWM) is its own. The node's database is bulk-loaded with m ids
(only ids matter to PSI; importing is section ``nodes``).

In the same run: the same path at a tenth of both sizes (the growth: ids/s should stay
flat, the coordinator's memory should not grow, the bureau's and the node's grow with
what they must hold), and the streamed protocol in one process at that tenth (the cost
of the path over the cryptography). "ids" counts both sides' ids (n + m), as
``bench/psi.py`` does.

    python bench/_scale_psi.py bureau URL API_KEY JOB NODE N START CHUNK   (internal)
    python bench/_scale_psi.py inprocess N M START                         (internal)
"""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from _scale_report import Row, Section, Target, peak_rss_mb, rss_mb, self_peak_rss_mb

FULL = (1_000_000, 10_000_000)
QUICK = (10_000, 100_000)
#: Memory target per party ("under 2 GB").
LIMIT_MB = 2048.0
HERE = Path(__file__).resolve().parent


def _uscc(i: int) -> str:
    return f"91{i:016d}"


def _bureau_start(n: int, m: int) -> int:
    """The bureau's ids are [start, start + n): their first half is among the node's."""
    return m - n // 2


def _fill_node(database_url: str, m: int) -> None:
    """Create the node's database (its migrations) and bulk-load m records by id."""
    from creditshare.node._storage import make_engine

    make_engine(database_url).dispose()
    path = database_url.removeprefix("sqlite:///")
    conn = sqlite3.connect(path)
    try:
        now = datetime.now(UTC).isoformat(sep=" ")
        conn.execute(
            "INSERT INTO import_batch (id, files, sha256, rows, imported_at, added, changed, "
            "removed, unchanged) VALUES (1, 'bench', ?, ?, ?, ?, 0, 0, 0)",
            ("0" * 64, m, now, m),
        )
        step = 200_000
        for lo in range(0, m, step):
            conn.executemany(
                "INSERT INTO enterprise_record (uscc, data, batch_id) VALUES (?, '{}', 1)",
                ((_uscc(i),) for i in range(lo, min(lo + step, m))),
            )
        conn.commit()
    finally:
        conn.close()


def _child(*args: str) -> dict[str, Any]:
    """Run this file's bureau or in-process mode in a fresh interpreter; its JSON line."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(HERE.parent / "src"), str(HERE)])}
    done = subprocess.run(
        [sys.executable, str(Path(__file__).resolve()), *args],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    if done.returncode:
        raise RuntimeError(f"{args[0]} failed ({done.returncode}):\n{done.stderr[-4000:]}")
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def real_path(work: Path, n: int, m: int, chunk: int) -> dict[str, Any]:
    """One streamed run through a real coordinator and node, the bureau in its own process."""
    from creditshare.client import CreditShareClient
    from creditshare.client._bureau import start_job
    from creditshare.crypto import PrivateKey
    from creditshare.demo import Federation, FederationLayout
    from creditshare.federated import TrainingConfig
    from creditshare.identity import Chain

    root = work / f"real-{n}-{m}"
    (root / "data").mkdir(parents=True, exist_ok=True)
    layout = FederationLayout.write(
        root / "fed",
        root / "data",
        chains=[Chain.YRD],
        departments=("tax",),
        coordinator_overrides={
            "participant_requests_per_minute": 1_000_000,
            "training_steps_per_minute": 1_000_000,
        },
    )
    node = layout.nodes[0]
    started = time.perf_counter()
    _fill_node(layout.node_settings(node).database_url, m)
    load_seconds = time.perf_counter() - started
    operator = layout.bootstrap_operator()
    with (
        Federation(layout) as federation,
        CreditShareClient(layout.coordinator_url, api_key=operator) as op,
    ):
        layout.publish_revocation_lists(operator)
        api_key = op.register_participant("bench-bureau", "bureau", "Bench Bureau")["api_key"]
        with CreditShareClient(
            layout.coordinator_url,
            api_key=api_key,
            private_key=PrivateKey.generate(2048),
            identity=layout.identity("bench-bureau", "bureau"),
            timeout=300.0,
        ) as bureau:
            bureau.upload_credentials()
            job_id = start_job(
                bureau, "psi-scale", "", [node.node_id], TrainingConfig().to_document()
            )
            pids = {
                "coordinator": federation._procs["coordinator"].pid,
                "node": federation._procs[node.node_id].pid,
            }
            before = {name: rss_mb(pid) for name, pid in pids.items()}
            run = _child(
                "bureau",
                layout.coordinator_url,
                api_key,
                str(layout.identity_dir("bench-bureau", "bureau")),
                job_id,
                node.node_id,
                str(n),
                str(_bureau_start(n, m)),
                str(chunk),
            )
            peaks = {name: peak_rss_mb(pid) for name, pid in pids.items()}
            bureau.post(f"/v1/training-jobs/{job_id}/cancel", {"reason": "bench done"})
    expected = min(n - n // 2, m)
    if run["found"] != expected:
        raise RuntimeError(f"PSI found {run['found']} ids, expected {expected}")
    return {
        "seconds": run["seconds"],
        "ids_per_second": (n + m) / run["seconds"],
        "bureau_mb": run["peak_rss_mb"],
        "coordinator_mb": peaks["coordinator"],
        "node_mb": peaks["node"],
        "coordinator_before_mb": before["coordinator"],
        "node_before_mb": before["node"],
        "load_seconds": load_seconds,
    }


def _sizes(quick: bool) -> tuple[int, int]:
    """(bureau ids, node ids): the full run's, the quick ones, or ``CREDITSHARE_SCALE_PSI``
    ("N,M": the largest run that fits a machine's time, when the full one does not)."""
    override = os.environ.get("CREDITSHARE_SCALE_PSI", "")
    if override:
        n, m = (int(part) for part in override.split(","))
        return n, m
    return QUICK if quick else FULL


def measure(quick: bool, work: Path) -> Section:
    n, m = _sizes(quick)
    small_n, small_m = n // 10, m // 10
    chunk = 32_768
    section = Section("psi")
    small = real_path(work, small_n, small_m, chunk)
    large = real_path(work, n, m, chunk)
    local = _child("inprocess", str(small_n), str(small_m), str(_bureau_start(small_n, small_m)))
    for size, run in ((small_n + small_m, small), (n + m, large)):
        section.rows += [
            Row("real path: wall time", size, run["seconds"], "s"),
            Row("real path: ids/s (bureau + node ids)", size, run["ids_per_second"], "ids/s"),
            Row("real path: bureau peak RSS", size, run["bureau_mb"], "MiB"),
            Row("real path: coordinator peak RSS", size, run["coordinator_mb"], "MiB"),
            Row("real path: node peak RSS", size, run["node_mb"], "MiB"),
        ]
    section.rows += [
        Row("in-process streamed: ids/s", small_n + small_m, local["ids_per_second"], "ids/s"),
        Row("in-process streamed: peak RSS", small_n + small_m, local["peak_rss_mb"], "MiB"),
    ]
    caveat = "" if (n, m) == FULL else f"{n:,} x {m:,}, not 10^6 x 10^7"
    for party in ("bureau", "coordinator", "node"):
        section.targets.append(
            Target(
                f"PSI {n:,} x {m:,}: {party} peak RSS",
                large[f"{party}_mb"],
                LIMIT_MB,
                "<=",
                "MiB",
                caveat,
            )
        )
    section.targets.append(
        Target(
            "PSI: coordinator peak RSS, 10x the ids / 1x (holds one chunk)",
            large["coordinator_mb"] / small["coordinator_mb"],
            1.2,
            "<=",
            "x",
            caveat,
        )
    )
    section.targets.append(
        Target(
            "PSI: ids/s, 10x the ids / 1x (cost grows linearly)",
            large["ids_per_second"] / small["ids_per_second"],
            0.8,
            ">=",
            "x",
            caveat,
        )
    )
    section.notes += [
        f"sizes: bureau {n:,} ids (half held by the node) against a node's {m:,}; "
        f"chunk {chunk:,} points; {large['seconds']:.0f} s wall at that size "
        f"({large['ids_per_second']:,.0f} ids/s), the node's database loaded in "
        f"{large['load_seconds']:.0f} s (bulk SQL, not timed)",
        f"real path / in-process streamed ids/s at {small_n:,} x {small_m:,}: "
        f"{small['ids_per_second'] / local['ids_per_second']:.2f} (two processes compute "
        "in parallel on the real path; in-process is one core)",
        f"in-process streamed at {small_n:,} x {small_m:,}: {local['seconds']:.1f} s",
        f"resident before PSI at that size: coordinator {large['coordinator_before_mb']:.0f} "
        f"MiB, node {large['node_before_mb']:.0f} MiB",
    ]
    return section


def _bureau(
    url: str, api_key: str, identity: str, job_id: str, node: str, n: int, start: int, chunk: int
) -> None:
    from creditshare.client import CreditShareClient, Identity
    from creditshare.client._psi import psi_with_node

    ids = [_uscc(i) for i in range(start, start + n)]
    # The identity signs the run's transcript with the last chunk.
    signer = Identity.load(Path(identity))
    with CreditShareClient(url, api_key=api_key, identity=signer, timeout=300.0) as client:
        began = time.perf_counter()
        found = psi_with_node(client, job_id, node, f"bench/psi/{job_id}", ids, chunk)
        seconds = time.perf_counter() - began
    print(json.dumps({"seconds": seconds, "found": len(found), "peak_rss_mb": self_peak_rss_mb()}))


def _in_process(n: int, m: int, start: int) -> None:
    from creditshare.federated._psi_stream import run_in_process

    bureau = [_uscc(i) for i in range(start, start + n)]
    node = [_uscc(i) for i in range(m)]
    began = time.perf_counter()
    found = run_in_process(b"bench/psi/in-process", bureau, node)
    seconds = time.perf_counter() - began
    assert len(found) == n - n // 2
    print(
        json.dumps(
            {
                "seconds": seconds,
                "ids_per_second": (n + m) / seconds,
                "peak_rss_mb": self_peak_rss_mb(),
            }
        )
    )


if __name__ == "__main__":
    mode, *rest = sys.argv[1:]
    if mode == "bureau":
        url, key, identity, job, node_id, count, first, size = rest
        _bureau(url, key, identity, job, node_id, int(count), int(first), int(size))
    elif mode == "inprocess":
        count, node_count, first = rest[:3]
        _in_process(int(count), int(node_count), int(first))
    else:
        raise SystemExit(f"unknown mode {mode!r}")
