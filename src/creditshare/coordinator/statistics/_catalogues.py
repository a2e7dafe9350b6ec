"""What each department's nodes let a regulator ask: their ``Catalogue`` answers.

A node's catalogue is checked before it is believed (the coordinator does not trust a
node to keep it small or well-formed: it names itself, its department and chain, and
its digest is the SHA-256 of the bytes it sent), parsed with ``Catalogue.from_bytes``
and cached per node for ``_FRESH_SECONDS``, as ``Describe`` answers are. A query is
planned against the catalogue every node of its department agrees on: nodes that
publish different catalogues would size their answers differently, so that is a 502
naming them rather than a guess.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import grpc

from creditshare.coordinator._settings import NodeEntry
from creditshare.coordinator.relay import call_failure
from creditshare.errors import InvalidInputError, NodeFailedError, NoNodeAnsweredError
from creditshare.proto import statistics_pb2
from creditshare.statistics import Catalogue

if TYPE_CHECKING:
    from creditshare.proto.creditshare.v1.statistics_pb2_grpc import CohortStatisticsAsyncStub

__all__ = ["MAX_CATALOGUE_BYTES", "DepartmentCatalogue", "StatisticsCatalogues"]

log = logging.getLogger("creditshare.coordinator")

#: A catalogue is a few dimensions with their levels and a few summable columns: far
#: below this. A node sending more is not running a checked schema.
MAX_CATALOGUE_BYTES = 256 * 1024
#: How long a node's catalogue is used before it is asked again (its schema changes only
#: when it restarts; a regulator who read an older one is told the digest moved).
_FRESH_SECONDS = 60.0


@dataclass(frozen=True, slots=True)
class DepartmentCatalogue:
    """The catalogue a department's answering nodes agree on."""

    department: str
    catalogue: Catalogue
    data: bytes
    digest: str
    #: The nodes that published it (those that did not answer are left out).
    nodes: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class _Published:
    at: float
    catalogue: Catalogue
    data: bytes
    digest: str


def _checked(node: NodeEntry, reply: statistics_pb2.CatalogueResponse, at: float) -> _Published:
    """The node's answer as a catalogue, or InvalidInputError saying what is wrong."""
    if reply.node_id != node.id:
        raise InvalidInputError(f"catalogue claims to come from node {reply.node_id[:64]!r}")
    if reply.department != node.department or reply.chain != node.chain:
        raise InvalidInputError(
            f"catalogue is for {reply.department[:32]!r} on {reply.chain[:16]!r}, but the "
            f"node is registered as {node.department} on {node.chain}"
        )
    if len(reply.catalogue) > MAX_CATALOGUE_BYTES:
        raise InvalidInputError(f"catalogue is over {MAX_CATALOGUE_BYTES} bytes")
    digest = hashlib.sha256(reply.catalogue).hexdigest()
    if reply.digest != digest:
        raise InvalidInputError("catalogue digest is not the SHA-256 of the catalogue sent")
    catalogue = Catalogue.from_bytes(reply.catalogue)
    if catalogue.department != node.department:
        raise InvalidInputError(f"catalogue names department {catalogue.department[:32]!r}")
    if catalogue.digest != digest:
        raise InvalidInputError("catalogue is not in its canonical form")
    return _Published(at, catalogue, bytes(reply.catalogue), digest)


class StatisticsCatalogues:
    """Each node's checked catalogue, fetched when missing or stale."""

    def __init__(
        self,
        stubs: Mapping[str, CohortStatisticsAsyncStub],
        deadline_seconds: float,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self._stubs = stubs
        self._deadline = deadline_seconds
        self._monotonic = monotonic
        self._published: dict[str, _Published] = {}

    async def _fetch(self, node: NodeEntry) -> _Published | str:
        """The node's catalogue, or why there is none."""
        cached = self._published.get(node.id)
        if cached is not None and self._monotonic() - cached.at < _FRESH_SECONDS:
            return cached
        try:
            reply = await self._stubs[node.id].Catalogue(
                statistics_pb2.CatalogueRequest(), timeout=self._deadline
            )
        except grpc.aio.AioRpcError as exc:
            reason = call_failure(exc).reason
            log.warning("statistics catalogue of %s failed: %s", node.id, reason)
            return reason
        try:
            published = _checked(node, reply, self._monotonic())
        except InvalidInputError as exc:
            log.warning("statistics catalogue of %s refused: %s", node.id, exc)
            return f"invalid catalogue: {exc}"
        self._published[node.id] = published
        return published

    def forget(self, node_id: str) -> None:
        """Ask the node again next time (it refused a query's catalogue digest)."""
        self._published.pop(node_id, None)

    async def of(self, department: str, nodes: Sequence[NodeEntry]) -> DepartmentCatalogue:
        """The catalogue ``nodes`` (all of ``department``) agree on.

        NoNodeAnsweredError (503) when none answered; NodeFailedError (502) naming the
        nodes that publish another catalogue than the others.
        """
        outcomes = await asyncio.gather(*(self._fetch(n) for n in nodes))
        by_digest: dict[str, list[tuple[NodeEntry, _Published]]] = {}
        failures = []
        for node, outcome in zip(nodes, outcomes, strict=True):
            if isinstance(outcome, str):
                failures.append({"node": node.id, "reason": outcome})
            else:
                by_digest.setdefault(outcome.digest, []).append((node, outcome))
        if not by_digest:
            raise NoNodeAnsweredError(failures)
        if len(by_digest) > 1:
            groups = sorted(by_digest.values(), key=lambda g: (-len(g), g[0][0].id))
            odd = sorted(n.id for group in groups[1:] for n, _ in group)
            described = "; ".join(
                f"{', '.join(sorted(n.id for n, _ in g))} publish {g[0][1].digest[:12]}…"
                for g in groups
            )
            raise NodeFailedError(
                ", ".join(odd),
                f"the {department} nodes publish different statistics catalogues ({described}): "
                "their operators must run one schema",
            )
        ((digest, members),) = by_digest.items()
        published = members[0][1]
        return DepartmentCatalogue(
            department,
            published.catalogue,
            published.data,
            digest,
            tuple(sorted(n.id for n, _ in members)),
        )
