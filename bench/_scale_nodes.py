"""Nodes section of ``bench/scale.py``: a node with 5x10^6 enterprises against one with 300.

* Import: a tax file of 5x10^6 rows (``--quick``: 2x10^5), generated streamed, and one
  1/10 its size (its first tenth) are imported with ``creditshare node import`` as an
  operator runs it, a process each: rows/s (wall and CPU time), and the process's peak
  resident memory (its own ru_maxrss) of the large file against the small one. The
  targets: >= 50,000 rows/s; peak memory independent of the file's size
  (ratio <= 1.1).
* Query: two federations on loopback, identical but for the size of their tax node (a
  coordinator under uvicorn and one tax node, gRPC, mutual TLS, 2048-bit keys, SQLite,
  consent and ledger on): one holds the demo's enterprises (about 300 generated, those
  of the chain), the other the same plus the large file. The bank's queries (SDK ->
  HTTP -> gRPC -> decryption) alternate between the two, so both see the same machine
  load; the target is p50(large) / p50(300) <= 1.2.
"""

from __future__ import annotations

import csv
import json
import os
import sqlite3
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

from _scale_nodes_data import write_tax_file
from _scale_report import Row, Section, Target
from query import enrol
from sqlalchemy import create_engine, make_url

from creditshare.client import CreditShareClient
from creditshare.crypto import PrivateKey
from creditshare.demo import Federation, FederationLayout
from creditshare.departments import get_department
from creditshare.identity import Chain
from creditshare.node import RecordStore, import_files, make_engine
from creditshare.synth import generate

__all__ = ["measure"]

CHAIN = Chain.YRD
FULL_ROWS, QUICK_ROWS = 5_000_000, 200_000
#: The provincial-scale targets (README, Performance).
ROWS_PER_SECOND, RSS_RATIO, P50_RATIO = 50_000.0, 1.1, 1.2
_CLI = (sys.executable, "-m", "creditshare")


def _import(config: Path, data: Path, work: Path) -> tuple[float, float, float, dict[str, int]]:
    """``creditshare node import`` of ``data`` as a process: (seconds, CPU seconds, peak
    RSS MiB, its JSON summary), its CPU time and peak memory from its own rusage
    (``wait4``): CPU time says the same on a busy machine, wall time does not."""
    out = work / "import.json"
    started = time.perf_counter()
    with (work / "import.log").open("ab") as err, out.open("wb") as summary:
        proc = subprocess.Popen(
            [*_CLI, "node", "import", "--config", str(config), "--json", str(data)],
            stdout=summary,
            stderr=err,
        )
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
    seconds = time.perf_counter() - started
    if proc.returncode != 0:
        raise RuntimeError(f"import of {data} failed ({proc.returncode}); see {work}")
    cpu = usage.ru_utime + usage.ru_stime
    return seconds, cpu, usage.ru_maxrss / 1024, json.loads(out.read_text())


def _postgres_import(server: str, data: Path) -> tuple[int, float]:
    """The large file imported in-process into a fresh database on ``server`` (an extra
    row: the node's PostgreSQL path, staging by COPY); (rows, seconds)."""
    name = f"creditshare_scale_nodes_{os.getpid()}"
    admin = create_engine(server, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            conn.exec_driver_sql(f"DROP DATABASE IF EXISTS {name}")
            conn.exec_driver_sql(f"CREATE DATABASE {name}")
        engine = make_engine(make_url(server).set(database=name).render_as_string(False))
        try:
            started = time.perf_counter()
            summary = import_files(RecordStore(engine), get_department("tax"), [data])
            return summary.rows, time.perf_counter() - started
        finally:
            engine.dispose()
    finally:
        with admin.connect() as conn:
            conn.exec_driver_sql(f"DROP DATABASE IF EXISTS {name}")
        admin.dispose()


class _Writer(threading.Thread):
    """Another writer of the node's SQLite file (a query's access-log row, say): takes
    the write lock over and over while an import runs; the longest it had to wait is
    how long the import held the lock at a stretch."""

    def __init__(self, path: Path) -> None:
        super().__init__(daemon=True)
        self._path = path
        self._done = threading.Event()
        self.longest = 0.0

    def run(self) -> None:
        conn = sqlite3.connect(self._path, timeout=600, isolation_level=None)
        try:
            while not self._done.is_set():
                started = time.perf_counter()
                conn.execute("BEGIN IMMEDIATE")
                conn.execute("ROLLBACK")
                self.longest = max(self.longest, time.perf_counter() - started)
                time.sleep(0.01)
        finally:
            conn.close()

    def stop(self) -> float:
        self._done.set()
        self.join()
        return self.longest


def _changed_import(
    work: Path, base: Path, rows: int, first: list[list[str]]
) -> tuple[int, float, float, float]:
    """``base`` imported in-process into a scratch SQLite node, then a snapshot of the
    same enterprises with other values (every generated record changed): its rows, the
    seconds of the first import (all added) and of the second, and the longest another
    writer waited for the write lock during the second (``_Writer``). Extra rows: the imports
    above mostly add records, the cheapest path; a changed record is compared and its
    previous values kept, all while the snapshot holds SQLite's write lock (which a
    query's write waits for)."""
    changed = work / f"tax-{rows}-changed.csv"
    write_tax_file(changed, rows, seed=17, first=first)
    scratch = work / "changed.db"
    scratch.unlink(missing_ok=True)
    engine = make_engine(f"sqlite:///{scratch}")
    try:
        store, tax = RecordStore(engine), get_department("tax")
        started = time.perf_counter()
        import_files(store, tax, [base])
        added = time.perf_counter() - started
        writer = _Writer(scratch)
        writer.start()
        started = time.perf_counter()
        try:
            summary = import_files(store, tax, [changed])
        finally:
            seconds = time.perf_counter() - started
            waited = writer.stop()
        if summary.changed < rows - len(first) - rows // 100:
            raise AssertionError(f"only {summary.changed} of {rows} records changed")
        return summary.rows, added, seconds, waited
    finally:
        engine.dispose()
        scratch.unlink(missing_ok=True)
        changed.unlink(missing_ok=True)


def _layout(root: Path, data: Path) -> FederationLayout:
    layout = FederationLayout.write(
        root,
        data,
        chains=(CHAIN,),
        departments=("tax",),
        node_deadline_seconds=30.0,
        coordinator_overrides={
            "participant_requests_per_minute": 100_000,
            "enterprise_queries_per_day": 100_000,
        },
        node_overrides={"fast_encryption": True},
    )
    layout.import_data()
    return layout


def _p50s(
    layouts: dict[str, FederationLayout], usccs: list[str], key: PrivateKey, n: int
) -> dict[str, float]:
    """Query p50 (ms) of each federation, queries alternating between them."""
    latencies: dict[str, list[float]] = {name: [] for name in layouts}
    with Federation(layouts["small"]), Federation(layouts["large"]):
        banks = {}
        for name, layout in layouts.items():
            operator_key = layout.bootstrap_operator()
            with CreditShareClient(layout.coordinator_url, api_key=operator_key) as op:
                layout.publish_revocation_lists(operator_key)
                banks[name] = enrol(layout, op, usccs)
        clients = {
            name: CreditShareClient(
                layouts[name].coordinator_url, api_key=api, private_key=key, identity=identity
            )
            for name, (api, identity, _) in banks.items()
        }
        try:
            for i in range(n + 3):  # the first 3: warm-up (connections, encryption tables)
                # Alternating which goes first: neither always follows the other.
                for name in sorted(clients, reverse=i % 2 == 1):
                    client = clients[name]
                    uscc = usccs[i % len(usccs)]
                    started = time.perf_counter()
                    profile = client.query(uscc, banks[name][2][uscc])
                    elapsed = time.perf_counter() - started
                    if profile.failed or not profile.nodes_with_records:
                        raise AssertionError(f"{name}: {uscc} answered {profile}")
                    if i >= 3:
                        latencies[name].append(elapsed)
        finally:
            for client in clients.values():
                client.close()
    return {name: 1000 * statistics.median(values) for name, values in latencies.items()}


def measure(quick: bool, work: Path) -> Section:
    section = Section("nodes")
    large = QUICK_ROWS if quick else FULL_ROWS
    small = large // 10
    data = work / "data"
    if not (data / "enterprises.csv").exists():
        generate(300, 5, data)
    with (data / CHAIN.value / "tax.csv").open(encoding="utf-8", newline="") as handle:
        demo_rows = list(csv.reader(handle))[1:]
    usccs = [row[0] for row in demo_rows][:20]

    started = time.perf_counter()
    files = {}
    for name, rows in (("small", small), ("large", large)):
        files[name] = work / f"tax-{rows}.csv"
        write_tax_file(files[name], rows, first=demo_rows)
    generated = time.perf_counter() - started
    section.notes.append(
        f"files generated streamed in {generated:.0f} s ({small:,} and {large:,} rows, "
        f"each starting with the chain's {len(demo_rows)} demo rows)"
    )

    layouts = {"small": _layout(work / "n300", data), "large": _layout(work / "nlarge", data)}
    config = layouts["large"].nodes[0].config
    measured: dict[str, tuple[float, float]] = {}
    cpus: dict[str, float] = {}
    for name, rows in (("small", small), ("large", large)):
        seconds, cpu, peak, summary = _import(config, files[name], work)
        cpus[name] = cpu
        if summary["rows"] != rows:
            raise AssertionError(f"imported {summary['rows']} rows, expected {rows}")
        rate = rows / seconds
        measured[name] = (rate, peak)
        section.rows.append(Row("import rows/s (`node import` process)", rows, rate, "rows/s"))
        section.rows.append(Row("import rows per CPU second (same)", rows, rows / cpu, "rows/s"))
        section.rows.append(Row("import peak RSS (`node import` process)", rows, peak, "MiB"))
    # CPU seconds per extra row, start-up (~2 s of imports) cancelled out: what a core
    # does at any size, whatever else the machine runs.
    marginal = (large - small) / (cpus["large"] - cpus["small"])
    section.rows.append(
        Row("import rows per CPU second, start-up excluded", large, marginal, "rows/s")
    )
    loads = " ".join(f"{x:.1f}" for x in os.getloadavg())
    section.notes.append(f"load average (1, 5, 15 min) after the imports: {loads}")
    rate = measured["large"][0]
    ratio = measured["large"][1] / measured["small"][1]
    caveat = "" if not quick else f"--quick: {large:,} rows (the full run's size: {FULL_ROWS:,})"
    timing = f"wall time, load {loads}; per CPU second {marginal:,.0f} rows/s"
    section.targets.append(
        Target(
            f"import rows/s at {large:,} rows",
            rate,
            ROWS_PER_SECOND,
            ">=",
            "rows/s",
            f"{caveat}; {timing}" if caveat else timing,
        )
    )
    section.targets.append(
        Target(f"import peak RSS {large:,} / {small:,} rows", ratio, RSS_RATIO, "<=", "x", caveat)
    )

    rows, added, seconds, waited = _changed_import(work, files["small"], small, demo_rows)
    for what, spent in (("every record added", added), ("every record changed", seconds)):
        section.rows.append(
            Row(f"import rows/s, in-process, SQLite, {what}", rows, rows / spent, "rows/s")
        )
    section.rows.append(
        Row("longest wait of another writer, SQLite, every record changed", rows, waited, "s")
    )

    postgres = os.environ.get("CREDITSHARE_TEST_POSTGRES_URL")
    if postgres:
        rows, seconds = _postgres_import(postgres, files["large"])
        section.rows.append(
            Row("import rows/s, in-process, PostgreSQL", rows, rows / seconds, "rows/s")
        )
    else:
        section.notes.append("PostgreSQL import not measured: CREDITSHARE_TEST_POSTGRES_URL unset")

    key = PrivateKey.generate(2048)
    p50 = _p50s(layouts, usccs, key, 40 if quick else 100)
    section.rows.append(Row("query p50, tax node of the demo", len(demo_rows), p50["small"], "ms"))
    section.rows.append(Row("query p50, tax node with the large file", large, p50["large"], "ms"))
    section.targets.append(
        Target(
            f"query p50 at {large:,} enterprises / at {len(demo_rows)}",
            p50["large"] / p50["small"],
            P50_RATIO,
            "<=",
            "x",
            caveat,
        )
    )
    return section
