"""Monitoring cycles: commit to the subscription set in the ledger, ask every node.

One cycle: end subscriptions whose consent lapsed → claim the next cycle number (a
row insert: two replicas on one database cannot run the same cycle, and a second
cycle does not start while one runs) → Watch subscriptions a node does not hold yet
(it was down) → per node the digest of the subscriptions it serves, the cycle digest
over them → ledger record (kind ``monitoring_cycle``, depending on the subscription
set only, never on events) → Monitor every node at once under that receipt, each told
the newest cycle of its answers stored here (acknowledged) → per node, one transaction
stores its sealed batches and its new acknowledged cycle. A node that fails is named
in the summary; its events wait on the node for a later cycle.

Each request also lists the subscriptions ended here that the node still has registered
(``ended``): without it a node would go on detecting and keeping events for them for
ever. A node is asked (with an empty subscription list) while it has ends to take, and
each end is repeated until that node's answer is stored, then its registration released.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import uuid
from collections import Counter
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any

from sqlalchemy import func, insert, update
from sqlalchemy import select as core_select
from sqlalchemy.engine import Engine
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col, select

from creditshare.coordinator._settings import NodeEntry
from creditshare.coordinator.monitoring._alerts import AlertHub, AlertStore
from creditshare.coordinator.monitoring._nodes import (
    SCORE,
    NodeAnswer,
    in_scope,
    monitor,
    scoring,
)
from creditshare.coordinator.monitoring._subscriptions import PURPOSE, Subscriptions
from creditshare.coordinator.monitoring._tables import CycleRow, SubscriptionRow
from creditshare.crypto import Ciphertext, FixedPointEncoding, PublicKey
from creditshare.errors import ConflictError, CreditShareError
from creditshare.ledger import QueryRecord
from creditshare.monitoring import cycle_digest, node_digest
from creditshare.proto import monitoring_pb2

if TYPE_CHECKING:
    from creditshare.coordinator._services import Services

__all__ = ["CycleRunner"]

log = logging.getLogger("creditshare.coordinator")
_CYCLE: Any = CycleRow.__table__  # type: ignore[attr-defined]
#: A cycle unfinished for this long is taken for a crashed replica's: the next may start.
_STALE = timedelta(minutes=15)
#: A Monitor call seals one batch per subscription: give it at least this long, plus
#: ``_PER_SUBSCRIPTION`` for each subscription it serves (a node serving thousands
#: seals and, for score_change, encrypts thousands of values, on a busy host too).
_MONITOR_FLOOR = 30.0
_PER_SUBSCRIPTION = 0.02
#: Subscriptions registered at once before a cycle (a node back after a long outage may
#: lack thousands; each registration Watches its few nodes at once).
_REGISTERING = 16
#: Ended subscriptions told to one node per cycle (the rest in the next ones).
_ENDS_PER_NODE = 10_000
#: The ledger subject of cycle records: in no enterprise's access log.
SUBJECT = "monitoring:cycle"


def _model_of(row: SubscriptionRow) -> str:
    """The model a subscription watches the score of ("" without score_change)."""
    return str(row.signed["document"].get("model_id", ""))


def _fingerprint_of(row: SubscriptionRow) -> str:
    return str(row.signed["document"].get("key_fingerprint", ""))


def claim(engine: Engine, now: datetime) -> tuple[int, str]:
    """The next cycle number, claimed by inserting its row; ConflictError while another
    cycle runs (or when another replica claimed the same number first)."""
    busy = ConflictError("a monitoring cycle is running; try again when it has finished")
    cycle_id = uuid.uuid4().hex
    try:
        with engine.begin() as conn:
            latest = conn.execute(
                core_select(_CYCLE.c.number, _CYCLE.c.finished_at, _CYCLE.c.started_at)
                .order_by(_CYCLE.c.number.desc())
                .limit(1)
            ).first()
            if latest is not None and latest[1] is None and now - latest[2] < _STALE:
                raise busy
            number = (latest[0] if latest is not None else 0) + 1
            conn.execute(
                insert(_CYCLE).values(
                    number=number,
                    id=cycle_id,
                    started_at=now,
                    finished_at=None,
                    ledger_index=-1,
                    subscriptions=0,
                    nodes=[],
                )
            )
    except IntegrityError:
        raise busy from None
    return number, cycle_id


class CycleRunner:
    def __init__(
        self,
        services: Services,
        subscriptions: Subscriptions,
        alerts: AlertStore,
        hub: AlertHub,
        clock: Callable[[], datetime],
    ) -> None:
        self._services = services
        self._subscriptions = subscriptions
        self._alerts = alerts
        self._hub = hub
        self._clock = clock
        self._engine = services.engine

    # -- reading -------------------------------------------------------------------------

    def recent(self, limit: int) -> list[CycleRow]:
        with Session(self._engine) as session:
            return list(
                session.exec(select(CycleRow).order_by(col(CycleRow.number).desc()).limit(limit))
            )

    def _last_started(self) -> datetime | None:
        with self._engine.connect() as conn:
            value: datetime | None = conn.execute(
                core_select(func.max(_CYCLE.c.started_at))
            ).scalar()
        return value

    def _finish(self, number: int, **values: Any) -> CycleRow:
        with self._engine.begin() as conn:
            conn.execute(update(_CYCLE).where(_CYCLE.c.number == number).values(**values))
        with Session(self._engine) as session:
            row = session.get(CycleRow, number)
            assert row is not None
            return row

    # -- running -------------------------------------------------------------------------

    async def _scopes(
        self, rows: list[SubscriptionRow]
    ) -> dict[str, tuple[NodeEntry, list[SubscriptionRow]]]:
        """Per node, the subscriptions it holds (Watching those it does not hold yet)."""
        services = self._services
        store = self._subscriptions.store
        nodes = services.registry.nodes
        await services.broker.channels.describe_missing(nodes, 30.0)
        catalogues = services.broker.catalogues
        held = await asyncio.to_thread(store.registrations, [r.id for r in rows])
        scopes: dict[str, tuple[NodeEntry, list[SubscriptionRow]]] = {}
        missing: list[tuple[SubscriptionRow, list[NodeEntry]]] = []
        for row in rows:
            types = {s["type"] for s in row.signals}
            wanted = in_scope(row.chains, types, nodes, catalogues, _model_of(row))
            absent = [n for n in wanted if not held.get(row.id, {}).get(n.id, False)]
            if absent:
                missing.append((row, absent))
            for node in wanted:
                scopes.setdefault(node.id, (node, []))
        # Watch fails at once on a channel in reconnect backoff (a node just back): wait
        # for each node to register on, within the deadline, so it gets them this cycle.
        wanting = {n.id: n for _, absent in missing for n in absent}
        deadline = services.settings.node_deadline_seconds
        channels = services.broker.channels
        ready = await asyncio.gather(*(channels.ready(n, deadline) for n in wanting))
        reachable = {n for n, ok in zip(wanting, ready, strict=True) if ok}
        gate = asyncio.Semaphore(_REGISTERING)

        async def register(row: SubscriptionRow, absent: list[NodeEntry]) -> list[str]:
            reached = [n for n in absent if n.id in reachable]
            if not reached:
                return []
            async with gate:
                return await self._subscriptions.register(row, reached, quiet=True)

        newly = await asyncio.gather(*(register(row, absent) for row, absent in missing))
        pending = Counter(
            n.id
            for (_, absent), ids in zip(missing, newly, strict=True)
            for n in absent
            if n.id not in ids
        )
        for node_id, count in sorted(pending.items()):
            log.info("%d subscriptions are not yet registered on %s", count, node_id)
        for (row, _), ids in zip(missing, newly, strict=True):
            for node_id in ids:
                held.setdefault(row.id, {})[node_id] = True
        for row in rows:
            for node_id, registered in held.get(row.id, {}).items():
                if registered and node_id in scopes:
                    scopes[node_id][1].append(row)
        return {k: v for k, v in scopes.items() if v[1]}

    async def run(self) -> CycleRow:
        """One cycle now; its summary. ConflictError while another cycle runs."""
        await self._subscriptions.sweep()
        number, cycle_id = await asyncio.to_thread(claim, self._engine, self._clock())
        try:
            return await self._run(number, cycle_id)
        except BaseException:
            await asyncio.to_thread(self._finish, number, finished_at=self._clock())
            raise

    async def _run(self, number: int, cycle_id: str) -> CycleRow:
        services = self._services
        store = self._subscriptions.store
        rows = await asyncio.to_thread(store.active)
        scopes = await self._scopes(rows)
        # Ended subscriptions still registered on a node: told to it this cycle (a node
        # with nothing else to serve is asked with an empty list), released once its
        # answer is stored, so it stops detecting and drops their events.
        ends = await asyncio.to_thread(store.pending_ends, _ENDS_PER_NODE)
        entries = {n.id: n for n in services.registry.nodes}
        for node_id in ends:
            if node_id not in scopes and node_id in entries:
                scopes[node_id] = (entries[node_id], [])
        served = {node_id: {r.id: r.digest for r in subs} for node_id, (_, subs) in scopes.items()}
        digests = {node_id: node_digest(subs) for node_id, subs in served.items()}
        asked = sorted(scopes)
        record = QueryRecord(
            kind="monitoring_cycle",
            query_id=cycle_id,
            time=self._clock(),
            uscc="",
            requester="coordinator",
            requester_role="operator",
            purpose=PURPOSE,
            consent_id="",
            model_id="",
            key_fingerprint="",
            chains=tuple(sorted({scopes[n][0].chain for n in asked})),
            indicators=(),
            cycle={"number": number, "digest": cycle_digest(digests), "nodes": asked},
        )
        receipt = await services.ledger.append_async(record.to_bytes(), SUBJECT)
        counted = sum(len(subs) for _, subs in scopes.values())
        await asyncio.to_thread(
            self._finish, number, ledger_index=receipt.index, subscriptions=len(rows)
        )
        acks = await asyncio.to_thread(self._alerts.acknowledged)
        credentials = await asyncio.to_thread(services.credentials.for_nodes, None, None)
        node_digests = [monitoring_pb2.NodeDigest(node_id=n, digest=digests[n]) for n in asked]
        deadline = max(services.settings.node_deadline_seconds, _MONITOR_FLOOR)

        catalogues = services.broker.catalogues
        scored = {
            node_id: {r.id for r in subs if scoring(node, catalogues, _model_of(r))}
            for node_id, (node, subs) in scopes.items()
        }

        async def ask(node: NodeEntry, subs: list[SubscriptionRow]) -> NodeAnswer | str:
            request = monitoring_pb2.MonitorRequest(
                scale=services.settings.scale,
                cycle=number,
                subscriptions=[
                    monitoring_pb2.CycleSubscription(subscription_id=r.id, digest=r.digest)
                    for r in sorted(subs, key=lambda r: r.id)
                ],
                node_digests=node_digests,
                acknowledged_cycle=acks.get(node.id, 0),
                credentials=credentials,
                ended=ends.get(node.id, []),
            )
            seconds = deadline + _PER_SUBSCRIPTION * len(subs)
            return await monitor(
                services.broker,
                node,
                request,
                receipt,
                seconds,
                scored[node.id],
                connect=services.settings.node_deadline_seconds,
            )

        answers = await asyncio.gather(*(ask(*scopes[n]) for n in asked))
        summary = []
        banks = {r.id: r.bank for r in rows}
        for node_id, answer in zip(asked, answers, strict=True):
            summary.append(await self._store(number, node_id, answer, banks, ends.get(node_id, [])))
        by_node = dict(zip(asked, answers, strict=True))
        await asyncio.to_thread(self._store_scores, number, rows, scored, by_node)
        log.info(
            "monitoring cycle %d: %d subscriptions on %d nodes, %d failed",
            number,
            counted,
            len(asked),
            sum(1 for s in summary if s["error"] is not None),
        )
        row = await asyncio.to_thread(
            self._finish, number, finished_at=self._clock(), nodes=summary
        )
        self._hub.notify()
        return row

    async def _store(
        self,
        number: int,
        node_id: str,
        answer: NodeAnswer | str,
        banks: dict[str, str],
        ended: list[str],
    ) -> dict[str, Any]:
        if isinstance(answer, str):
            # The failure's class only in the log (the summary keeps the node's words).
            kind = answer.partition(":")[0]
            log.warning("monitoring cycle %d: node %s failed (%s)", number, node_id, kind)
            return {"node": node_id, "batches": 0, "unknown": 0, "ended": 0, "error": answer}
        try:
            await asyncio.to_thread(
                self._alerts.store_answer, answer.node, number, answer.batches, banks, self._clock()
            )
        except Exception as exc:  # not stored, so not acknowledged: the node sends them again
            log.exception("monitoring cycle %d: storing node %s's answer failed", number, node_id)
            error = f"could not store its answer: {type(exc).__name__}"
            return {"node": node_id, "batches": 0, "unknown": 0, "ended": 0, "error": error}
        if ended:  # the node has taken these ends: not told again
            await asyncio.to_thread(
                self._subscriptions.store.set_registered,
                [(sid, node_id) for sid in ended],
                False,
            )
        if answer.unknown:  # Watch them again next cycle
            await asyncio.to_thread(
                self._subscriptions.store.set_registered,
                [(sid, node_id) for sid in answer.unknown],
                False,
            )
        return {
            "node": node_id,
            "batches": len(answer.batches),
            "unknown": len(answer.unknown),
            "ended": len(answer.ended),
            "error": None,
        }

    def _store_scores(
        self,
        number: int,
        rows: list[SubscriptionRow],
        scored: dict[str, set[str]],
        answers: dict[str, NodeAnswer | str],
    ) -> int:
        """Each score_change subscription's encrypted score this cycle: the model's public
        intercept plus every share, stored only when every node holding the model in its
        scope answered (a missing share would show the bank a move that never happened);
        how many were stored. The coordinator adds ciphertexts and learns nothing."""
        services = self._services
        stored: list[tuple[str, str, bytes, dict[str, Any]]] = []
        shares: dict[str, dict[str, bytes]] = {}
        for node_id, answer in answers.items():
            if isinstance(answer, NodeAnswer):
                for sid, data in answer.scores:
                    shares.setdefault(sid, {})[node_id] = data
        encoding = FixedPointEncoding(services.settings.scale)

        # Thousands of subscriptions share a few banks' keys and models: one database
        # read (and one key validation) each per cycle, not one per subscription.
        @functools.cache
        def key_of(bank: str, fingerprint: str) -> PublicKey:
            return services.paillier_keys.resolve(services.participants.get(bank), fingerprint)

        model_of = functools.cache(services.registry.model)
        for row in rows:
            model_id = _model_of(row)
            expected = {n for n, ids in scored.items() if row.id in ids}
            if not model_id or not expected:
                continue
            got = shares.get(row.id, {})
            if set(got) != expected:
                continue  # a node failed or ended it: no score this cycle
            try:
                key = key_of(row.bank, _fingerprint_of(row))
                model = model_of(model_id)
                total = Ciphertext(key, 1).add_encoded(encoding.encode(model.intercept, key))
                for node_id in sorted(got):
                    total = total + Ciphertext.from_bytes(key, got[node_id])
            except CreditShareError as exc:  # a retired key, a withdrawn model, a bad share
                log.warning("monitoring cycle %d: a score was not added (%s)", number, exc)
                continue
            threshold = next((s["threshold"] for s in row.signals if s["type"] == SCORE), None)
            detail = {
                "scale": encoding.scale,
                "model_id": model_id,
                "score_scale": model.score_scale.model_dump(),
                "threshold": threshold,
            }
            stored.append((row.bank, row.id, total.to_bytes(), detail))
        if stored:
            self._alerts.store_scores(number, stored, self._clock())
        return len(stored)

    async def prune(self) -> int:
        days = self._services.settings.alert_retention_days
        return await asyncio.to_thread(self._alerts.prune, self._clock(), days)

    def _anything_to_do(self) -> bool:
        store = self._subscriptions.store
        nodes = [n.id for n in self._services.registry.nodes]
        return store.any_active() or store.any_ends_pending(nodes)

    async def loop(self, interval: float) -> None:
        """A cycle whenever the newest one (by any replica) started ``interval`` ago, and
        some subscription is active or some node has yet to hear that one ended (an idle
        federation adds nothing to the ledger)."""
        while True:
            wait = interval
            try:
                last = await asyncio.to_thread(self._last_started)
                due = last is None or (self._clock() - last).total_seconds() >= interval
                if due and not await asyncio.to_thread(self._anything_to_do):
                    await self.prune()
                elif due:
                    with contextlib.suppress(ConflictError):  # another replica's cycle
                        await self.run()
                    await self.prune()
                else:
                    assert last is not None
                    wait = interval - (self._clock() - last).total_seconds()
            except Exception:
                log.exception("monitoring cycle failed")
            await asyncio.sleep(min(max(wait, 0.1), 60.0))
