"""Whether each data node answers: probed in the background, updated by real calls.

``GET /v1/nodes`` and ``/readyz`` read what is known here and never wait on a node:
a node that is down or frozen must not make an operator's page (or a load balancer's
probe) hang for its deadline. So the state is kept in memory and refreshed two ways:

* a background round every ``node_probe_interval_seconds`` asks every node its
  ``Info`` (its id and creditshare version, from the node's memory) on the same mTLS
  channel queries use, each call within ``node_probe_timeout_seconds``; a node whose
  channel cannot connect (down, wrong address, TLS refused) fails fast, a frozen one
  at the timeout, and neither holds up the others or any query;
* every real call on a node's channel (queries, training relays, cosigning) is timed
  by an interceptor: an answer, even a refusal, proves the node reachable and gives
  the latest latency; a call that could not connect proves it unreachable. A deadline
  missed on a real call does not: a node slow under a heavy query still answers, and
  the next probe says so.

The state is per process: with several coordinator replicas, each probes and reports
what it sees itself (a node unreachable from one replica only is worth knowing).
Error texts are short fixed phrases or the node's own status message, never an
exception's full text (which could quote file paths or certificate details).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import datetime
from typing import TYPE_CHECKING, Literal

import grpc

from creditshare.coordinator._registry import Registry
from creditshare.coordinator._settings import NodeEntry
from creditshare.coordinator.relay import call_failure
from creditshare.proto import node_pb2

if TYPE_CHECKING:
    from creditshare.proto.creditshare.v1.node_pb2_grpc import NodeInfoAsyncStub

__all__ = ["ChainStatus", "NodeHealth", "NodeStatus"]

log = logging.getLogger("creditshare.coordinator")

ChainStatus = Literal["ok", "unreachable"]

#: The probe's own method: its outcome is recorded by the probe, with the version.
_INFO_METHOD = "/creditshare.v1.NodeInfo/Info"
#: Longest error text kept (a node's status message is the node's to choose).
_MAX_ERROR = 200
#: What a connection failure's details say, as a fixed phrase: gRPC's own text names
#: addresses and TLS library internals, and the operator needs only which kind it was.
_UNAVAILABLE_HINTS = (
    ("connection refused", "connection refused"),
    ("handshake", "TLS handshake failed"),
    ("certificate", "TLS handshake failed"),
    ("ssl", "TLS handshake failed"),
    ("dns", "address not resolved"),
    ("resolv", "address not resolved"),
    ("timed out", "connection timed out"),
)


@dataclass(frozen=True, slots=True)
class NodeStatus:
    """What is known of one node; ``reachable`` is None until it was probed or called."""

    reachable: bool | None = None
    #: When the node last answered a probe or a real call.
    last_answer_at: datetime | None = None
    #: How long that answer took (a query's Score includes the node's encryption work).
    last_latency_ms: float | None = None
    #: The creditshare version the node reported in its last answered probe.
    version: str | None = None
    #: Why the node is unreachable (None while it answers).
    last_error: str | None = None


def failure_text(exc: grpc.aio.AioRpcError) -> str:
    """A short, secret-free reason for a failed call (``call_failure``'s, with a fixed
    hint for connection failures)."""
    failure = call_failure(exc)
    if exc.code() == grpc.StatusCode.UNAVAILABLE:
        details = (exc.details() or "").lower()
        for needle, hint in _UNAVAILABLE_HINTS:
            if needle in details:
                return f"unavailable: {hint}"
        return "unavailable"
    return _printable(failure.reason)


def _printable(text: str) -> str:
    return "".join(c if c.isprintable() else " " for c in text)[:_MAX_ERROR]


def _answered(code: grpc.StatusCode) -> bool:
    """Whether a call ending with ``code`` reached the node's code (which never answers
    UNAVAILABLE itself: ``node._service.status_for``)."""
    return code not in (
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.DEADLINE_EXCEEDED,
        grpc.StatusCode.CANCELLED,
    )


class NodeHealth:
    """The reachability of every registered node, and the rounds that probe it."""

    def __init__(
        self,
        registry: Registry,
        clock: Callable[[], datetime],
        timeout_seconds: float,
        stub: Callable[[str], NodeInfoAsyncStub] | None = None,
    ) -> None:
        self._registry = registry
        self._clock = clock
        self._timeout = timeout_seconds
        #: The node's NodeInfo stub on its query channel (set before ``run``/``probe``).
        self.stub = stub
        self._status: dict[str, NodeStatus] = {}
        #: Nodes whose address answers as another node: no real call clears that.
        self._misaddressed: set[str] = set()

    def status(self, node_id: str) -> NodeStatus:
        return self._status.get(node_id, NodeStatus())

    def chains(self) -> dict[str, ChainStatus]:
        """Per chain with registered nodes: "unreachable" when every one of its nodes is
        known unreachable (a node not probed yet counts as answering)."""
        by_chain: dict[str, list[bool | None]] = {}
        for node in self._registry.nodes:
            by_chain.setdefault(node.chain.value, []).append(self.status(node.id).reachable)
        return {
            chain: "unreachable" if all(r is False for r in seen) else "ok"
            for chain, seen in sorted(by_chain.items())
        }

    def answered(
        self, node_id: str, seconds: float, *, probed: bool = False, version: str | None = None
    ) -> None:
        """The node answered a call that took ``seconds``; a probe also says its
        ``version`` (None: a node older than the Info call)."""
        if node_id in self._misaddressed and not probed:
            return  # a real call proves someone answers, not that it is this node
        old = self.status(node_id)
        self._status[node_id] = NodeStatus(
            reachable=True,
            last_answer_at=self._clock(),
            last_latency_ms=round(seconds * 1000, 3),
            version=version if probed else old.version,
            last_error=None,
        )

    def failed(self, node_id: str, reason: str) -> None:
        old = self.status(node_id)
        if old.reachable is not False:
            log.warning("node %s is unreachable: %s", node_id, reason)
        self._status[node_id] = replace(old, reachable=False, last_error=reason)

    async def probe(self, node: NodeEntry) -> NodeStatus:
        """Ask one node its Info now and record the outcome."""
        if self.stub is None:
            raise RuntimeError("NodeHealth.stub is not set")
        started = time.perf_counter()
        try:
            reply = await self.stub(node.id).Info(node_pb2.InfoRequest(), timeout=self._timeout)
        except grpc.aio.AioRpcError as exc:
            if exc.code() == grpc.StatusCode.UNIMPLEMENTED:  # a node older than Info
                self._misaddressed.discard(node.id)
                self.answered(node.id, time.perf_counter() - started, probed=True)
            else:
                self.failed(node.id, failure_text(exc))
            return self.status(node.id)
        seconds = time.perf_counter() - started
        if reply.node_id != node.id:
            self._misaddressed.add(node.id)
            self.failed(node.id, f"answers as node {_printable(reply.node_id[:64])!r}")
            return self.status(node.id)
        was_unreachable = self.status(node.id).reachable is False
        self._misaddressed.discard(node.id)
        self.answered(node.id, seconds, probed=True, version=_printable(reply.version[:64]))
        if was_unreachable:
            log.info("node %s answers again", node.id)
        return self.status(node.id)

    async def probe_all(self) -> None:
        """One round: every node at once, each within the probe timeout."""
        await asyncio.gather(*(self.probe(n) for n in self._registry.nodes))

    async def run(self, interval: float) -> None:
        """A round now, then one every ``interval`` seconds, until cancelled."""
        while True:
            try:
                await self.probe_all()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("node probe round failed")
            await asyncio.sleep(interval)

    def call_ended(
        self,
        node: str,
        method: str,
        code: grpc.StatusCode,
        seconds: float,
        error: grpc.aio.AioRpcError | None,
    ) -> None:
        """A real call on the node's channel ended (a ``relay.CallListener``): an answer,
        even a refusal, proves the node reachable; a call that could not connect proves it
        unreachable; a missed deadline proves nothing. Probes record themselves (with the
        version), so they are skipped here."""
        if method == _INFO_METHOD:
            return
        if _answered(code):
            self.answered(node, seconds)
        elif code == grpc.StatusCode.UNAVAILABLE and error is not None:
            self.failed(node, failure_text(error))
