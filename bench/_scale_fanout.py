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
#: The issue's targets.
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


@dataclass
class BankQuery:
    """A running federation and a bank with consents: ``query(i)`` is one timed query."""

    federation: Federation
    bank: CreditShareClient
    usccs: list[str]
    consents: dict[str, str]

    @property
    def nodes(self) -> int:
        return len(self.federation.layout.nodes)

    def query(self, i: int) -> float:
        uscc = self.usccs[i % len(self.usccs)]
        started = time.perf_counter()
        profile = self.bank.query(uscc, self.consents[uscc])
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


def _interleaved(runs: list[BankQuery], n: int) -> tuple[list[list[float]], list[float]]:
    """Each run's latencies, and its ledger entries per query (read over HTTP)."""
    latencies: list[list[float]] = [[] for _ in runs]
    before = [int(run.bank.ledger_head()["size"]) for run in runs]
    for i in range(n):
        for run, values in zip(runs, latencies, strict=True):
            values.append(run.query(i))
    after = [int(run.bank.ledger_head()["size"]) for run in runs]
    return latencies, [(a - b) / n for a, b in zip(after, before, strict=True)]


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
        (small, big), entries = _interleaved([small_run, large_run], n)
        sizes = (small_run.nodes, large_run.nodes)
    p50 = [1000 * statistics.median(v) for v in (small, big)]
    for size, values, median, per_query in zip(sizes, (small, big), p50, entries, strict=True):
        ordered = sorted(values)
        section.rows.append(Row("query p50 (bank SDK, decrypted)", size, median, "ms"))
        section.rows.append(
            Row("query p90 (bank SDK, decrypted)", size, 1000 * ordered[int(0.9 * (n - 1))], "ms")
        )
        section.rows.append(Row("ledger entries per query", size, per_query, "entries"))
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
