"""bench/scale.py section ``fanout``: a query's p50 at 45 nodes against 9, and at 9.

Two federations in the same run, identical but for their size: a coordinator under
uvicorn and one ``creditshare node serve`` process per node (mutual TLS, 2048-bit
keys, SQLite, consent and the ledger on, fast encryption), queried by the bank's SDK
(sign, POST /v1/queries, decrypt), one query at a time, the two federations'
queries interleaved so both see the same machine load:

* 9 nodes: 3 chains x (tax, market, court), bench/query.py's federation;
* 45 nodes: 3 chains x 15 departments, the five built-in ones and ten more each
  loaded from a schema file (a copy of a built-in schema under another id, with a copy
  of its data), as an operator adds a department without code.

``--quick``: fewer queries, and 3 chains x 5 departments (15 nodes) instead of 45.
"""

from __future__ import annotations

import os
import re
import statistics
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path

from _scale_report import Row, Section, Target, cpu_count

from creditshare.client import CreditShareClient
from creditshare.crypto import PrivateKey
from creditshare.demo import Federation, FederationLayout, read_enterprises
from creditshare.demo._federation import ALL_DEPARTMENTS
from creditshare.synth import generate

__all__ = ["BankQuery", "departments_for", "measure", "running_federation"]

BASE = ("tax", "market", "court")
#: The provincial-scale targets (README, Performance).
P50_LIMIT_MS = 25.0
RATIO_LIMIT = 1.5
_SCHEMAS = Path(__file__).resolve().parents[1] / "src" / "creditshare" / "departments" / "schemas"


def departments_for(count: int, root: Path, data: Path) -> tuple[list[str], dict[str, Path]]:
    """``count`` departments per chain: BASE first, then the other built-ins, then
    copies of the built-ins under new ids (schema file + data file per chain)."""
    names = [*BASE, *(d for d in ALL_DEPARTMENTS if d not in BASE)][:count]
    schemas: dict[str, Path] = {}
    copy = 0
    while len(names) < count:
        source = ALL_DEPARTMENTS[copy % len(ALL_DEPARTMENTS)]
        copy += 1
        name = f"{source}_x{copy}"
        text = (_SCHEMAS / f"{source}.toml").read_text(encoding="utf-8")
        path = root / "schemas" / f"{name}.toml"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(re.sub(r'(?m)^id = ".*"$', f'id = "{name}"', text), encoding="utf-8")
        schemas[name] = path
        for chain_dir in (p for p in data.iterdir() if p.is_dir()):
            original = chain_dir / f"{source}.csv"
            if original.exists():
                (chain_dir / f"{name}.csv").write_bytes(original.read_bytes())
        names.append(name)
    return names, schemas


def process_cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a live process (all its threads), from /proc."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True)
class CpuPerQuery:
    """Where one federation's CPU went, per query, with its idle use taken out.

    CPU time, unlike latency, does not depend on how many cores the machine has or on
    what else runs on it: it states how each process's work grows with the node count.
    """

    coordinator_ms: float
    #: Mean over the nodes of one node's CPU per answer (each node answers once a query).
    node_ms: float
    bank_ms: float

    @property
    def serial_ms(self) -> float:
        """The CPU on a query's critical path when the nodes answer in parallel."""
        return self.bank_ms + self.coordinator_ms + self.node_ms

    def total_ms(self, nodes: int) -> float:
        return self.coordinator_ms + nodes * self.node_ms + self.bank_ms


@dataclass
class BankQuery:
    """A running federation and a bank with consents: ``query(i)`` is one timed query."""

    federation: Federation
    bank: CreditShareClient
    usccs: list[str]
    consents: dict[str, str]
    #: CPU seconds the bank's thread spent in ``query`` (sign, POST, decrypt) so far.
    bank_cpu: float = 0.0

    @property
    def nodes(self) -> int:
        return len(self.federation.layout.nodes)

    def cpu_seconds(self) -> dict[str, float]:
        """CPU (user + system) each process of the federation has used so far, by name."""
        return {name: process_cpu_seconds(p.pid) for name, p in self.federation._procs.items()}

    def query(self, i: int) -> float:
        uscc = self.usccs[i % len(self.usccs)]
        started = time.perf_counter()
        cpu = time.thread_time()
        profile = self.bank.query(uscc, self.consents[uscc])
        self.bank_cpu += time.thread_time() - cpu
        latency = time.perf_counter() - started
        if profile.failed:
            raise AssertionError(f"a query with failed nodes: {profile.failed}")
        if len(profile.answered) != self.nodes:
            raise AssertionError(f"{len(profile.answered)} of {self.nodes} nodes answered")
        return latency


@contextmanager
def running_federation(
    root: Path, data: Path, key: PrivateKey, per_chain: int
) -> Iterator[BankQuery]:
    """A federation of 3 chains x ``per_chain`` departments, warmed up, and its bank."""
    from query import enrol  # bench/query.py: the bank and its consents, as it enrols them

    departments, schemas = departments_for(per_chain, root, data)
    layout = FederationLayout.write(
        root / f"federation-{per_chain}",
        data,
        departments=departments,
        schema_files=schemas,
        coordinator_overrides={
            "participant_requests_per_minute": 100_000,
            "enterprise_queries_per_day": 100_000,
        },
        node_overrides={"fast_encryption": True},
    )
    layout.import_data()
    operator_key = layout.bootstrap_operator()
    usccs = [r["uscc"] for r in read_enterprises(data)][:20]
    with ExitStack() as stack:
        federation = stack.enter_context(Federation(layout, start_timeout=180.0))
        op = stack.enter_context(CreditShareClient(layout.coordinator_url, api_key=operator_key))
        layout.publish_revocation_lists(operator_key)
        bank_api, identity, consents = enrol(layout, op, usccs)
        bank = stack.enter_context(
            CreditShareClient(
                layout.coordinator_url, api_key=bank_api, private_key=key, identity=identity
            )
        )
        run = BankQuery(federation, bank, usccs, consents)
        for i in range(3):  # connections, and the nodes' encryption tables for the key
            run.query(i)
        yield run


#: Seconds each federation sits idle while its processes' background CPU is read.
IDLE_SECONDS = 3.0


def _idle_rates(runs: list[BankQuery], seconds: float = IDLE_SECONDS) -> list[dict[str, float]]:
    """Each process's CPU seconds per second while no query runs (timers, health
    probes): taken out of the per-query figures so they count the queries' work only."""
    before = [run.cpu_seconds() for run in runs]
    started = time.perf_counter()
    time.sleep(seconds)
    elapsed = time.perf_counter() - started
    after = [run.cpu_seconds() for run in runs]
    return [{k: (a[k] - b[k]) / elapsed for k in a} for a, b in zip(after, before, strict=True)]


def _interleaved(
    runs: list[BankQuery], n: int
) -> tuple[list[list[float]], list[float], list[CpuPerQuery]]:
    """Each run's latencies, its ledger entries per query (read over HTTP), and its
    processes' CPU per query (from /proc, idle use taken out).

    Idle use is read before and after the queries, and the lower rate of the two taken
    out: a window may catch work that ends (a node still building the bank key's
    encryption table after the warm-up), which must not be taken out of every query.
    """
    idle_before = _idle_rates(runs)
    latencies: list[list[float]] = [[] for _ in runs]
    before = [int(run.bank.ledger_head()["size"]) for run in runs]
    cpu_before = [run.cpu_seconds() for run in runs]
    bank_before = [run.bank_cpu for run in runs]
    started = time.perf_counter()
    for i in range(n):
        for run, values in zip(runs, latencies, strict=True):
            values.append(run.query(i))
    elapsed = time.perf_counter() - started
    cpu_after = [run.cpu_seconds() for run in runs]
    after = [int(run.bank.ledger_head()["size"]) for run in runs]
    idle = [
        {k: min(b[k], a[k]) for k in b} for b, a in zip(idle_before, _idle_rates(runs), strict=True)
    ]
    cpu: list[CpuPerQuery] = []
    for run, rates, b, a, bank0 in zip(runs, idle, cpu_before, cpu_after, bank_before, strict=True):
        used = {k: max(0.0, a[k] - b[k] - rates[k] * elapsed) * 1000 / n for k in a}
        nodes = [v for k, v in used.items() if k != "coordinator"]
        cpu.append(
            CpuPerQuery(
                used["coordinator"],
                statistics.mean(nodes),
                (run.bank_cpu - bank0) * 1000 / n,
            )
        )
    return latencies, [(a - b) / n for a, b in zip(after, before, strict=True)], cpu


def growth_rows(sizes: tuple[int, int], cpu: list[CpuPerQuery]) -> list[Row]:
    """The growth law in CPU, whatever the machine: what each extra node costs."""
    (small, large), (a, b) = sizes, cpu
    extra = large - small
    return [
        Row(
            "coordinator CPU per extra node",
            large,
            (b.coordinator_ms - a.coordinator_ms) / extra,
            "ms",
        ),
        Row(
            "all processes' CPU per extra node",
            large,
            (b.total_ms(large) - a.total_ms(small)) / extra,
            "ms",
        ),
    ]


def bound_note(sizes: tuple[int, int], cpu: list[CpuPerQuery], cores: int) -> str:
    """What bounds the p50 ratio, whatever the target's limit: a query's latency is at
    least its serial path (bank, coordinator, one node: the nodes run in parallel) and
    at least all its CPU spread over the machine's cores."""
    (small, large), (a, b) = sizes, cpu
    total = (a.total_ms(small), b.total_ms(large))
    serial = (a.serial_ms, b.serial_ms)
    floor = [max(s, t / cores) for s, t in zip(serial, total, strict=True)]
    return (
        f"what bounds the p50 ratio: a query uses {total[0]:.0f} ms of CPU at {small} nodes "
        f"and {total[1]:.0f} ms at {large} ({total[1] / total[0]:.2f}x); its latency is at "
        f"least max(serial path, CPU / cores): on this machine's {cores} cores, if idle, "
        f"{floor[0]:.0f} and {floor[1]:.0f} ms, a ratio of ~{floor[1] / floor[0]:.2f}x "
        f"(the CPU bound); with at least {large} + 2 cores only the serial path (bank + "
        f"coordinator + one node) bounds it: {serial[0]:.0f} and {serial[1]:.0f} ms "
        f"({serial[1] / serial[0]:.2f}x); other load on the machine adds to both"
    )


def measure(quick: bool, work: Path, progress: Callable[[str], None] = print) -> Section:
    n, large = (15, 5) if quick else (60, 15)
    key = PrivateKey.generate(2048)
    generate(300, 5, work / "data")
    section = Section("fanout")
    with ExitStack() as stack:
        small_run = stack.enter_context(running_federation(work, work / "data", key, len(BASE)))
        large_run = stack.enter_context(running_federation(work, work / "data", key, large))
        progress(f"fanout: {small_run.nodes} and {large_run.nodes} nodes up; {n} queries each")
        load = os.getloadavg()[0]
        (small, big), entries, cpu = _interleaved([small_run, large_run], n)
        sizes = (small_run.nodes, large_run.nodes)
    p50 = [1000 * statistics.median(v) for v in (small, big)]
    for size, values, median, per_query, used in zip(
        sizes, (small, big), p50, entries, cpu, strict=True
    ):
        ordered = sorted(values)
        section.rows.append(Row("query p50 (bank SDK, decrypted)", size, median, "ms"))
        section.rows.append(
            Row("query p90 (bank SDK, decrypted)", size, 1000 * ordered[int(0.9 * (n - 1))], "ms")
        )
        section.rows.append(Row("ledger entries per query", size, per_query, "entries"))
        section.rows.append(Row("coordinator CPU per query", size, used.coordinator_ms, "ms"))
        section.rows.append(Row("node CPU per answer (mean)", size, used.node_ms, "ms"))
        section.rows.append(Row("bank CPU per query (SDK)", size, used.bank_ms, "ms"))
        section.rows.append(Row("all processes' CPU per query", size, used.total_ms(size), "ms"))
    section.rows.extend(growth_rows(sizes, cpu))
    section.notes.append(bound_note(sizes, cpu, cpu_count()))
    caveat = (
        f"--quick: {sizes[1]} nodes (3 chains x {large}), not 45, and {n} queries" if quick else ""
    )
    section.targets.append(
        Target(
            f"query p50 at {sizes[1]} nodes / at {sizes[0]}",
            p50[1] / p50[0],
            RATIO_LIMIT,
            "<=",
            "x",
            caveat,
        )
    )
    section.targets.append(
        Target(
            f"query p50 at {sizes[0]} nodes",
            p50[0],
            P50_LIMIT_MS,
            "<=",
            "ms",
            f"--quick: {n} queries" if quick else "",
        )
    )
    section.notes.append(
        "each query: the bank signs, POST /v1/queries (consent check, one ledger append, "
        "fan-out to every node with its receipt), decrypts the packed answer"
    )
    section.notes.append(
        f"1-minute load average when the queries began: {load:.1f} on {cpu_count()} cores "
        "(every node, the coordinator and the bank share them: absolute times grow with it)"
    )
    return section
