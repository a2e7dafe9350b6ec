"""Collecting the data nodes' cosignatures on tree heads, and publishing them.

Each round asks every node to cosign the latest head, with a consistency proof from
the head that node trusts (the broker's ``call_with_receipt`` proves, re-proves once
a node says its head moved, and serialises head moves with the query path). What a
node returns is checked here against the witness key it reported in ``Describe``
before it is stored: a node that answers garbage is named, never published. A slow
or refusing node is named too, and never holds the round past the node deadline.

The rounds run every ``witness_interval_seconds`` in the background and on demand
(``POST /v1/ledger/cosign``). One round at a time per process; replicas each run
theirs and share the stored cosignatures.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime

import grpc

from creditshare.coordinator._cosignatures import CosignatureStore
from creditshare.coordinator._registry import Registry
from creditshare.coordinator._settings import NodeEntry
from creditshare.coordinator.relay import QueryBroker, call_failure
from creditshare.errors import CreditShareError, LedgerError, NotFoundError
from creditshare.ledger import (
    Cosignature,
    EmptyLogError,
    Ledger,
    SignedTreeHead,
    WitnessKey,
    checkpoint_body,
    checkpoint_note,
    log_origin,
    verify_cosignature,
)
from creditshare.proto import head_from_pb, node_pb2

__all__ = ["CosignRound", "WitnessCollector", "WitnessedHead"]

log = logging.getLogger("creditshare.coordinator")

#: A node that reports no witness key serves queries but is no witness.
NO_WITNESS_KEY = "no witness key"


@dataclass(frozen=True, slots=True)
class WitnessedHead:
    """A head with the verified cosignatures stored for exactly its root."""

    head: SignedTreeHead
    cosignatures: tuple[Cosignature, ...]


@dataclass(frozen=True, slots=True)
class CosignRound:
    """What one round collected: the latest head's size when it began, each head cosigned
    (usually that one), and each node that did not cosign, with why."""

    size: int
    heads: tuple[WitnessedHead, ...]
    failures: tuple[tuple[str, str], ...]


class WitnessCollector:
    def __init__(
        self,
        registry: Registry,
        broker: QueryBroker,
        ledger: Ledger,
        store: CosignatureStore,
        deadline_seconds: float,
        clock: Callable[[], datetime],
    ) -> None:
        self._registry = registry
        self._broker = broker
        self._ledger = ledger
        self._store = store
        self._deadline = deadline_seconds
        self._clock = clock
        self._origin = log_origin(ledger.public_key)
        self._keys: dict[str, WitnessKey | None] = {}
        self._running: asyncio.Task[CosignRound] | None = None
        self._last: tuple[int, bool] | None = None

    @property
    def origin(self) -> str:
        return self._origin

    async def _witness_key(self, node: NodeEntry, refresh: bool = False) -> WitnessKey | None:
        """The witness key the node reports (cached; ``refresh`` asks again)."""
        if refresh or node.id not in self._keys:
            reply = await self._broker.stub(node.id).Describe(
                node_pb2.DescribeRequest(), timeout=self._deadline
            )
            key = WitnessKey.parse(reply.witness_vkey) if reply.witness_vkey else None
            if key is not None and key.name != node.id:
                raise LedgerError(f"invalid witness key: it is named {key.name!r}, not {node.id!r}")
            self._keys[node.id] = key
        return self._keys[node.id]

    async def _ask(
        self, node: NodeEntry, head: SignedTreeHead
    ) -> tuple[SignedTreeHead, Cosignature] | str:
        """One node's cosignature (and the head it covers), or why there is none."""
        try:
            async with asyncio.timeout(self._deadline):
                key = await self._witness_key(node)
                if key is None:
                    return NO_WITNESS_KEY
                receipt = await asyncio.to_thread(self._ledger.receipt, head.size - 1, head)
                sent: list[SignedTreeHead] = []

                async def add(
                    proof: node_pb2.QueryReceipt, left: float
                ) -> node_pb2.AddCheckpointResponse:
                    sent.append(head_from_pb(proof.tree_head))
                    request = node_pb2.AddCheckpointRequest(
                        old_size=proof.consistency_from,
                        consistency_proof=proof.consistency_proof,
                        tree_head=proof.tree_head,
                    )
                    return await self._broker.stub(node.id).AddCheckpoint(request, timeout=left)

                reply = await self._broker.call_with_receipt(node.id, receipt, add, self._deadline)
        except TimeoutError:
            return "deadline exceeded"
        except grpc.aio.AioRpcError as exc:
            if exc.code() == grpc.StatusCode.NOT_FOUND:
                self._keys.pop(node.id, None)  # the node may have lost (or got) a key
            return call_failure(exc).reason
        except CreditShareError as exc:  # the head kept moving, out of time, a bad vkey
            self._keys.pop(node.id, None)  # ask for its key again next round
            return str(exc)
        cosigned = sent[-1]
        if (reply.tree_size, reply.root) != (cosigned.size, cosigned.root):
            return f"cosigned size {reply.tree_size}, not the head of size {cosigned.size} sent"
        try:
            cosignature = Cosignature(reply.witness, reply.key_id, reply.timestamp, reply.signature)
            verify_cosignature(key, cosignature, checkpoint_body(cosigned, self._origin))
        except CreditShareError as exc:
            self._keys.pop(node.id, None)  # ask for its key again next round
            log.warning("witness %s sent an invalid cosignature: %s", node.id, exc)
            return f"invalid cosignature: {exc}"
        return cosigned, cosignature

    async def cosign_round(self) -> CosignRound:
        """Ask every node to cosign the latest head now; store and return what came back.

        Callers arriving while a round runs share its outcome rather than queueing rounds
        of their own: the trigger is open to every participant, the nodes' work is not.
        """
        while True:
            running = self._running
            if running is None or running.done():
                self._running = running = asyncio.create_task(self._round())
                return await asyncio.shield(running)
            shared = await asyncio.shield(running)
            if shared.size >= await asyncio.to_thread(self._ledger.size):
                return shared
            # That round began before the head this caller may need: run (or join) another.

    async def _round(self) -> CosignRound:
        try:
            head = await asyncio.to_thread(self._ledger.latest_head)
        except EmptyLogError:
            raise NotFoundError("the ledger is empty: there is no tree head to cosign") from None
        nodes = list(self._registry.nodes)
        outcomes = await asyncio.gather(*(self._ask(n, head) for n in nodes))
        by_head: dict[tuple[int, bytes], tuple[SignedTreeHead, list[Cosignature]]] = {}
        failures: list[tuple[str, str]] = []
        for node, outcome in zip(nodes, outcomes, strict=True):
            if isinstance(outcome, str):
                failures.append((node.id, outcome))
                continue
            cosigned, cosignature = outcome
            by_head.setdefault((cosigned.size, cosigned.root), (cosigned, []))[1].append(
                cosignature
            )
        now = self._clock()
        for cosigned, cosignatures in by_head.values():
            await asyncio.to_thread(self._store.add, cosigned, cosignatures, now)
        for node_id, reason in failures:
            if reason != NO_WITNESS_KEY:
                log.warning(
                    "witness %s did not cosign the head of size %d: %s",
                    node_id,
                    head.size,
                    reason,
                )
        log.info(
            "cosign round at size %d: %d cosignature(s), %d node(s) without",
            head.size,
            sum(len(c) for _, c in by_head.values()),
            len(failures),
        )
        self._last = (head.size, all(r == NO_WITNESS_KEY for _, r in failures))
        heads = tuple(WitnessedHead(h, tuple(c)) for h, c in by_head.values())
        return CosignRound(head.size, heads, tuple(failures))

    async def stop(self) -> None:
        """Cancel a round under way (at shutdown, before the node channels close)."""
        running = self._running
        if running is not None and not running.done():
            running.cancel()
            with contextlib.suppress(asyncio.CancelledError, CreditShareError):
                await running

    async def run(self, interval: float) -> None:
        """Rounds every ``interval`` seconds until cancelled; a round is skipped while the
        head is unchanged and every node cosigned it last time."""
        while True:
            await asyncio.sleep(interval)
            try:
                head_size = await asyncio.to_thread(self._ledger.size)
                if head_size == 0 or self._last == (head_size, True):
                    continue
                await self.cosign_round()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("cosign round failed")

    def witnessed(self) -> WitnessedHead | None:
        """The newest head with stored cosignatures over its own root; blocking."""
        for size, root, cosignatures in self._store.newest():
            head = self._ledger.storage.head(size)
            if head is not None and head.root == root:
                return WitnessedHead(head, tuple(cosignatures))
        return None

    def checkpoint(self) -> str:
        """The C2SP text of the newest witnessed head (the latest head if none); blocking."""
        witnessed = self.witnessed()
        if witnessed is None:
            return checkpoint_note(self._ledger.latest_head(), self._ledger.public_key)
        return checkpoint_note(witnessed.head, self._ledger.public_key, witnessed.cosignatures)
