"""Ledger section of ``bench/scale.py``: proofs and memory at 10^7 entries against 10^3,
and appends/s of two coordinator replicas on one PostgreSQL.

* Proofs: a coordinator database is built per size by bulk-loading leaves (raw SQLite
  inserts: a bench shortcut for *building* the data only), signing one head over them,
  and filling the interior nodes with migration c0011's own backfill
  (``creditshare.ledger._backfill``). A real coordinator process
  (``creditshare coordinator serve``, uvicorn) then starts on it; the time until
  ``/readyz`` answers includes its start-up ledger check. Entry receipts
  (``GET /v1/ledger/entries/{i}``, an inclusion proof against the latest head) and
  consistency proofs (``GET /v1/ledger/proofs/consistency``) at random indices are
  timed over HTTP with one keep-alive client; the coordinator's resident memory is
  read from /proc after them.
* Appends: two processes, each a coordinator's ``Ledger`` over ``SqlLedgerStorage`` on
  one PostgreSQL database (the product's engine), each with many threads appending
  for a fixed time (group commit batches them); also with one thread each, which is
  what a process without batching gets.

Runs on older code too (no backfill, no group commit): that is how the "before"
numbers of the change that added it were taken.
"""

from __future__ import annotations

import asyncio
import hashlib
import multiprocessing
import os
import random
import socket
import sqlite3
import statistics
import subprocess
import sys
import threading
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
from _scale_report import Row, Section, Target, peak_rss_mb, rss_mb
from sqlalchemy import create_engine, text

from creditshare import migrations
from creditshare._database import open_engine
from creditshare._settings import load_settings
from creditshare.coordinator import CoordinatorSettings
from creditshare.coordinator._admin import bootstrap_operator, init_log_key
from creditshare.coordinator._services import load_log_signer
from creditshare.ledger import Frontier, Ledger, LogSigner, QueryRecord, SqlLedgerStorage

__all__ = ["measure"]

SMALL = 1_000
SUBJECT = "91350100M000100Y43"
_SEED = bytes(range(32))


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


_PLACEHOLDER = "q" + "0" * 15


def _template() -> bytes:
    record = QueryRecord(
        kind="query",
        query_id=_PLACEHOLDER,
        time=datetime(2026, 11, 30, tzinfo=UTC),
        uscc=SUBJECT,
        requester="bench-bank",
        requester_role="bank",
        purpose="credit_review",
        consent_id="c-bench",
        model_id="m-bench",
        key_fingerprint="f" * 16,
        chains=("yrd",),
        indicators=("tax_paid",),
    )
    return record.to_bytes()


_TEMPLATE = _template()


def _record(i: int) -> bytes:
    """A real query record (the routes parse what they serve), unique per ``i``."""
    return _TEMPLATE.replace(_PLACEHOLDER.encode(), b"q%015d" % i)


def build_ledger(db: Path, size: int, config: Path) -> dict[str, float]:
    """A migrated coordinator database holding ``size`` leaves under one signed head,
    with interior nodes from the migration's backfill (when this code has one)."""
    engine = open_engine(f"sqlite:///{db}")
    migrations.upgrade(engine, "coordinator")
    engine.dispose()
    signer = load_log_signer(load_settings(CoordinatorSettings, config))
    started = time.perf_counter()
    frontier = Frontier()
    conn = sqlite3.connect(db)
    conn.execute("PRAGMA synchronous=OFF")
    conn.execute("PRAGMA journal_mode=MEMORY")
    chunk = 100_000
    for start in range(0, size, chunk):
        rows = []
        for i in range(start, min(size, start + chunk)):
            data = _record(i)
            h = hashlib.sha256(b"\x00" + data).digest()
            frontier.append(h)
            rows.append((i, data, h, SUBJECT))
        conn.executemany(
            "INSERT INTO ledger_leaf (idx, data, leaf_hash, subject) VALUES (?, ?, ?, ?)", rows
        )
        conn.commit()
    head = signer.sign_head(size, frontier.root(), int(time.time() * 1000))
    conn.execute(
        "INSERT INTO ledger_head (size, root, timestamp_ms, signature, key_id) "
        "VALUES (?, ?, ?, ?, ?)",
        (head.size, head.root, head.timestamp_ms, head.signature, head.key_id),
    )
    conn.commit()
    conn.close()
    loaded = time.perf_counter() - started
    backfilled = 0.0
    try:
        from creditshare.ledger._backfill import backfill_nodes
    except ImportError:  # code from before interior nodes: nothing to fill
        return {"load_s": loaded, "backfill_s": backfilled}
    started = time.perf_counter()
    engine = open_engine(f"sqlite:///{db}")
    with engine.begin() as sa_conn:
        sa_conn.exec_driver_sql("PRAGMA synchronous=OFF")
        sa_conn.exec_driver_sql("DELETE FROM ledger_node")  # the upgrade filled none
        backfill_nodes(sa_conn, page=50_000)
    engine.dispose()
    backfilled = time.perf_counter() - started
    return {"load_s": loaded, "backfill_s": backfilled}


def _write_config(work: Path, db: Path, key: Path, port: int) -> Path:
    config = work / f"coordinator-{db.stem}.toml"
    config.write_text(
        f'host = "127.0.0.1"\nport = {port}\ndatabase_url = "sqlite:///{db}"\n'
        f'log_signing_key_file = "{key}"\nallow_insecure = true\n'
        "participant_requests_per_minute = 1000000\n"
        'log_level = "warning"\n',
        encoding="utf-8",
    )
    return config


def _p50_ms(samples: list[float]) -> float:
    return statistics.median(samples) * 1000


class Coordinator:
    """A coordinator process on one bench database, with an operator's HTTP client."""

    def __init__(self, config: Path, size: int) -> None:
        settings = load_settings(CoordinatorSettings, config)
        api_key = bootstrap_operator(settings, f"bench-op-{uuid.uuid4().hex[:8]}", "Bench").api_key
        self.size = size
        self.log_path = config.with_suffix(".log")
        self._log = open(self.log_path, "wb")  # noqa: SIM115 - closed in stop()
        started = time.perf_counter()
        self.process = subprocess.Popen(
            [sys.executable, "-m", "creditshare", "coordinator", "serve", "--config", str(config)],
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        self.client = httpx.Client(
            base_url=f"http://127.0.0.1:{settings.port}",
            headers={"Authorization": f"Bearer {api_key}"},
            timeout=60,
        )
        deadline = time.monotonic() + 1800
        while True:
            if self.process.poll() is not None:
                raise RuntimeError(f"the coordinator exited; see {self.log_path}")
            try:
                if self.client.get("/readyz").status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError("the coordinator did not become ready")
            time.sleep(0.05)
        self.ready_s = time.perf_counter() - started
        self.rng = random.Random(size)
        self.entries: list[float] = []
        self.consistency: list[float] = []

    def prove(self, record: bool = True) -> None:
        """One entry receipt and one consistency proof, at random indices, timed."""
        index = self.rng.randrange(self.size)
        t0 = time.perf_counter()
        self.client.get(f"/v1/ledger/entries/{index}").raise_for_status()
        t1 = time.perf_counter()
        first = self.rng.randrange(1, self.size)
        params = {"first": first, "second": self.size}
        self.client.get("/v1/ledger/proofs/consistency", params=params).raise_for_status()
        t2 = time.perf_counter()
        if record:
            self.entries.append(t1 - t0)
            self.consistency.append(t2 - t1)

    def stop(self) -> dict[str, float]:
        result = {
            "ready_s": self.ready_s,
            "entry_p50_ms": statistics.median(self.entries) * 1000,
            "consistency_p50_ms": statistics.median(self.consistency) * 1000,
            "rss_mb": rss_mb(self.process.pid),
            "peak_rss_mb": peak_rss_mb(self.process.pid),
        }
        self.client.close()
        self.process.terminate()
        try:
            self.process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.process.kill()
        self._log.close()
        return result


def serve_and_prove(configs: dict[int, Path], requests: int) -> dict[int, dict[str, float]]:
    """Start a coordinator per size and time proofs alternately on each, so the shared
    machine's noise falls on both sizes alike; then read each one's memory."""
    running: dict[int, Coordinator] = {}
    try:
        for size, config in configs.items():
            running[size] = Coordinator(config, size)
        for _ in range(20):  # warm up: connections, imports, SQLite page cache
            for coordinator in running.values():
                coordinator.prove(record=False)
        for _ in range(requests):
            for coordinator in running.values():
                coordinator.prove()
        return {size: coordinator.stop() for size, coordinator in running.items()}
    finally:
        for coordinator in running.values():
            if coordinator.process.poll() is None:
                coordinator.process.kill()


# --- appends/s of two replicas on one PostgreSQL ---


def _append_worker(
    url: str, threads: int, seconds: float, mode: str, ready: Any, go: Any, out: Any
) -> None:
    engine = open_engine(url, pool_size=max(5, threads // 4))
    ledger = Ledger(
        SqlLedgerStorage(engine),
        LogSigner.from_private_bytes(_SEED),
        lambda: datetime.now(UTC),
    )
    ledger.check_storage()
    counts = [0] * threads
    ready.put(os.getpid())
    go.wait()
    stop_at = time.monotonic() + seconds

    def run(slot: int) -> None:
        n = 0
        while time.monotonic() < stop_at:
            ledger.append(_record(n), SUBJECT)
            n += 1
        counts[slot] = n

    if mode in ("async", "to_thread"):  # the coordinator's way: tasks on one event loop

        async def task(slot: int) -> None:
            n = 0
            while time.monotonic() < stop_at:
                if mode == "async":
                    await ledger.append_async(_record(n), SUBJECT)
                else:  # the loop's default pool, as coordinator callers do today
                    await asyncio.to_thread(ledger.append, _record(n), SUBJECT)
                n += 1
            counts[slot] = n

        async def tasks() -> None:
            await asyncio.gather(*(task(i) for i in range(threads)))

        asyncio.run(tasks())
    else:
        workers = [threading.Thread(target=run, args=(i,)) for i in range(threads)]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join()
    engine.dispose()
    out.put(sum(counts))


def _postgres_admin_url() -> str:
    url = os.environ.get("CREDITSHARE_TEST_POSTGRES_URL")
    if url:
        return url
    raise RuntimeError(
        "set CREDITSHARE_TEST_POSTGRES_URL (or run under `scripts/postgres.sh run --`) "
        "for the appends/s measurement"
    )


def appends_per_second(
    processes: int, threads: int, seconds: float, mode: str = "threads"
) -> tuple[float, int]:
    """Appends/s of ``processes`` ledgers x ``threads`` threads (or asyncio tasks, with
    ``mode="async"``) on a fresh PostgreSQL database."""
    admin_url = _postgres_admin_url()
    name = f"bench_ledger_{uuid.uuid4().hex[:10]}"
    admin = create_engine(admin_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    url = admin_url.rsplit("/", 1)[0] + f"/{name}"
    try:
        engine = open_engine(url)
        migrations.upgrade(engine, "coordinator")
        engine.dispose()
        context = multiprocessing.get_context("spawn")
        out, ready, go = context.Queue(), context.Queue(), context.Event()
        workers = [
            context.Process(
                target=_append_worker, args=(url, threads, seconds, mode, ready, go, out)
            )
            for _ in range(processes)
        ]
        for worker in workers:
            worker.start()
        for _ in workers:  # every process imported, connected and checked its ledger
            ready.get(timeout=300)
        go.set()
        total = sum(out.get(timeout=seconds + 120) for _ in workers)
        for worker in workers:
            worker.join(timeout=60)
        engine = open_engine(url)
        with engine.connect() as conn:
            heads = int(conn.execute(text("SELECT count(*) FROM ledger_head")).scalar() or 0)
        engine.dispose()
        return total / seconds, heads
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def measure(quick: bool, work: Path) -> Section:
    big = 100_000 if quick else 10_000_000
    requests = 200 if quick else 400
    seconds = 8.0 if quick else 20.0
    section = Section("ledger")
    key = work / "log-signing-key.pem"
    if not key.exists():
        init_log_key(key)
    configs: dict[int, Path] = {}
    built: dict[int, dict[str, float]] = {}
    for size in (SMALL, big):
        db = work / f"ledger-{size}.db"
        for leftover in work.glob(f"ledger-{size}.db*"):
            leftover.unlink()
        configs[size] = _write_config(work, db, key, _free_port())
        built[size] = build_ledger(db, size, configs[size])
    results = serve_and_prove(configs, requests)
    for size in (SMALL, big):
        proved = results[size]
        section.rows += [
            Row("ledger build: bulk load (bench shortcut)", size, built[size]["load_s"], "s"),
            Row("ledger build: c0011 backfill", size, built[size]["backfill_s"], "s"),
            Row("coordinator start until /readyz", size, proved["ready_s"], "s"),
            Row("entry receipt (inclusion proof) p50, HTTP", size, proved["entry_p50_ms"], "ms"),
            Row("consistency proof p50, HTTP", size, proved["consistency_p50_ms"], "ms"),
            Row("coordinator RSS after the proofs", size, proved["rss_mb"], "MiB"),
            Row("coordinator peak RSS", size, proved["peak_rss_mb"], "MiB"),
        ]
        for leftover in work.glob(f"ledger-{size}.db*"):
            leftover.unlink()
    small, large = results[SMALL], results[big]
    caveat = "" if big == 10_000_000 else f"--quick: {big:,} entries, not 10^7"
    proof_ratio = max(
        large["entry_p50_ms"] / small["entry_p50_ms"],
        large["consistency_p50_ms"] / small["consistency_p50_ms"],
    )
    section.targets.append(
        Target(
            f"proof p50 at {big:,} / at {SMALL:,} entries (worse of two)",
            proof_ratio,
            2.0,
            "<=",
            "x",
            caveat,
        )
    )
    section.targets.append(
        Target(
            f"coordinator RSS at {big:,} / at {SMALL:,} entries",
            large["rss_mb"] / small["rss_mb"],
            1.2,
            "<=",
            "x",
            caveat,
        )
    )
    try:
        single, _ = appends_per_second(2, 1, seconds)
        rate, heads = appends_per_second(2, 32, seconds)
        pool_rate, _ = appends_per_second(2, 64, seconds, "to_thread")
        section.rows.append(
            Row(
                "appends/s, 2 processes x 64 tasks via asyncio.to_thread",
                128,
                pool_rate,
                "appends/s",
            )
        )
        loop_rate = 0.0
        if hasattr(Ledger, "append_async"):
            loop_rate, _ = appends_per_second(2, 64, seconds, "async")
            section.rows.append(
                Row(
                    "appends/s, 2 processes x 64 asyncio tasks (append_async)",
                    128,
                    loop_rate,
                    "appends/s",
                )
            )
    except RuntimeError as exc:
        section.notes.append(f"appends/s not measured: {exc}")
        return section
    section.rows += [
        Row("appends/s, 2 processes x 1 thread (no batching)", 2, single, "appends/s"),
        Row("appends/s, 2 processes x 32 threads (group commit)", 64, rate, "appends/s"),
        Row("appends per signed head, 2 x 32 threads", 64, rate * seconds / max(heads, 1), "x"),
    ]
    # The coordinator's own path (event-loop tasks through append_async) when this code
    # has it; else the threaded one (what the older code's callers could reach at best).
    section.targets.append(
        Target(
            "appends/s, 2 coordinator processes on one PostgreSQL (event-loop tasks)",
            loop_rate or rate,
            1000.0,
            ">=",
            "appends/s",
            (f"{seconds:.0f} s run" if quick else "")
            + ("" if loop_rate else "; no append_async: 32 threads per process"),
        )
    )
    return section
