"""Proving a query's receipt to a node, and what a failed node call means.

Each node call carries the query's ledger receipt and a consistency proof from the
tree head that node last accepted. Another query (or replica) may have moved a node's
trusted head on meanwhile; the node then says so, with its trusted size, and the relay
re-proves the same leaf against the latest head and retries. Queries, training relays,
cosigning rounds and revocations all go through here, and all name a failed call with
the one mapping below (``call_failure``), so a status means the same thing everywhere.
"""

from __future__ import annotations

import asyncio
import time
from collections import defaultdict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import grpc

from creditshare.errors import (
    CapacityError,
    CreditShareError,
    InvalidInputError,
    LedgerError,
    NodeFailedError,
)
from creditshare.ledger import Ledger, Receipt
from creditshare.proto import node_pb2, receipt_to_pb, trusted_size_from

__all__ = ["CallFailure", "HeadKeptMovingError", "ReceiptRelay", "call_failure"]

T = TypeVar("T")
R = TypeVar("R")
_MAX_ATTEMPTS = 5
_CACHED = 256


class HeadKeptMovingError(LedgerError):
    """Every retry met a node that had meanwhile accepted a newer head (or time ran out)."""

    kind = "head_moving"


class _OutOfTimeError(HeadKeptMovingError):
    kind = "deadline_exceeded"


@dataclass(frozen=True, slots=True)
class CallFailure:
    """Why one node call failed: ``kind`` names the class (for metrics), ``reason`` says it."""

    #: ``unavailable``, ``deadline_exceeded``, ``ledger``, ``head_moving`` or a gRPC
    #: status code name in lower case.
    kind: str
    reason: str
    #: The node's own words (a gRPC status's details), if any.
    details: str = ""

    def error(self, node: str) -> CreditShareError:
        """The error a caller relaying this call raises: the node's refusal of bad input
        stays bad input, a busy node stays busy, anything else is that node failing."""
        if self.kind == "invalid_argument":
            return InvalidInputError(f"node {node}: {self.details}")
        if self.kind == "resource_exhausted":
            return CapacityError(f"node {node}: {self.details}")
        return NodeFailedError(node, self.reason)


def call_failure(exc: grpc.aio.AioRpcError | LedgerError) -> CallFailure:
    """The one mapping from a failed node call (its gRPC status, or a ledger problem
    proving the receipt) to our failure; every caller of a node uses it."""
    if isinstance(exc, HeadKeptMovingError):
        return CallFailure(exc.kind, str(exc))
    if isinstance(exc, LedgerError):
        return CallFailure("ledger", f"ledger: {exc}")
    code = exc.code()
    details = exc.details() or ""
    if code == grpc.StatusCode.DEADLINE_EXCEEDED:
        reason = "deadline exceeded"
    elif code == grpc.StatusCode.UNAVAILABLE:
        reason = "unavailable"
    else:
        reason = f"{code.name.lower()}: {details}".rstrip(": ")
    return CallFailure(code.name.lower(), reason, details)


class ReceiptRelay:
    """Knows the tree size each node trusts, and proves receipts from it."""

    def __init__(self, ledger: Ledger) -> None:
        self._ledger = ledger
        self._trusted: dict[str, int] = {}
        self._receipts: dict[tuple[int, int], Receipt] = {}
        self._proofs: dict[tuple[int, int], list[bytes]] = {}
        self._advancing: defaultdict[str, asyncio.Lock] = defaultdict(asyncio.Lock)
        #: Ledger reads in flight, by what they compute: the nodes of one query ask for
        #: the same proofs at the same moment, and share one read instead of one each.
        self._reading: dict[tuple[str, int, int], asyncio.Future[Any]] = {}
        #: The largest tree head of any receipt this relay was handed (this process's
        #: queries): a node is moved to a newer head than its receipt's only if one exists.
        self._newest = 0

    def learn(self, node_id: str, trusted_size: int) -> None:
        """What the node says now (Describe) is the truth, even if lower (a node restored
        from backup)."""
        self._trusted[node_id] = trusted_size

    async def prove(self, node_id: str, receipt: Receipt) -> tuple[node_pb2.QueryReceipt, Receipt]:
        """The receipt as this node needs it: consistency with the head it last accepted.

        Forward (trusted → receipt head) when the receipt's head is newer; backward
        (receipt head → trusted) when a concurrent query's newer head got there first,
        so the receipt stays the same and no new head is needed (see TrustedHeadTracker).
        """
        trusted = self._trusted.get(node_id, 0)
        if receipt.index < trusted < receipt.head.size:
            # The node already trusts a head that holds this leaf (a concurrent query's
            # head got there first): prove the leaf under that very head. The node keeps
            # it among the heads it accepted, so no later move of its own head can make
            # this proof stale, as a forward proof from its current size could be.
            receipt = await self._receipt_under(receipt.index, trusted)
        size = receipt.head.size
        consistency: list[bytes] = []
        if 0 < trusted < size:
            consistency = await self._consistency(trusted, size)
        elif trusted > size:
            try:
                consistency = await self._consistency(size, trusted)
            except InvalidInputError as exc:
                raise LedgerError(
                    f"node trusts a tree of size {trusted}, larger than this log: {exc}"
                ) from exc
        return receipt_to_pb(receipt, trusted, consistency), receipt

    async def _receipt_under(self, index: int, size: int) -> Receipt:
        """Leaf ``index`` proven under the stored head of ``size``; shared by the nodes
        of a query, which usually trust the same size."""
        cached = self._receipts.get((index, size))
        if cached is None:
            cached = await self._read(("receipt_at", index, size), self._ledger.receipt_at)
            self._receipts[(index, size)] = cached
            while len(self._receipts) > _CACHED:
                self._receipts.pop(next(iter(self._receipts)))
        return cached

    async def _read(self, what: tuple[str, int, int], read: Callable[[int, int], R]) -> R:
        """``read(*what[1:])`` off the event loop, shared by every caller asking the same
        while it runs: a proof depends only on ``what`` (the log is append-only), and a
        receipt under the latest head is as good for one node as for the next."""
        pending = self._reading.get(what)
        if pending is None:
            pending = asyncio.ensure_future(asyncio.to_thread(read, what[1], what[2]))
            self._reading[what] = pending
            pending.add_done_callback(lambda _: self._reading.pop(what, None))
        result: R = await asyncio.shield(pending)
        return result

    async def _consistency(self, old: int, new: int) -> list[bytes]:
        """Consistency proofs never change (the log is append-only), and the nodes of one
        query usually trust the same size: compute each (old, new) proof once."""
        cached = self._proofs.get((old, new))
        if cached is None:
            cached = await self._read(("consistency", old, new), self._ledger.consistency_proof)
            self._proofs[(old, new)] = cached
            while len(self._proofs) > _CACHED:
                self._proofs.pop(next(iter(self._proofs)))
        return cached

    async def call_with_receipt(
        self,
        node_id: str,
        receipt: Receipt,
        invoke: Callable[[node_pb2.QueryReceipt, float], Awaitable[T]],
        seconds: float,
        *,
        exclusive: bool = True,
    ) -> T:
        """Call a node with a receipt, re-proving against a newer head if it asks to.

        A call that must move the node's head forward needs a proof from the exact
        size the node trusts, and concurrent calls moving it too would make each
        other's proofs stale. So this relay moves a node's head one call at a time
        (``exclusive``; long training calls opt out and rely on retries), and to the
        newest head, so calls queued behind find their leaves covered and go
        concurrently. The lock is this process's: replicas can still race, and retry.

        gRPC errors other than a stale head propagate; ledger problems raise
        LedgerError; a head that keeps moving past every retry raises HeadKeptMovingError.
        """
        deadline = time.monotonic() + seconds
        self._newest = max(self._newest, receipt.head.size)
        for _attempt in range(_MAX_ATTEMPTS):
            if not exclusive or receipt.index < self._trusted.get(node_id, 0):
                # The node's head already holds the leaf: nothing can make this stale.
                outcome = await self._attempt(node_id, receipt, invoke, deadline)
            else:
                outcome = await self._advance(node_id, receipt, invoke, deadline)
            if outcome is not None:
                return outcome[0]
        raise HeadKeptMovingError("failed_precondition: tree head kept moving; gave up")

    async def _advance(
        self,
        node_id: str,
        receipt: Receipt,
        invoke: Callable[[node_pb2.QueryReceipt, float], Awaitable[T]],
        deadline: float,
    ) -> tuple[T] | None:
        """One call that moves the node's head to the newest one, under the node's lock."""
        lock = self._advancing[node_id]
        try:
            async with asyncio.timeout(max(0.0, deadline - time.monotonic())):
                await lock.acquire()
        except TimeoutError:
            raise _OutOfTimeError("deadline exceeded") from None
        try:
            if receipt.index >= self._trusted.get(node_id, 0) and receipt.head.size < self._newest:
                # Another query appended since: prove this leaf under the newest head, so
                # that query's calls find their leaves covered. One read per leaf and
                # moment, whatever the number of nodes moving at once.
                receipt = await self._read(("latest", receipt.index, 0), self._latest)
            return await self._attempt(node_id, receipt, invoke, deadline)
        finally:
            lock.release()

    def _latest(self, index: int, _: int) -> Receipt:
        return self._ledger.receipt(index)

    async def _attempt(
        self,
        node_id: str,
        receipt: Receipt,
        invoke: Callable[[node_pb2.QueryReceipt, float], Awaitable[T]],
        deadline: float,
    ) -> tuple[T] | None:
        """One call; None when the node said its head moved (it is then known here)."""
        proof, receipt = await self.prove(node_id, receipt)
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise _OutOfTimeError("deadline exceeded")
        try:
            result = await invoke(proof, remaining)
        except grpc.aio.AioRpcError as exc:
            trusted = (
                trusted_size_from(exc.trailing_metadata())
                if exc.code() == grpc.StatusCode.FAILED_PRECONDITION
                else None
            )
            if trusted is None:
                raise
            # The node's answer is the truth about the size we proved from, even when it
            # is lower (a node restored from backup): else every retry repeats this proof.
            # Answers to other, concurrent calls may arrive late: those only raise it.
            known = self._trusted.get(node_id, 0)
            self._trusted[node_id] = (
                trusted if known == proof.consistency_from else max(known, trusted)
            )
            return None
        self._trusted[node_id] = max(self._trusted.get(node_id, 0), receipt.head.size)
        return (result,)
