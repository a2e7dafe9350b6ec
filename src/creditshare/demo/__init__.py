"""The demo federation and the harness the end-to-end tests and benchmarks share."""

from creditshare.demo._federation import Federation, FederationLayout, NodeLayout, free_port
from creditshare.demo._monitoring import MonitoringOutcome
from creditshare.demo._run import DemoQuery, DemoResult, pick_enterprises, run_demo
from creditshare.demo._statistics import (
    PlaintextCohort,
    StatisticsOutcome,
    check_cohort,
    check_rows,
)
from creditshare.demo._verify import PlaintextOracle, Verification, read_enterprises

__all__ = [
    "DemoQuery",
    "DemoResult",
    "Federation",
    "FederationLayout",
    "MonitoringOutcome",
    "NodeLayout",
    "PlaintextCohort",
    "PlaintextOracle",
    "StatisticsOutcome",
    "Verification",
    "check_cohort",
    "check_rows",
    "free_port",
    "pick_enterprises",
    "read_enterprises",
    "run_demo",
]
