"""Signal types (participants), subscriptions (banks), monitoring cycles (operators)."""

from __future__ import annotations

import asyncio
from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Query

from creditshare.coordinator._db import Participant
from creditshare.coordinator._deps import CallerDep, ServicesDep, require_roles
from creditshare.coordinator._participants import Role
from creditshare.coordinator._schemas import PathText
from creditshare.coordinator._services import Services
from creditshare.coordinator.monitoring._schemas import (
    CycleNodeOut,
    CycleOut,
    SignalOut,
    SubscriptionIn,
    SubscriptionNodeOut,
    SubscriptionOut,
    ThresholdOut,
)
from creditshare.coordinator.monitoring._tables import CycleRow, SubscriptionRow
from creditshare.monitoring import SIGNAL_RULES

__all__ = ["cycle_out", "router"]

router = APIRouter(tags=["monitoring"])
#: How long a node whose Describe failed is left alone by catalogue-only requests.
_DESCRIBE_BACKOFF = 30.0
Bank = Annotated[Participant, Depends(require_roles(Role.BANK))]
Operator = Annotated[Participant, Depends(require_roles(Role.OPERATOR))]


async def _out(services: Services, rows: list[SubscriptionRow]) -> list[SubscriptionOut]:
    store = services.monitoring.subscriptions.store
    held = await asyncio.to_thread(store.registrations, [r.id for r in rows])
    return [
        SubscriptionOut(
            subscription_id=r.id,
            uscc=r.uscc,
            consent_id=r.consent_id,
            chains=r.chains,
            signals=r.signals,
            alert_key_fingerprint=r.alert_key_fingerprint,
            model_id=str(r.signed["document"].get("model_id", "")),
            status="ended" if r.status == "ended" else "active",
            created_at=r.created_at,
            ended_at=r.ended_at,
            ended_reason=r.ended_reason,
            ledger_index=r.ledger_index,
            nodes=[
                SubscriptionNodeOut(node=n, registered=ok)
                for n, ok in sorted(held.get(r.id, {}).items())
            ],
        )
        for r in rows
    ]


@router.get("/v1/signals", response_model=list[SignalOut])
async def list_signals(caller: CallerDep, services: ServicesDep) -> list[SignalOut]:
    """The signal types a subscription may choose, their thresholds, and which nodes
    raise each (a signal no node in scope raises cannot be chosen)."""
    nodes = services.registry.nodes
    await services.broker.channels.describe_missing(nodes, _DESCRIBE_BACKOFF)
    catalogues = services.broker.catalogues
    out = []
    for signal, rule in SIGNAL_RULES.items():
        raising = [n for n in nodes if n.id in catalogues and signal in catalogues[n.id].signals]
        bounds = rule.threshold
        out.append(
            SignalOut(
                type=signal.value,
                severity=rule.severity.value,
                rule=rule.rule.value,
                description=rule.description,
                threshold=None
                if bounds is None
                else ThresholdOut(minimum=bounds[0], maximum=bounds[1], default=bounds[2]),
                nodes=[n.id for n in raising],
                chains=sorted({n.chain for n in raising}),
            )
        )
    return out


@router.post("/v1/subscriptions", response_model=SubscriptionOut, status_code=201)
async def subscribe(body: SubscriptionIn, caller: Bank, services: ServicesDep) -> SubscriptionOut:
    """Watch one enterprise under its post_loan_monitoring consent.

    Recorded in the ledger (the enterprise's access log shows it) and registered on
    every node of the chains in scope that raises one of the chosen signals; ``nodes``
    says which hold it now (the others get it at the next cycle)."""
    row = await services.monitoring.subscriptions.create(caller, body)
    (out,) = await _out(services, [row])
    return out


@router.get("/v1/subscriptions", response_model=list[SubscriptionOut])
async def list_subscriptions(
    caller: Bank,
    services: ServicesDep,
    status: Annotated[Literal["active", "ended"] | None, Query()] = None,
) -> list[SubscriptionOut]:
    store = services.monitoring.subscriptions.store
    rows = await asyncio.to_thread(store.for_bank, caller.id, status)
    return await _out(services, rows)


@router.get("/v1/subscriptions/{subscription_id}", response_model=SubscriptionOut)
async def get_subscription(
    subscription_id: PathText, caller: Bank, services: ServicesDep
) -> SubscriptionOut:
    store = services.monitoring.subscriptions.store
    row = await asyncio.to_thread(store.get, subscription_id, caller.id)
    (out,) = await _out(services, [row])
    return out


@router.delete("/v1/subscriptions/{subscription_id}", response_model=SubscriptionOut)
async def cancel_subscription(
    subscription_id: PathText, caller: Bank, services: ServicesDep
) -> SubscriptionOut:
    """End it ("cancelled by the bank", recorded in the ledger); ending it again is a no-op."""
    row = await services.monitoring.subscriptions.cancel(caller.id, subscription_id)
    (out,) = await _out(services, [row])
    return out


def cycle_out(row: CycleRow) -> CycleOut:
    return CycleOut(
        number=row.number,
        ledger_index=row.ledger_index,
        started_at=row.started_at,
        finished_at=row.finished_at,
        subscriptions=row.subscriptions,
        nodes=[CycleNodeOut(**n) for n in row.nodes],
    )


@router.post("/v1/monitoring/cycles", response_model=CycleOut)
async def run_cycle(caller: Operator, services: ServicesDep) -> CycleOut:
    """Run one monitoring cycle now (409 while another runs); its summary."""
    return cycle_out(await services.monitoring.cycles.run())


@router.get("/v1/monitoring/cycles", response_model=list[CycleOut])
async def list_cycles(
    caller: Operator,
    services: ServicesDep,
    limit: Annotated[int, Query(ge=1, le=1000)] = 20,
) -> list[CycleOut]:
    rows = await asyncio.to_thread(services.monitoring.cycles.recent, limit)
    return [cycle_out(r) for r in rows]
