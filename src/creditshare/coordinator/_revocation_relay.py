"""Handing enterprises' signed consent revocations to the nodes, until each holds one.

A revocation the coordinator enforces alone protects the enterprise only while the
coordinator stays honest. Each node that holds the enterprise's signed revocation
refuses the consent itself, whoever asks later. So the relay keeps trying: at once when
the enterprise revokes, then every ``revocation_relay_interval_seconds`` for each node
of the consent's chains that does not hold it yet (down, paused, unreachable), until the
consent would have expired anyway. Which node holds which revocation is stored, so
replicas share the work and a restart forgets nothing.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime

from sqlalchemy import insert
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col, select

from creditshare._canonical import canonical_json
from creditshare.consent import ConsentGrant
from creditshare.coordinator._credentials import CredentialStore
from creditshare.coordinator._db import ConsentRow, RevocationDeliveryRow
from creditshare.coordinator._registry import Registry
from creditshare.coordinator._settings import NodeEntry
from creditshare.coordinator.relay import QueryBroker

__all__ = ["RevocationRelay"]

log = logging.getLogger("creditshare.coordinator")
#: Revoked consents one background round looks at (the oldest undelivered first).
_ROUND_LIMIT = 500


def _utc(moment: datetime) -> datetime:
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


class RevocationRelay:
    def __init__(
        self,
        engine: Engine,
        broker: QueryBroker,
        registry: Registry,
        credentials: CredentialStore,
        clock: Callable[[], datetime],
    ) -> None:
        self._engine = engine
        self._broker = broker
        self._registry = registry
        self._credentials = credentials
        self._clock = clock

    def _nodes(self, row: ConsentRow) -> list[NodeEntry]:
        grant = ConsentGrant.from_document(row.document)
        wanted = set(grant.chains)
        return [n for n in self._registry.nodes if n.chain in wanted]

    def holders(self, consent_id: str) -> set[str]:
        with Session(self._engine) as session:
            rows = session.exec(
                select(RevocationDeliveryRow.node_id).where(
                    RevocationDeliveryRow.consent_id == consent_id
                )
            )
            return set(rows)

    def status(self, row: ConsentRow) -> list[tuple[NodeEntry, bool]]:
        """Each node of the consent's chains, and whether it holds the revocation."""
        if row.revocation is None:
            return []
        held = self.holders(row.id)
        return [(node, node.id in held) for node in self._nodes(row)]

    async def deliver(self, row: ConsentRow) -> list[tuple[NodeEntry, str | None]]:
        """Hand ``row``'s signed revocation to each node of its chains that does not hold it
        yet; every node of those chains with ``None`` (holds it) or why not."""
        if row.revocation is None:
            return []
        held = await asyncio.to_thread(self.holders, row.id)
        pending = [n for n in self._nodes(row) if n.id not in held]
        outcome: dict[str, str | None] = {n.id: None for n in self._nodes(row) if n.id in held}
        if pending:
            credentials = await asyncio.to_thread(self._credentials.for_nodes, None, row.uscc)
            results = await self._broker.revoke_consent(
                pending, canonical_json(row.revocation), credentials
            )
            for node, reason in results:
                outcome[node.id] = reason
                if reason is None:
                    await asyncio.to_thread(self._delivered, row.id, node.id)
                else:
                    log.info("revocation of a consent not yet held by %s: %s", node.id, reason)
        return [(node, outcome.get(node.id, "not asked")) for node in self._nodes(row)]

    def _delivered(self, consent_id: str, node_id: str) -> None:
        table = RevocationDeliveryRow.__table__  # type: ignore[attr-defined]
        try:
            with self._engine.begin() as connection:
                connection.execute(
                    insert(table).values(
                        consent_id=consent_id, node_id=node_id, delivered_at=self._clock()
                    )
                )
        except IntegrityError:
            pass  # another replica recorded it first

    def _undelivered(self) -> list[ConsentRow]:
        """Revoked consents, still within their validity, that some node may not hold."""
        with Session(self._engine) as session:
            rows = list(
                session.exec(
                    select(ConsentRow)
                    .where(col(ConsentRow.revocation).is_not(None))
                    .order_by(col(ConsentRow.revoked_at))
                )
            )
            now = self._clock()  # compared here: SQLite keeps these times without a zone
            rows = [r for r in rows if _utc(r.valid_until) > now]
            held = Counter(
                session.exec(
                    select(RevocationDeliveryRow.consent_id).where(
                        col(RevocationDeliveryRow.consent_id).in_([r.id for r in rows])
                    )
                )
            )
        return [r for r in rows if held[r.id] < len(self._nodes(r))][:_ROUND_LIMIT]

    async def round(self) -> int:
        """One pass over undelivered revocations; how many nodes newly hold one."""
        delivered = 0
        for row in await asyncio.to_thread(self._undelivered):
            results = await self.deliver(row)
            delivered += sum(1 for _, reason in results if reason is None)
        return delivered

    async def run(self, interval: float) -> None:
        """Rounds every ``interval`` seconds until cancelled; a failing round is logged."""
        while True:
            try:
                await self.round()
            except Exception:
                log.exception("revocation relay round failed")
            await asyncio.sleep(interval)
