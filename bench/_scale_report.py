"""What every section of ``bench/scale.py`` returns, and how peak memory is read.

Each section (nodes, PSI, ledger, fan-out) measures one growth law of the
"provincial scale" targets on real processes and returns a ``Section``: the rows it
measured (each at a size) and its targets, each a ratio or a limit measured in the
same run. The aggregator prints them and writes them as JSON; it never measures.
"""

from __future__ import annotations

import os
import resource
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

__all__ = ["Row", "Section", "Target", "cpu_count", "peak_rss_mb", "rss_mb", "self_peak_rss_mb"]


@dataclass(frozen=True)
class Row:
    """One measurement: ``metric`` at ``size`` (what grew: enterprises, entries, nodes...)."""

    metric: str
    size: int
    value: float
    unit: str


@dataclass(frozen=True)
class Target:
    """One target, e.g. "query p50 at 45 nodes / at 9" <= 1.5."""

    name: str
    measured: float
    limit: float
    comparison: Literal["<=", ">="]
    unit: str = "x"
    #: Why a run could not measure it at the full size (e.g. a --quick size); shown.
    caveat: str = ""

    @property
    def met(self) -> bool:
        if self.comparison == "<=":
            return self.measured <= self.limit
        return self.measured >= self.limit


@dataclass
class Section:
    name: str
    rows: list[Row] = field(default_factory=list)
    targets: list[Target] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        for target, stored in zip(self.targets, data["targets"], strict=True):
            stored["met"] = target.met
        return data


def peak_rss_mb(pid: int) -> float:
    """Peak resident memory (VmHWM) of a live process, in MiB; read before it exits."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"/proc/{pid}/status has no VmHWM line")


def rss_mb(pid: int) -> float:
    """Current resident memory (VmRSS) of a live process, in MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"/proc/{pid}/status has no VmRSS line")


def self_peak_rss_mb() -> float:
    """This process's peak resident memory, in MiB (ru_maxrss is KiB on Linux)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def cpu_count() -> int:
    return len(os.sched_getaffinity(0))
