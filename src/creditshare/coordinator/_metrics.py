"""Prometheus metrics of one coordinator app, in a registry of its own.

Every app gets its own ``CollectorRegistry`` (never the process-global one), so
several apps in one process (tests, a replica beside another) count apart.

Series (label values are bounded: outcomes, node ids from the settings, gRPC
method names and status codes, route templates; never an enterprise's USCC, a
participant id or a raw path):

- ``creditshare_queries_total{outcome}`` and
  ``creditshare_query_duration_seconds{outcome}``: ``POST /v1/queries`` that got
  past authentication; outcome is one of ``QUERY_OUTCOMES``.
- ``creditshare_statistics_queries_total{outcome}`` and
  ``creditshare_statistics_query_duration_seconds{outcome}``: ``POST /v1/statistics``
  (a regulator's cohort query) that got past authentication; outcome is one of
  ``STATISTICS_OUTCOMES``.
- ``creditshare_node_calls_total{node,method,code}`` and
  ``creditshare_node_call_duration_seconds{node,method}``: every gRPC call to a
  data node (Describe, Score, the training relay), with its status code.
- ``creditshare_node_failures_total{node,reason}``: nodes left out of a query's
  answer, by reason class (``unavailable``, ``deadline_exceeded``,
  ``invalid_answer``, ``ledger``, ``head_moving``, ``privacy_budget`` for a node that
  refused a statistics query for the regulator's budget, or the gRPC code of a refusal).
- ``creditshare_ledger_size``: records in the ledger, read at scrape time.
- ``creditshare_training_jobs{status}``: training jobs by status, read at scrape time.
- ``creditshare_http_requests_total{method,route,status}`` and
  ``creditshare_http_request_duration_seconds{method,route}``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping

import grpc
from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from creditshare.errors import (
    ConsentRefusedError,
    CreditShareError,
    NoNodeAnsweredError,
    PrivacyBudgetExceededError,
    RateLimitedError,
)

__all__ = [
    "QUERY_OUTCOMES",
    "STATISTICS_OUTCOMES",
    "TRAINING_STATUSES",
    "CoordinatorMetrics",
    "query_outcome",
    "statistics_outcome",
]

log = logging.getLogger("creditshare.coordinator")

#: answered: every node in scope answered; partial: some did; unanswered: none did
#: (503); refused: the consent does not cover it (403, recorded); rate_limited: 429;
#: rejected: any other client error (422, 404); error: the coordinator failed (5xx).
QUERY_OUTCOMES = (
    "answered",
    "partial",
    "unanswered",
    "refused",
    "rate_limited",
    "rejected",
    "error",
)
#: answered: every node asked answered; partial: some did (the others refused for the
#: privacy budget or failed); refused: every node asked refused for the regulator's
#: privacy budget (403, recorded); unanswered: no node answered, not all for budget
#: (503); rejected: refused before anything was recorded (4xx: signature, key,
#: catalogue, time, a request_id sent again...); error: the coordinator failed (5xx).
STATISTICS_OUTCOMES = ("answered", "partial", "refused", "unanswered", "rejected", "error")
TRAINING_STATUSES = ("aligning", "training", "finished", "failed", "cancelled")
_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)


def query_outcome(exc: BaseException, status: int) -> str:
    """The outcome of a query that ended in ``exc``, answered with HTTP ``status``."""
    if isinstance(exc, ConsentRefusedError):
        return "refused"
    if isinstance(exc, NoNodeAnsweredError):
        return "unanswered"
    if isinstance(exc, RateLimitedError):
        return "rate_limited"
    if isinstance(exc, CreditShareError) and status < 500:
        return "rejected"
    return "error"


def statistics_outcome(exc: BaseException, status: int) -> str:
    """The outcome of a statistics query that ended in ``exc``, answered with ``status``."""
    if isinstance(exc, PrivacyBudgetExceededError):
        return "refused"
    if isinstance(exc, NoNodeAnsweredError):
        return "unanswered"
    if isinstance(exc, CreditShareError) and status < 500:
        return "rejected"
    return "error"


class _ReadAtScrape(Collector):
    """Gauges read from the database when scraped, so every replica reports the truth."""

    def __init__(
        self, ledger_size: Callable[[], int], training_jobs: Callable[[], Mapping[str, int]]
    ) -> None:
        self._ledger_size = ledger_size
        self._training_jobs = training_jobs

    def describe(self) -> Iterable[Metric]:
        return []  # registering must not query the database

    def collect(self) -> Iterable[Metric]:
        try:
            size = self._ledger_size()
        except Exception as exc:  # a scrape still answers; /readyz says what is wrong
            log.warning("metrics: ledger size unreadable (%s)", type(exc).__name__)
        else:
            yield GaugeMetricFamily(
                "creditshare_ledger_size", "Records in the query ledger (its tree size).", size
            )
        try:
            counts = self._training_jobs()
        except Exception as exc:
            log.warning("metrics: training jobs unreadable (%s)", type(exc).__name__)
        else:
            jobs = GaugeMetricFamily(
                "creditshare_training_jobs", "Training jobs by status.", labels=["status"]
            )
            for status in sorted(set(TRAINING_STATUSES) | set(counts)):
                jobs.add_metric([status], counts.get(status, 0))
            yield jobs


class CoordinatorMetrics:
    def __init__(
        self, ledger_size: Callable[[], int], training_jobs: Callable[[], Mapping[str, int]]
    ) -> None:
        self.registry = CollectorRegistry()
        registry = self.registry
        self.queries = Counter(
            "creditshare_queries",
            "Queries (POST /v1/queries past authentication) by outcome.",
            ["outcome"],
            registry=registry,
        )
        self.query_seconds = Histogram(
            "creditshare_query_duration_seconds",
            "Time to answer a query, by outcome.",
            ["outcome"],
            buckets=_BUCKETS,
            registry=registry,
        )
        self.statistics_queries = Counter(
            "creditshare_statistics_queries",
            "Regulators' cohort queries (POST /v1/statistics past authentication) by outcome.",
            ["outcome"],
            registry=registry,
        )
        self.statistics_seconds = Histogram(
            "creditshare_statistics_query_duration_seconds",
            "Time to answer a cohort query, by outcome.",
            ["outcome"],
            buckets=_BUCKETS,
            registry=registry,
        )
        self.node_calls = Counter(
            "creditshare_node_calls",
            "gRPC calls to data nodes by node, method and status code.",
            ["node", "method", "code"],
            registry=registry,
        )
        self.node_call_seconds = Histogram(
            "creditshare_node_call_duration_seconds",
            "Latency of gRPC calls to data nodes, by node and method.",
            ["node", "method"],
            buckets=_BUCKETS,
            registry=registry,
        )
        self.node_failures = Counter(
            "creditshare_node_failures",
            "Nodes left out of a query's answer, by node and reason class.",
            ["node", "reason"],
            registry=registry,
        )
        self.http_requests = Counter(
            "creditshare_http_requests",
            "HTTP requests by method, route template and status.",
            ["method", "route", "status"],
            registry=registry,
        )
        self.http_seconds = Histogram(
            "creditshare_http_request_duration_seconds",
            "HTTP request latency by method and route template.",
            ["method", "route"],
            buckets=_BUCKETS,
            registry=registry,
        )
        registry.register(_ReadAtScrape(ledger_size, training_jobs))
        for outcome in QUERY_OUTCOMES:
            self.queries.labels(outcome)
        for outcome in STATISTICS_OUTCOMES:
            self.statistics_queries.labels(outcome)

    def observe_query(self, outcome: str, seconds: float) -> None:
        self.queries.labels(outcome).inc()
        self.query_seconds.labels(outcome).observe(seconds)

    def observe_statistics(self, outcome: str, seconds: float) -> None:
        self.statistics_queries.labels(outcome).inc()
        self.statistics_seconds.labels(outcome).observe(seconds)

    def node_failed(self, node: str, reason: str) -> None:
        self.node_failures.labels(node, reason).inc()

    def observe_http(self, method: str, route: str, status: int, seconds: float) -> None:
        self.http_requests.labels(method, route, str(status)).inc()
        self.http_seconds.labels(method, route).observe(seconds)

    def call_ended(
        self,
        node: str,
        method: str,
        code: grpc.StatusCode,
        seconds: float,
        error: grpc.aio.AioRpcError | None,
    ) -> None:
        """Count and time one node call (a ``relay.CallListener``), by method name."""
        name = method.rsplit("/", 1)[-1]
        self.node_calls.labels(node, name, code.name.lower()).inc()
        self.node_call_seconds.labels(node, name).observe(seconds)
