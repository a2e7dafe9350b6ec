"""Subscribing, ending subscriptions, and registering them on nodes (Watch).

A subscription is checked completely before anything is written (signals, the bank's
signature, the consent, a node in scope for every signal), then stored, recorded in
the ledger under the enterprise's USCC (its access log shows it) and handed to the
nodes in scope. A node that is down then gets it at the next cycle. Ends (the bank
cancels, the consent is revoked or expires) are recorded too.
"""

from __future__ import annotations

import asyncio
import base64
import logging
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from sqlmodel import Session, col, select

from creditshare.consent import ConsentGrant, Purpose
from creditshare.coordinator._db import ConsentRow, Participant
from creditshare.coordinator._settings import NodeEntry
from creditshare.coordinator.monitoring._nodes import in_scope, watch_many
from creditshare.coordinator.monitoring._schemas import SubscriptionIn
from creditshare.coordinator.monitoring._store import ACTIVE, ENDED, SubscriptionStore
from creditshare.coordinator.monitoring._tables import SubscriptionRow
from creditshare.crypto import AlertPublicKey
from creditshare.errors import InvalidInputError, InvalidKeyError
from creditshare.identity import Chain, Uscc
from creditshare.ledger import QueryRecord
from creditshare.monitoring import SignalChoice, choices_from_json
from creditshare.signed import SignedSubscription, subscription_document

if TYPE_CHECKING:  # the services hold this object: import for typing only
    from creditshare.coordinator._services import Services

__all__ = ["CANCELLED", "EXPIRED", "REVOKED", "Subscriptions"]

log = logging.getLogger("creditshare.coordinator")
PURPOSE = Purpose.POST_LOAN_MONITORING.value
CANCELLED = "cancelled by the bank"
REVOKED = "consent revoked"
EXPIRED = "consent expired"
#: How long a node whose Describe failed is left alone when routing subscriptions.
_DESCRIBE_BACKOFF = 30.0


def _utc(moment: datetime) -> datetime:
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


class Subscriptions:
    def __init__(self, services: Services, clock: Callable[[], datetime]) -> None:
        self._services = services
        self._clock = clock
        self.store = SubscriptionStore(services.engine)

    # -- creating ------------------------------------------------------------------------

    def _signed(
        self,
        caller: Participant,
        body: SubscriptionIn,
        uscc: str,
        choices: tuple[SignalChoice, ...],
    ) -> SignedSubscription:
        try:
            key = AlertPublicKey.from_text(body.alert_key)
        except InvalidKeyError as exc:
            raise InvalidInputError(f"alert_key: {exc}") from None
        document = subscription_document(
            subscription_id=body.subscription_id,
            requester=caller.id,
            uscc=uscc,
            consent_id=body.consent_id,
            chains=[c.value for c in body.chains or ()],
            signals=choices,
            alert_key=key,
            time=body.requested_at,
            model_id=body.model_id or "",
            key_fingerprint=body.key_fingerprint or "",
        )
        signed = SignedSubscription(document, base64.b64decode(body.signature))
        self._services.credentials.check_signed(caller.id, signed)
        return signed

    async def _nodes(
        self, chains: Sequence[str], choices: Sequence[SignalChoice], model_id: str = ""
    ) -> list[NodeEntry]:
        """The nodes in scope; 422 naming a chosen signal that no node there raises
        (score_change: no node there holds a shard of the model)."""
        services = self._services
        on_chains = services.registry.scope([Chain(c) for c in chains])
        await services.broker.channels.describe_missing(on_chains, _DESCRIBE_BACKOFF)
        catalogues = services.broker.catalogues
        for choice in choices:
            if not in_scope(chains, {choice.signal.value}, on_chains, catalogues, model_id):
                silent = sorted(n.id for n in on_chains if n.id not in catalogues)
                also = f" (not described now: {', '.join(silent)})" if silent else ""
                raise InvalidInputError(
                    f"signal {choice.signal.value}: no data node on chain(s) "
                    f"{', '.join(chains)} raises it{also}"
                )
        wanted = {c.signal.value for c in choices}
        return in_scope(chains, wanted, on_chains, catalogues, model_id)

    async def create(self, caller: Participant, body: SubscriptionIn) -> SubscriptionRow:
        services = self._services
        services.ledger.check_can_sign()  # a ledger that refuses to sign: 503, nothing written
        uscc = str(Uscc.parse(body.uscc))
        choices = choices_from_json([s.model_dump(exclude_none=True) for s in body.signals])
        signed = await asyncio.to_thread(self._signed, caller, body, uscc, choices)
        if signed.model_id:
            # The model must exist and the key be this bank's registered one (404 / 422),
            # before anything is written.
            model = await asyncio.to_thread(services.registry.model, signed.model_id)
            if model.trees is not None:
                # Its score is the private chain's, not a sum of node shares: a
                # score_change cycle would report a score that is not the model's.
                raise InvalidInputError(
                    f"model {model.id!r} is a tree model: score_change monitoring is "
                    "available for scorecard (logistic) models only"
                )
            await asyncio.to_thread(services.paillier_keys.resolve, caller, signed.key_fingerprint)
        consent = await asyncio.to_thread(
            services.consents.check,
            body.consent_id,
            caller,
            uscc,
            Purpose.POST_LOAN_MONITORING,
            body.chains,
        )
        grant = consent.grant
        chains = sorted({c.value for c in (body.chains or grant.chains)})
        nodes = await self._nodes(chains, choices, signed.model_id)
        now = self._clock()
        row = SubscriptionRow(
            id=body.subscription_id,
            bank=caller.id,
            uscc=uscc,
            consent_id=body.consent_id,
            chains=chains,
            signals=[c.to_json() for c in choices],
            alert_key_fingerprint=signed.alert_key.fingerprint(),
            signed=signed.to_json(),
            digest=signed.digest(),
            status=ACTIVE,
            created_at=now,
            ledger_index=-1,
        )
        record = QueryRecord(
            kind="subscription",
            query_id=row.id,
            time=now,
            uscc=uscc,
            requester=caller.id,
            requester_role="bank",
            purpose=PURPOSE,
            consent_id=body.consent_id,
            model_id=signed.model_id,
            key_fingerprint=row.alert_key_fingerprint,
            chains=tuple(chains),
            indicators=grant.indicators,
            request=signed.to_json(),
            consent=consent.to_json(),
        )
        data = record.to_bytes()
        await asyncio.to_thread(self.store.insert, row, [n.id for n in nodes])
        try:
            receipt = await services.ledger.append_async(data, uscc)
        except BaseException:
            await asyncio.to_thread(self.store.forget, row.id)  # not recorded: never made
            raise
        await asyncio.to_thread(self.store.recorded, row.id, receipt.index)
        row.ledger_index = receipt.index
        await self.register(row, nodes)
        return row

    async def register(
        self, row: SubscriptionRow, nodes: Sequence[NodeEntry], *, quiet: bool = False
    ) -> list[str]:
        """Watch ``row`` on ``nodes``; the ids of those that hold it now (best effort;
        ``quiet``: the caller logs a summary instead of a line per node)."""
        if not nodes:
            return []
        services = self._services
        receipt = await asyncio.to_thread(services.ledger.receipt, row.ledger_index)
        credentials = await asyncio.to_thread(services.credentials.for_nodes, row.bank, row.uscc)
        paillier_n = b""
        fingerprint = str(row.signed["document"].get("key_fingerprint", ""))
        if fingerprint:
            owner = await asyncio.to_thread(services.participants.get, row.bank)
            key = await asyncio.to_thread(services.paillier_keys.resolve, owner, fingerprint)
            paillier_n = key.to_bytes()
        reasons = await watch_many(
            services.broker,
            [(n, row.signed, receipt, credentials, paillier_n) for n in nodes],
            services.settings.node_deadline_seconds,
        )
        held = [n.id for n, reason in zip(nodes, reasons, strict=True) if reason is None]
        if not quiet:
            for node, reason in zip(nodes, reasons, strict=True):
                if reason is not None:  # its class only: a node's words may name the USCC
                    kind = reason.partition(":")[0]
                    log.info("subscription not yet registered on %s (%s)", node.id, kind)
        if held:
            await asyncio.to_thread(self.store.set_registered, [(row.id, n) for n in held], True)
        return held

    # -- ending --------------------------------------------------------------------------

    async def end(self, row: SubscriptionRow, reason: str) -> bool:
        """End ``row`` and record it; False if it had ended already."""
        now = self._clock()
        if not await asyncio.to_thread(self.store.end, row.id, reason, now):
            return False
        record = QueryRecord(
            kind="subscription_end",
            query_id=row.id,
            time=now,
            uscc=row.uscc,
            requester=row.bank,
            requester_role="bank",
            purpose=PURPOSE,
            consent_id=row.consent_id,
            model_id="",
            key_fingerprint="",
            chains=(),
            indicators=(),
            reason=reason,
        )
        try:
            await self._services.ledger.append_async(record.to_bytes(), row.uscc)
        except BaseException:
            await asyncio.to_thread(self.store.reopen, row.id)
            raise
        row.status, row.ended_reason, row.ended_at = ENDED, reason, now
        return True

    async def cancel(self, bank: str, subscription_id: str) -> SubscriptionRow:
        row = await asyncio.to_thread(self.store.get, subscription_id, bank)
        if row.status == ACTIVE:
            await self.end(row, CANCELLED)
        return await asyncio.to_thread(self.store.get, subscription_id, bank)

    async def end_for_consent(self, consent_id: str, reason: str = REVOKED) -> int:
        """End the consent's active subscriptions (it was revoked); how many."""
        ended = 0
        for row in await asyncio.to_thread(self.store.active, consent_id):
            ended += await self.end(row, reason)
        return ended

    def _lapsed(self) -> list[tuple[SubscriptionRow, str]]:
        """Active subscriptions whose consent was revoked (also by disabling its
        enterprise) or has expired."""
        rows = self.store.active()
        if not rows:
            return []
        now = self._clock()
        participants = self._services.participants
        with Session(self._services.engine) as session:
            consents = {
                c.id: c
                for c in session.exec(
                    select(ConsentRow).where(col(ConsentRow.id).in_({r.consent_id for r in rows}))
                )
            }
        lapsed = []
        enterprises: dict[str, bool] = {}
        for row in rows:
            consent = consents.get(row.consent_id)
            if consent is None or consent.revoked_at is not None:
                lapsed.append((row, REVOKED))
                continue
            if row.uscc not in enterprises:
                enterprise = participants.enterprise(row.uscc)
                enterprises[row.uscc] = enterprise is not None and not enterprise.disabled
            if not enterprises[row.uscc]:
                lapsed.append((row, REVOKED))
            elif _utc(ConsentGrant.from_document(consent.document).valid_until) <= now:
                lapsed.append((row, EXPIRED))
        return lapsed

    async def sweep(self) -> int:
        """End every subscription whose consent lapsed; how many."""
        ended = 0
        for row, reason in await asyncio.to_thread(self._lapsed):
            ended += await self.end(row, reason)
        return ended
